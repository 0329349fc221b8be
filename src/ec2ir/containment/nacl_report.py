"""What one run did to the network ACLs: each entry's change, the problems, the notes, as data
(JSON, the results' warnings) and as the table the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ec2ir.containment.nacl_entries import NOTE_PREFIX, direction
from ec2ir.core.text import printable, table

# -- what one run did -----------------------------------------------------------------------------------


class ChangeResult(StrEnum):
    """What became of one deny entry in one run (its value is what output and JSON show)."""

    ADDED = "added"
    READDED = "re-added"  # recorded by an interrupted run, missing, added again
    RECORDED = "recorded"  # added by an interrupted run, found in place, now recorded as added
    ALREADY_THERE = "already there"
    WOULD_ADD = "would add"
    REMOVED = "removed"
    WOULD_REMOVE = "would remove"
    DROPPED = "dropped"  # recorded, never added: the record goes
    GONE = "gone"  # removed by someone else, or its ACL is gone
    LEFT = "left"  # changed by someone since ec2ir added it: left as it is


# The results of a run that put an entry in place.
ADDING = frozenset({ChangeResult.ADDED, ChangeResult.READDED, ChangeResult.RECORDED})
# The results after which the entry denies its CIDR in its ACL.
IN_PLACE = frozenset(
    {ChangeResult.ADDED, ChangeResult.READDED, ChangeResult.RECORDED, ChangeResult.ALREADY_THERE}
)


@dataclass(frozen=True)
class Change:
    acl_id: str
    vpc_id: str
    egress: bool
    rule_number: int
    cidr: str
    result: ChangeResult
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "acl_id": self.acl_id,
            "vpc_id": self.vpc_id,
            "direction": direction(self.egress),
            "rule_number": self.rule_number,
            "cidr": self.cidr,
            "result": self.result,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Problem:
    """What could not be done: said in the run's notes, and as a warning on the results of the
    instances whose subnets the ACL serves (``acl_id`` empty: every instance of the run)."""

    acl_id: str
    text: str
    warning: str = ""

    @property
    def note(self) -> str:
        return f"{NOTE_PREFIX} {self.acl_id}: {self.text}" if self.acl_id else f"{NOTE_PREFIX}: {self.text}"


@dataclass
class NaclReport:
    """The outcome of one block-ip or unblock-ip run (and of the blocks within isolate, release and
    status --check)."""

    action: str  # the verb journaled: isolate, block-ip, unblock-ip, release, status-check
    case_id: str
    actor: str
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    acl_subnets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # each ACL seen -> its subnets

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "case_id": self.case_id,
            "actor": self.actor,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "changes": [change.as_dict() for change in self.changes],
            "notes": self.notes,
            "problems": [problem.note for problem in self.problems],
        }

    def all_notes(self) -> list[str]:
        return self.notes + [problem.note for problem in self.problems]

    def changed(self) -> bool:
        """Whether this run added an entry, or failed to do what it was asked."""
        return bool(self.problems) or any(change.result in ADDING for change in self.changes)

    def denied(self) -> dict[str, set[str]]:
        """Each CIDR denied both ways after this run -> the ACLs it is denied in."""
        directions: dict[tuple[str, str], set[bool]] = {}
        for change in self.changes:
            if change.result in IN_PLACE:
                directions.setdefault((change.cidr, change.acl_id), set()).add(change.egress)
        denied: dict[str, set[str]] = {}
        for (cidr, acl_id), egress in directions.items():
            if egress == {True, False}:
                denied.setdefault(cidr, set()).add(acl_id)
        return denied


def render(report: NaclReport) -> str:
    rows = [
        [c.acl_id, c.vpc_id, direction(c.egress), str(c.rule_number), c.cidr, c.result, c.detail]
        for c in report.changes
    ]
    parts = [table(["ACL", "VPC", "DIRECTION", "RULE", "CIDR", "RESULT", "DETAIL"], rows)] if rows else []
    parts += ["\n".join(f"note: {printable(note)}" for note in report.notes)] if report.notes else []
    if report.problems:
        parts.append("\n".join(f"PROBLEM: {printable(problem.note)}" for problem in report.problems))
    added = sum(c.result is ChangeResult.ADDED for c in report.changes)
    removed = sum(c.result is ChangeResult.REMOVED for c in report.changes)
    verb = "would change" if report.dry_run else "changed"
    parts.append(
        f"case {printable(report.case_id)}: {report.action} {verb} {len(report.changes)} entr(ies) "
        f"({added} added, {removed} removed), {len(report.problems)} problem(s) "
        f"(acting as {printable(report.actor)})"
    )
    return "\n\n".join(parts)
