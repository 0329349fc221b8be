"""``isolate``'s late phase, once every instance is cut off: the hold marked isolated, the cut
journaled, the after-steps and the beside steps (each with a throttled bucket of its own), the
evidence, and the yield to a release of the same hold that ran meanwhile."""

from __future__ import annotations

import functools

from ec2ir.containment.steplog import StepLog
from ec2ir.containment.steps import AFTER, BESIDE, NETWORK, BaseStep, Context
from ec2ir.core.errors import Ec2irError, StaleRecord
from ec2ir.core.models import HoldStatus
from ec2ir.core.pools import RankedPool
from ec2ir.engine.contained import BESIDE_STEPS, LATE_TASKS, Containment, run_steps
from ec2ir.engine.gather import Collection, take_evidence
from ec2ir.engine.holds import same_episode, yield_to_release
from ec2ir.engine.journal import journal, record_entry
from ec2ir.engine.runtime import Runtime
from ec2ir.store.items import now


def mark_isolated(rt: Runtime, ctx: Context, containment: Containment) -> None:
    """Mark the hold isolated, unless a release of it ran since the cut: then the release
    wins, and this run undoes what it did."""
    hold = containment.hold
    try:
        rt.store.transition(
            hold,
            (HoldStatus.ISOLATING, HoldStatus.ISOLATED),
            HoldStatus.ISOLATED,
            isolated_at=hold.isolated_at or containment.cut_at,
        )
    except StaleRecord:
        yield_to_release(rt, ctx, hold, containment.before_cut())
        raise


def after_cut(rt: Runtime, ctx: Context, containment: Containment, beside: RankedPool) -> StepLog:
    """Mark the hold isolated, journal the cut, then run the after-steps (the ones with a
    bucket of their own beside the others)."""
    instance_id = containment.target.instance_id
    hold = containment.hold
    # Before any after-step: the hold's condition is what tells that a release ran meanwhile.
    if NETWORK.name not in containment.log.errors:
        mark_isolated(rt, ctx, containment)
    containment.records_pending = containment.late_tasks = LATE_TASKS
    containment.beside = [
        beside.submit(step.beside_rank, functools.partial(beside_then_records, rt, ctx, containment, step))
        for step in BESIDE_STEPS
    ]
    # The hold's first journal entry carries its originals and step records as data: release
    # checks a hold against it (and against the evidence) before restoring anything.
    cut = [record_entry(ctx, hold, hold.recorded_by, hold.recorded_at)] if containment.created else []
    log = StepLog()
    first = cut + containment.log.journal_entries(ctx, instance_id, "isolate")
    journal(rt, first, log=log)
    if "journal" in log.errors:  # tried again below; the entries' keys make that safe
        log.outcomes.pop("journal")
        log.errors.pop("journal")
    else:
        first = []
    log = run_steps(rt, ctx, containment, AFTER, log)
    done_here = [log] if containment.memory is None else [containment.memory, log]
    lines = [line for done in done_here for line in done.journal_entries(ctx, instance_id, "isolate")]
    journal(rt, first + lines, log=log)
    records_done(rt, ctx, containment, log)
    check_not_released(rt, ctx, containment, log)
    return log


def beside_then_records(rt: Runtime, ctx: Context, containment: Containment, step: BaseStep) -> StepLog:
    log: StepLog | None = None
    try:
        log = run_beside(rt, ctx, containment, step)
        return log
    finally:
        records_done(rt, ctx, containment, log)


def records_done(rt: Runtime, ctx: Context, containment: Containment, log: StepLog | None) -> None:
    """Once the after-steps and every beside step have recorded their originals (the last of
    them calls this), the hold's full records are journaled, marked complete: from then
    on, release refuses any original the journal or the evidence does not prove."""
    if not containment.records_task_done():
        return
    try:
        hold = same_episode(rt.store, containment.hold)
    except Ec2irError as error:
        if log is not None:
            log.fail("journal", error)
        return
    if hold is None:
        return
    journal(rt, [record_entry(ctx, hold, ctx.actor, now(), complete=True)], log=log or StepLog())


def run_beside(rt: Runtime, ctx: Context, containment: Containment, step: BaseStep) -> StepLog:
    """One after-step with a throttled bucket of its own, then its journal lines."""
    log = run_steps(rt, ctx, containment, BESIDE, only=step)
    journal(rt, log.journal_entries(ctx, containment.target.instance_id, "isolate"), log=log)
    check_not_released(rt, ctx, containment, log)
    return log


def check_not_released(rt: Runtime, ctx: Context, containment: Containment, log: StepLog) -> None:
    """After the last late change to the instance: if a release of its hold ran meanwhile,
    the release wins and those changes are undone. A release that starts after this read
    undoes them itself, from the records the hold holds by then."""
    logs = containment.late_task_done(log)
    if any(outcome.is_done for done in logs for outcome in done.outcomes.values()):
        yield_to_release(rt, ctx, containment.hold, logs)


def collect_for(rt: Runtime, ctx: Context, containment: Containment, collection: Collection) -> StepLog:
    """Snapshots, then the metadata, on the evidence's own workers and clients, then their
    journal lines."""
    log = StepLog()
    target = containment.target
    take_evidence(
        rt, ctx, target, collection, containment.hold.recorded_at, log, rerun=not containment.created
    )
    journal(rt, log.journal_entries(ctx, target.instance_id, "isolate"), log=log)
    return log
