"""``isolate --dry-run``: everything ``isolate`` would do, per instance and step, with only reads and
DryRun probes, and whether the caller may do it. Nothing changes. The evidence part is also
``collect --dry-run``'s (ec2ir.engine.collect)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ec2ir.containment import nacl
from ec2ir.containment.groups import ALLOW_ALL, GROUP_NAMES, ISOLATION, describe_by_id
from ec2ir.containment.steplog import MEMORY, METADATA, SNAPSHOTS
from ec2ir.containment.steps import STEPS, BaseStep, Context, Options, PlannedCall, Target
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError, OriginalsTampered
from ec2ir.core.models import GroupRecord, InstanceFacts, VpcGroups
from ec2ir.engine.gather import evidence_bucket_name, key_prefix, validate_evidence_options
from ec2ir.engine.holds import records_of
from ec2ir.engine.results import EniPath, PlannedStep, PlanReport, group_names_of, name_tags
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.bucket import planned_bucket
from ec2ir.evidence.collect import BUCKET_CREATION, EVIDENCE_PERMISSIONS
from ec2ir.evidence.metadata import METADATA_FILES
from ec2ir.evidence.s3 import account_of
from ec2ir.permissions.policy import ALLOWED, DENIED, NOT_CHECKED, Check, probe_ec2, simulate
from ec2ir.store.items import now

Probe = tuple[str, dict[str, Any]]  # an EC2 operation and its arguments, sent with DryRun=True
TABLE_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"}


def plan(
    rt: Runtime,
    instance_ids: Iterable[str],
    case_id: str,
    office_cidr: str | None = None,
    allow_any_source: bool = False,
    options: Options | None = None,
) -> PlanReport:
    """Everything ``isolate`` would do, with only reads and DryRun probes: nothing changes."""
    options = options or Options()
    cidr = validate.office_cidr(office_cidr, allow_any_source)
    ids = validate.instance_ids(instance_ids)
    case = validate.case_id(case_id)
    validate_evidence_options(options)  # refused as isolate refuses it
    report = PlanReport(case, rt.aws.caller_arn())
    ctx = Context(rt.aws, case, report.actor, now(), options)
    table_exists = rt.store.exists()
    needed = set(TABLE_ACTIONS)
    if not table_exists:
        report.setup.append(f"create the state table {rt.store.table} (on-demand, KMS-encrypted)")
        needed |= {"dynamodb:CreateTable", "dynamodb:TagResource"}

    facts, early = rt.discover(ids, "isolate")
    report.refused = list(early.values())
    report.names = name_tags(facts.values())
    live = [facts[i] for i in ids if i not in early]
    lookups = rt.lookups([f.instance_id for f in live])
    records = rt.store.group_records(rt.aws.region()) if table_exists else {}
    groups, probes, group_needs = plan_groups(report, options, live, cidr, records)
    needed |= group_needs
    episodes = plan_instances(rt, ctx, report, live, groups, lookups, table_exists)
    report.eni_paths = eni_paths(rt, live, groups, options.untrack)
    if options.evidence:  # after the cut: the same calls collect makes
        needed |= plan_evidence(rt, report, ctx, live, episodes, report.evidence)

    if options.block_ips:  # the deny entries the run would add, and the checks that refuse it
        lines, entry_probes = nacl.plan_blocks(
            rt.aws,
            rt.store,
            case,
            report.actor,
            live,
            cidr,
            options.forensic_group,
            options.block_ips,
            options.block_ips_skip_unsafe,
        )
        report.setup += lines
        probes += [("CreateNetworkAclEntry", arguments) for arguments in entry_probes]
        needed |= {"ec2:DescribeNetworkAcls", "ec2:DescribeVpcs", "ec2:CreateNetworkAclEntry"}
    calls = [call for steps in report.instances.values() for planned in steps for call in planned.calls]
    probes += [(call.action.split(":", 1)[1], call.dry_run) for call in calls if call.dry_run is not None]
    report.checks = probe_every_call(rt, probes)
    unprobed = ({call.action for call in calls} | needed) - set(report.checks)
    report.checks |= simulate(rt.aws, report.actor, unprobed)
    return report


def plan_groups(
    report: PlanReport,
    options: Options,
    live: list[InstanceFacts],
    cidr: str | None,
    records: dict[str, GroupRecord],
) -> tuple[dict[str, VpcGroups], list[Probe], set[str]]:
    """Each VPC's groups as ec2ir recorded them (those still to create left blank), the set-up
    lines, and the probes and IAM actions that creating and verifying them takes."""
    groups: dict[str, VpcGroups] = {}
    probes: list[Probe] = []
    needed: set[str] = set()
    account = account_of(report.actor)
    for vpc_id in sorted({vpc for f in live for vpc in f.vpc_ids}):
        record = records.get(vpc_id)
        found = dict(record.roles) if record is not None and record.account == account else {}
        missing = [role for role in ("forensic", "isolation", "allow-all") if role not in found]
        missing = [role for role in missing if options.untrack or role != "allow-all"]
        if missing:
            report.setup.append(f"{vpc_id}: create the {', '.join(missing)} group(s)")
            needed |= {"ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:AuthorizeSecurityGroupIngress"}
            probes.append(
                (
                    "CreateSecurityGroup",
                    {"GroupName": "ec2ir-dry-run", "Description": "ec2ir dry run", "VpcId": vpc_id},
                )
            )
        report.setup.append(
            f"{vpc_id}: verify the isolation group's rules (SSH from the forensic group, egress "
            "to 127.0.0.1/32 only) and repair any drift"
            + (f"; forensic group ingress: SSH from {cidr} only" if cidr else "")
        )
        needed |= {"ec2:DescribeSecurityGroupRules", "ec2:RevokeSecurityGroupEgress"}
        groups[vpc_id] = VpcGroups(
            vpc_id,
            found.get("forensic", ""),
            found.get("isolation", ""),
            allow_all_group_id=found.get("allow-all", "") if options.untrack else "",
        )
    return groups, probes, needed


def plan_instances(
    rt: Runtime,
    ctx: Context,
    report: PlanReport,
    live: list[InstanceFacts],
    groups: dict[str, VpcGroups],
    looked_up: tuple[dict[str, dict[str, Any]], dict[str, Ec2irError]],
    table_exists: bool,
) -> dict[str, str]:
    """Each instance's planned steps into ``report``, from the steps' batched lookups; returns
    each one's evidence episode: its hold's, or this run's."""
    lookups, lookup_errors = looked_up
    episodes: dict[str, str] = {}
    for instance in live:
        target = Target(
            instance,
            groups,
            lookups={name: hits.get(instance.instance_id) for name, hits in lookups.items()},
        )
        hold = rt.store.get(instance.instance_id) if table_exists else None
        stored = records_of(hold) if hold else {}
        report.instances[instance.instance_id] = [
            plan_step(ctx, step, replace(target, stored=stored), lookup_errors) for step in STEPS
        ]
        episodes[instance.instance_id] = hold.recorded_at if hold else ctx.started_at
    return episodes


def eni_paths(
    rt: Runtime, live: list[InstanceFacts], groups: dict[str, VpcGroups], untrack: bool
) -> dict[str, dict[str, EniPath]]:
    """Each ENI's groups now, then the allow-all and isolation groups of its VPC, named as EC2
    names them (or as ec2ir would name a group it is still to create)."""
    known = {
        group
        for vpc in groups.values()
        for group in (vpc.allow_all_group_id, vpc.isolation_group_id)
        if group
    }
    try:
        seen = describe_by_id(rt.aws, known) if known else {}
    except Ec2irError:
        seen = {}

    def named(group_id: str, role: str) -> str:
        if not group_id:
            return f"{GROUP_NAMES[role]}-<new> (to be created)"
        found = seen.get(group_id)
        return f"{group_id} ({found.name})" if found is not None else group_id

    current_names = group_names_of(live)
    paths: dict[str, dict[str, EniPath]] = {}
    for instance in live:
        for eni in instance.enis:
            vpc = groups.get(eni.vpc_id)
            if vpc is None:
                continue
            through = named(vpc.allow_all_group_id, ALLOW_ALL) if untrack else ""
            paths.setdefault(instance.instance_id, {})[eni.eni_id] = EniPath(
                eni.group_ids,
                through,
                named(vpc.isolation_group_id, ISOLATION),
                tuple(current_names.get(group, "") for group in eni.group_ids),
            )
    return paths


def plan_evidence(
    rt: Runtime,
    report: PlanReport,
    ctx: Context,
    live: list[InstanceFacts],
    episodes: dict[str, str],
    into: dict[str, list[PlannedStep]],
) -> set[str]:
    """The evidence a run would take of each instance, and where it would go, into ``into``;
    only a HeadBucket is sent. Returns the IAM actions it needs besides the calls listed."""
    options = ctx.options
    account = account_of(report.actor)
    name = evidence_bucket_name(rt, options, account)
    setup, refusal = planned_bucket(rt.aws, name, account, options.object_lock_days)
    report.evidence_bucket = name
    report.evidence_refusal = refusal
    report.setup.append(setup or f"no evidence would be collected: {refusal}")
    needed = set(EVIDENCE_PERMISSIONS["evidence bucket"]) | {"dynamodb:BatchWriteItem"}
    if setup.startswith("create"):
        needed |= set(EVIDENCE_PERMISSIONS[BUCKET_CREATION])
    for instance in live:
        episode = episodes.get(instance.instance_id) or ctx.started_at
        stored = f"s3://{name}/{key_prefix(ctx.case_id, instance.instance_id, episode)}"
        into[instance.instance_id] = evidence_steps(options, instance, stored, rt.store.table)
    calls = {call.action for steps in into.values() for planned in steps for call in planned.calls}
    return needed | calls


def evidence_steps(options: Options, instance: InstanceFacts, stored: str, table: str) -> list[PlannedStep]:
    """One instance's evidence steps, its objects under ``stored`` (the episode's s3:// prefix)."""
    from ec2ir.evidence.memory import IMAGE_NAME

    steps = []
    if options.memory:
        steps.append(
            PlannedStep(
                MEMORY,
                "acquire RAM with AVML through SSM Run Command, before the cut",
                (
                    PlannedCall("ssm:SendCommand", (instance.instance_id,)),
                    PlannedCall("s3:PutObject", (f"{stored}/{IMAGE_NAME}",)),
                ),
                f"at most {options.memory_timeout:g}s; an instance SSM does not manage is noted and skipped",
            )
        )
    volumes = tuple(f"{v.volume_id} ({v.device_name})" for v in instance.volumes)
    snapshot = PlannedCall("ec2:CreateSnapshots", (instance.instance_id, *volumes))
    steps.append(
        PlannedStep(
            SNAPSHOTS,
            "snapshot every attached volume at once, crash-consistent, tagged with the case",
            (snapshot,) if volumes else (),
            "" if volumes else "no EBS volumes to snapshot",
        )
    )
    steps.append(
        PlannedStep(
            METADATA,
            "capture the instance's metadata, each item its own object, its SHA-256 journaled",
            tuple(PlannedCall("s3:PutObject", (f"{stored}/{file}",)) for file in METADATA_FILES),
            "the console screenshot only if the instance gives one",
        )
    )
    steps.append(
        PlannedStep(
            "journal",
            "name every snapshot and object, with its SHA-256, in the case journal",
            (PlannedCall("dynamodb:BatchWriteItem", (table,)),),
        )
    )
    return steps


def probe_every_call(rt: Runtime, probes: list[Probe]) -> dict[str, Check]:
    """Send every distinct planned EC2 call with DryRun=True; permissions can differ per
    resource (say, by VPC), so an action counts as allowed only if every call of it was."""
    distinct = list({json.dumps([op, args], sort_keys=True): (op, args) for op, args in probes}.values())
    with ThreadPoolExecutor(max_workers=max(1, min(rt.concurrency, len(distinct) or 1))) as pool:
        checks = list(pool.map(lambda probe: probe_ec2(rt.aws, *probe), distinct))
    verdicts: dict[str, Check] = {}
    rank = {DENIED: 0, ALLOWED: 1, NOT_CHECKED: 2}
    for check in checks:
        known = verdicts.get(check.action)
        if known is None or rank[check.verdict] < rank[known.verdict]:
            verdicts[check.action] = check
    return {
        action: Check(
            action, check.verdict, f"{check.how} ({sum(c.action == action for c in checks)} call(s))"
        )
        for action, check in verdicts.items()
    }


def plan_step(
    ctx: Context, step: BaseStep, target: Target, lookup_errors: dict[str, Ec2irError]
) -> PlannedStep:
    if step.name in lookup_errors:
        return PlannedStep(step.name, step.title, note=f"cannot plan: {lookup_errors[step.name]}")
    record = target.stored.get(step.name)
    note = "originals already recorded by an earlier run" if record else ""
    if record is None:
        try:
            record = step.capture_stored(ctx, target)
        except Ec2irError as error:
            return PlannedStep(step.name, step.title, note=f"cannot read the originals: {error}")
    if record is None:
        return PlannedStep(step.name, step.title, note="nothing to do for this instance")
    try:
        calls = step.plan_stored(ctx, target, record)
    except OriginalsTampered as error:  # an earlier run's record, rewritten in the state table
        return PlannedStep(step.name, step.title, note=f"cannot plan: {error}")
    return PlannedStep(step.name, step.title, tuple(calls), note)
