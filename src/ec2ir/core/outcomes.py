"""What became of one step: a status and its detail, typed in code and text at the boundary.

The text (``Outcome.text``) is the storage and wire format: the state table's journal items, the
journal's evidence copies, ``--output json``'s ``steps`` and the terminal all carry it, and
existing tables hold it as earlier versions wrote it. So its spelling never changes, and
``Outcome.parse`` reads back whatever those versions wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class StepStatus(StrEnum):
    """What became of one step, from the prefix of its outcome (``Outcome.parse``): the closed set
    ``--output json`` gives as ``step_outcomes[].status`` (docs/json.md)."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # not attempted; the detail says why
    NOT_COLLECTED = "not_collected"  # evidence asked for and not collected
    NOT_STARTED = "not_started"  # the run was interrupted (Ctrl-C) before the step began
    PLANNED = "planned"  # a dry run's: what the step would do
    OTHER = "other"  # text with none of the engine's prefixes (a journal's "not done (...)")


# The prefix each status is written with; PLANNED and OTHER have none: their text is the detail.
_WRITTEN = {
    StepStatus.DONE: "done: ",
    StepStatus.FAILED: "FAILED: ",
    StepStatus.SKIPPED: "skipped: ",
    StepStatus.NOT_COLLECTED: "not collected: ",
    StepStatus.NOT_STARTED: "not started: ",
}

# The prefixes read back, in this order. "FAILED" without its colon reads text some callers wrote
# as "FAILED ..."; "nothing:" is a release plan's step that a terminated instance skips.
_READ = (
    ("done:", StepStatus.DONE),
    ("FAILED", StepStatus.FAILED),
    ("skipped:", StepStatus.SKIPPED),
    ("not collected:", StepStatus.NOT_COLLECTED),
    ("not started:", StepStatus.NOT_STARTED),
    ("nothing:", StepStatus.SKIPPED),
)


@dataclass(frozen=True)
class Outcome:
    """One step's outcome. ``text`` is exactly what the engine always stored and printed:
    "done: <detail>", "FAILED: <detail>", "skipped: <detail>", "not collected: <detail>",
    "not started: <detail>", and the bare detail for PLANNED and OTHER."""

    status: StepStatus
    detail: str = ""

    @classmethod
    def done(cls, detail: str) -> Outcome:
        return cls(StepStatus.DONE, detail)

    @classmethod
    def failed(cls, detail: object) -> Outcome:
        """``detail`` may be an error: its text is the detail."""
        return cls(StepStatus.FAILED, str(detail))

    @classmethod
    def skipped(cls, why: str) -> Outcome:
        return cls(StepStatus.SKIPPED, why)

    @classmethod
    def not_collected(cls, why: str) -> Outcome:
        return cls(StepStatus.NOT_COLLECTED, why)

    @classmethod
    def not_started(cls, why: str) -> Outcome:
        return cls(StepStatus.NOT_STARTED, why)

    @classmethod
    def planned(cls, what: str) -> Outcome:
        """A dry run's: what the step would do, in words."""
        return cls(StepStatus.PLANNED, what)

    @classmethod
    def other(cls, text: str) -> Outcome:
        """Text with none of the engine's prefixes, such as a release's "not done (...)"."""
        return cls(StepStatus.OTHER, text)

    @classmethod
    def parse(cls, text: str, planned: bool = False) -> Outcome:
        """The outcome ``text`` says, as any version wrote it: the status its prefix names and the
        text after that prefix. In a plan (``planned``), text without a prefix is what the step
        would do; elsewhere it is OTHER."""
        for prefix, status in _READ:
            if text.startswith(prefix):
                return cls(status, text.removeprefix(prefix).lstrip(": "))
        return cls(StepStatus.PLANNED if planned else StepStatus.OTHER, text)

    @property
    def text(self) -> str:
        return _WRITTEN.get(self.status, "") + self.detail

    def __str__(self) -> str:
        return self.text

    @property
    def ok(self) -> bool:
        """Not a failure: anything but FAILED (a journal entry's ``ok``)."""
        return self.status is not StepStatus.FAILED

    @property
    def is_done(self) -> bool:
        return self.status is StepStatus.DONE

    @property
    def is_skipped(self) -> bool:
        return self.status is StepStatus.SKIPPED

    def extended(self, more: str) -> Outcome:
        """The same outcome with ``more`` added to its detail."""
        return replace(self, detail=self.detail + more)
