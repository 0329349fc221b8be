"""The one engine behind every adapter: isolate, release, plan and status for many instances.

Order of work for ``isolate``, per run:
  1. validate input, learn who is acting (STS), make sure the state table exists;
  2. discover every named instance, and each step's batched lookups (Auto Scaling membership,
     load balancers, instance profiles), in as few paginated calls as the APIs allow;
  3. per VPC, find or create the forensic, isolation and allow-all groups and verify their rules;
  4. per instance, concurrently and with a bound: capture what every step will change and write
     it all to the state table in one conditional put (write-ahead), then run the steps in order
     (``ec2ir.steps.STEPS``), then mark the hold isolated once the network step succeeded.

Anything that goes wrong before step 4 raises, and nothing has changed. In step 4 each instance
succeeds or fails on its own; a failed step is named in the result and the later steps still run,
so the instance is contained as far as it can be. Release undoes the recorded steps in reverse.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

from ec2ir import validate
from ec2ir.aws import Aws, discover
from ec2ir.errors import (
    Ec2irError,
    HeldByOtherCase,
    InstanceNotFound,
    InstanceTerminated,
    NotIsolated,
    OriginalsUnknown,
    ReleaseInProgress,
    SeveralFailed,
    StaleRecord,
    UsageError,
)
from ec2ir.groups import ForensicSource, ensure_groups, find_groups, find_groups_in
from ec2ir.models import ACTIVE_STATUSES, Hold, HoldStatus, InstanceFacts, InstanceResult, VpcGroups
from ec2ir.permissions import ALLOWED, DENIED, NOT_CHECKED, Check, probe_ec2, simulate
from ec2ir.state import StateStore, now
from ec2ir.steps import (
    AFTER,
    ALONGSIDE,
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

DEFAULT_CONCURRENCY = 16
GONE_STATES = frozenset({"terminated", "shutting-down"})

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
                    "allow_all_group_id": g.allow_all_group_id,
                    "created": list(g.created),
                    "repaired": list(g.repaired),
                }
                for vpc, g in self.groups.items()
            },
            "notes": self.notes,
        }


def failure(instance_id: str, action: str, error: Exception, **extra: Any) -> InstanceResult:
    code = error.code if isinstance(error, Ec2irError) else type(error).__name__
    return InstanceResult(instance_id, action, ok=False, detail=str(error), error_code=code, **extra)


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


@dataclass
class StepLog:
    """What each step did to one instance; the first failure sets the result's error code."""

    outcomes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, Ec2irError] = field(default_factory=dict)

    def run(self, step: Step, action: Callable[[], str]) -> bool:
        try:
            self.outcomes[step.name] = "done: " + action()
            return True
        except Ec2irError as error:
            self.fail(step, error)
            return False

    def fail(self, step: Step, error: Ec2irError) -> None:
        self.outcomes[step.name] = f"FAILED: {error}"
        self.errors[step.name] = error

    def skip(self, step: Step, why: str) -> None:
        self.outcomes[step.name] = f"skipped: {why}"

    def result(self, instance_id: str, action: str, summary: str, **extra: Any) -> InstanceResult:
        if not self.errors:
            return InstanceResult(instance_id, action, ok=True, detail=summary, steps=self.outcomes, **extra)
        name, error = next(iter(self.errors.items()))
        failed = ", ".join(self.errors)
        return InstanceResult(
            instance_id,
            action,
            ok=False,
            detail=f"step(s) {failed} failed; {name}: {error}",
            error_code=error.code,
            steps=self.outcomes,
            **extra,
        )


@dataclass(frozen=True)
class PlannedStep:
    step: str
    title: str
    calls: tuple[PlannedCall, ...] = ()
    note: str = ""


@dataclass
class PlanReport:
    """What ``isolate`` would do, per instance and step, and whether the caller may do it."""

    case_id: str
    actor: str
    setup: list[str] = field(default_factory=list)
    instances: dict[str, list[PlannedStep]] = field(default_factory=dict)
    refused: list[InstanceResult] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def denied(self) -> list[Check]:
        return [check for check in self.checks.values() if check.verdict == DENIED]

    def as_dict(self) -> dict[str, object]:
        return {
            "case_id": self.case_id,
            "actor": self.actor,
            "setup": self.setup,
            "instances": {
                instance_id: [
                    {
                        "step": planned.step,
                        "title": planned.title,
                        "note": planned.note,
                        "calls": [
                            {"action": c.action, "resources": list(c.resources)} for c in planned.calls
                        ],
                    }
                    for planned in steps
                ]
                for instance_id, steps in self.instances.items()
            },
            "refused": [result.as_dict() for result in self.refused],
            "permissions": {a: {"verdict": c.verdict, "how": c.how} for a, c in sorted(self.checks.items())},
        }


ALONGSIDE_STEPS = [step for step in STEPS if step.phase == ALONGSIDE]


@dataclass
class Containment:
    """One instance in the middle of ``isolate``: its hold, and what each phase did."""

    target: Target
    hold: Hold
    created: bool
    log: StepLog  # the urgent steps, and lookup failures
    alongside: list[Future[StepLog]] = field(default_factory=list)

    def result(self, after: Future[StepLog]) -> InstanceResult:
        merged = StepLog()
        logs = [self.log, *(future.result() for future in self.alongside), after.result()]
        for step in STEPS:  # report in the steps' own order
            for log in logs:
                if step.name in log.outcomes:
                    merged.outcomes[step.name] = log.outcomes[step.name]
                if step.name in log.errors:
                    merged.errors[step.name] = log.errors[step.name]
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
        return merged.result(facts.instance_id, "isolate", summary, enis=isolated)


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
        options: Options | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        options = options or Options()
        cidr = validate.office_cidr(office_cidr, allow_any_source)
        validate.forensic_group(options.forensic_group, options.forensic_group_owner)
        named = list(instance_ids)
        ids = validate.instance_ids(named)
        case = validate.case_id(case_id)

        # Everything that needs only the ids goes out at once: one round trip, not seven.
        with ThreadPoolExecutor(max_workers=5) as pool:
            asked_actor = pool.submit(self.aws.caller_arn)
            asked_table = pool.submit(self.store.ensure_table)
            asked_facts = pool.submit(self._discover, ids, "isolate")
            asked_lookups = pool.submit(self._lookups, ids)
            asked_groups = pool.submit(find_groups_in, self.aws, None)  # every VPC's, by tag
            actor = asked_actor.result()
            asked_table.result()
            facts, early = asked_facts.result()
            lookups, lookup_errors = asked_lookups.result()
            found_groups = asked_groups.result()
        report = RunReport("isolate", case, actor, results=[])
        if len(ids) < len(named):
            report.notes.append(f"ignored {len(named) - len(ids)} repeated instance id(s)")
        ctx = Context(self.aws, case, actor, now(), options)
        live = [facts[i] for i in ids if i not in early]

        vpcs = sorted({vpc for f in live for vpc in f.vpc_ids})
        report.groups, vpc_errors = ensure_groups(
            self.aws,
            vpcs,
            case,
            cidr,
            untrack=options.untrack,
            found={v: found_groups.get(v, {}) for v in vpcs},
            forensic=ForensicSource(options.forensic_group, options.forensic_group_owner)
            if options.forensic_group
            else None,
        )
        self._note_groups(report, cidr)
        if not options.untrack:
            report.notes.append(
                "--no-untrack: connections EC2 already tracks (an attacker's open shell) survive the swap"
            )

        def target_of(instance: InstanceFacts) -> Target:
            found = {name: hits.get(instance.instance_id) for name, hits in lookups.items()}
            return Target(instance, report.groups, lookups=found)

        done = self._contain_all(ctx, [target_of(f) for f in live], vpc_errors, lookup_errors, progress)
        if progress:
            for result in early.values():
                progress(result)
        report.results = [early.get(i) or done[i] for i in ids]
        return report

    def _contain_all(
        self,
        ctx: Context,
        targets: list[Target],
        vpc_errors: dict[str, Ec2irError],
        lookup_errors: dict[str, Ec2irError],
        progress: Progress | None,
    ) -> dict[str, InstanceResult]:
        """Cut every instance off first, then do the rest.

        Two bounded pools: the urgent one only records and cuts (autoscaling, network), so the
        last instance's cut never queues behind anyone's tags, load balancers or credentials;
        the other runs evidence protection alongside the cut and the after-steps once it is done.
        """
        results: dict[str, InstanceResult] = {}
        workers = max(1, min(self.concurrency, len(targets) or 1))
        with ThreadPoolExecutor(workers) as urgent, ThreadPoolExecutor(workers) as background:

            def cut(target: Target) -> Containment:
                broken = [vpc_errors[v] for v in sorted(target.facts.vpc_ids) if v in vpc_errors]
                if broken:
                    raise broken[0]  # never isolate into a group that is not verified safe
                return self._cut(ctx, target, lookup_errors, background)

            cuts = {urgent.submit(cut, target): target.instance_id for target in targets}
            finishing: dict[Future[StepLog], Containment] = {}
            for future in as_completed(cuts):
                instance_id = cuts[future]
                try:
                    containment = future.result()
                except Exception as error:  # one instance's failure must never stop the others
                    results[instance_id] = failure(instance_id, "isolate", error)
                    if progress:
                        progress(results[instance_id])
                    continue
                finishing[background.submit(self._after_cut, ctx, containment)] = containment
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

    def _cut(
        self,
        ctx: Context,
        target: Target,
        lookup_errors: dict[str, Ec2irError],
        background: ThreadPoolExecutor,
    ) -> Containment:
        """Record every original, start protecting the evidence, then detach and isolate."""
        facts = target.facts
        log = StepLog()
        for name, error in lookup_errors.items():
            log.fail(next(step for step in STEPS if step.name == name), error)
        # The forensic group is not here: a compromised forensic workstation is contained too.
        managed = {group_id for vpc in facts.vpc_ids for group_id in target.groups[vpc].containment_group_ids}
        tainted = [eni.eni_id for eni in facts.enis if managed & set(eni.group_ids)]
        created = False
        if tainted:
            # An ENI already in an ec2ir group must never have that group recorded as original.
            existing = self.store.get(facts.instance_id)
            if existing is None or existing.status not in ACTIVE_STATUSES:
                raise OriginalsUnknown(
                    f"{facts.instance_id}: ENI {', '.join(tainted)} is already in an ec2ir group "
                    "but no active hold records its original groups",
                    "restore its groups by hand from your own records, then isolate again",
                )
            hold = existing
        else:
            records = self._capture(ctx, target, log, skip=set(log.errors))
            hold, created = self.store.record_originals(facts, ctx.case_id, ctx.actor, steps=records)
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
        if ALONGSIDE_STEPS:  # started before the cut, so it never waits behind it
            containment.alongside.append(background.submit(self._run_steps, ctx, containment, ALONGSIDE))
        self._run_steps(ctx, containment, URGENT, log)
        if NETWORK.name not in log.errors:
            try:
                self.store.transition(
                    hold,
                    (HoldStatus.ISOLATING, HoldStatus.ISOLATED),
                    HoldStatus.ISOLATED,
                    isolated_at=hold.isolated_at or now(),
                )
            except StaleRecord:
                self._yield_to_release(ctx, containment)
                raise
        return containment

    def _after_cut(self, ctx: Context, containment: Containment) -> StepLog:
        return self._run_steps(ctx, containment, AFTER)

    def _run_steps(
        self, ctx: Context, containment: Containment, phase: str, log: StepLog | None = None
    ) -> StepLog:
        """Run one phase's steps in order, each recorded before it applies; a failure is logged and
        the next step still runs."""
        log = log or StepLog()
        target = containment.target
        for step in STEPS:
            if step.phase != phase or step.name in containment.log.errors:
                continue
            try:
                record = self._record_for(ctx, containment, step)
            except Ec2irError as error:
                log.fail(step, error)
                continue
            if record is None:
                log.skip(step, "nothing to do for this instance")
                continue
            log.run(step, functools.partial(step.apply, ctx, target, record))
        return log

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
            if current is None or current.recorded_at != containment.hold.recorded_at:
                raise StaleRecord(f"the hold on {containment.target.instance_id} changed under this run")
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

    @staticmethod
    def _note_groups(report: RunReport, cidr: str | None) -> None:
        for vpc_id, vpc_groups in report.groups.items():
            if vpc_groups.created:
                report.notes.append(f"{vpc_id}: created the {', '.join(vpc_groups.created)} group(s)")
            report.notes.extend(f"{vpc_id}: {change}" for change in vpc_groups.repaired)
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
                log.fail(step, error)
                continue
            if record is not None:
                records[step.name] = record
        return records

    def _yield_to_release(self, ctx: Context, containment: Containment) -> None:
        """A release of this very hold ran while this run was cutting: the release wins.

        Whatever this run applied after the release had undone it is undone again, so the
        instance ends exactly as the release left it."""
        hold = containment.hold
        current = self.store.get(hold.instance_id)
        if current is None or current.recorded_at != hold.recorded_at:
            return
        if current.status not in (HoldStatus.RELEASING, HoldStatus.RELEASED):
            return
        logs = [containment.log, *(future.result() for future in containment.alongside)]
        failures: list[tuple[str, Ec2irError]] = []
        for step in reversed(STEPS):
            if any(log.outcomes.get(step.name, "").startswith("done") for log in logs):
                try:
                    record = self._record_for(ctx, containment, step)
                    if record is not None:
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
            if eni.eni_id in hold.originals:
                continue
            if managed & set(eni.group_ids):
                raise OriginalsUnknown(
                    f"{target.instance_id}: ENI {eni.eni_id} was attached after isolation and is "
                    "already in an ec2ir group; its originals are unknown"
                )
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
        report = PlanReport(case, self.aws.caller_arn())
        ctx = Context(self.aws, case, report.actor, now(), options)
        table_exists = self.store.exists()
        needed = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"}
        if not table_exists:
            report.setup.append(f"create the state table {self.store.table} (on-demand, KMS-encrypted)")
            needed |= {"dynamodb:CreateTable", "dynamodb:TagResource"}

        facts, early = self._discover(ids, "isolate")
        report.refused = list(early.values())
        live = [facts[i] for i in ids if i not in early]
        lookups, lookup_errors = self._lookups([f.instance_id for f in live])
        groups: dict[str, VpcGroups] = {}
        probes: list[tuple[str, dict[str, Any]]] = []
        for vpc_id in sorted({vpc for f in live for vpc in f.vpc_ids}):
            found = {role: ids_[0] for role, ids_ in find_groups(self.aws, vpc_id).items()}
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

        calls = [call for steps in report.instances.values() for planned in steps for call in planned.calls]
        probes += [(call.action.split(":", 1)[1], call.dry_run) for call in calls if call.dry_run is not None]
        report.checks = self._probe_every_call(probes)
        unprobed = ({call.action for call in calls} | needed) - set(report.checks)
        report.checks |= simulate(self.aws, report.actor, unprobed)
        return report

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
    ) -> RunReport:
        ids, report = self._start("release", instance_ids, case_id)
        ctx = Context(self.aws, report.case_id, report.actor, now(), Options(rejoin=rejoin))
        try:
            facts = discover(self.aws, ids)
            gone = {i for i in ids if i not in facts or facts[i].state in GONE_STATES}
        except Ec2irError as error:  # not knowing what is terminated must not block a release
            gone = set()
            report.notes.append(f"could not check which instances still exist: {error}")
        done = run_each(
            ids, lambda i: self._release_one(ctx, i, i in gone), "release", self.concurrency, progress
        )
        report.results = [done[i] for i in ids]
        return report

    def _release_one(self, ctx: Context, instance_id: str, terminated: bool = False) -> InstanceResult:
        hold = self.store.get(instance_id)
        if hold is None or hold.status is HoldStatus.RELEASED:
            raise NotIsolated(
                f"{instance_id} is not isolated by ec2ir"
                + (f" (released {hold.released_at} by {hold.released_by})" if hold else ""),
                "nothing was changed; `ec2ir status` lists what is isolated",
            )
        self._check_owner(hold, ctx.case_id)
        self.store.transition(hold, ACTIVE_STATUSES, HoldStatus.RELEASING)
        records = dict(hold.steps)
        records[NETWORK.name] = {"originals": hold.originals}
        log = StepLog()
        for step in reversed(STEPS):
            record = records.get(step.name)
            if record is None:
                log.skip(step, "nothing was recorded")
                continue
            if terminated and step.acts_on_instance:
                log.skip(step, "the instance is terminated: nothing to put back")
                continue
            log.run(step, functools.partial(step.undo, ctx, instance_id, record))
        restored = {
            eni: groups
            for eni, groups in hold.originals.items()
            if NETWORK.name not in log.errors and not terminated
        }
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
            else f"{len(hold.originals)} ENI(s) restored"
        )
        return log.result(instance_id, "release", summary, enis=restored)

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
