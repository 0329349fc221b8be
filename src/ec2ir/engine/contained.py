"""One instance in the middle of ``isolate`` (its hold, and what each phase did), and how a phase's
steps run on it: each step's originals recorded before it applies, a failure logged and the next
step still run."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from ec2ir.containment.records import StoredRecord
from ec2ir.containment.steplog import MEMORY, METADATA, SNAPSHOTS, StepLog
from ec2ir.containment.steps import BESIDE, NETWORK, STEPS, URGENT, BaseStep, Context, Target
from ec2ir.core.errors import Ec2irError, StaleRecord
from ec2ir.core.models import Hold, HoldStatus, InstanceResult
from ec2ir.engine.holds import network_record, same_episode
from ec2ir.engine.results import failure
from ec2ir.engine.runtime import Runtime

# In rank order, so that an idle worker takes the most urgent of an instance's beside steps first.
BESIDE_STEPS = sorted((step for step in STEPS if step.phase == BESIDE), key=lambda step: step.beside_rank)
# What a result reports, in order: the containment steps, then the evidence.
REPORTED = [step.name for step in STEPS] + [MEMORY, SNAPSHOTS, METADATA, "journal"]
# The late tasks of one instance: the after-steps' task, and one per beside step.
LATE_TASKS = 1 + len(BESIDE_STEPS)


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
    # the late tasks still to record their originals (ec2ir.engine.late.records_done); 0 until
    # the late phase begins
    records_pending: int = 0
    _late_logs: list[StepLog] = field(default_factory=list)
    _late_lock: threading.Lock = field(default_factory=threading.Lock)
    _records_lock: threading.Lock = field(default_factory=threading.Lock)

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

    def records_task_done(self) -> bool:
        """Whether the late task that calls this was the last still to record its originals."""
        with self._records_lock:
            self.records_pending = max(self.records_pending - 1, 0)
            return self.records_pending == 0

    def result(self, after: Future[StepLog]) -> InstanceResult:
        logs = [*self.before_cut(), after.result()]
        logs += [future.result() for future in [*self.beside, self.evidence] if future is not None]
        merged = merge(logs)
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


def merge(logs: list[StepLog]) -> StepLog:
    """One log of every phase's, each step reported in the steps' own order."""
    merged = StepLog()
    for name in REPORTED:
        for log in logs:
            if name in log.outcomes:
                merged.outcomes[name] = log.outcomes[name]
            if name in log.errors:
                merged.errors[name] = log.errors[name]
            if name in log.evidence:
                merged.evidence[name] = log.evidence[name]
    merged.extra = [line for log in logs for line in log.extra]
    return merged


def run_steps(
    rt: Runtime,
    ctx: Context,
    containment: Containment,
    phase: str,
    log: StepLog | None = None,
    only: BaseStep | None = None,
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
        if phase != URGENT and rt.stopped(log, step.name):
            continue
        try:
            record = record_for(rt, ctx, containment, step)
        except Ec2irError as error:
            log.fail(step.name, error)
            continue
        if record is None:
            log.skip(step.name, "nothing to do for this instance")
            continue
        log.run(step.name, functools.partial(step.apply_stored, ctx, target, record), target.instance_id)
    return log


def record_for(rt: Runtime, ctx: Context, containment: Containment, step: BaseStep) -> StoredRecord | None:
    """The step's originals: from the hold, or captured now and written before any change."""
    if step is NETWORK:
        return network_record(containment.hold.originals)
    stored = containment.target.stored.get(step.name)
    if stored is not None or step.cheap_capture:
        return stored
    record = step.capture_stored(ctx, containment.target)
    if record is None:
        return None
    if not rt.store.add_step_record(containment.hold, step.name, record):
        current = same_episode(rt.store, containment.hold)  # an earlier run's first wins
        if current is None or current.status not in (HoldStatus.ISOLATING, HoldStatus.ISOLATED):
            raise StaleRecord(
                f"the hold on {containment.target.instance_id} changed under this run (a release?)"
            )
        record = current.steps.get(step.name, record)
    return record
