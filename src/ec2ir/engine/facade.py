"""The one engine behind every adapter: isolate, release, plan and status for many instances.

Order of work for ``isolate``, per run:
  1. validate input, learn who is acting (STS), make sure the state table exists;
  2. discover every named instance, and each step's batched lookups (Auto Scaling membership,
     load balancers, instance profiles), in as few paginated calls as the APIs allow;
  3. per VPC, find or create the forensic, isolation and allow-all groups and verify their rules;
  4. per instance, concurrently and with a bound: capture what every step will change and write
     it all to the state table in one conditional put (write-ahead), then cut it off (the URGENT
     steps of ``ec2ir.containment.steps.STEPS``, each swap down the less busy lane of
     ``ec2ir.containment.lanes``);
  5. once every instance is cut off: mark each hold isolated, then run the other steps, and
     collect the evidence.

Anything that goes wrong before step 4 raises, and nothing has changed. From step 4 each instance
succeeds or fails on its own; a failed step is named in the result and the later steps still run,
so the instance is contained as far as it can be. Release undoes the recorded steps in reverse.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ec2ir.aws.session import Aws, discover, request_ids
from ec2ir.containment import nacl, restore
from ec2ir.containment.check import Breach, CheckReport, find_breaches
from ec2ir.containment.groups import (
    ALLOW_ALL,
    GROUP_NAMES,
    ISOLATION,
    ForensicSource,
    GroupSetup,
    describe_by_id,
    describe_groups,
    ensure_groups,
)
from ec2ir.containment.lanes import SwapLanes
from ec2ir.containment.steplog import GONE_STATES, MEMORY, METADATA, SNAPSHOTS, StepLog
from ec2ir.containment.steps import (
    AFTER,
    BESIDE,
    NETWORK,
    STEPS,
    URGENT,
    Context,
    Options,
    PlannedCall,
    Record,
    Step,
    Target,
)
from ec2ir.core import validate
from ec2ir.core.errors import (
    Ec2irError,
    EvidenceNotCollected,
    HeldByOtherCase,
    InstanceNotFound,
    InstanceTerminated,
    Interrupted,
    NotIsolated,
    OriginalsTampered,
    OriginalsUnknown,
    ReleaseInProgress,
    SeveralFailed,
    StaleRecord,
    Unexpected,
    UsageError,
)
from ec2ir.core.interrupt import Interrupt
from ec2ir.core.models import (
    ACTIVE_STATUSES,
    CONTAINED,
    DONE,
    Eni,
    EvidenceRef,
    GroupRecord,
    Hold,
    HoldStatus,
    InstanceFacts,
    InstanceResult,
    JournalEntry,
    VpcGroups,
)
from ec2ir.core.pools import RankedPool
from ec2ir.evidence.collect import (
    BUCKET_CREATION,
    EVIDENCE_PERMISSIONS,
    METADATA_FILES,
    EvidenceBucket,
    Finding,
    Item,
    account_of,
    as_json,
    bucket_name,
    compact_time,
    default_bucket,
    journal_head_key,
    metadata_items,
    planned_bucket,
    take_snapshots,
    validate_object_lock_days,
    verify_refs,
    volumes_of,
)
from ec2ir.evidence.provenance import Provenance, check_chain, check_heads, hold_record, journal_buckets
from ec2ir.permissions.policy import ALLOWED, DENIED, NOT_CHECKED, Check, probe_ec2, simulate
from ec2ir.store.state import RecordEntry, StateStore, now

DEFAULT_CONCURRENCY = 16
# Each step as it starts and ends (``ec2ir -v``): instance ids, step names, outcomes, times.
# Said once per isolate run: what no security group can stop (AWS, "Amazon EC2 security group
# connection tracking"; the README's "What isolation cannot stop" has the details).
ISOLATION_LIMITS = (
    "isolation limits: security groups do not filter the VPC's DNS resolver, instance metadata "
    "(IMDS), DHCP or Amazon Time Sync, so DNS-tunnelled command and control survives a swap; ICMP "
    "flows and flows through load balancers, NAT gateways and other automatically tracked paths may "
    "stay tracked (see the README, What isolation cannot stop)"
)
# each isolating instance's late tasks still to record their originals (Engine._records_done)
_RECORDS_PENDING: dict[int, int] = {}
_RECORDS_LOCK = threading.Lock()


class Progress(Protocol):
    """Called as each instance reaches a phase, from the run's worker threads: it must be
    thread-safe (ec2ir.render.terminal.ProgressPrinter is)."""

    def __call__(self, result: InstanceResult, phase: str = DONE) -> None: ...


def name_tags(facts: Iterable[InstanceFacts]) -> dict[str, str]:
    """Each instance's Name tag, for display only: never a reason to act (anyone who can tag an
    instance sets it), so it is read from what discovery returned, at no extra call."""
    return {f.instance_id: f.tags["Name"] for f in facts if f.tags.get("Name")}


def group_names_of(facts: Iterable[InstanceFacts]) -> dict[str, str]:
    """The names of the groups each ENI wore at discovery, as DescribeInstances gave them."""
    return {
        str(group["GroupId"]): str(group["GroupName"])
        for f in facts
        for nic in f.description.get("NetworkInterfaces", [])
        for group in nic.get("Groups", [])
        if group.get("GroupId") and group.get("GroupName")
    }


@dataclass
class RunReport:
    """The outcome of one isolate or release run, in the order the instances were named."""

    action: str
    case_id: str
    actor: str
    results: list[InstanceResult]
    groups: dict[str, VpcGroups] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    blocks: nacl.NaclReport | None = None  # isolate --block-ip: the deny entries, as data
    group_names: dict[str, str] = field(default_factory=dict)  # group id -> name, display only

    @property
    def failed(self) -> list[InstanceResult]:
        return [result for result in self.results if not result.ok]

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "case_id": self.case_id,
            "actor": self.actor,
            "ok": not self.failed,
            "results": [result.as_dict() for result in self.results],
            "groups": {
                vpc: {
                    "forensic_group_id": g.forensic_group_id,
                    "isolation_group_id": g.isolation_group_id,
                    "allow_all_group_id": g.allow_all_group_id,
                    "created": list(g.created),
                    "repaired": list(g.repaired),
                }
                for vpc, g in self.groups.items()
            },
            "notes": self.notes,
            "group_names": self.group_names,
        }


def validate_evidence_options(options: Options) -> None:
    """Refused before any change, like every other bad input."""
    if options.evidence_bucket:
        bucket_name(options.evidence_bucket)
    validate_object_lock_days(options.object_lock_days)
    if options.memory and options.memory_timeout <= 0:
        raise UsageError(f"memory timeout must be positive, not {options.memory_timeout}")
    if options.untrack_deadline <= 0:
        raise UsageError(f"the untrack deadline must be positive, not {options.untrack_deadline}")


def failure(instance_id: str, action: str, error: Exception, **extra: Any) -> InstanceResult:
    code = error.code if isinstance(error, Ec2irError) else type(error).__name__
    return InstanceResult(instance_id, action, ok=False, detail=str(error), error_code=code, **extra)


def interrupted_before(instance_id: str, action: str) -> Interrupted:
    """Why an instance the run never began on, as it was interrupted first, is as it was."""
    return Interrupted(
        f"interrupted (Ctrl-C) before {action} began on {instance_id}: nothing was changed on it",
        f"run `ec2ir {action}` again to finish",
    )


def not_started(instance_id: str, action: str) -> InstanceResult:
    return failure(instance_id, action, interrupted_before(instance_id, action))


def run_each(
    items: Iterable[str],
    work: Callable[[str], InstanceResult],
    action: str,
    concurrency: int,
    progress: Progress | None,
    interrupt: Interrupt | None = None,
) -> dict[str, InstanceResult]:
    """Run ``work`` for each item on a bounded pool; every item ends with a result, never a raise.
    Once ``interrupt`` is set no item starts (each is a ``not_started`` result); those under way
    finish."""
    items = list(items)
    results: dict[str, InstanceResult] = {}

    def guarded(item: str) -> InstanceResult:
        try:
            result = not_started(item, action) if interrupt and interrupt.is_set() else work(item)
        except Exception as error:  # one instance's failure must never stop the others
            result = failure(item, action, error)
        if progress:
            progress(result)
        return result

    if not items:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
        for item, result in zip(items, pool.map(guarded, items), strict=True):
            results[item] = result
    return results


@dataclass(frozen=True)
class PlannedStep:
    step: str
    title: str
    calls: tuple[PlannedCall, ...] = ()
    note: str = ""


@dataclass
class PlanReport:
    """What ``isolate`` (or ``collect``) would do, per instance and step, and whether the caller
    may do it. For isolate, ``evidence`` holds the evidence steps that follow the cut and
    ``eni_paths`` each ENI's way from its groups into the isolation group; for collect, whose
    steps are all evidence, ``instances`` holds them."""

    case_id: str
    actor: str
    setup: list[str] = field(default_factory=list)
    instances: dict[str, list[PlannedStep]] = field(default_factory=dict)
    refused: list[InstanceResult] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    action: str = "isolate"
    evidence_bucket: str = ""  # where the evidence would go; "" when none would be taken
    evidence_refusal: str = ""  # why no evidence would be collected, if the bucket is unusable
    evidence: dict[str, list[PlannedStep]] = field(default_factory=dict)
    eni_paths: dict[str, dict[str, EniPath]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # instance id -> Name tag, display only

    @property
    def denied(self) -> list[Check]:
        return [check for check in self.checks.values() if check.verdict == DENIED]

    @property
    def would_fail(self) -> bool:
        """Whether the run would leave something asked for undone (exit 1)."""
        return bool(self.denied or self.refused or self.evidence_refusal)

    def as_dict(self) -> dict[str, object]:
        return {
            "case_id": self.case_id,
            "actor": self.actor,
            "action": self.action,
            "dry_run": True,
            "setup": self.setup,
            "instances": _planned_steps(self.instances),
            "evidence": {
                "bucket": self.evidence_bucket,
                "refusal": self.evidence_refusal,
                "instances": _planned_steps(self.evidence),
            },
            "eni_paths": {
                instance_id: {eni: path.as_dict() for eni, path in paths.items()}
                for instance_id, paths in self.eni_paths.items()
            },
            "refused": [result.as_dict() for result in self.refused],
            "permissions": {a: {"verdict": c.verdict, "how": c.how} for a, c in sorted(self.checks.items())},
            "names": self.names,
        }


@dataclass(frozen=True)
class EniPath:
    """One ENI's way through isolate: its groups now, the allow-all group it passes through (none
    with --no-untrack) and the isolation group it ends in, each ec2ir group as "sg-id (name)", or
    as the name a group still to be created gets."""

    current: tuple[str, ...]
    allow_all: str
    isolation: str
    current_names: tuple[str, ...] = ()  # each current group's name, as discovery read it; display only

    def as_dict(self) -> dict[str, object]:
        return {"current": list(self.current), "allow_all": self.allow_all, "isolation": self.isolation}

    def describe(self) -> str:
        now = [f"{g} ({n})" if n else g for g, n in zip(self.current, self.current_names, strict=False)]
        now += list(self.current[len(now) :])
        hops = [",".join(now) or "-", *filter(None, (self.allow_all, self.isolation))]
        return " -> ".join(hops)


def _planned_steps(by_instance: dict[str, list[PlannedStep]]) -> dict[str, list[dict[str, object]]]:
    return {
        instance_id: [
            {
                "step": planned.step,
                "title": planned.title,
                "note": planned.note,
                "calls": [{"action": c.action, "resources": list(c.resources)} for c in planned.calls],
            }
            for planned in steps
        ]
        for instance_id, steps in by_instance.items()
    }


# In rank order, so that an idle worker takes the most urgent of an instance's beside steps first.
BESIDE_STEPS = sorted((step for step in STEPS if step.phase == BESIDE), key=lambda step: step.beside_rank)
REFUSALS_NAMED = 20
# What a result reports, in order: the containment steps, then the evidence.
REPORTED = [step.name for step in STEPS] + [MEMORY, SNAPSHOTS, METADATA, "journal"]


@dataclass
class Collection:
    """What one run collects as evidence, where it goes, and the pool that does it: evidence has
    its own workers, so it never holds up another instance's containment."""

    bucket: EvidenceBucket
    pool: ThreadPoolExecutor
    volumes: Future[dict[str, list[dict[str, Any]]]] | None = None

    def volumes_of(self, instance_id: str) -> Item:
        """The instance's volumes as read in the first round trip, or why they are unknown."""
        if self.volumes is None:
            return Item("volumes", why_not="not read")
        try:
            return Item("volumes", as_json(self.volumes.result().get(instance_id, [])))
        except Exception as error:  # evidence must never stop containment
            return Item("volumes", why_not=f"{type(error).__name__}: {error}")


def key_prefix(case_id: str, instance_id: str, stamp: str) -> str:
    return f"{case_id}/{instance_id}/{compact_time(stamp)}"


@dataclass
class Containment:
    """One instance in the middle of ``isolate``: its hold, and what each phase did."""

    target: Target
    hold: Hold
    created: bool
    log: StepLog  # the urgent steps, and lookup failures
    memory: StepLog | None = None  # acquired before the cut
    beside: list[Future[StepLog]] = field(default_factory=list)  # one per beside step
    evidence: Future[StepLog] | None = None
    cut_at: str = ""
    late_tasks: int = 1  # the after-steps' task, and one per beside step
    _late_logs: list[StepLog] = field(default_factory=list)
    _late_lock: threading.Lock = field(default_factory=threading.Lock)

    def before_cut(self) -> list[StepLog]:
        return [self.log] if self.memory is None else [self.log, self.memory]

    def contained(self) -> InstanceResult:
        """The cut's outcome, for progress: ``ok`` when every ENI went into the isolation group."""
        facts, error = self.target.facts, self.log.errors.get(NETWORK.name)
        name = facts.tags.get("Name", "")
        if error is not None:
            return failure(facts.instance_id, "isolate", error, name=name)
        return InstanceResult(facts.instance_id, "isolate", ok=True, detail="contained", name=name)

    def late_task_done(self, log: StepLog) -> list[StepLog]:
        """Every late task's log once the last of them ends, else nothing yet."""
        with self._late_lock:
            self._late_logs.append(log)
            return list(self._late_logs) if len(self._late_logs) == self.late_tasks else []

    def result(self, after: Future[StepLog]) -> InstanceResult:
        merged = StepLog()
        logs = [*self.before_cut(), after.result()]
        logs += [future.result() for future in [*self.beside, self.evidence] if future is not None]
        for name in REPORTED:  # report in the steps' own order
            for log in logs:
                if name in log.outcomes:
                    merged.outcomes[name] = log.outcomes[name]
                if name in log.errors:
                    merged.errors[name] = log.errors[name]
                if name in log.evidence:
                    merged.evidence[name] = log.evidence[name]
        merged.extra = [line for log in logs for line in log.extra]
        facts = self.target.facts
        isolated = (
            {}
            if NETWORK.name in merged.errors
            else {eni.eni_id: (self.target.groups[eni.vpc_id].isolation_group_id,) for eni in facts.enis}
        )
        summary = (
            f"{len(facts.enis)} ENI(s) isolated"
            if self.created
            else f"already held; originals kept from {self.hold.recorded_at}"
        )
        warnings = tuple(
            f"{eni}: isolated, but its original groups were never known (it already sat in one of "
            "ec2ir's containment groups with no hold): release will leave it isolated"
            for eni in self.hold.unknown_originals
        )
        return merged.result(facts.instance_id, "isolate", summary, enis=isolated, warnings=warnings)


class Engine:
    def __init__(
        self,
        aws: Aws,
        store: StateStore,
        concurrency: int = DEFAULT_CONCURRENCY,
        evidence_bucket: str = "",
        evidence_aws: Aws | None = None,
        lanes_aws: Aws | None = None,
        urgent_aws: Aws | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        interrupt: Interrupt | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency}")
        self.aws = aws
        self.store = store
        self.concurrency = concurrency
        # the stack's own bucket, used when a run names none
        self.evidence_bucket = bucket_name(evidence_bucket) if evidence_bucket else ""
        # Evidence calls go through clients of their own: botocore's adaptive rate limiter is per
        # client, and a throttled console read must never slow an ENI swap.
        self.evidence_aws = evidence_aws or aws.sibling()
        # The instance swap lane's clients (ec2ir.containment.lanes), for the same reason; built on first use.
        self.lanes_aws = lanes_aws or aws.sibling()
        # The swap out of the allow-all group retries on its own terms, against a deadline, so its
        # clients leave retrying to it (ec2ir.containment.lanes.SwapLanes.untrack).
        self.urgent_aws = urgent_aws or aws.sibling(retries=False)
        self.clock = clock
        self.sleep = sleep
        # Set on Ctrl-C (ec2ir.cli.app): from then on no instance and no step starts; what is in
        # flight finishes, so no ENI is left in the allow-all group (ec2ir.core.interrupt).
        self.interrupt = interrupt or Interrupt()

    def _start(self, action: str, instance_ids: Iterable[str], case_id: str) -> tuple[list[str], RunReport]:
        """Validate, learn who is acting and make sure the state table is usable: the preflight
        that every run passes before its first change."""
        named = list(instance_ids)
        ids = validate.instance_ids(named)
        case = validate.case_id(case_id)
        actor = self.aws.caller_arn()
        self.store.require()  # only release starts here: with no table, nothing is held
        report = RunReport(action, case, actor, results=[])
        if len(ids) < len(named):
            report.notes.append(f"ignored {len(named) - len(ids)} repeated instance id(s)")
        return ids, report

    # -- isolate -------------------------------------------------------------------------------

    def isolate(
        self,
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
        with ThreadPoolExecutor(max_workers=self.concurrency) as evidence_pool:
            return self._isolate(named, ids, case, cidr, options, progress, evidence_pool)

    def _isolate(
        self,
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
                self.aws, self.store, options.forensic_group, options.block_ips, options.block_ips_skip_unsafe
            )
            if options.block_ips
            else None
        )
        # Read for the evidence only, on the evidence's own workers: never waited on before the cut.
        # It uses the run's own EC2 client, so that no new client is built (CPU) before the cut.
        volumes = evidence_pool.submit(volumes_of, self.aws, ids) if options.evidence else None
        # Everything that needs only the ids goes out at once: one round trip, not seven.
        with ThreadPoolExecutor(max_workers=8) as pool:
            asked_actor = pool.submit(self.aws.caller_arn)
            asked_table = pool.submit(self.store.ensure_table)
            asked_facts = pool.submit(self._discover, ids, "isolate")
            asked_lookups = pool.submit(self._lookups, ids)
            asked_groups = pool.submit(describe_groups, self.aws)  # every VPC's tagged groups
            asked_records = pool.submit(self.store.group_records, self.aws.region())
            # The swap clients are built now, beside the reads, never in the middle of the cut.
            warm = [pool.submit(lanes.ec2) for lanes in (self.lanes_aws, self.urgent_aws)]
            actor = asked_actor.result()
            asked_table.result()
            facts, early = asked_facts.result()
            lookups, lookup_errors = asked_lookups.result()
            seen_groups = asked_groups.result()
            group_records = asked_records.result()
            for built in warm:
                built.result()
        collection = self._collection(actor, options, evidence_pool, volumes) if options.evidence else None
        report = RunReport("isolate", case, actor, results=[])
        if len(ids) < len(named):
            report.notes.append(f"ignored {len(named) - len(ids)} repeated instance id(s)")
        lanes = SwapLanes(
            self.aws,
            self.lanes_aws,
            urgent_aws=self.urgent_aws,
            deadline=options.untrack_deadline,
            clock=self.clock,
            sleep=self.sleep,
        )
        ctx = Context(self.aws, case, actor, now(), options, lanes=lanes)
        live = [facts[i] for i in ids if i not in early]
        # Before the first change: a block that would cut the forensic side off refuses the run
        # (or, for GuardDuty, is left out with a note).
        blocks = (
            screening.screen(
                live, cidr, case, actor, functools.partial(self._journal_aside, notes=report.notes)
            )
            if screening is not None
            else None
        )

        vpcs = sorted({vpc for f in live for vpc in f.vpc_ids})
        setup = GroupSetup(
            self.aws,
            self.store,
            self.aws.region(),
            account_of(actor),
            case,
            cidr,
            untrack=options.untrack,
            forensic=ForensicSource(options.forensic_group, options.forensic_group_owner)
            if options.forensic_group
            else None,
            records=group_records,
            seen=seen_groups,
            given_isolation=options.isolation_group,
        )
        report.groups, vpc_errors = ensure_groups(setup, vpcs)
        if setup.forensic is not None:
            report.notes += self._forensic_reach(setup.forensic, sorted(report.groups))
        self._note_groups(report, cidr)
        report.notes.append(ISOLATION_LIMITS)
        if not options.untrack:
            report.notes.append(
                "--no-untrack: connections EC2 already tracks (an attacker's open shell) survive the swap"
            )

        def target_of(instance: InstanceFacts) -> Target:
            found = {name: hits.get(instance.instance_id) for name, hits in lookups.items()}
            return Target(instance, report.groups, lookups=found)

        journal = self._group_entries(ctx, report)
        targets = [target_of(f) for f in live]
        memory: dict[str, StepLog] = {}
        if options.memory and collection is not None and not self.interrupt.stops("memory acquisition"):
            # Before the cut, as an isolated instance cannot reach S3 or SSM; bounded, so that
            # containment never waits on evidence longer than --memory-timeout.
            memory = self._acquire_memory(ctx, targets, collection)
        if progress:  # missing or gone: not contained, as there is nothing to contain
            for result in early.values():
                progress(result, CONTAINED)
        done = self._contain_all(
            ctx,
            targets,
            vpc_errors,
            lookup_errors,
            progress,
            collection,
            memory,
            after_cuts=blocks.apply if blocks is not None else None,
        )
        if progress:
            for result in early.values():
                progress(result)
        report.results = [early.get(i) or done[i] for i in ids]
        self._name_report(report, facts)
        if blocks is not None:
            blocks.finish(report)  # the ACLs changed in the notes; what could not be, as warnings
        self._journal(journal + self._refusals(report), report.notes)
        if collection is not None:
            report.notes.extend(collection.bucket.notes)
        return report

    def _collection(
        self,
        actor: str,
        options: Options,
        pool: ThreadPoolExecutor,
        volumes: Future[dict[str, list[dict[str, Any]]]] | None,
    ) -> Collection:
        account = account_of(actor)
        name = options.evidence_bucket or self.evidence_bucket or default_bucket(account, self.aws.region())
        bucket = EvidenceBucket(self.evidence_aws, name, account, options.object_lock_days, store=self.store)
        return Collection(bucket, pool, volumes)

    def _forensic_reach(self, forensic: ForensicSource, vpcs: list[str]) -> list[str]:
        """How an outside forensic group reaches the isolated instances of each VPC: a security
        group rule that names a group of another VPC admits its members only across a VPC peering
        connection (in the same Region), so say where that is needed."""
        try:
            seen = describe_by_id(self.aws, [forensic.group_id]).get(forensic.group_id)
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

    @staticmethod
    def _refusals(report: RunReport) -> list[JournalEntry]:
        """Instances refused before any step ran: the journal keeps the attempt too. Refusals
        beyond a few share one entry per error code, so ten thousand bad ids cost one line."""
        refused = [r for r in report.results if r.error_code and not r.steps]
        by_code: dict[str, list[InstanceResult]] = {}
        for result in refused:
            by_code.setdefault(result.error_code, []).append(result)
        entries = []
        for code, results in by_code.items():
            if len(results) <= REFUSALS_NAMED:
                entries += [
                    JournalEntry(
                        now(), report.case_id, report.actor, r.instance_id, r.action, f"FAILED: {r.detail}"
                    )
                    for r in results
                ]
                continue
            named = ", ".join(r.instance_id for r in results[:REFUSALS_NAMED])
            more = len(results) - REFUSALS_NAMED
            entries.append(
                JournalEntry(
                    now(),
                    report.case_id,
                    report.actor,
                    f"{len(results)} instances",
                    report.action,
                    f"FAILED: {code} for {len(results)} instance(s): {named} and {more} more",
                )
            )
        return entries

    @staticmethod
    def _group_entries(ctx: Context, report: RunReport) -> list[JournalEntry]:
        entries = []
        for vpc_id, groups in report.groups.items():
            changes = [f"created the {role} group" for role in groups.created] + list(groups.repaired)
            if changes:
                entries.append(
                    JournalEntry(
                        now(), ctx.case_id, ctx.actor, vpc_id, "groups", "done: " + "; ".join(changes)
                    )
                )
        return entries

    def _journal_aside(self, entries: list[JournalEntry], notes: list[str]) -> None:
        """Journal entries in the middle of a run (its chain heads go out with its last journal
        call); a journal that cannot be written is said in ``notes``."""
        log = StepLog()
        self._journal(entries, log=log)
        if "journal" in log.errors:
            notes.append(f"WARNING: the case journal could not be written: {log.errors['journal']}")

    def _journal(
        self, entries: list[JournalEntry], notes: list[str] | None = None, log: StepLog | None = None
    ) -> None:
        """Append to the case journal; a journal that cannot be written is reported, never hidden,
        and never undoes the containment it describes."""
        try:
            if entries:
                self.store.append(entries)
        except Ec2irError as error:
            if log is not None:
                log.fail("journal", error)
            elif notes is not None:
                notes.append(f"WARNING: the case journal could not be written: {error}")
            else:
                raise
        finally:
            if log is None:  # a run's last journal call: its chain heads go out
                self._seal_runs(notes)

    def _seal_runs(self, notes: list[str] | None) -> None:
        """End this writer's journal runs: each case's chain head becomes a new version of
        ``<case>/journal-head.json`` in the case's evidence bucket, so that ``verify`` can tell
        deleted entries; a run with no evidence bucket is said to be unprovable."""
        said = notes if notes is not None else []
        try:
            chains = self.store.close_runs()
        except Ec2irError as error:
            said.append(f"WARNING: the journal's chain head could not be recorded: {error}")
            return
        for chain in chains:
            bucket = chain.bucket or chain.last_bucket or self.evidence_bucket
            if not bucket:
                said.append(
                    f"case {chain.case_id}: no evidence bucket holds this run's journal head (no evidence "
                    "was collected), so `verify` cannot prove that none of its entries were deleted"
                )
                continue
            body = json.dumps(chain.head(), sort_keys=True, indent=2).encode()
            try:
                EvidenceBucket(self.evidence_aws, bucket, account_of(chain.actor)).put_version(
                    journal_head_key(chain.case_id),
                    body,
                    "journal-head",
                    "application/json",
                    {"ec2ir:case": chain.case_id},
                )
            except Ec2irError as error:
                said.append(
                    f"WARNING: case {chain.case_id}: the journal head could not be written to s3://{bucket} "
                    f"({error}); `verify` cannot prove this run's entries whole"
                )

    def _contain_all(
        self,
        ctx: Context,
        targets: list[Target],
        vpc_errors: dict[str, Ec2irError],
        lookup_errors: dict[str, Ec2irError],
        progress: Progress | None,
        collection: Collection | None = None,
        memory: dict[str, StepLog] | None = None,
        after_cuts: Callable[[list[InstanceFacts]], None] | None = None,
    ) -> dict[str, InstanceResult]:
        """Cut every instance off first, then do the rest.

        The urgent pool only records and cuts (autoscaling, network). Everything else starts once
        every instance is cut off, as it would take workers, CPU and token-bucket time from the
        cuts still to come: the after-steps on a second pool, and, on a third, the steps with a
        throttled bucket of their own, so that they never hold the after-steps up.
        """
        results: dict[str, InstanceResult] = {}
        workers = max(1, min(self.concurrency, len(targets) or 1))
        # ``beside`` is listed before ``background``, whose tasks submit to it, so it closes after.
        with (
            ThreadPoolExecutor(workers) as urgent,
            ThreadPoolExecutor(workers) as beside_pool,
            ThreadPoolExecutor(workers) as background,
        ):
            beside = RankedPool(beside_pool)

            def cut(target: Target) -> Containment:
                broken = [vpc_errors[v] for v in sorted(target.facts.vpc_ids) if v in vpc_errors]
                if broken:
                    raise broken[0]  # never isolate into a group that is not verified safe
                taken = (
                    memory is not None
                    and target.instance_id in memory
                    and memory[target.instance_id].evidence
                )
                if self.interrupt.is_set() and not taken:  # Ctrl-C: no instance starts, not even its record
                    raise interrupted_before(target.instance_id, "isolate")
                # an instance whose memory was taken has begun: it is cut, and the image journaled
                return self._cut(ctx, target, lookup_errors)

            cuts = {urgent.submit(cut, target): target.instance_id for target in targets}
            finishing: dict[Future[StepLog], Containment] = {}
            cut_off = self._wait_for_cuts(cuts, results, progress)
            said_contained = [c for c in cut_off if NETWORK.name not in c.log.errors]
            self._recheck_enis(ctx, cut_off)
            if progress:  # the check after the cut found one open after all: say so, as live
                for containment in said_contained:
                    if NETWORK.name in containment.log.errors:
                        progress(containment.contained(), CONTAINED)
            if after_cuts is not None and not self.interrupt.stops("the network ACL blocks (--block-ip)"):
                # The network ACL blocks (--block-ip), once every instance is cut off and before any
                # late step: a deny entry is a cut too (stateless, it stops the flows a swap leaves
                # tracked), and CreateNetworkAclEntry draws on EC2's shared mutating bucket, which
                # single-ENI swaps use and protect and metadata would then drain. After the cuts it
                # takes no token a swap needs; before the late steps, it gets its tokens at once.
                after_cuts([containment.target.facts for containment in cut_off])
            for containment in cut_off:
                instance_id = containment.target.instance_id
                if memory and instance_id in memory:
                    containment.memory = memory[instance_id]
                if collection is not None:
                    collect = functools.partial(self._collect_for, ctx, containment, collection)
                    containment.evidence = collection.pool.submit(collect)
                finishing[background.submit(self._after_cut, ctx, containment, beside)] = containment
            for finished in as_completed(finishing):
                containment = finishing[finished]
                try:
                    result = containment.result(finished)
                except Exception as error:  # a surprise in a late step still ends as a result
                    result = failure(containment.target.instance_id, "isolate", error)
                results[result.instance_id] = result
                if progress:
                    progress(result)
        return results

    @staticmethod
    def _wait_for_cuts(
        cuts: dict[Future[Containment], str],
        results: dict[str, InstanceResult],
        progress: Progress | None,
    ) -> list[Containment]:
        """Every cut once all have ended; a failed cut is a result at once."""
        cut_off: list[Containment] = []
        for future in as_completed(cuts):
            instance_id = cuts[future]
            try:
                cut_off.append(future.result())
            except Exception as error:  # one instance's failure must never stop the others
                results[instance_id] = failure(instance_id, "isolate", error)
                if progress:
                    progress(results[instance_id], CONTAINED)
                    progress(results[instance_id])
            else:
                if progress:  # live, as each cut ends: the responder sees containment as it happens
                    progress(cut_off[-1].contained(), CONTAINED)
        return cut_off

    def _cut(
        self,
        ctx: Context,
        target: Target,
        lookup_errors: dict[str, Ec2irError],
    ) -> Containment:
        """Record every original, then detach and isolate."""
        facts = target.facts
        log = StepLog()
        for name, error in lookup_errors.items():
            log.fail(name, error)
        # The forensic group is not here: a compromised forensic workstation is contained too.
        managed = {group_id for vpc in facts.vpc_ids for group_id in target.groups[vpc].containment_group_ids}
        # An ENI already in one of ec2ir's containment groups with no hold to say where it came
        # from: its originals cannot be known, so none is recorded, but it is isolated all the same.
        unknown = frozenset(eni.eni_id for eni in facts.enis if managed & set(eni.group_ids))
        records = self._capture(ctx, target, log, skip=set(log.errors))
        hold, created = self.store.record_originals(
            facts, ctx.case_id, ctx.actor, steps=records, unknown=unknown
        )
        self._check_owner(hold, ctx.case_id)
        if hold.status is HoldStatus.RELEASING:
            raise ReleaseInProgress(
                f"{facts.instance_id} is being released by case {hold.case_id} (or a release was "
                "interrupted)",
                "run `ec2ir release` to finish it, then isolate again",
            )
        if not created:
            hold = self._record_what_is_new(ctx, replace(target, stored=hold.steps), hold, log, managed)
        target = replace(target, stored=dict(hold.steps))
        containment = Containment(target, hold, created, log)
        self._run_steps(ctx, containment, URGENT, log)
        containment.cut_at = now()
        return containment

    def _recheck_enis(self, ctx: Context, containments: list[Containment]) -> None:
        """Every cut instance's ENIs, read once more in one batch after the cut. An ENI attached
        since discovery, or moved back by someone, is recorded and isolated before the instance is
        reported isolated; if the read fails, the cut cannot be shown whole and is reported failed."""
        cut = [c for c in containments if NETWORK.name not in c.log.errors]
        if not cut:
            return
        try:
            live = discover(self.aws, [c.target.instance_id for c in cut])
        except Ec2irError as error:
            for containment in cut:
                containment.log.fail(NETWORK.name, error)
            return
        for containment in cut:
            facts = live.get(containment.target.instance_id)
            if facts is None or facts.state in GONE_STATES:
                continue
            target = containment.target
            isolation = {vpc: groups.isolation_group_id for vpc, groups in target.groups.items()}
            strays = [eni for eni in facts.enis if eni.group_ids != (isolation.get(eni.vpc_id),)]
            if strays:
                self._isolate_strays(ctx, containment, facts, strays)

    def _isolate_strays(
        self, ctx: Context, containment: Containment, facts: InstanceFacts, strays: list[Eni]
    ) -> None:
        target, log = containment.target, containment.log
        unknown_vpcs = sorted({eni.vpc_id for eni in strays} - set(target.groups))
        if unknown_vpcs:
            log.fail(
                NETWORK.name,
                OriginalsUnknown(
                    f"{target.instance_id}: ENI(s) {', '.join(e.eni_id for e in strays)} attached during the "
                    f"run in {', '.join(unknown_vpcs)}, where this run has no isolation group",
                    "run isolate again",
                ),
            )
            return
        managed = {gid for vpc in facts.vpc_ids for gid in target.groups[vpc].containment_group_ids}
        now_target = replace(target, facts=facts)
        try:
            hold = self._record_what_is_new(ctx, now_target, containment.hold, log, managed)
        except Ec2irError as error:
            log.fail(NETWORK.name, error)
            return
        containment.hold, containment.target = hold, replace(now_target, stored=dict(hold.steps))
        record = {"originals": hold.originals}
        log.run(
            NETWORK.name,
            functools.partial(NETWORK.apply, ctx, containment.target, record),
            subject=containment.target.instance_id,
        )
        if NETWORK.name not in log.errors:
            log.outcomes[NETWORK.name] += (
                f"; after the cut, {len(strays)} ENI(s) outside the isolation group "
                f"({', '.join(e.eni_id for e in strays)}) were recorded and isolated"
            )

    def _mark_isolated(self, ctx: Context, containment: Containment) -> None:
        """Mark the hold isolated, unless a release of it ran since the cut: then the release
        wins, and this run undoes what it did."""
        hold = containment.hold
        try:
            self.store.transition(
                hold,
                (HoldStatus.ISOLATING, HoldStatus.ISOLATED),
                HoldStatus.ISOLATED,
                isolated_at=hold.isolated_at or containment.cut_at,
            )
        except StaleRecord:
            self._yield_to_release(ctx, containment, containment.before_cut())
            raise

    def _after_cut(self, ctx: Context, containment: Containment, beside: RankedPool) -> StepLog:
        """Mark the hold isolated, journal the cut, then run the after-steps (the ones with a
        bucket of their own beside the others)."""
        instance_id = containment.target.instance_id
        hold = containment.hold
        # Before any after-step: the hold's condition is what tells that a release ran meanwhile.
        if NETWORK.name not in containment.log.errors:
            self._mark_isolated(ctx, containment)
        with _RECORDS_LOCK:
            _RECORDS_PENDING[id(containment)] = 1 + len(BESIDE_STEPS)
        containment.late_tasks = 1 + len(BESIDE_STEPS)
        containment.beside = [
            beside.submit(
                step.beside_rank, functools.partial(self._beside_then_records, ctx, containment, step)
            )
            for step in BESIDE_STEPS
        ]
        # The hold's first journal entry carries its originals and step records as data: release
        # checks a hold against it (and against the evidence) before restoring anything.
        cut = (
            [self._record_entry(ctx, hold, hold.recorded_by, hold.recorded_at)] if containment.created else []
        )
        log = StepLog()
        first = cut + containment.log.journal_entries(ctx, instance_id, "isolate")
        self._journal(first, log=log)
        if "journal" in log.errors:  # tried again below; the entries' keys make that safe
            log.outcomes.pop("journal")
            log.errors.pop("journal")
        else:
            first = []
        log = self._run_steps(ctx, containment, AFTER, log)
        done_here = [log] if containment.memory is None else [containment.memory, log]
        lines = [line for done in done_here for line in done.journal_entries(ctx, instance_id, "isolate")]
        self._journal(first + lines, log=log)
        self._records_done(ctx, containment, log)
        self._check_not_released(ctx, containment, log)
        return log

    @staticmethod
    def _record_entry(ctx: Context, hold: Hold, actor: str, at: str, complete: bool = False) -> RecordEntry:
        steps = f" and step record(s) {', '.join(sorted(hold.steps))}" if hold.steps else ""
        what = "all originals, as recorded by this isolate" if complete else "originals"
        return RecordEntry(
            at,
            ctx.case_id,
            actor,
            hold.instance_id,
            "isolate:record-originals",
            f"done: {what}: "
            + ", ".join(f"{eni} {list(groups)}" for eni, groups in hold.originals.items())
            + steps,
            record=hold_record(hold, complete=complete),
        )

    def _beside_then_records(self, ctx: Context, containment: Containment, step: Step) -> StepLog:
        log: StepLog | None = None
        try:
            log = self._run_beside(ctx, containment, step)
            return log
        finally:
            self._records_done(ctx, containment, log)

    def _records_done(self, ctx: Context, containment: Containment, log: StepLog | None) -> None:
        """Once the after-steps and every beside step have recorded their originals (the last of
        them calls this), the hold's full records are journaled, marked complete: from then
        on, release refuses any original the journal or the evidence does not prove."""
        with _RECORDS_LOCK:
            left = _RECORDS_PENDING.get(id(containment), 1) - 1
            if left > 0:
                _RECORDS_PENDING[id(containment)] = left
                return
            _RECORDS_PENDING.pop(id(containment), None)
        try:
            hold = self.store.get(containment.target.instance_id)
        except Ec2irError as error:
            if log is not None:
                log.fail("journal", error)
            return
        if hold is None or hold.recorded_at != containment.hold.recorded_at:
            return
        self._journal([self._record_entry(ctx, hold, ctx.actor, now(), complete=True)], log=log or StepLog())

    def _run_beside(self, ctx: Context, containment: Containment, step: Step) -> StepLog:
        """One after-step with a throttled bucket of its own, then its journal lines."""
        log = self._run_steps(ctx, containment, BESIDE, only=step)
        self._journal(log.journal_entries(ctx, containment.target.instance_id, "isolate"), log=log)
        self._check_not_released(ctx, containment, log)
        return log

    def _check_not_released(self, ctx: Context, containment: Containment, log: StepLog) -> None:
        """After the last late change to the instance: if a release of its hold ran meanwhile,
        the release wins and those changes are undone. A release that starts after this read
        undoes them itself, from the records the hold holds by then."""
        logs = containment.late_task_done(log)
        if any(outcome.startswith("done") for done in logs for outcome in done.outcomes.values()):
            self._yield_to_release(ctx, containment, logs)

    def _collect_for(self, ctx: Context, containment: Containment, collection: Collection) -> StepLog:
        """Snapshots, then the metadata, on the evidence's own workers and clients, then their
        journal lines."""
        log = StepLog()
        episode = containment.hold.recorded_at
        target, rerun = containment.target, not containment.created
        subject = target.instance_id
        if not self._stopped(log, SNAPSHOTS):
            log.run(SNAPSHOTS, lambda: self._snapshot(ctx, target.facts, episode, log), subject)
        if not self._stopped(log, METADATA):
            log.run(
                METADATA,
                lambda: self._capture_metadata(ctx, target, collection, episode, log, rerun),
                subject,
            )
        self._journal(log.journal_entries(ctx, target.instance_id, "isolate"), log=log)
        return log

    def _acquire_memory(
        self, ctx: Context, targets: list[Target], collection: Collection
    ) -> dict[str, StepLog]:
        from ec2ir.evidence.memory import acquire

        try:
            outcomes = acquire(
                self.evidence_aws,
                collection.bucket,
                ctx.case_id,
                [target.instance_id for target in targets],
                timeout=ctx.options.memory_timeout,
            )
        except Exception as error:  # no memory is ever worth not containing the instances
            failed = {target.instance_id: StepLog() for target in targets}
            for log in failed.values():
                log.fail(MEMORY, error if isinstance(error, Ec2irError) else Unexpected(error))
            return failed
        logs: dict[str, StepLog] = {}
        for instance_id, outcome in outcomes.items():
            log = StepLog()
            log._set(MEMORY, outcome.result)
            if outcome.ref is None:  # asked for and not collected: the run is incomplete (exit 1)
                log.errors[MEMORY] = EvidenceNotCollected(f"memory {outcome.result}")
            log.requests[MEMORY] = list(outcome.request_ids)
            if outcome.ref is not None:
                log.evidence[MEMORY] = [outcome.ref]
            logs[instance_id] = log
        return logs

    def _snapshot(self, ctx: Context, facts: InstanceFacts, episode: str, log: StepLog) -> str:
        refs = take_snapshots(
            self.evidence_aws, ctx.case_id, facts, episode, log.evidence.setdefault(SNAPSHOTS, [])
        )
        if not refs:
            return "no EBS volumes to snapshot"
        return f"{len(refs)} snapshot(s), crash-consistent: " + ", ".join(
            f"{ref.location} ({ref.details['device'] or ref.details['volume_id']})" for ref in refs
        )

    def _capture_metadata(
        self,
        ctx: Context,
        target: Target,
        collection: Collection,
        episode: str,
        log: StepLog,
        rerun: bool = False,
    ) -> str:
        """Each item to its own object under the episode's prefix. A rerun on a held instance
        stores only the items an interrupted run did not (captured now, after the hold began)."""
        facts = target.facts
        items = metadata_items(
            self.evidence_aws, facts, target.lookups, collection.volumes_of(facts.instance_id)
        )
        prefix = key_prefix(ctx.case_id, facts.instance_id, episode)
        tags = {"ec2ir:case": ctx.case_id, "ec2ir:instance": facts.instance_id}
        stored: list[EvidenceRef] = []
        kept = 0
        for item in items:
            action = f"evidence:{item.name}"
            key = f"{prefix}/{item.name}.{item.extension}"
            earlier = collection.bucket.stored(key, f"metadata:{item.name}") if rerun else None
            if earlier is not None:  # stored by the interrupted run; journaled again to be sure
                kept += 1
                log.extra.append(
                    (action, now(), f"done: sha256 {earlier.sha256} (stored earlier)", [earlier])
                )
                continue
            if item.why_not:
                log.extra.append((action, now(), f"not collected: {item.why_not}", []))
                continue
            ref = collection.bucket.put(key, item.body, f"metadata:{item.name}", item.content_type, tags)
            stored.append(ref)
            log.extra.append((action, now(), f"done: sha256 {ref.sha256}", [ref]))
        missing = [item.name for item in items if item.why_not]
        already = f", {kept} already there from the run that began the hold" if kept else ""
        return f"{len(stored)} item(s) in s3://{collection.bucket.name}/{prefix}/{already}" + (
            f"; not collected: {', '.join(missing)}" if missing else ""
        )

    def _run_steps(
        self,
        ctx: Context,
        containment: Containment,
        phase: str,
        log: StepLog | None = None,
        only: Step | None = None,
    ) -> StepLog:
        """Run one phase's steps (or ``only`` that one) in order, each recorded before it applies; a
        failure is logged and the next step still runs."""
        log = log or StepLog()
        target = containment.target
        for step in STEPS if only is None else [only]:
            if step.phase != phase or step.name in containment.log.errors:
                continue
            # The cut's own steps (Auto Scaling detach, network, credentials) run as one once
            # begun: stopping between them would leave an instance out of its group but open.
            if phase != URGENT and self._stopped(log, step.name):
                continue
            try:
                record = self._record_for(ctx, containment, step)
            except Ec2irError as error:
                log.fail(step.name, error)
                continue
            if record is None:
                log.skip(step.name, "nothing to do for this instance")
                continue
            log.run(step.name, functools.partial(step.apply, ctx, target, record), target.instance_id)
        return log

    def _stopped(self, log: StepLog, name: str) -> bool:
        """Whether the run was interrupted (Ctrl-C), so that step ``name`` must not start; if so,
        it is logged as not started. A step under way is never stopped: it finishes."""
        if not self.interrupt.is_set():
            return False
        log.not_started(name)
        return True

    def _record_for(self, ctx: Context, containment: Containment, step: Step) -> Record | None:
        """The step's originals: from the hold, or captured now and written before any change."""
        if step is NETWORK:
            return {"originals": containment.hold.originals}
        stored = containment.target.stored.get(step.name)
        if stored is not None or step.cheap_capture:
            return stored
        record = step.capture(ctx, containment.target)
        if record is None:
            return None
        if not self.store.add_step_record(containment.hold, step.name, record):
            current = self.store.get(containment.target.instance_id)  # an earlier run's first wins
            if (
                current is None
                or current.recorded_at != containment.hold.recorded_at
                or current.status not in (HoldStatus.ISOLATING, HoldStatus.ISOLATED)
            ):
                raise StaleRecord(
                    f"the hold on {containment.target.instance_id} changed under this run (a release?)"
                )
            record = current.steps.get(step.name, record)
        return record

    def _discover(
        self, ids: list[str], action: str
    ) -> tuple[dict[str, InstanceFacts], dict[str, InstanceResult]]:
        """Every named instance's facts, and a failed result for each that is missing or gone."""
        facts = discover(self.aws, ids)
        early: dict[str, InstanceResult] = {}
        for instance_id in ids:
            found = facts.get(instance_id)
            if found is None:
                error: Ec2irError = InstanceNotFound(
                    f"instance {instance_id} does not exist in this account and region"
                )
            elif found.state in GONE_STATES:
                error = InstanceTerminated(f"instance {instance_id} is {found.state}; nothing to contain")
            else:
                continue
            early[instance_id] = failure(instance_id, action, error)
        return facts, early

    def _lookups(self, instance_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Ec2irError]]:
        """Each step's batched discovery, all at once; a step whose lookup fails fails on every
        instance, and the other steps go on."""
        found: dict[str, dict[str, Any]] = {}
        errors: dict[str, Ec2irError] = {}
        if not instance_ids:
            return found, errors
        with ThreadPoolExecutor(max_workers=len(STEPS)) as pool:
            asked = {step.name: pool.submit(step.lookup, self.aws, instance_ids) for step in STEPS}
            for name, future in asked.items():
                try:
                    found[name] = future.result()
                except Ec2irError as error:
                    errors[name] = error
        return found, errors

    def _name_report(self, report: RunReport, facts: dict[str, InstanceFacts] | None = None) -> None:
        """Each result's Name tag and the shown groups' names, once the work is done and for
        display only: from ``facts`` (discovery's) when given, else from one batched read."""
        if facts is None:
            try:
                facts = discover(self.aws, [r.instance_id for r in report.results]) if report.results else {}
            except Exception:  # names are display only; never let one fail a run
                facts = {}
        names = name_tags(facts.values())
        report.results = [replace(r, name=names.get(r.instance_id, "")) for r in report.results]
        report.group_names = self._group_names(report, group_names_of(facts.values()))

    def _group_names(self, report: RunReport, known: dict[str, str]) -> dict[str, str]:
        """The name of every group the report shows, for display only: those ``known`` already
        (from discovery), the rest in one batched read once the work is done. A failed read
        leaves the ids alone: names are never worth a failure."""
        shown = {g for r in report.results for groups in r.enis.values() for g in groups}
        shown |= {g for v in report.groups.values() for g in (v.isolation_group_id, v.forensic_group_id)}
        shown.discard("")
        names = {g: known[g] for g in shown if g in known}
        try:
            found = describe_by_id(self.aws, shown - set(names))
        except Exception:  # names are display only; never let one fail a run
            found = {}
        names.update({g: seen.name for g, seen in found.items() if seen.name})
        return dict(sorted(names.items()))

    def names(self, holds: Iterable[Hold]) -> tuple[dict[str, str], dict[str, str]]:
        """``status``: each held instance's Name tag and each original group's name, for display
        only, in one batched read of each after the state table's; a failed read shows ids alone."""
        holds = list(holds)
        instance_ids = sorted({hold.instance_id for hold in holds})
        group_ids = {g for hold in holds for groups in hold.originals.values() for g in groups}
        instances: dict[str, str] = {}
        groups: dict[str, str] = {}
        with contextlib.suppress(Exception):  # display only
            instances = name_tags(discover(self.aws, instance_ids).values()) if instance_ids else {}
        with contextlib.suppress(Exception):
            groups = {g: seen.name for g, seen in describe_by_id(self.aws, group_ids).items() if seen.name}
        return instances, groups

    @staticmethod
    def _note_groups(report: RunReport, cidr: str | None) -> None:
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

    def _capture(self, ctx: Context, target: Target, log: StepLog, skip: set[str]) -> dict[str, Record]:
        """Each step's originals; a step that cannot read them fails here and changes nothing."""
        records: dict[str, Record] = {}
        for step in STEPS:
            if step is NETWORK or step.name in skip or not step.cheap_capture:
                continue
            try:
                record = step.capture(ctx, target)
            except Ec2irError as error:
                log.fail(step.name, error)
                continue
            if record is not None:
                records[step.name] = record
        return records

    def _yield_to_release(self, ctx: Context, containment: Containment, logs: list[StepLog]) -> None:
        """If a release of this very hold ran while this run worked on it, the release wins.

        What ``logs`` say this run applied is undone again, from the records in the hold, so the
        instance ends exactly as the release left it; then ReleaseInProgress is raised."""
        hold = containment.hold
        current = self.store.get(hold.instance_id)
        if current is None or current.recorded_at != hold.recorded_at:
            return
        if current.status not in (HoldStatus.RELEASING, HoldStatus.RELEASED):
            return
        records = {**current.steps, NETWORK.name: {"originals": current.originals}}
        failures: list[tuple[str, Ec2irError]] = []
        for step in reversed(STEPS):
            record = records.get(step.name)
            if record is not None and any(log.outcomes.get(step.name, "").startswith("done") for log in logs):
                try:
                    step.undo(ctx, hold.instance_id, record)
                except Ec2irError as error:
                    failures.append((step.name, error))
        raise ReleaseInProgress(
            f"{hold.instance_id} was released by case {current.case_id} while this run isolated it; "
            "the release stands and this run's changes were undone"
            + (f", except: {SeveralFailed(failures)}" if failures else ""),
            "isolate again if the instance must stay contained",
        )

    def _record_what_is_new(
        self, ctx: Context, target: Target, hold: Hold, log: StepLog, managed: set[str]
    ) -> Hold:
        """On an instance already held: record ENIs attached since, and steps not yet recorded.

        Conditional writes keep whatever an earlier run recorded first."""
        changed = False
        for eni in target.facts.enis:
            if eni.eni_id in hold.originals or eni.eni_id in hold.unknown_originals:
                continue
            if managed & set(eni.group_ids):  # attached since, already in one of ec2ir's groups
                changed |= self.store.add_unknown_eni(hold, eni.eni_id, eni.vpc_id)
                continue
            changed |= self.store.add_eni_originals(hold, eni.eni_id, eni.group_ids, eni.vpc_id)
        skip = set(log.errors) | set(hold.steps)
        for name, record in self._capture(ctx, target, log, skip).items():
            changed |= self.store.add_step_record(hold, name, record)
        if not changed:
            return hold
        return self.store.get(target.instance_id) or hold

    # -- plan (dry run) ---------------------------------------------------------------------------

    def plan(
        self,
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
        report = PlanReport(case, self.aws.caller_arn())
        ctx = Context(self.aws, case, report.actor, now(), options)
        table_exists = self.store.exists()
        needed = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"}
        if not table_exists:
            report.setup.append(f"create the state table {self.store.table} (on-demand, KMS-encrypted)")
            needed |= {"dynamodb:CreateTable", "dynamodb:TagResource"}

        facts, early = self._discover(ids, "isolate")
        report.refused = list(early.values())
        report.names = name_tags(facts.values())
        live = [facts[i] for i in ids if i not in early]
        lookups, lookup_errors = self._lookups([f.instance_id for f in live])
        groups: dict[str, VpcGroups] = {}
        probes: list[tuple[str, dict[str, Any]]] = []
        records = self.store.group_records(self.aws.region()) if table_exists else {}
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

        episodes: dict[str, str] = {}  # each instance's evidence episode: its hold's, or this run's
        for instance in live:
            target = Target(
                instance,
                groups,
                lookups={name: hits.get(instance.instance_id) for name, hits in lookups.items()},
            )
            hold = self.store.get(instance.instance_id) if table_exists else None
            stored = dict(hold.steps) if hold else {}
            if hold:
                stored[NETWORK.name] = {"originals": hold.originals}
            report.instances[instance.instance_id] = [
                self._plan_step(ctx, step, replace(target, stored=stored), lookup_errors) for step in STEPS
            ]
            episodes[instance.instance_id] = hold.recorded_at if hold else ctx.started_at
        report.eni_paths = self._eni_paths(live, groups, options.untrack)
        if options.evidence:  # after the cut: the same calls collect makes
            needed |= self._plan_evidence(report, ctx, live, episodes, report.evidence)

        if options.block_ips:  # the deny entries the run would add, and the checks that refuse it
            lines, entry_probes = nacl.plan_blocks(
                self.aws,
                self.store,
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
        report.checks = self._probe_every_call(probes)
        unprobed = ({call.action for call in calls} | needed) - set(report.checks)
        report.checks |= simulate(self.aws, report.actor, unprobed)
        return report

    def _eni_paths(
        self, live: list[InstanceFacts], groups: dict[str, VpcGroups], untrack: bool
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
            seen = describe_by_id(self.aws, known) if known else {}
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

    def _plan_evidence(
        self,
        report: PlanReport,
        ctx: Context,
        live: list[InstanceFacts],
        episodes: dict[str, str],
        into: dict[str, list[PlannedStep]],
    ) -> set[str]:
        """The evidence a run would take of each instance, and where it would go, into ``into``;
        only a HeadBucket is sent. Returns the IAM actions it needs besides the calls listed."""
        from ec2ir.evidence.memory import IMAGE_NAME

        options = ctx.options
        account = account_of(report.actor)
        name = options.evidence_bucket or self.evidence_bucket or default_bucket(account, self.aws.region())
        setup, refusal = planned_bucket(self.aws, name, account, options.object_lock_days)
        report.evidence_bucket = name
        report.evidence_refusal = refusal
        report.setup.append(setup or f"no evidence would be collected: {refusal}")
        needed = set(EVIDENCE_PERMISSIONS["evidence bucket"]) | {"dynamodb:BatchWriteItem"}
        if setup.startswith("create"):
            needed |= set(EVIDENCE_PERMISSIONS[BUCKET_CREATION])
        for instance in live:
            episode = episodes.get(instance.instance_id) or ctx.started_at
            prefix = key_prefix(ctx.case_id, instance.instance_id, episode)
            stored = f"s3://{name}/{prefix}"
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
                        f"at most {options.memory_timeout:g}s; an instance SSM does not manage is "
                        "noted and skipped",
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
                    (PlannedCall("dynamodb:BatchWriteItem", (self.store.table,)),),
                )
            )
            into[instance.instance_id] = steps
        calls = {call.action for steps in into.values() for planned in steps for call in planned.calls}
        return needed | calls

    def _probe_every_call(self, probes: list[tuple[str, dict[str, Any]]]) -> dict[str, Check]:
        """Send every distinct planned EC2 call with DryRun=True; permissions can differ per
        resource (say, by VPC), so an action counts as allowed only if every call of it was."""
        distinct = list({json.dumps([op, args], sort_keys=True): (op, args) for op, args in probes}.values())
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(distinct) or 1))) as pool:
            checks = list(pool.map(lambda probe: probe_ec2(self.aws, *probe), distinct))
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

    def _plan_step(
        self, ctx: Context, step: Step, target: Target, lookup_errors: dict[str, Ec2irError]
    ) -> PlannedStep:
        if step.name in lookup_errors:
            return PlannedStep(step.name, step.title, note=f"cannot plan: {lookup_errors[step.name]}")
        record = target.stored.get(step.name)
        note = "originals already recorded by an earlier run" if record else ""
        if record is None:
            try:
                record = NETWORK.capture(ctx, target) if step is NETWORK else step.capture(ctx, target)
            except Ec2irError as error:
                return PlannedStep(step.name, step.title, note=f"cannot read the originals: {error}")
        if record is None:
            return PlannedStep(step.name, step.title, note="nothing to do for this instance")
        return PlannedStep(step.name, step.title, tuple(step.plan(ctx, target, record)), note)

    # -- release -------------------------------------------------------------------------------

    def release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        rejoin: bool = False,
        progress: Progress | None = None,
        replace_groups: Iterable[str] = (),
        skip_missing_groups: bool = False,
    ) -> RunReport:
        """``replace_groups`` (``OLD=NEW``) and ``skip_missing_groups``: what to do about original
        groups deleted since isolation (ec2ir.containment.restore)."""
        fixes = restore.GroupFixes.parse(replace_groups, skip_missing_groups)
        ids, report = self._start("release", instance_ids, case_id)
        ctx = Context(self.aws, report.case_id, report.actor, now(), Options(rejoin=rejoin))
        gone, provenance, fixes = self._before_release(ids, report, fixes)
        done = run_each(
            ids,
            lambda i: self._release_one(ctx, i, i in gone, provenance, fixes),
            "release",
            self.concurrency,
            progress,
            self.interrupt,
        )
        report.results = [done[i] for i in ids]
        # the case's network ACL entries, from every ACL that serves none of its held instances
        # (after Ctrl-C, left to the next release, which removes them by the same rule)
        if not self.interrupt.stops("removing the case's network ACL entries of released subnets"):
            nacl.after_release(
                self.aws, self.store, report, functools.partial(self._journal_aside, notes=report.notes)
            )
        self._journal(self._refusals(report), report.notes)
        self._name_report(report)  # read after the release: the groups each ENI is back in
        return report

    def _before_release(
        self, ids: list[str], report: RunReport, fixes: restore.GroupFixes
    ) -> tuple[set[str], Provenance | None, restore.GroupFixes]:
        """What every release (and its dry run) reads before any change: which instances are
        gone, what the journal proves of their holds, and the stand-ins for deleted groups."""
        try:
            facts = discover(self.aws, ids)
            gone = {i for i in ids if i not in facts or facts[i].state in GONE_STATES}
        except Ec2irError as error:  # not knowing what is terminated must not block a release
            gone = set()
            report.notes.append(f"could not check which instances still exist: {error}")
        provenance = self._provenance(report.case_id, ids)
        own = provenance.own_groups if provenance else frozenset()
        return gone, provenance, fixes.check_live(self.aws, own)

    def plan_release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        rejoin: bool = False,
        replace_groups: Iterable[str] = (),
        skip_missing_groups: bool = False,
    ) -> RunReport:
        """``release --dry-run``: each instance's plan as its result (the groups each ENI would get
        back, each step's undo in words, or why it would be refused); nothing is changed."""
        fixes = restore.GroupFixes.parse(replace_groups, skip_missing_groups)
        ids, report = self._start("release", instance_ids, case_id)
        gone, provenance, fixes = self._before_release(ids, report, fixes)

        def plan_one(instance_id: str) -> InstanceResult:
            hold = self._releasable(self.store.get(instance_id), instance_id, report.case_id)
            warnings = self._check_originals(hold, provenance)
            existing = provenance.group_vpcs if provenance else {}
            restoring = restore.restoration(self.aws, hold, existing, fixes, instance_id in gone)
            return restore.planned(instance_id, hold, restoring, rejoin, instance_id in gone, warnings)

        done = run_each(ids, plan_one, "release", self.concurrency, None)
        report.results = [done[i] for i in ids]
        self._name_report(report)
        return report

    def _provenance(self, case_id: str, ids: list[str], released: bool = False) -> Provenance | None:
        """What the case journal and its evidence prove of the holds about to be released (or,
        with ``released``, rejoined): read once for the run (one query, one batched read of holds
        and of groups, and each episode's few metadata objects), never per ENI."""
        holds = [
            hold
            for hold in self.store.get_many(ids).values()
            if hold.case_id == case_id and (hold.status is HoldStatus.RELEASED) == released
        ]
        if not holds:
            return None
        return Provenance.gather(
            self.evidence_aws,
            self.store.journal_records(case_id),
            holds,
            self.store.group_records(self.aws.region()),
            self.concurrency,
        )

    @staticmethod
    def _check_originals(hold: Hold, provenance: Provenance | None) -> tuple[str, ...]:
        """Refuse a hold whose originals differ from what isolation captured; the warnings."""
        if provenance is None:
            raise OriginalsTampered(
                f"{hold.instance_id}: its hold could not be checked against the case journal",
                "nothing was changed; run release again",
            )
        differences, warnings = provenance.check(hold)
        if differences:
            raise OriginalsTampered(
                f"{hold.instance_id}: the hold's originals are not what isolation captured: "
                + "; ".join(differences),
                "nothing was changed; someone rewrote the hold in the state table: restore it from the "
                "case journal (`ec2ir report`) and the evidence, and find out who wrote it",
            )
        return tuple(warnings)

    def _release_one(
        self,
        ctx: Context,
        instance_id: str,
        terminated: bool = False,
        provenance: Provenance | None = None,
        fixes: restore.GroupFixes | None = None,
    ) -> InstanceResult:
        hold = self._releasable(self.store.get(instance_id), instance_id, ctx.case_id)
        unproven = self._check_originals(hold, provenance)
        existing, fixes = (provenance.group_vpcs if provenance else {}), fixes or restore.GroupFixes()
        strict = bool(fixes.replace or fixes.skip_missing)  # without a flag, restore what can be
        restoring = restore.restoration(self.aws, hold, existing, fixes, terminated, strict)
        try:
            # The hold as this move left it: a record an isolate wrote since the read above is in it.
            checked, hold = hold, self.store.transition(hold, ACTIVE_STATUSES, HoldStatus.RELEASING)
            if (hold.originals, hold.steps, hold.eni_vpcs) != (
                checked.originals,
                checked.steps,
                checked.eni_vpcs,
            ):
                unproven = self._check_originals(hold, provenance)
                restoring = restore.restoration(self.aws, hold, existing, fixes, terminated, strict)
        except StaleRecord:
            current = self.store.get(instance_id)
            if (
                current is None
                or current.recorded_at != hold.recorded_at
                or current.status is not HoldStatus.RELEASED
            ):
                raise
            # A concurrent release of the same hold finished first: the instance is released.
            return InstanceResult(
                instance_id,
                "release",
                ok=True,
                detail=f"released by a concurrent run ({current.released_at}, {current.released_by})",
                enis=dict(hold.originals),
            )
        records = dict(hold.steps)
        records[NETWORK.name] = {"originals": restoring.originals}
        log = StepLog()
        for step in reversed(STEPS):
            record = records.get(step.name)
            if record is None:
                log.skip(step.name, "nothing was recorded")
                continue
            if terminated and step.acts_on_instance:
                log.skip(step.name, "the instance is terminated: nothing to put back")
                continue
            log.run(step.name, functools.partial(step.undo, ctx, instance_id, record), instance_id)
        restored = {
            eni: groups
            for eni, groups in restoring.originals.items()
            if NETWORK.name not in log.errors and not terminated
        }
        if restored and restoring.changes:  # the network step's entry says what it put back
            log.outcomes[NETWORK.name] += f" ({restoring.summary})"
        outcome = "done: " if restored else "not done (the network step failed): "
        log.extra += [(action, now(), outcome + what, []) for action, what in restoring.changes]
        if not log.errors:
            try:
                self.store.transition(
                    hold,
                    (HoldStatus.RELEASING,),
                    HoldStatus.RELEASED,
                    released_at=now(),
                    released_by=ctx.actor,
                )
            except StaleRecord:
                current = self.store.get(instance_id)
                finished_by_racer = (
                    current is not None
                    and current.recorded_at == hold.recorded_at
                    and current.status is HoldStatus.RELEASED
                )
                if not finished_by_racer:
                    raise
        summary = (
            "instance terminated: hold closed, nothing left to restore on it"
            if terminated
            else "; ".join(filter(None, (f"{len(hold.originals)} ENI(s) restored", restoring.summary)))
        )
        self._journal(log.journal_entries(ctx, instance_id, "release"), log=log)
        warnings = unproven + tuple(
            f"{eni}: NOT restored: its original groups were never known, so it stays in the isolation "
            "group; give it its groups by hand"
            for eni in hold.unknown_originals
            if not terminated
        )
        return log.result(instance_id, "release", summary, enis=restored, warnings=warnings)

    def rejoin(
        self, instance_ids: Iterable[str], case_id: str, progress: Progress | None = None
    ) -> RunReport:
        """Released instances back into their Auto Scaling group and load balancers, from their
        holds' records (ec2ir.containment.rejoin); each change journaled like release's."""
        from ec2ir.containment import rejoin

        ids, report = self._start("rejoin", instance_ids, case_id)
        ctx = Context(self.aws, report.case_id, report.actor, now(), Options(rejoin=True))
        facts = discover(self.aws, ids)
        holds = self.store.get_many(ids)
        provenance = self._provenance(report.case_id, ids, released=True)

        def rejoin_one(instance_id: str) -> InstanceResult:
            hold = rejoin.released_hold(instance_id, holds.get(instance_id), report.case_id)
            unproven = self._check_originals(hold, provenance)
            log = StepLog()

            def still_released() -> None:
                current = rejoin.released_hold(instance_id, self.store.get(instance_id), report.case_id)
                if current.recorded_at != hold.recorded_at:
                    raise StaleRecord(
                        f"{instance_id} was isolated and released again during this rejoin",
                        "run rejoin again: it acts on the latest release's records",
                    )

            try:
                summary = rejoin.rejoin_one(
                    ctx, instance_id, hold, facts.get(instance_id), log, still_released
                )
            finally:  # what was put back before a refusal is journaled all the same
                self._journal(log.journal_entries(ctx, instance_id, "rejoin"), log=log)
            return log.result(instance_id, "rejoin", summary, warnings=unproven)

        done = run_each(ids, rejoin_one, "rejoin", self.concurrency, progress, self.interrupt)
        report.results = [done[i] for i in ids]
        self._journal(self._refusals(report), report.notes)
        self._name_report(report, facts)
        return report

    # -- evidence alone ------------------------------------------------------------------------

    def collect(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        options: Options | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        """Snapshots and metadata (and memory, if asked) without isolating: each run takes a
        fresh set, journaled under the case."""
        options = replace(options or Options(), evidence=True)
        validate_evidence_options(options)
        ids = validate.instance_ids(list(instance_ids))
        case = validate.case_id(case_id)
        with ThreadPoolExecutor(max_workers=5) as pool:
            asked_actor = pool.submit(self.aws.caller_arn)
            asked_table = pool.submit(self.store.ensure_table)
            asked_facts = pool.submit(self._discover, ids, "collect")
            asked_lookups = pool.submit(self._lookups, ids)
            volumes = pool.submit(volumes_of, self.evidence_aws, ids)
            actor = asked_actor.result()
            asked_table.result()
            facts, early = asked_facts.result()
            lookups, lookup_errors = asked_lookups.result()
            collection = self._collection(actor, options, pool, volumes)
        report = RunReport("collect", case, actor, results=[])
        ctx = Context(self.aws, case, actor, now(), options)
        targets = {
            i: Target(facts[i], {}, lookups={name: hits.get(i) for name, hits in lookups.items()})
            for i in ids
            if i not in early
        }
        memory = self._acquire_memory(ctx, list(targets.values()), collection) if options.memory else {}

        def collect_one(instance_id: str) -> InstanceResult:
            target = targets[instance_id]
            log = memory.get(instance_id) or StepLog()
            if self.interrupt.is_set() and not log.evidence:  # Ctrl-C before anything was taken
                return not_started(instance_id, "collect")
            subject = target.instance_id
            if not self._stopped(log, SNAPSHOTS):
                log.run(SNAPSHOTS, lambda: self._snapshot(ctx, target.facts, ctx.started_at, log), subject)
            if not self._stopped(log, METADATA):
                log.run(
                    METADATA,
                    lambda: self._capture_metadata(ctx, target, collection, ctx.started_at, log),
                    subject,
                )
            # always journaled: a memory image taken before a Ctrl-C is evidence like any other
            self._journal(log.journal_entries(ctx, instance_id, "collect"), log=log)
            return log.result(instance_id, "collect", "evidence collected", evidence_counts=True)

        done = run_each(list(targets), collect_one, "collect", self.concurrency, progress)
        report.results = [early.get(i) or done[i] for i in ids]
        report.notes.extend(f"lookup {name} failed: {error}" for name, error in lookup_errors.items())
        report.notes.extend(collection.bucket.notes)
        self._journal(self._refusals(report), report.notes)
        self._name_report(report, facts)
        return report

    def plan_collect(
        self, instance_ids: Iterable[str], case_id: str, options: Options | None = None
    ) -> PlanReport:
        """Everything ``collect`` would do (``collect --dry-run``), refusing what it refuses, with
        only reads: no snapshot, no object, no journal entry, no state table."""
        options = replace(options or Options(), evidence=True)
        validate_evidence_options(options)
        ids = validate.instance_ids(list(instance_ids))
        case = validate.case_id(case_id)
        report = PlanReport(case, self.aws.caller_arn(), action="collect")
        ctx = Context(self.aws, case, report.actor, now(), options)
        if not self.store.exists():
            report.setup.append(f"create the state table {self.store.table} (on-demand, KMS-encrypted)")
        facts, early = self._discover(ids, "collect")
        report.refused = list(early.values())
        live = [facts[i] for i in ids if i not in early]
        report.names = name_tags(live)  # display only, from the discovery just made
        needed = self._plan_evidence(report, ctx, live, {}, report.instances)
        if report.evidence_refusal:
            for instance in live:
                report.instances[instance.instance_id].insert(
                    0, PlannedStep("evidence", "would fail", note=report.evidence_refusal)
                )
        report.checks = simulate(self.aws, report.actor, needed | {"dynamodb:GetItem", "dynamodb:PutItem"})
        return report

    def verify(self, case_id: str) -> list[Finding]:
        """Every piece of evidence the case's journal names, checked against its recorded hash."""
        case = validate.case_id(case_id)
        actor = self.aws.caller_arn()
        if not self.store.exists():
            raise UsageError(f"state table {self.store.table!r} does not exist", "pass --table")
        entries = self.store.journal(case)
        if not entries:
            raise UsageError(f"case {case} has no journal in table {self.store.table!r}", "check the case id")
        refs = list({(r.kind, r.location, r.version_id): r for e in entries for r in e.evidence}.values())
        stored = self.store.journal_records(case)
        pointer = self.store.chain_pointer(case)
        buckets = journal_buckets(stored, str(pointer.get("bucket", "")), self.evidence_bucket)
        with request_ids() as ids:
            findings = verify_refs(self.aws, refs, case)
            # the journal itself: each entry against its key, each run's chain, each head the
            # evidence bucket keeps (whole while the bucket's object versions are)
            findings += check_chain(stored) + check_heads(self.aws, buckets, case, stored)
        bad = [f for f in findings if not f.ok]
        named = "; ".join(f"{f.status} {f.ref.location}" for f in bad[:REFUSALS_NAMED])
        more = f" and {len(bad) - REFUSALS_NAMED} more" if len(bad) > REFUSALS_NAMED else ""
        result = (
            f"FAILED: {len(bad)} of {len(findings)} piece(s) of evidence or journal do not match: "
            + named
            + more
            if bad
            else f"done: {len(findings)} piece(s) of evidence intact"
        )
        # one entry however large the case: its request ids are capped to stay far below 400 KB
        self._journal([JournalEntry(now(), case, actor, case, "verify", result, tuple(ids[:100]))])
        return findings

    # -- network ACL blocks alone (ec2ir.containment.nacl) ---------------------------------------------------

    def block_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """``ec2ir block-ip``: deny addresses at the subnet edge of every instance the case holds."""
        return self._edge("block-ip", cidrs, case_id, dry_run)

    def unblock_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """``ec2ir unblock-ip``: remove the case's deny entries for these addresses, wherever they are."""
        return self._edge("unblock-ip", cidrs, case_id, dry_run)

    def _edge(self, action: str, cidrs: Iterable[str], case_id: str, dry_run: bool) -> nacl.NaclReport:
        case = validate.case_id(case_id)
        raw = list(cidrs)
        nacl.parse_blocks(raw, skip_unsafe=False, check=action == "block-ip")  # bad input: exit 2 at once
        actor = self.aws.caller_arn()
        self.store.require()
        report = nacl.NaclReport(action, case, actor, dry_run=dry_run)
        journal = functools.partial(self._journal_aside, notes=report.notes)
        if action == "block-ip":
            nacl.block_held(self.aws, self.store, report, raw, journal)
        else:
            nacl.unblock_held(self.aws, self.store, report, raw, journal)
        self._journal([], report.notes)  # the run's journal chain heads
        return report

    # -- status --------------------------------------------------------------------------------

    def status(self, case_id: str | None = None, include_released: bool = False) -> list[Hold]:
        case = validate.case_id(case_id) if case_id is not None else None
        self.store.require()
        holds = self.store.holds(case)
        return [h for h in holds if include_released or h.status is not HoldStatus.RELEASED]

    # -- status --check -------------------------------------------------------------------------

    def check(self, case_id: str | None = None, repair: bool = False) -> CheckReport:
        """Every held instance (of one case, or all) against the live state; with ``repair``,
        re-harden the groups and re-contain what is in breach through ``isolate``, then check
        again. Each case with a breach gets a journal entry."""
        case = validate.case_id(case_id) if case_id is not None else None
        self.store.require()
        actor = self.aws.caller_arn()
        account, region = account_of(actor), self.aws.region()
        records = self.store.group_records(region)
        holds = self.store.holds(case)
        checked, breaches, notes = find_breaches(self.aws, holds, records, account)
        breaches += nacl.find_breaches(self.aws, self.store, holds)  # the cases' network ACL entries
        report = CheckReport(checked, breaches, notes=notes)
        if repair and breaches:
            self._repair(report, holds, records, account, region)
            journal = functools.partial(self._journal_aside, notes=report.notes)
            acl_cases = {b.case_id for b in breaches if b.kind in nacl.BREACH_KINDS}
            report.notes += nacl.repair(self.aws, self.store, acl_cases, actor, journal)
            held = self.store.holds(case)
            _, report.remaining, _ = find_breaches(self.aws, held, self.store.group_records(region), account)
            report.remaining += nacl.find_breaches(self.aws, self.store, held)
        by_case: dict[str, list[Breach]] = {}
        for breach in breaches:
            by_case.setdefault(breach.case_id or "", []).append(breach)
        entries = [
            JournalEntry(
                now(),
                breach_case,
                actor,
                breach_case,
                "status:check",
                f"FAILED: {len(found)} breach(es): "
                + "; ".join(f"{b.kind.value} {b.subject}: {b.detail}" for b in found[:REFUSALS_NAMED])
                + (f"; repaired: {', '.join(report.repaired.get(breach_case, []))}" if repair else ""),
            )
            for breach_case, found in by_case.items()
            if breach_case
        ]
        self._journal(entries, report.notes)
        return report

    def _repair(
        self,
        report: CheckReport,
        holds: list[Hold],
        records: dict[str, GroupRecord],
        account: str,
        region: str,
    ) -> None:
        held = {hold.instance_id: hold for hold in holds}
        vpcs = sorted({vpc for hold in holds for vpc in hold.eni_vpcs.values()} & set(records))
        seen = describe_groups(self.aws)
        for vpc in vpcs:  # each VPC's groups back to their recorded safe sets
            record = records[vpc]
            setup = GroupSetup(
                self.aws,
                self.store,
                region,
                account,
                "status-check",
                record.office_cidr or None,
                forensic=self._forensic_source(record),
                records=records,
                seen=seen,
            )
            groups, errors = ensure_groups(setup, [vpc])
            report.notes += [f"{vpc}: {change}" for g in groups.values() for change in g.repaired]
            report.notes += [f"{vpc}: could not re-harden: {error}" for error in errors.values()]
        cases: dict[str, list[str]] = {}
        for breach in report.breaches:
            if breach.subject in held:
                cases.setdefault(breach.case_id, []).append(breach.subject)
        for case, instance_ids in cases.items():
            ids = list(dict.fromkeys(instance_ids))
            first_vpc = records.get(next(iter(held[ids[0]].eni_vpcs.values()), ""))
            source = self._forensic_source(first_vpc) if first_vpc else None
            options = Options(
                evidence=False,
                forensic_group=source.group_id if source else "",
                forensic_group_owner=source.owner if source else "",
            )
            repaired = self.isolate(ids, case, options=options)
            report.repaired[case] = [r.instance_id for r in repaired.results if r.ok]
            report.notes += [
                f"{r.instance_id}: repair failed: {r.error_code}: {r.detail}" for r in repaired.failed
            ]

    @staticmethod
    def _forensic_source(record: GroupRecord) -> ForensicSource | None:
        if not record.forensic_source:
            return None
        return ForensicSource(record.forensic_source, record.forensic_source_owner)

    @classmethod
    def _releasable(cls, hold: Hold | None, instance_id: str, case: str) -> Hold:
        if hold is None or hold.status is HoldStatus.RELEASED:
            raise NotIsolated(
                f"{instance_id} is not isolated by ec2ir"
                + (f" (released {hold.released_at} by {hold.released_by})" if hold else ""),
                "nothing was changed; `ec2ir status` lists what is isolated"
                + ("; `ec2ir rejoin` puts a released instance back in service" if hold else ""),
            )
        cls._check_owner(hold, case)
        return hold

    @staticmethod
    def _check_owner(hold: Hold, case: str) -> None:
        if hold.case_id != case:
            raise HeldByOtherCase(
                f"{hold.instance_id} is already held by case {hold.case_id} "
                f"(since {hold.recorded_at}, by {hold.recorded_by})",
                f"work under case {hold.case_id}, or release it from that case first",
            )
