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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, TextIO

from ec2ir.core.models import Hold, InstanceResult, Phase
from ec2ir.core.outcomes import Outcome, StepStatus
from ec2ir.core.text import eni_lines, groups_named, named, printable, short, table, table_lines

if TYPE_CHECKING:  # at run time only models: forensics and report import this module
    from ec2ir.engine.results import PlannedStep, PlanReport, RunReport
    from ec2ir.evidence.verify import Finding
    from ec2ir.permissions.policy import Check

# Below this many instances a run is quick enough that progress lines would only be noise.
PROGRESS_THRESHOLD = 5

# A step skipped for one of these reasons had nothing to do: saying so would only be noise.
QUIET_SKIPS = frozenset(
    {Outcome.skipped("nothing to do for this instance"), Outcome.skipped("nothing was recorded")}
)
STEP_INDENT = "    "


def step_lines(result: InstanceResult) -> list[str]:
    """One line per step under the instance's row: what it did, what failed, what was not done."""
    return [
        printable(f"{STEP_INDENT}{step}: {_shown(Outcome.parse(text), text)}")
        for step, text in result.steps.items()
        if Outcome.parse(text) not in QUIET_SKIPS
    ]


def _shown(outcome: Outcome, text: str) -> str:
    """A step's outcome under its instance: what was done needs no prefix, the rest keep theirs
    (``text``, the outcome as the result carries it)."""
    return outcome.detail if outcome.is_done else text


def not_done(text: str) -> bool:
    """Whether a step's outcome (as the result carries it) is something asked for and not done."""
    outcome = Outcome.parse(text)
    if outcome.status in (StepStatus.FAILED, StepStatus.NOT_COLLECTED, StepStatus.NOT_STARTED):
        return True
    return outcome.is_skipped and outcome not in QUIET_SKIPS


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


# What an interrupted run says it did (``interrupt_lines``), and did not, per command.
INTERRUPTED_OUTCOMES = {
    "isolate": ("contained (every ENI in the isolation group)", "NOT contained"),
    "release": ("released", "NOT released"),
    "collect": ("evidence collected", "evidence NOT collected"),
    "rejoin": ("rejoined", "NOT rejoined"),
}


def interrupt_lines(report: RunReport, skipped: Sequence[str] = ()) -> list[str]:
    """The lines for standard error after a run interrupted by Ctrl-C: which instances are done
    (for isolate: contained, every ENI in the isolation group, even if later steps never
    started), which are not, and the run-wide work (``skipped``) that never started."""
    done_as, not_done_as = INTERRUPTED_OUTCOMES[report.action]
    isolate = report.action == "isolate"
    done = [r.instance_id for r in report.results if r.ok or (isolate and r.enis)]
    left = [r.instance_id for r in report.results if r.instance_id not in done]
    lines = [f"{done_as}: {', '.join(done) or 'none'}", f"{not_done_as}: {', '.join(left) or 'none'}"]
    lines += [Outcome.not_started(what).text for what in skipped]
    if isolate:  # a contained instance's later steps too: isolate again finishes every one
        lines.append("run `ec2ir isolate` again with the same arguments to finish")
    elif left:  # a release, rejoin or collection done is not done again
        lines.append(f"run `ec2ir {report.action}` again on {' '.join(left)} to finish")
    return [printable(f"ec2ir: interrupted: {line}") for line in lines]


def render_run(report: RunReport) -> str:
    verb = {"isolate": "isolated", "release": "released", "collect": "collected", "rejoin": "rejoined"}[
        report.action
    ]
    names = report.group_names
    # the NAME column (each instance's Name tag) only when some instance has one
    titled = any(r.name for r in report.results)
    # the PLACE column (account/Region) only for a run that reached beyond its own place
    placed = any(r.place for r in report.results)
    rows = [
        [
            r.instance_id,
            *([str(r.place or "")] if placed else []),
            *([short(r.name)] if titled else []),
            verb if r.ok else "INTERRUPTED" if r.interrupted else f"FAILED {r.error_code}",
            eni_lines(r.enis, names) if r.ok or r.interrupted else "",
            r.detail,
        ]
        for r in report.results
    ]
    headers = ["INSTANCE", *(["PLACE"] if placed else []), *(["NAME"] if titled else [])]
    headers += ["RESULT", "ENI: GROUPS NOW", "DETAIL"]
    head, rule, *body = table_lines(headers, rows)
    lines = [*head, *rule]
    for row, result in zip(body, report.results, strict=True):
        lines += [*row, *step_lines(result)]
    parts = ["\n".join(lines)]
    if report.groups:
        parts.append(
            table(
                ["VPC", "ISOLATION GROUP", "FORENSIC GROUP"],
                [
                    [
                        v,
                        named(g.isolation_group_id, names.get(g.isolation_group_id, "")),
                        named(g.forensic_group_id, names.get(g.forensic_group_id, "")),
                    ]
                    for v, g in sorted(report.groups.items())
                ],
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
        lines = [f"{printable(named(instance_id, plan.names.get(instance_id, '')))}:"]
        lines += _planned_lines(plan, steps, 1)
        paths = plan.eni_paths.get(instance_id, {})
        if paths:
            lines.append("  each ENI's path (its groups now -> allow-all group -> isolation group):")
            lines += [printable(f"       {eni}: {path.describe()}") for eni, path in paths.items()]
        evidence = plan.evidence.get(instance_id, [])
        if evidence:
            lines.append(printable(f"  then the evidence, to s3://{plan.evidence_bucket}:"))
            lines += _planned_lines(plan, evidence, len(steps) + 1)
        parts.append("\n".join(lines))
    for refused in plan.refused:
        parts.append(printable(f"{refused.instance_id}: would fail: {refused.error_code}: {refused.detail}"))
    counts = {verdict: 0 for verdict in ("allowed", "denied", "not checked")}
    for check in plan.checks.values():
        counts[check.verdict] += 1
    parts.append(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) + " permission(s)")
    parts.extend(printable(f"DENIED: {check.action} (found by {check.how})") for check in plan.denied)
    return "\n\n".join(parts)


def _planned_lines(plan: PlanReport, steps: Sequence[PlannedStep], first: int) -> list[str]:
    """One line per planned step, numbered from ``first``, each call under it with its verdict."""
    lines = []
    for number, planned in enumerate(steps, start=first):
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
    return lines


def render_preflight(caller: str, rows: Sequence[tuple[str, str, Check]]) -> str:
    body = table(
        ["ACTION", "VERDICT", "HOW", "NEEDED FOR"],
        [[action, check.verdict, check.how, purpose] for action, purpose, check in rows],
    )
    denied = sum(check.verdict == "denied" for _, _, check in rows)
    return f"{body}\n\npreflight for {printable(caller)}: {denied} action(s) denied"


def check_as_dict(check: Check) -> dict[str, str]:
    return {"action": check.action, "verdict": check.verdict, "how": check.how}


def render_status(holds: Sequence[Hold], names: Names | None = None) -> str:
    """The holds, one line per ENI; ``names`` (display only) puts each instance's Name tag and
    each group's name beside its id."""
    if not holds:
        return "nothing is isolated"
    names = names or Names()
    titled = any(hold.instance_id in names.instances for hold in holds)
    placed = any(hold.place for hold in holds)  # a case across accounts or Regions
    rows: list[list[str]] = []
    for hold in holds:
        enis = list(hold.originals.items()) or [("-", ())]
        for index, (eni, groups) in enumerate(enis):
            first = index == 0
            rows.append(
                [
                    hold.instance_id if first else "",
                    # the table's own account and Region: where the command runs
                    *([str(hold.place or "(home)") if first else ""] if placed else []),
                    *([short(names.instances.get(hold.instance_id, "")) if first else ""] if titled else []),
                    hold.case_id if first else "",
                    hold.status.value if first else "",
                    (hold.isolated_at or hold.recorded_at) if first else "",
                    hold.recorded_by if first else "",
                    eni,
                    groups_named(groups, names.groups),
                ]
            )
    headers = [
        "INSTANCE",
        *(["PLACE"] if placed else []),
        *(["NAME"] if titled else []),
        *["CASE", "STATUS", "SINCE", "BY", "ENI"],
    ]
    headers.append("ORIGINAL GROUPS")
    return table(headers, rows)


@dataclass(frozen=True)
class Names:
    """What resources are called, for display only: instance id -> Name tag, group id -> group
    name. Anyone who can tag an instance or create a group sets them, so ec2ir never decides
    anything from them, and shows them escaped and cut short (``short``)."""

    instances: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)

    def of_hold(self, hold: Hold) -> dict[str, object]:
        """The names a hold's JSON carries beside its ids."""
        group_ids = sorted({g for groups in hold.originals.values() for g in groups})
        return {
            "name": self.instances.get(hold.instance_id, ""),
            "group_names": {g: self.groups[g] for g in group_ids if g in self.groups},
        }


def hold_as_dict(hold: Hold, names: Names | None = None) -> dict[str, object]:
    return {
        **(names or Names()).of_hold(hold),
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
    } | ({"account": hold.place.account, "region": hold.place.region} if hold.place else {})


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


class Schema(StrEnum):
    """What an ``--output json`` document is: its shape and that shape's version (docs/json.md).
    A version only ever gains fields; a field removed, renamed or given another meaning takes the
    next version."""

    RUN = "ec2ir.run/1"  # isolate, release, collect, rejoin
    PLAN = "ec2ir.plan/1"  # isolate --dry-run
    RELEASE_PLAN = "ec2ir.release-plan/1"  # release --dry-run
    STATUS = "ec2ir.status/1"
    CHECK = "ec2ir.check/1"  # status --check
    VERIFY = "ec2ir.verify/1"
    PREFLIGHT = "ec2ir.preflight/1"
    EDGE = "ec2ir.edge/1"  # block-ip, unblock-ip
    FORENSICS_ATTACH = "ec2ir.forensics-attach/1"
    FORENSICS_DETACH = "ec2ir.forensics-detach/1"
    # report --format json (or --output json); its name predates the others' and scripts check it
    REPORT = "ec2ir-report/1"


def document(schema: Schema, body: dict[str, object]) -> str:
    """One ``--output json`` document: always an object, whose ``schema`` names its shape."""
    return to_json({"schema": schema.value, **body})


class ProgressPrinter:
    """Live progress, phase by phase (ec2ir.engine.results.Progress), from any thread: on a terminal one
    bar per phase, redrawn in place; otherwise one plain line per instance and phase.

    isolate reports each instance CONTAINED as soon as its cut ends, then DONE once its evidence
    and the other late steps have. Containment is worth seeing in any run of more than one
    instance; the DONE phase only from ``quiet_below`` instances (PROGRESS_THRESHOLD), below
    which a run is quick enough that its lines would only be noise."""

    def __init__(
        self, total: int, action: str, stream: TextIO | None = None, quiet_below: int = PROGRESS_THRESHOLD
    ) -> None:
        self.total = total
        self.action = action
        self.stream = stream or sys.stderr
        self.ended: dict[Phase, int] = {}  # phase -> instances that reached it
        self.failed: dict[Phase, int] = {}
        self.shown = {Phase.CONTAINED, Phase.DONE} if total >= quiet_below else {Phase.CONTAINED}
        self.live = self.stream.isatty()
        self._on_line: Phase | None = None  # the phase whose bar the line shows, until it is full
        self._full: set[Phase] = set()  # the phases whose bar is full, and done with
        self._lock = threading.Lock()
        self._contained: set[str] = set()  # the instances whose containment was already said

    @property
    def done(self) -> int:
        return self.ended.get(Phase.DONE, 0)

    def __call__(self, result: InstanceResult, phase: Phase = Phase.DONE) -> None:
        with self._lock:
            if phase == Phase.CONTAINED and result.instance_id in self._contained:
                self._taken_back(result)
                return
            if phase == Phase.CONTAINED:
                self._contained.add(result.instance_id)
            self.ended[phase] = self.ended.get(phase, 0) + 1
            self.failed[phase] = self.failed.get(phase, 0) + (not result.ok)
            if phase not in self.shown:
                return
            if self.live:
                self._draw(phase)
            else:
                self.stream.write(self._line(result, phase) + "\n")
            self.stream.flush()

    def _taken_back(self, result: InstanceResult) -> None:
        """An instance said contained that the check after the cut found open (an ENI attached or
        moved back meanwhile, or the check refused): a line of its own, whatever the stream."""
        self.failed[Phase.CONTAINED] = self.failed.get(Phase.CONTAINED, 0) + 1
        instance = named(result.instance_id, result.name)
        line = printable(f"NOT contained after all: {instance}: failed {result.error_code}")
        self.stream.write(("\r\x1b[K" if self.live else "") + line + "\n")
        if self.live and self._on_line:
            self._bar(self._on_line)
        self.stream.flush()

    def _line(self, result: InstanceResult, phase: Phase) -> str:
        count = f"[{self.ended[phase]}/{self.total}]"
        instance = named(result.instance_id, result.name)
        if phase == Phase.CONTAINED:
            if result.ok:
                return printable(f"{count} contained {instance}")
            return printable(f"{count} NOT contained {instance}: failed {result.error_code}")
        outcome = "ok" if result.ok else f"failed {result.error_code}"
        return printable(f"{count} {self.action} {instance}: {outcome}")

    def _draw(self, phase: Phase) -> None:
        """The phase's bar; a phase whose bar is not on the line (a failed cut's DONE, while the
        other cuts go on) is drawn once the bar that is there is full."""
        if (self._on_line and self._on_line != phase) or phase in self._full:
            return
        self._on_line = phase
        self._bar(phase)
        if self.ended[phase] < self.total:
            return
        self.stream.write("\n")
        self._on_line = None
        self._full.add(phase)
        for waiting in Phase:
            if waiting in self.shown and self.ended.get(waiting, 0):
                self._draw(waiting)

    def _bar(self, phase: Phase, width: int = 30) -> None:
        ended = self.ended[phase]
        filled = width * ended // max(self.total, 1)
        label = f"{printable(self.action)}: {phase}"
        self.stream.write(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {ended}/{self.total}, "
            f"{self.failed[phase]} failed\x1b[K"
        )


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
