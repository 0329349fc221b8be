"""Rendering for people (aligned tables, live progress) and for machines (JSON).

Much of what is shown comes from the attacker's side: console and script output, tags, AWS error
messages quoting them, and anything written to the state table. Every piece of text goes through
``printable`` before it reaches a terminal, so none of it can move the cursor, clear the screen,
rewrite a line already shown or add a line of its own.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from ec2ir.models import Hold, InstanceResult

if TYPE_CHECKING:  # at run time only models: forensics and report import this module
    from ec2ir.engine import PlanReport, RunReport
    from ec2ir.evidence import Finding
    from ec2ir.permissions import Check

# Below this many instances a run is quick enough that progress lines would only be noise.
PROGRESS_THRESHOLD = 5

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` on one line with every character a terminal could act on shown as an escape:
    ESC as ``\\x1b``, BEL as ``\\x07``, a newline as ``\\n``, bidirectional and zero-width
    controls as ``\\u202e``. What counts is Python's ``str.isprintable``, which also covers the C1
    controls (a lone CSI is ``\\x9b``) and line and paragraph separators."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(character if character.isprintable() else _escape(character) for character in value)


def _escape(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = [printable(header) for header in headers]
    body = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in head]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [head, ["-" * w for w in widths], *body]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def eni_lines(enis: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{eni}: {','.join(groups) or '-'}" for eni, groups in enis.items())


# A step skipped for one of these reasons had nothing to do: saying so would only be noise.
QUIET_SKIPS = frozenset({"skipped: nothing to do for this instance", "skipped: nothing was recorded"})
STEP_INDENT = "    "


def step_lines(result: InstanceResult) -> list[str]:
    """One line per step under the instance's row: what it did, what failed, what was not done."""
    return [
        printable(f"{STEP_INDENT}{step}: {outcome.removeprefix('done: ')}")
        for step, outcome in result.steps.items()
        if outcome not in QUIET_SKIPS
    ]


def not_done(outcome: str) -> bool:
    """Whether a step's outcome is something asked for and not done."""
    if outcome.startswith(("FAILED", "not collected")):
        return True
    return outcome.startswith("skipped") and outcome not in QUIET_SKIPS


def run_warnings(report: RunReport) -> list[str]:
    """The lines for standard error: every step asked for and not done (failed, not collected,
    skipped for a reason worth saying) and every warning of a result, one line each."""
    lines = []
    for result in report.results:
        lines += [
            printable(f"ec2ir: {result.instance_id}: WARNING: {step}: {outcome}")
            for step, outcome in result.steps.items()
            if not_done(outcome)
        ]
        lines += [
            printable(f"ec2ir: {result.instance_id}: WARNING: {warning}") for warning in result.warnings
        ]
    return lines


def render_run(report: RunReport) -> str:
    verb = {"isolate": "isolated", "release": "released", "collect": "collected", "rejoin": "rejoined"}[
        report.action
    ]
    rows = [
        [
            r.instance_id,
            verb if r.ok else f"FAILED {r.error_code}",
            eni_lines(r.enis) if r.ok else "",
            r.detail,
        ]
        for r in report.results
    ]
    head, rule, *body = table(["INSTANCE", "RESULT", "ENI: GROUPS NOW", "DETAIL"], rows).split("\n")
    lines = [head, rule]
    for row, result in zip(body, report.results, strict=True):
        lines += [row, *step_lines(result)]
    parts = ["\n".join(lines)]
    if report.groups:
        parts.append(
            table(
                ["VPC", "ISOLATION GROUP", "FORENSIC GROUP"],
                [[v, g.isolation_group_id, g.forensic_group_id] for v, g in sorted(report.groups.items())],
            )
        )
    evidence = [
        [r.instance_id, ref.kind, ref.location, ref.sha256 or ref.details.get("device", "")]
        for r in report.results
        for ref in r.evidence
    ]
    if evidence:
        parts.append(table(["INSTANCE", "EVIDENCE", "LOCATION", "SHA-256 / DEVICE"], evidence))
    if report.notes:
        parts.append("\n".join(f"note: {printable(note)}" for note in report.notes))
    ok = len(report.results) - len(report.failed)
    parts.append(
        f"case {printable(report.case_id)}: {ok} {verb}, {len(report.failed)} failed "
        f"(acting as {printable(report.actor)})"
    )
    return "\n\n".join(parts)


def render_plan(plan: PlanReport) -> str:
    parts = [
        f"DRY RUN for case {printable(plan.case_id)}, acting as {printable(plan.actor)}: "
        "nothing will be changed."
    ]
    if plan.setup:
        parts.append("Set-up:\n" + "\n".join(f"  - {printable(line)}" for line in plan.setup))
    for instance_id, steps in plan.instances.items():
        lines = [f"{printable(instance_id)}:"]
        for number, planned in enumerate(steps, start=1):
            lines.append(
                printable(
                    f"  {number}. {planned.step}: {planned.title}"
                    + (f" ({planned.note})" if planned.note else "")
                )
            )
            for call in planned.calls:
                check = plan.checks.get(call.action)
                verdict = f"[{check.verdict} by {check.how}]" if check else ""
                lines.append(printable(f"       {call.action} {' '.join(call.resources)} {verdict}".rstrip()))
        parts.append("\n".join(lines))
    for refused in plan.refused:
        parts.append(printable(f"{refused.instance_id}: would fail: {refused.error_code}: {refused.detail}"))
    counts = {verdict: 0 for verdict in ("allowed", "denied", "not checked")}
    for check in plan.checks.values():
        counts[check.verdict] += 1
    parts.append(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + " permission(s)")
    parts.extend(printable(f"DENIED: {check.action} (found by {check.how})") for check in plan.denied)
    return "\n\n".join(parts)


def render_preflight(caller: str, rows: Sequence[tuple[str, str, Check]]) -> str:
    body = table(
        ["ACTION", "VERDICT", "HOW", "NEEDED FOR"],
        [[action, check.verdict, check.how, purpose] for action, purpose, check in rows],
    )
    denied = sum(check.verdict == "denied" for _, _, check in rows)
    return f"{body}\n\npreflight for {printable(caller)}: {denied} action(s) denied"


def check_as_dict(check: Check) -> dict[str, str]:
    return {"action": check.action, "verdict": check.verdict, "how": check.how}


def render_status(holds: Sequence[Hold]) -> str:
    if not holds:
        return "nothing is isolated"
    rows: list[list[str]] = []
    for hold in holds:
        enis = list(hold.originals.items()) or [("-", ())]
        for index, (eni, groups) in enumerate(enis):
            first = index == 0
            rows.append(
                [
                    hold.instance_id if first else "",
                    hold.case_id if first else "",
                    hold.status.value if first else "",
                    (hold.isolated_at or hold.recorded_at) if first else "",
                    hold.recorded_by if first else "",
                    eni,
                    ",".join(groups) or "-",
                ]
            )
    return table(["INSTANCE", "CASE", "STATUS", "SINCE", "BY", "ENI", "ORIGINAL GROUPS"], rows)


def hold_as_dict(hold: Hold) -> dict[str, object]:
    return {
        "instance_id": hold.instance_id,
        "case_id": hold.case_id,
        "status": hold.status.value,
        "recorded_at": hold.recorded_at,
        "recorded_by": hold.recorded_by,
        "isolated_at": hold.isolated_at,
        "released_at": hold.released_at,
        "released_by": hold.released_by,
        "originals": {eni: list(groups) for eni, groups in hold.originals.items()},
        "eni_vpcs": hold.eni_vpcs,
    }


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


class ProgressPrinter:
    """Live progress on a terminal; plain lines when the stream is not a TTY."""

    def __init__(self, total: int, action: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.action = action
        self.stream = stream or sys.stderr
        self.done = 0
        self.failed = 0
        self.live = self.stream.isatty()
        self._lock = threading.Lock()

    def __call__(self, result: InstanceResult) -> None:
        with self._lock:
            self.done += 1
            self.failed += not result.ok
            if self.live:
                self.stream.write(
                    f"\r{printable(self.action)}: {self.done}/{self.total} done, {self.failed} failed\x1b[K"
                )
                if self.done == self.total:
                    self.stream.write("\n")
            else:
                outcome = "ok" if result.ok else f"failed {result.error_code}"
                line = f"[{self.done}/{self.total}] {self.action} {result.instance_id}: {outcome}"
                self.stream.write(printable(line) + "\n")
            self.stream.flush()


def render_findings(findings: Sequence[Finding]) -> str:
    rows = [[f.status, f.ref.kind, f.ref.location, f.detail] for f in findings]
    bad = sum(not f.ok for f in findings)
    verdict = (
        f"{bad} of {len(findings)} piece(s) of evidence do NOT match the journal"
        if bad
        else f"all {len(findings)} piece(s) of evidence match the journal"
    )
    return table(["STATUS", "KIND", "LOCATION", "DETAIL"], rows) + "\n\n" + verdict


def progress_bar(stream: TextIO, what: str, done: int, total: int, width: int = 30) -> None:
    """A bar redrawn in place on a terminal; one plain line per poll otherwise."""
    if stream.isatty():
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        stream.write(f"\r{printable(what)} [{bar}] {done}/{total}\x1b[K" + ("\n" if done == total else ""))
    else:
        stream.write(f"{printable(what)}: {done}/{total} completed\n")
    stream.flush()
