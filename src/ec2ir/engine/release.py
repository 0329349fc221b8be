"""``release``: each held instance's recorded steps undone in reverse, its ENIs back in their
original groups, once the hold is proven against the case journal and its evidence; and
``release --dry-run``, which reads the same and changes nothing."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ec2ir.aws.session import discover
from ec2ir.containment import restore
from ec2ir.containment.records import StoredRecord
from ec2ir.containment.steplog import GONE_STATES, StepLog
from ec2ir.containment.steps import NETWORK, STEPS, Context, Options
from ec2ir.core.errors import Ec2irError, OriginalsTampered, StaleRecord
from ec2ir.core.models import ACTIVE_STATUSES, Hold, HoldStatus, InstanceResult
from ec2ir.core.outcomes import Outcome
from ec2ir.engine.edge import after_release
from ec2ir.engine.holds import check_originals, records_of, releasable, released_meanwhile
from ec2ir.engine.journal import journal, journal_aside, refusals
from ec2ir.engine.names import name_report
from ec2ir.engine.results import Progress, RunReport, run_each
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.provenance import Provenance
from ec2ir.store.items import now


def release(
    rt: Runtime,
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
    ids, report = rt.start("release", instance_ids, case_id)
    ctx = Context(rt.aws, report.case_id, report.actor, now(), Options(rejoin=rejoin))
    gone, provenance, fixes = before_release(rt, ids, report, fixes)
    done = run_each(
        ids,
        lambda i: release_one(rt, ctx, i, i in gone, provenance, fixes),
        "release",
        rt.concurrency,
        progress,
        rt.interrupt,
    )
    report.results = [done[i] for i in ids]
    # the case's network ACL entries, from every ACL that serves none of its held instances
    # (after Ctrl-C, left to the next release, which removes them by the same rule)
    if not rt.interrupt.stops("removing the case's network ACL entries of released subnets"):
        after_release(rt.aws, rt.store, report, functools.partial(journal_aside, rt, notes=report.notes))
    journal(rt, refusals(report), report.notes)
    name_report(rt.aws, report)  # read after the release: the groups each ENI is back in
    return report


def before_release(
    rt: Runtime, ids: list[str], report: RunReport, fixes: restore.GroupFixes
) -> tuple[set[str], Provenance | None, restore.GroupFixes]:
    """What every release (and its dry run) reads before any change: which instances are
    gone, what the journal proves of their holds, and the stand-ins for deleted groups."""
    try:
        gone = set(gone_instances(rt, ids))
    except Ec2irError as error:  # not knowing what is terminated must not block a release
        gone = set()
        report.notes.append(f"could not check which instances still exist: {error}")
    provenance = gathered_provenance(rt, report.case_id, ids)
    own = provenance.own_groups if provenance else frozenset()
    return gone, provenance, fixes.check_live(rt.aws, own)


def gone_instances(rt: Runtime, ids: list[str]) -> list[str]:
    """Which of ``ids`` no longer exist (unknown to the account and Region, or terminated), in
    their order; raises when it cannot tell."""
    facts = discover(rt.aws, ids)
    return [i for i in ids if i not in facts or facts[i].state in GONE_STATES]


def plan_release(
    rt: Runtime,
    instance_ids: Iterable[str],
    case_id: str,
    rejoin: bool = False,
    replace_groups: Iterable[str] = (),
    skip_missing_groups: bool = False,
) -> RunReport:
    """``release --dry-run``: each instance's plan as its result (the groups each ENI would get
    back, each step's undo in words, or why it would be refused); nothing is changed."""
    fixes = restore.GroupFixes.parse(replace_groups, skip_missing_groups)
    ids, report = rt.start("release", instance_ids, case_id)
    gone, provenance, fixes = before_release(rt, ids, report, fixes)

    def plan_one(instance_id: str) -> InstanceResult:
        hold = releasable(rt.store.get(instance_id), instance_id, report.case_id)
        warnings = check_originals(hold, provenance)
        existing = provenance.group_vpcs if provenance else {}
        restoring = restore.restoration(rt.aws, hold, existing, fixes, instance_id in gone)
        return restore.planned(instance_id, hold, restoring, rejoin, instance_id in gone, warnings)

    done = run_each(ids, plan_one, "release", rt.concurrency, None)
    report.results = [done[i] for i in ids]
    name_report(rt.aws, report)
    return report


def gathered_provenance(
    rt: Runtime, case_id: str, ids: list[str], released: bool = False
) -> Provenance | None:
    """What the case journal and its evidence prove of the holds about to be released (or,
    with ``released``, rejoined): read once for the run (one query, one batched read of holds
    and of groups, and each episode's few metadata objects), never per ENI."""
    holds = [
        hold
        for hold in rt.store.get_many(ids).values()
        if hold.case_id == case_id and (hold.status is HoldStatus.RELEASED) == released
    ]
    if not holds:
        return None
    return Provenance.gather(
        rt.evidence_aws,
        rt.store.journal_records(case_id),
        holds,
        rt.store.group_records(rt.aws.region()),
        rt.concurrency,
    )


def release_one(
    rt: Runtime,
    ctx: Context,
    instance_id: str,
    terminated: bool = False,
    provenance: Provenance | None = None,
    fixes: restore.GroupFixes | None = None,
) -> InstanceResult:
    read = rt.store.get(instance_id)
    if (
        read is not None
        and read.status is HoldStatus.RELEASED
        and provenance
        and provenance.held_at_start(read)
    ):
        # held when this run began, released by another since: if EC2 agrees
        return released_concurrently(rt, provenance, read, ctx.case_id)
    hold = releasable(read, instance_id, ctx.case_id)
    existing, fixes = (provenance.group_vpcs if provenance else {}), fixes or restore.GroupFixes()
    strict = bool(fixes.replace or fixes.skip_missing)  # without a flag, restore what can be

    def proven(hold: Hold) -> tuple[tuple[str, ...], restore.Restoration]:
        unproven = check_originals(hold, provenance)
        return unproven, restore.restoration(rt.aws, hold, existing, fixes, terminated, strict)

    unproven, restoring = proven(hold)
    try:
        # The hold as this move left it: a record an isolate wrote since the read above is in it.
        checked, hold = hold, rt.store.transition(hold, ACTIVE_STATUSES, HoldStatus.RELEASING)
        if (hold.originals, hold.steps, hold.eni_vpcs) != (
            checked.originals,
            checked.steps,
            checked.eni_vpcs,
        ):
            unproven, restoring = proven(hold)
    except StaleRecord:
        current = released_meanwhile(rt.store, hold)
        if current is None or provenance is None:
            raise
        return released_concurrently(rt, provenance, current, ctx.case_id)
    log = undo_steps(ctx, instance_id, records_of(hold, restoring.originals), terminated)
    return released_result(rt, ctx, hold, restoring, unproven, log, terminated)


def released_concurrently(rt: Runtime, provenance: Provenance, current: Hold, case_id: str) -> InstanceResult:
    """A concurrent release of the same episode finished first. The state table says so, and
    whoever can write the table could say so too: EC2 must agree that no ENI of the instance is
    left in one of ec2ir's groups. The result shows the groups EC2 has, not the table's."""
    instance_id = current.instance_id
    facts = discover(rt.aws, [instance_id]).get(instance_id)
    enis = {eni.eni_id: eni.group_ids for eni in facts.enis} if facts else {}
    still_held = sorted(eni for eni, groups in enis.items() if set(groups) & provenance.own_groups)
    if still_held or current.case_id != case_id:
        raise OriginalsTampered(
            f"{instance_id}: the state table says another run released it, but "
            + (f"{', '.join(still_held)} still in ec2ir's groups" if still_held else "for another case"),
            "nothing was changed; someone may have rewritten the hold in the state table: check it "
            "against the case journal (`ec2ir report`), then run release again",
        )
    return InstanceResult(
        instance_id,
        "release",
        ok=True,
        detail=f"released by a concurrent run ({current.released_at}, {current.released_by})",
        enis=enis,
    )


def released_result(
    rt: Runtime,
    ctx: Context,
    hold: Hold,
    restoring: restore.Restoration,
    unproven: tuple[str, ...],
    log: StepLog,
    terminated: bool,
) -> InstanceResult:
    """Once the steps are undone: what the network step put back, the hold closed (if nothing
    failed), the journal lines, and the instance's result."""
    instance_id = hold.instance_id
    restored = {
        eni: groups
        for eni, groups in restoring.originals.items()
        if NETWORK.name not in log.errors and not terminated
    }
    if restored and restoring.changes:  # the network step's entry says what it put back
        log.outcomes[NETWORK.name] = log.outcomes[NETWORK.name].extended(f" ({restoring.summary})")
    # a change the network step never made has no status of its own: OTHER, its text as it always was
    log.extra += [
        (
            action,
            now(),
            Outcome.done(what) if restored else Outcome.other(f"not done (the network step failed): {what}"),
            [],
        )
        for action, what in restoring.changes
    ]
    if not log.errors:
        mark_released(rt, ctx, hold)
    summary = (
        "instance terminated: hold closed, nothing left to restore on it"
        if terminated
        else "; ".join(filter(None, (f"{len(hold.originals)} ENI(s) restored", restoring.summary)))
    )
    journal(rt, log.journal_entries(ctx, instance_id, "release"), log=log)
    warnings = unproven + tuple(
        f"{eni}: NOT restored: its original groups were never known, so it stays in the isolation "
        "group; give it its groups by hand"
        for eni in hold.unknown_originals
        if not terminated
    )
    return log.result(instance_id, "release", summary, enis=restored, warnings=warnings)


def undo_steps(ctx: Context, instance_id: str, records: dict[str, StoredRecord], terminated: bool) -> StepLog:
    """Each recorded step undone, in the reverse of the order isolate applied them."""
    log = StepLog()
    for step in reversed(STEPS):
        record = records.get(step.name)
        if record is None:
            log.skip(step.name, "nothing was recorded")
            continue
        if terminated and step.acts_on_instance:
            log.skip(step.name, "the instance is terminated: nothing to put back")
            continue
        log.run(step.name, functools.partial(step.undo_stored, ctx, instance_id, record), instance_id)
    return log


def mark_released(rt: Runtime, ctx: Context, hold: Hold) -> None:
    """Close the hold, unless a concurrent release of it closed it first."""
    try:
        rt.store.transition(
            hold,
            (HoldStatus.RELEASING,),
            HoldStatus.RELEASED,
            released_at=now(),
            released_by=ctx.actor,
        )
    except StaleRecord:
        if released_meanwhile(rt.store, hold) is None:
            raise
