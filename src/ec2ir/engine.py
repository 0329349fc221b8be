"""The one engine behind every adapter: isolate, release and status for many instances.

Order of work for ``isolate``, per run:
  1. validate input, learn who is acting (STS), make sure the state table exists;
  2. discover every named instance in batched, paginated calls;
  3. per VPC, find or create the forensic and isolation groups and verify the isolation group;
  4. per instance, concurrently and with a bound: record the originals of every ENI (write-ahead,
     conditional), then swap each ENI to its VPC's isolation group, then mark the hold isolated.

Anything that goes wrong before step 4 raises, and nothing has changed. In step 4 each instance
succeeds or fails on its own and its result says why; one failure never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ec2ir import validate
from ec2ir.aws import Aws, discover, translated
from ec2ir.errors import (
    AwsError,
    Ec2irError,
    HeldByOtherCase,
    InstanceNotFound,
    InstanceTerminated,
    NotIsolated,
    OriginalsUnknown,
    ReleaseInProgress,
    UsageError,
)
from ec2ir.groups import ensure_vpc_groups
from ec2ir.models import (
    ACTIVE_STATUSES,
    Hold,
    HoldStatus,
    InstanceFacts,
    InstanceResult,
    VpcGroups,
)
from ec2ir.state import StateStore, now

DEFAULT_CONCURRENCY = 16
GONE_STATES = frozenset({"terminated", "shutting-down"})
ENI_GONE = "InvalidNetworkInterfaceID.NotFound"

Progress = Callable[[InstanceResult], None]


@dataclass
class RunReport:
    """The outcome of one isolate or release run, in the order the instances were named."""

    action: str
    case_id: str
    actor: str
    results: list[InstanceResult]
    groups: dict[str, VpcGroups] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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
                    "created": list(g.created),
                    "repaired": list(g.repaired),
                }
                for vpc, g in self.groups.items()
            },
            "notes": self.notes,
        }


def failure(instance_id: str, action: str, error: Exception) -> InstanceResult:
    code = error.code if isinstance(error, Ec2irError) else type(error).__name__
    return InstanceResult(instance_id, action, ok=False, detail=str(error), error_code=code)


def run_each(
    items: Iterable[str],
    work: Callable[[str], InstanceResult],
    action: str,
    concurrency: int,
    progress: Progress | None,
) -> dict[str, InstanceResult]:
    """Run ``work`` for each item on a bounded pool; every item ends with a result, never a raise."""
    items = list(items)
    results: dict[str, InstanceResult] = {}

    def guarded(item: str) -> InstanceResult:
        try:
            result = work(item)
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


def set_eni_groups(aws: Aws, eni_id: str, group_ids: tuple[str, ...]) -> None:
    # Security groups belong to ENIs. ModifyInstanceAttribute(Groups) only reaches the primary
    # ENI and EC2 rejects it outright on a multi-ENI instance, so never use it here.
    with translated("ec2", "ModifyNetworkInterfaceAttribute"):
        aws.ec2().modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=list(group_ids))


class Engine:
    def __init__(self, aws: Aws, store: StateStore, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency}")
        self.aws = aws
        self.store = store
        self.concurrency = concurrency

    def _start(self, action: str, instance_ids: Iterable[str], case_id: str) -> tuple[list[str], RunReport]:
        """Validate, learn who is acting and make sure the state table is usable: the preflight
        that every run passes before its first change."""
        named = list(instance_ids)
        ids = validate.instance_ids(named)
        case = validate.case_id(case_id)
        actor = self.aws.caller_arn()
        self.store.ensure_table()
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
        progress: Progress | None = None,
    ) -> RunReport:
        cidr = validate.office_cidr(office_cidr, allow_any_source)
        ids, report = self._start("isolate", instance_ids, case_id)
        case, actor = report.case_id, report.actor

        facts = discover(self.aws, ids)
        early: dict[str, InstanceResult] = {}
        for instance_id in ids:
            found = facts.get(instance_id)
            if found is None:
                early[instance_id] = failure(
                    instance_id,
                    "isolate",
                    InstanceNotFound(f"instance {instance_id} does not exist in this account and region"),
                )
            elif found.state in GONE_STATES:
                early[instance_id] = failure(
                    instance_id,
                    "isolate",
                    InstanceTerminated(f"instance {instance_id} is {found.state}; nothing to contain"),
                )
        live = [facts[i] for i in ids if i not in early]

        vpc_errors: dict[str, Ec2irError] = {}
        for vpc_id in sorted({vpc for f in live for vpc in f.vpc_ids}):
            try:
                report.groups[vpc_id] = ensure_vpc_groups(self.aws, vpc_id, case, cidr)
            except Ec2irError as error:
                vpc_errors[vpc_id] = error
        for vpc_id, vpc_groups in report.groups.items():
            if vpc_groups.created:
                report.notes.append(f"{vpc_id}: created the {' and '.join(vpc_groups.created)} group(s)")
            report.notes.extend(f"{vpc_id}: {change}" for change in vpc_groups.repaired)
            if cidr is None and "forensic" in vpc_groups.created:
                report.notes.append(
                    f"{vpc_id}: the new forensic group {vpc_groups.forensic_group_id} admits nobody "
                    "until you run isolate again with --office-cidr"
                )

        def work(instance_id: str) -> InstanceResult:
            instance = facts[instance_id]
            broken = [vpc_errors[v] for v in sorted(instance.vpc_ids) if v in vpc_errors]
            if broken:
                raise broken[0]
            return self._isolate_one(instance, case, actor, report.groups)

        done = run_each([f.instance_id for f in live], work, "isolate", self.concurrency, progress)
        if progress:
            for result in early.values():
                progress(result)
        report.results = [early.get(i) or done[i] for i in ids]
        return report

    def _isolate_one(
        self, facts: InstanceFacts, case: str, actor: str, groups: dict[str, VpcGroups]
    ) -> InstanceResult:
        managed = {
            group_id
            for vpc in facts.vpc_ids
            for group_id in (groups[vpc].forensic_group_id, groups[vpc].isolation_group_id)
        }
        tainted = [eni.eni_id for eni in facts.enis if managed & set(eni.group_ids)]
        created = False
        if tainted:
            # An ENI already in an ec2ir group must never have that group recorded as original.
            hold = self.store.get(facts.instance_id)
            if hold is None or hold.status not in ACTIVE_STATUSES:
                raise OriginalsUnknown(
                    f"{facts.instance_id}: ENI {', '.join(tainted)} is already in an ec2ir group "
                    "but no active hold records its original groups",
                    "restore its groups by hand from your own records, then isolate again",
                )
        else:
            hold, created = self.store.record_originals(facts, case, actor)
        self._check_owner(hold, case)
        if hold.status is HoldStatus.RELEASING:
            raise ReleaseInProgress(
                f"{facts.instance_id} is being released by case {hold.case_id} (or a release was "
                "interrupted)",
                "run `ec2ir release` to finish it, then isolate again",
            )

        for eni in facts.enis:
            if eni.eni_id in hold.originals:
                continue
            if managed & set(eni.group_ids):
                raise OriginalsUnknown(
                    f"{facts.instance_id}: ENI {eni.eni_id} was attached after isolation and is "
                    "already in an ec2ir group; its originals are unknown"
                )
            self.store.add_eni_originals(hold, eni.eni_id, eni.group_ids, eni.vpc_id)

        swapped: dict[str, tuple[str, ...]] = {}
        for eni in facts.enis:
            isolation = (groups[eni.vpc_id].isolation_group_id,)
            if eni.group_ids != isolation:
                set_eni_groups(self.aws, eni.eni_id, isolation)
            swapped[eni.eni_id] = isolation
        self.store.transition(
            hold,
            (HoldStatus.ISOLATING, HoldStatus.ISOLATED),
            HoldStatus.ISOLATED,
            isolated_at=hold.isolated_at or now(),
        )
        kept = f"already held; originals kept from {hold.recorded_at}"
        return InstanceResult(
            facts.instance_id,
            "isolate",
            ok=True,
            detail=f"{len(swapped)} ENI(s) isolated" if created else kept,
            enis=swapped,
        )

    # -- release -------------------------------------------------------------------------------

    def release(
        self, instance_ids: Iterable[str], case_id: str, progress: Progress | None = None
    ) -> RunReport:
        ids, report = self._start("release", instance_ids, case_id)
        done = run_each(
            ids,
            lambda i: self._release_one(i, report.case_id, report.actor),
            "release",
            self.concurrency,
            progress,
        )
        report.results = [done[i] for i in ids]
        return report

    def _release_one(self, instance_id: str, case: str, actor: str) -> InstanceResult:
        hold = self.store.get(instance_id)
        if hold is None or hold.status is HoldStatus.RELEASED:
            raise NotIsolated(
                f"{instance_id} is not isolated by ec2ir"
                + (f" (released {hold.released_at} by {hold.released_by})" if hold else ""),
                "nothing was changed; `ec2ir status` lists what is isolated",
            )
        self._check_owner(hold, case)
        self.store.transition(hold, ACTIVE_STATUSES, HoldStatus.RELEASING)
        restored: dict[str, tuple[str, ...]] = {}
        gone: list[str] = []
        for eni_id, originals in hold.originals.items():
            try:
                set_eni_groups(self.aws, eni_id, originals)
                restored[eni_id] = originals
            except AwsError as error:
                if error.code != ENI_GONE:
                    raise
                gone.append(eni_id)
        self.store.transition(
            hold, (HoldStatus.RELEASING,), HoldStatus.RELEASED, released_at=now(), released_by=actor
        )
        detail = f"{len(restored)} ENI(s) restored to their original groups"
        if gone:
            detail += f"; {', '.join(gone)} no longer exist(s)"
        return InstanceResult(instance_id, "release", ok=True, detail=detail, enis=restored)

    # -- status --------------------------------------------------------------------------------

    def status(self, case_id: str | None = None, include_released: bool = False) -> list[Hold]:
        case = validate.case_id(case_id) if case_id is not None else None
        self.store.ensure_table()
        holds = self.store.holds(case)
        return [h for h in holds if include_released or h.status is not HoldStatus.RELEASED]

    @staticmethod
    def _check_owner(hold: Hold, case: str) -> None:
        if hold.case_id != case:
            raise HeldByOtherCase(
                f"{hold.instance_id} is already held by case {hold.case_id} "
                f"(since {hold.recorded_at}, by {hold.recorded_by})",
                f"work under case {hold.case_id}, or release it from that case first",
            )
