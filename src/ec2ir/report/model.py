"""What a case report holds: its summary, timeline, instances, evidence and open holds, and the
outcome kinds of journal results; the few cells every format shows alike.

The values are built by ``ec2ir.report.build`` and rendered by ``ec2ir.report.formats``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ec2ir.core.models import JournalEntry
from ec2ir.core.outcomes import Outcome, StepStatus
from ec2ir.render.terminal import Schema

SCHEMA = Schema.REPORT.value

DONE, FAILED, SKIPPED, NOT_COLLECTED, OTHER = "done", "failed", "skipped", "not collected", "other"
NOT_STARTED = "not started"  # a step a Ctrl-C kept from starting: work left undone, not a failure
OUTCOMES = (DONE, FAILED, SKIPPED, NOT_COLLECTED, NOT_STARTED, OTHER)
_KINDS = {
    StepStatus.DONE: DONE,
    StepStatus.FAILED: FAILED,
    StepStatus.SKIPPED: SKIPPED,
    StepStatus.NOT_COLLECTED: NOT_COLLECTED,
    StepStatus.NOT_STARTED: NOT_STARTED,
}


def outcome(result: str) -> str:
    """The kind of a journal result, from the prefix the engine writes (``Outcome.parse``)."""
    return _KINDS.get(Outcome.parse(result).status, OTHER)


@dataclass(frozen=True)
class Summary:
    case_id: str
    first_at: str
    last_at: str
    actors: tuple[str, ...]
    instances: int
    isolated: int  # holds whose status is isolated
    in_progress: int  # isolating or releasing: a run stopped half way
    released: int
    actions: int
    failures: int
    evidence: int


@dataclass(frozen=True)
class EniState:
    eni_id: str
    vpc_id: str
    before: tuple[str, ...]  # the original groups, as recorded before any change
    after: str  # where the ENI is now, in words
    after_groups: tuple[str, ...] = ()  # the groups, when the record says exactly which


@dataclass(frozen=True)
class InstanceState:
    instance_id: str
    status: str  # a HoldStatus value, or "not held" when the journal names it but no hold exists
    after: str  # one sentence on the instance as a whole
    enis: tuple[EniState, ...] = ()
    step_originals: dict[str, str] = dataclasses.field(default_factory=dict)  # step -> its record, JSON
    recorded_at: str = ""
    recorded_by: str = ""
    isolated_at: str = ""
    released_at: str = ""
    released_by: str = ""
    place: str = ""  # "account/Region" when not the table's own (ec2ir.engine.outbreak)


@dataclass(frozen=True)
class EvidenceItem:
    entry: int  # the timeline number of the journal entry that produced it
    at: str
    target: str
    action: str
    kind: str
    location: str
    sha256: str
    size: int
    version_id: str
    details: dict[str, str]


@dataclass(frozen=True)
class StillIsolated:
    instance_id: str
    status: str
    since: str
    enis: int
    place: str = ""  # "account/Region" when not the table's own (ec2ir.engine.outbreak)


@dataclass(frozen=True)
class CaseReport:
    summary: Summary
    timeline: tuple[JournalEntry, ...]  # the journal, oldest first; entry n is timeline[n - 1]
    instances: tuple[InstanceState, ...]
    evidence: tuple[EvidenceItem, ...]
    still_isolated: tuple[StillIsolated, ...]
    table: str = ""
    generated_at: str = ""
    # journal entries whose content no longer matches their key, or whose run's chain is broken
    integrity: tuple[str, ...] = ()


# -- cells every format shows alike ----------------------------------------------------------------


def size_text(size: int) -> str:
    return f"{size:,} B" if size else ""


def request_ids_text(entry: JournalEntry) -> str:
    return " ".join(entry.request_ids)


def eni_after(eni: EniState) -> str:
    return f"{eni.after}: {', '.join(eni.after_groups)}" if eni.after_groups else eni.after


def summary_rows(report: CaseReport) -> list[tuple[str, str]]:
    s = report.summary
    return [
        ("Case", s.case_id),
        ("First action (UTC)", s.first_at or "none"),
        ("Last action (UTC)", s.last_at or "none"),
        ("Responders", ", ".join(s.actors) or "unknown"),
        ("Instances", str(s.instances)),
        ("Isolated now", str(s.isolated)),
        ("Stopped half way (isolating or releasing)", str(s.in_progress)),
        ("Released", str(s.released)),
        ("Actions journaled", str(s.actions)),
        ("Failed actions", str(s.failures)),
        ("Evidence items", str(s.evidence)),
        ("State table", report.table),
    ]
