"""What each step did to one instance: its outcome, time, AWS requests and evidence.

A layer below the engine, so that the commands built beside it (``ec2ir.containment.rejoin``) share the
engine's record of a step without importing the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ec2ir.aws.session import request_ids
from ec2ir.core.errors import Ec2irError, Interrupted, Unexpected
from ec2ir.core.models import EvidenceRef, InstanceResult, JournalEntry
from ec2ir.core.outcomes import Outcome
from ec2ir.store.items import now

if TYPE_CHECKING:
    from ec2ir.containment.steps import Context

# A name users filter `-v` lines on, not a module path: it stays as it always was.
_progress_log = logging.getLogger("ec2ir.steps")

# An instance in these states has nothing left on it to contain or to put back.
GONE_STATES = frozenset({"terminated", "shutting-down"})
# The evidence metadata's key is not "metadata": that is the IMDS step's
# (ec2ir.containment.steps.CutMetadata), whose failure is a containment failure, never evidence
# that went missing.
MEMORY, SNAPSHOTS, METADATA = "memory", "snapshots", "evidence-metadata"
EVIDENCE_WORK = frozenset({MEMORY, SNAPSHOTS, METADATA, "journal"})


@dataclass
class StepLog:
    """What each step did to one instance, when, and with which AWS requests; the first failure
    sets the result's error code. ``journal_entries`` turns it into the case journal's lines."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    errors: dict[str, Ec2irError] = field(default_factory=dict)
    finished_at: dict[str, str] = field(default_factory=dict)
    requests: dict[str, list[str]] = field(default_factory=dict)
    evidence: dict[str, list[EvidenceRef]] = field(default_factory=dict)
    # lines for the journal alone, such as each metadata item: (action, at, result, evidence)
    extra: list[tuple[str, str, Outcome, list[EvidenceRef]]] = field(default_factory=list)

    def run(self, name: str, action: Callable[[], str], subject: str = "") -> bool:
        """Run one step (of ``subject``, an instance), its outcome recorded; with ``-v`` each step
        is logged as it starts and ends, with its time."""
        _progress_log.info("%s %s: started", subject, name)
        started = time.monotonic()
        with request_ids() as ids:
            try:
                self._set(name, Outcome.done(action()))
                ok = True
            except Ec2irError as error:
                self.fail(name, error)
                ok = False
            except Exception as error:  # a bug in one step must not hide what the others did
                self.fail(name, Unexpected(error))
                ok = False
        self.requests[name] = ids
        _progress_log.info(
            "%s %s: %s (%.2f s)", subject, name, self.outcomes[name], time.monotonic() - started
        )
        return ok

    def fail(self, name: str, error: Ec2irError) -> None:
        self._set(name, Outcome.failed(error))
        self.errors[name] = error

    def skip(self, name: str, why: str) -> None:
        self._set(name, Outcome.skipped(why))

    def not_started(self, name: str) -> None:
        """A step the run did not start, as it was interrupted (Ctrl-C): an error of its own kind,
        so that the result says what was done and what was not (``result``)."""
        self._set(name, Outcome.not_started("the run was interrupted"))
        self.errors[name] = Interrupted("not started: the run was interrupted (Ctrl-C)")

    def _set(self, name: str, outcome: Outcome) -> None:
        self.outcomes[name] = outcome
        self.finished_at[name] = now()

    def step_texts(self) -> dict[str, str]:
        """Each step's outcome as the result carries it: text (``Outcome.text``)."""
        return {name: outcome.text for name, outcome in self.outcomes.items()}

    def journal_entries(self, ctx: Context, target: str, verb: str) -> list[JournalEntry]:
        lines = [
            JournalEntry(
                at=self.finished_at[name],
                case_id=ctx.case_id,
                actor=ctx.actor,
                target=target,
                action=f"{verb}:{name}",
                result=outcome.text,
                request_ids=tuple(self.requests.get(name, ())),
                evidence=tuple(self.evidence.get(name, ())),
            )
            for name, outcome in self.outcomes.items()
        ]
        lines += [
            JournalEntry(at, ctx.case_id, ctx.actor, target, action, result.text, evidence=tuple(refs))
            for action, at, result, refs in self.extra
        ]
        return lines

    def result(
        self, instance_id: str, action: str, summary: str, evidence_counts: bool = False, **extra: Any
    ) -> InstanceResult:
        """``ok`` says whether the instance is contained; evidence that failed is reported apart
        (``evidence_failed``), so that it can never make a stack undo a containment that held.
        For ``collect``, evidence is the work, and ``evidence_counts``."""
        extra["evidence"] = tuple(ref for refs in self.evidence.values() for ref in refs) + tuple(
            ref for *_, refs in self.extra for ref in refs
        )
        extra["evidence_failed"] = tuple(
            f"{name}: {error}" for name, error in self.errors.items() if name in EVIDENCE_WORK
        )
        errors = {
            name: error for name, error in self.errors.items() if evidence_counts or name not in EVIDENCE_WORK
        }
        if not errors:
            return InstanceResult(
                instance_id, action, ok=True, detail=summary, steps=self.step_texts(), **extra
            )
        stopped = [name for name, error in errors.items() if isinstance(error, Interrupted)]
        if stopped:  # what was done, what failed and what never started: each step named once
            # (a summary for the result's detail, not an outcome: its parts only read like one)
            done = [name for name, outcome in self.outcomes.items() if outcome.is_done]
            failed_steps = [f"{name} ({error})" for name, error in errors.items() if name not in stopped]
            parts = [
                f"done: {', '.join(done)}" if done else "no step done",
                f"FAILED: {'; '.join(failed_steps)}" if failed_steps else "",
                f"not started: {', '.join(stopped)}",
            ]
            return InstanceResult(
                instance_id,
                action,
                ok=False,
                detail=f"interrupted (Ctrl-C): {'; '.join(filter(None, parts))}; "
                f"run `ec2ir {action}` again to finish",
                error_code=Interrupted.code,
                steps=self.step_texts(),
                **extra,
            )
        name, error = next(iter(errors.items()))
        failed = ", ".join(errors)
        return InstanceResult(
            instance_id,
            action,
            ok=False,
            detail=f"step(s) {failed} failed; {name}: {error}",
            error_code=error.code,
            steps=self.step_texts(),
            **extra,
        )
