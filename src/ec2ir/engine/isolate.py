"""``isolate``: contain many instances at once.

Order of work, per run:
  1. validate input, learn who is acting (STS), make sure the state table exists;
  2. discover every named instance, and each step's batched lookups (Auto Scaling membership,
     load balancers, instance profiles), in as few paginated calls as the APIs allow;
  3. per VPC, find or create the forensic, isolation and allow-all groups and verify their rules;
  4. per instance, concurrently and with a bound: capture what every step will change and write
     it all to the state table in one conditional put (write-ahead), then cut it off (the URGENT
     steps of ``ec2ir.containment.steps.STEPS``, each swap down the less busy lane of
     ``ec2ir.containment.lanes``; ec2ir.engine.cut);
  5. once every instance is cut off: mark each hold isolated, then run the other steps, and
     collect the evidence (ec2ir.engine.late).

Anything that goes wrong before step 4 raises, and nothing has changed. From step 4 each instance
succeeds or fails on its own; a failed step is named in the result and the later steps still run,
so the instance is contained as far as it can be. Release undoes the recorded steps in reverse.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ec2ir.containment import nacl
from ec2ir.containment.groups import (
    ForensicSource,
    GroupSetup,
    SeenGroup,
    describe_by_id,
    describe_groups,
    ensure_groups,
)
from ec2ir.containment.lanes import SwapLanes
from ec2ir.containment.steplog import StepLog
from ec2ir.containment.steps import Context, Options, Target
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError
from ec2ir.core.models import GroupRecord, InstanceFacts, InstanceResult, Phase
from ec2ir.engine.cut import contain_all
from ec2ir.engine.edge import finish_blocks
from ec2ir.engine.gather import Collection, acquire_memory, open_collection, validate_evidence_options
from ec2ir.engine.journal import group_entries, journal, journal_aside, refusals
from ec2ir.engine.names import name_report
from ec2ir.engine.results import Progress, RunReport
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.s3 import account_of
from ec2ir.evidence.snapshots import volumes_of
from ec2ir.store.items import now

# Said once per isolate run: what no security group can stop (AWS, "Amazon EC2 security group
# connection tracking"; the README's "What isolation cannot stop" has the details).
ISOLATION_LIMITS = (
    "isolation limits: security groups do not filter the VPC's DNS resolver, instance metadata "
    "(IMDS), DHCP or Amazon Time Sync, so DNS-tunnelled command and control survives a swap; ICMP "
    "flows and flows through load balancers, NAT gateways and other automatically tracked paths may "
    "stay tracked (see the README, What isolation cannot stop)"
)


@dataclass
class FirstReads:
    """Everything that needs only the ids, read in one round trip before any change."""

    actor: str
    facts: dict[str, InstanceFacts]
    early: dict[str, InstanceResult]  # missing or gone: a failed result at once
    lookups: dict[str, dict[str, Any]]
    lookup_errors: dict[str, Ec2irError]
    seen_groups: dict[str, SeenGroup]
    group_records: dict[str, GroupRecord]


def isolate(
    rt: Runtime,
    instance_ids: Iterable[str],
    case_id: str,
    office_cidr: str | None = None,
    allow_any_source: bool = False,
    options: Options | None = None,
    progress: Progress | None = None,
) -> RunReport:
    options = options or Options()
    cidr = validate.office_cidr(office_cidr, allow_any_source)
    validate.forensic_group(options.forensic_group, options.forensic_group_owner)
    named = list(instance_ids)
    ids = validate.instance_ids(named)
    case = validate.case_id(case_id)

    validate_evidence_options(options)
    with ThreadPoolExecutor(max_workers=rt.concurrency) as evidence_pool:
        return run(rt, named, ids, case, cidr, options, progress, evidence_pool)


def run(
    rt: Runtime,
    named: list[str],
    ids: list[str],
    case: str,
    cidr: str | None,
    options: Options,
    progress: Progress | None,
    evidence_pool: ThreadPoolExecutor,
) -> RunReport:
    # --block-ip: refused at once if malformed or too wide; what shows a block safe (the VPCs'
    # CIDRs, the forensic side, AWS's ranges) is read beside the first round trip
    # (ec2ir.containment.nacl).
    screening = (
        nacl.Screening.start(
            rt.aws, rt.store, options.forensic_group, options.block_ips, options.block_ips_skip_unsafe
        )
        if options.block_ips
        else None
    )
    # Read for the evidence only, on the evidence's own workers: never waited on before the cut.
    # It uses the run's own EC2 client, so that no new client is built (CPU) before the cut.
    volumes = evidence_pool.submit(volumes_of, rt.aws, ids) if options.evidence else None
    reads = first_round_trip(rt, ids)
    collection = (
        open_collection(rt, reads.actor, options, evidence_pool, volumes) if options.evidence else None
    )
    report = RunReport("isolate", case, reads.actor, results=[])
    if len(ids) < len(named):
        report.notes.append(f"ignored {len(named) - len(ids)} repeated instance id(s)")
    lanes = SwapLanes(
        rt.aws,
        rt.lanes_aws,
        urgent_aws=rt.urgent_aws,
        deadline=options.untrack_deadline,
        clock=rt.clock,
        sleep=rt.sleep,
    )
    ctx = Context(rt.aws, case, reads.actor, now(), options, lanes=lanes)
    live = [reads.facts[i] for i in ids if i not in reads.early]
    # Before the first change: a block that would cut the forensic side off refuses the run
    # (or, for GuardDuty, is left out with a note).
    blocks = (
        screening.screen(
            live, cidr, case, reads.actor, functools.partial(journal_aside, rt, notes=report.notes)
        )
        if screening is not None
        else None
    )
    vpc_errors = set_up_groups(rt, report, reads, live, cidr, options)
    entries = group_entries(ctx, report)
    done = contain(rt, ctx, report, reads, live, vpc_errors, collection, blocks, progress)
    report.results = [reads.early.get(i) or done[i] for i in ids]
    name_report(rt.aws, report, reads.facts)
    if blocks is not None:
        finish_blocks(blocks, report)  # the ACLs changed in the notes; what could not be, as warnings
    journal(rt, entries + refusals(report), report.notes)
    if collection is not None:
        report.notes.extend(collection.bucket.notes)
    return report


def contain(
    rt: Runtime,
    ctx: Context,
    report: RunReport,
    reads: FirstReads,
    live: list[InstanceFacts],
    vpc_errors: dict[str, Ec2irError],
    collection: Collection | None,
    blocks: nacl.RunBlocks | None,
    progress: Progress | None,
) -> dict[str, InstanceResult]:
    """The memory (before the cut), then every instance cut off, then the rest
    (ec2ir.engine.cut.contain_all); the instances missing or gone reported as they go."""

    def target_of(instance: InstanceFacts) -> Target:
        found = {name: hits.get(instance.instance_id) for name, hits in reads.lookups.items()}
        return Target(instance, report.groups, lookups=found)

    targets = [target_of(f) for f in live]
    memory: dict[str, StepLog] = {}
    if ctx.options.memory and collection is not None and not rt.interrupt.stops("memory acquisition"):
        # Before the cut, as an isolated instance cannot reach S3 or SSM; bounded, so that
        # containment never waits on evidence longer than --memory-timeout.
        memory = acquire_memory(rt, ctx, targets, collection)
    if progress:  # missing or gone: not contained, as there is nothing to contain
        for result in reads.early.values():
            progress(result, Phase.CONTAINED)
    done = contain_all(
        rt,
        ctx,
        targets,
        vpc_errors,
        reads.lookup_errors,
        progress,
        collection,
        memory,
        after_cuts=blocks.apply if blocks is not None else None,
    )
    if progress:
        for result in reads.early.values():
            progress(result)
    return done


def first_round_trip(rt: Runtime, ids: list[str]) -> FirstReads:
    """Everything that needs only the ids goes out at once: one round trip, not seven."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        asked_actor = pool.submit(rt.aws.caller_arn)
        asked_table = pool.submit(rt.store.ensure_table)
        asked_facts = pool.submit(rt.discover, ids, "isolate")
        asked_lookups = pool.submit(rt.lookups, ids)
        asked_groups = pool.submit(describe_groups, rt.aws)  # every VPC's tagged groups
        asked_records = pool.submit(rt.store.group_records, rt.aws.region())
        # The swap clients are built now, beside the reads, never in the middle of the cut.
        warm: list[Future[Any]] = [pool.submit(lanes.ec2) for lanes in (rt.lanes_aws, rt.urgent_aws)]
        actor = asked_actor.result()
        asked_table.result()
        facts, early = asked_facts.result()
        lookups, lookup_errors = asked_lookups.result()
        seen_groups = asked_groups.result()
        group_records = asked_records.result()
        for built in warm:
            built.result()
    return FirstReads(actor, facts, early, lookups, lookup_errors, seen_groups, group_records)


def set_up_groups(
    rt: Runtime,
    report: RunReport,
    reads: FirstReads,
    live: list[InstanceFacts],
    cidr: str | None,
    options: Options,
) -> dict[str, Ec2irError]:
    """Each VPC's groups found or created and verified, into ``report`` with their notes; the
    VPCs whose groups could not be made safe, and why."""
    vpcs = sorted({vpc for f in live for vpc in f.vpc_ids})
    setup = GroupSetup(
        rt.aws,
        rt.store,
        rt.aws.region(),
        account_of(reads.actor),
        report.case_id,
        cidr,
        untrack=options.untrack,
        forensic=ForensicSource(options.forensic_group, options.forensic_group_owner)
        if options.forensic_group
        else None,
        records=reads.group_records,
        seen=reads.seen_groups,
        given_isolation=options.isolation_group,
    )
    report.groups, vpc_errors = ensure_groups(setup, vpcs)
    if setup.forensic is not None:
        report.notes += forensic_reach(rt, setup.forensic, sorted(report.groups))
    note_groups(report, cidr)
    report.notes.append(ISOLATION_LIMITS)
    if not options.untrack:
        report.notes.append(
            "--no-untrack: connections EC2 already tracks (an attacker's open shell) survive the swap"
        )
    return vpc_errors


def forensic_reach(rt: Runtime, forensic: ForensicSource, vpcs: list[str]) -> list[str]:
    """How an outside forensic group reaches the isolated instances of each VPC: a security
    group rule that names a group of another VPC admits its members only across a VPC peering
    connection (in the same Region), so say where that is needed."""
    try:
        seen = describe_by_id(rt.aws, [forensic.group_id]).get(forensic.group_id)
    except Ec2irError:
        seen = None
    if seen is None:
        owner = f" of account {forensic.owner}" if forensic.owner else ""
        return [
            f"the forensic group {forensic.group_id}{owner} cannot be read from here: the isolated "
            "instances admit SSH from its members only across a VPC peering connection to its VPC"
        ]
    return [
        f"{vpc}: the forensic group {forensic.group_id} is in {seen.vpc_id}: its members reach the "
        f"isolated instances here only across a VPC peering connection between the two VPCs; without "
        "one, nobody can reach them"
        for vpc in vpcs
        if vpc != seen.vpc_id
    ]


def note_groups(report: RunReport, cidr: str | None) -> None:
    for vpc_id, vpc_groups in report.groups.items():
        if vpc_groups.created:
            report.notes.append(f"{vpc_id}: created the {', '.join(vpc_groups.created)} group(s)")
        report.notes.extend(f"{vpc_id}: {change}" for change in vpc_groups.repaired)
        report.notes.extend(f"{vpc_id}: {note}" for note in vpc_groups.notes)
        if cidr is None and "forensic" in vpc_groups.created:
            report.notes.append(
                f"{vpc_id}: the new forensic group {vpc_groups.forensic_group_id} admits nobody "
                "until you run isolate again with --office-cidr"
            )
