"""The incident report: what was done to a case's instances, when, by whom, and what was kept.

Built only from the state table (the case journal and the holds), so it can be produced long after
the incident, from any machine that can read the table, without touching EC2. Rendered as
Markdown (for tickets), JSON (for tools) or one self-contained HTML page (for people): inline CSS
and SVG, no script and no external URL, so it can be mailed, archived or opened offline.

Journal text comes from AWS error messages, tags and instance metadata, so every renderer treats
it as hostile: HTML escapes it, Markdown neutralises tags and table syntax, and both show control
characters as visible escapes (``output.printable``), as a Markdown report is often read in a
terminal and an HTML one may be printed to one.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ec2ir.core import validate
from ec2ir.core.errors import UsageError
from ec2ir.core.models import EvidenceRef, Hold, HoldStatus, JournalEntry, StepStatus, parse_outcome
from ec2ir.evidence.provenance import check_chain
from ec2ir.render.terminal import Schema, printable
from ec2ir.store.state import StateStore, now

FORMATS = ("md", "html", "json")
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
    """The kind of a journal result, from the prefix the engine writes (ec2ir.core.models.parse_outcome)."""
    return _KINDS.get(parse_outcome(result)[0], OTHER)


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


# -- building ----------------------------------------------------------------------------------


def build_report(store: StateStore, case_id: str) -> CaseReport:
    case = validate.case_id(case_id)
    if not store.exists():
        raise UsageError(
            f"state table {store.table!r} does not exist, so there is no journal to report on",
            "pass --table (and --region) where ec2ir recorded the case",
        )
    stored = store.journal_records(case)
    journal = [entry.entry for entry in stored]
    holds = {hold.instance_id: hold for hold in store.holds(case)}
    if not journal and not holds:
        raise UsageError(
            f"case {case!r} has no journal entries and no holds in state table {store.table!r}",
            "check the case id and --table; `ec2ir status` lists the cases that hold instances",
        )
    # Instances the journal names without a hold (a refused or failed isolate) belong in the report
    # too: they show what was attempted.
    instance_ids = sorted(set(holds) | {e.target for e in journal if e.target.startswith("i-")})
    instances = tuple(_instance_state(i, holds.get(i), journal) for i in instance_ids)
    # Each piece once, at the entry that first journaled it: a rerun journals again what an
    # earlier run stored (its snapshots, its metadata objects), and is no new evidence.
    first: dict[tuple[str, str, str], EvidenceItem] = {}
    for number, entry in enumerate(journal, start=1):
        for ref in entry.evidence:
            first.setdefault(evidence_key(ref), _evidence_item(number, entry, ref))
    evidence = tuple(first.values())
    still = tuple(
        StillIsolated(
            hold.instance_id, hold.status.value, hold.isolated_at or hold.recorded_at, len(hold.originals)
        )
        for hold in holds.values()
        if hold.status is not HoldStatus.RELEASED
    )
    statuses = [hold.status for hold in holds.values()]
    summary = Summary(
        case_id=case,
        first_at=journal[0].at if journal else "",
        last_at=journal[-1].at if journal else "",
        actors=tuple(
            sorted({e.actor for e in journal} | {h.recorded_by for h in holds.values() if h.recorded_by})
        ),
        instances=len(instances),
        isolated=statuses.count(HoldStatus.ISOLATED),
        in_progress=statuses.count(HoldStatus.ISOLATING) + statuses.count(HoldStatus.RELEASING),
        released=statuses.count(HoldStatus.RELEASED),
        actions=len(journal),
        failures=sum(1 for e in journal if outcome(e.result) == FAILED),
        evidence=len(evidence),
    )
    return CaseReport(
        summary=summary,
        timeline=tuple(journal),
        integrity=tuple(
            f"{finding.status}: {finding.detail}" for finding in check_chain(stored) if not finding.ok
        ),
        instances=instances,
        evidence=evidence,
        still_isolated=tuple(sorted(still, key=lambda s: s.instance_id)),
        table=store.table,
        generated_at=now(),
    )


def evidence_key(ref: EvidenceRef) -> tuple[str, str, str]:
    """One piece of evidence however often the journal names it: the key ``Engine.verify``
    checks each piece under (a snapshot by its id; an object by its location and version)."""
    return (ref.kind, ref.location, ref.version_id)


def _last_result(journal: list[JournalEntry], target: str, action: str) -> str:
    results = [e.result for e in journal if e.target == target and e.action == action]
    return results[-1] if results else ""


def _instance_state(instance_id: str, hold: Hold | None, journal: list[JournalEntry]) -> InstanceState:
    if hold is None:
        return InstanceState(
            instance_id,
            "not held",
            "no current hold in this case: the isolation was refused or failed before its originals "
            "were recorded, or another case holds it now (see its journal entries)",
        )
    network = _last_result(journal, instance_id, "isolate:network")
    restore = _last_result(journal, instance_id, "release:network")
    enis = []
    for eni_id, before in hold.originals.items():
        vpc = hold.eni_vpcs.get(eni_id, "")
        where = f" of {vpc}" if vpc else ""
        if hold.status is HoldStatus.RELEASED and outcome(restore) in (SKIPPED, FAILED):
            # A terminated instance's hold is closed without putting anything back.
            enis.append(EniState(eni_id, vpc, before, f"not restored: {restore}"))
        elif hold.status is HoldStatus.RELEASED:
            enis.append(EniState(eni_id, vpc, before, "original groups restored", before))
        elif hold.status is HoldStatus.ISOLATED:
            enis.append(EniState(eni_id, vpc, before, f"isolation group{where}"))
        elif hold.status is HoldStatus.ISOLATING:
            enis.append(EniState(eni_id, vpc, before, f"isolation group{where} or still the originals"))
        else:
            enis.append(EniState(eni_id, vpc, before, f"original groups or still the isolation group{where}"))
    after = _after(hold, network, restore)
    return InstanceState(
        instance_id=instance_id,
        status=hold.status.value,
        after=after,
        enis=tuple(enis),
        step_originals={
            name: json.dumps(record, sort_keys=True) for name, record in sorted(hold.steps.items())
        },
        recorded_at=hold.recorded_at,
        recorded_by=hold.recorded_by,
        isolated_at=hold.isolated_at,
        released_at=hold.released_at,
        released_by=hold.released_by,
    )


def _after(hold: Hold, network: str, restore: str) -> str:
    if hold.status is HoldStatus.ISOLATED:
        return f"isolated since {hold.isolated_at or '?'}" + (f"; network: {network}" if network else "")
    if hold.status is HoldStatus.ISOLATING:
        return "isolation did not finish: run `ec2ir isolate` again with this case to complete it" + (
            f"; network: {network}" if network else ""
        )
    if hold.status is HoldStatus.RELEASING:
        return "release did not finish: run `ec2ir release` again to complete it" + (
            f"; network: {restore}" if restore else ""
        )
    return f"released {hold.released_at or '?'} by {hold.released_by or '?'}" + (
        f"; network: {restore}" if restore else ""
    )


def _evidence_item(number: int, entry: JournalEntry, ref: EvidenceRef) -> EvidenceItem:
    return EvidenceItem(
        entry=number,
        at=entry.at,
        target=entry.target,
        action=entry.action,
        kind=ref.kind,
        location=ref.location,
        sha256=ref.sha256,
        size=ref.size,
        version_id=ref.version_id,
        details=dict(sorted(ref.details.items())),
    )


# -- rendering ---------------------------------------------------------------------------------


def render(report: CaseReport, fmt: str) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    raise UsageError(f"unknown report format {fmt!r}", f"use one of: {', '.join(FORMATS)}")


def render_json(report: CaseReport) -> str:
    data = {"schema": SCHEMA, **dataclasses.asdict(report)}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _size(size: int) -> str:
    return f"{size:,} B" if size else ""


def _details(details: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in details.items())


def _requests(entry: JournalEntry) -> str:
    return " ".join(entry.request_ids)


def _summary_rows(report: CaseReport) -> list[tuple[str, str]]:
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


# Markdown ----------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def _md(text: object) -> str:
    """One table cell: no line breaks, no table or link syntax, no raw HTML that a viewer might
    render (a tag is shown as text, an entity keeps it readable once rendered), and no control
    character that a terminal would act on."""
    flat = printable(" ".join(str(text).split()))
    return _MD_SPECIAL.sub(r"\\\1", flat).replace("<", "&lt;").replace(">", "&gt;")


def _md_table(headers: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(report: CaseReport) -> str:
    s = report.summary
    out = [
        f"# Incident report: case {_md(s.case_id)}",
        "",
        f"Generated {_md(report.generated_at)} by ec2ir from the case journal and holds in state table "
        f"{_md(report.table)}. Times are UTC.",
        "",
        *(
            [
                "**WARNING: the case journal does not prove itself** (`ec2ir verify` has details):",
                "",
                *(f"- {_md(problem)}" for problem in report.integrity),
                "",
            ]
            if report.integrity
            else []
        ),
        "## Summary",
        "",
        *_md_table(["Item", "Value"], [[k, v] for k, v in _summary_rows(report)]),
        "",
        "## Still isolated",
        "",
    ]
    if report.still_isolated:
        out += _md_table(
            ["Instance", "Status", "Since", "ENIs", "To release"],
            [
                [
                    h.instance_id,
                    h.status,
                    h.since,
                    str(h.enis),
                    f"ec2ir release {h.instance_id} --case {s.case_id}",
                ]
                for h in report.still_isolated
            ],
        )
    else:
        out.append("None: every instance this case held has been released.")
    out += ["", "## Instances: before and after", ""]
    for instance in report.instances:
        out += [f"### {_md(instance.instance_id)} ({_md(instance.status)})", "", _md(instance.after), ""]
        if instance.recorded_at:
            out += [f"Originals recorded {_md(instance.recorded_at)} by {_md(instance.recorded_by)}.", ""]
        if instance.enis:
            out += _md_table(
                ["ENI", "VPC", "Before (original groups)", "After"],
                [[e.eni_id, e.vpc_id, ", ".join(e.before) or "none", _eni_after(e)] for e in instance.enis],
            )
            out.append("")
        if instance.step_originals:
            out += _md_table(
                ["Step", "Recorded originals"], [[k, v] for k, v in instance.step_originals.items()]
            )
            out.append("")
    out += ["## Timeline", ""]
    out += _md_table(
        ["#", "Time (UTC)", "Target", "Action", "Result", "Actor", "Request ids"],
        [
            [str(n), e.at, e.target, e.action, e.result, e.actor, _requests(e)]
            for n, e in enumerate(report.timeline, start=1)
        ],
    )
    out += ["", "## Evidence", ""]
    if report.evidence:
        out += _md_table(
            ["Entry", "Target", "Kind", "Location", "SHA-256", "Size", "Version id", "Details"],
            [
                [
                    f"#{item.entry}",
                    item.target,
                    item.kind,
                    item.location,
                    item.sha256,
                    _size(item.size),
                    item.version_id,
                    _details(item.details),
                ]
                for item in report.evidence
            ],
        )
    else:
        out.append("No evidence was recorded in the journal for this case.")
    return "\n".join(out) + "\n"


def _eni_after(eni: EniState) -> str:
    return f"{eni.after}: {', '.join(eni.after_groups)}" if eni.after_groups else eni.after


# HTML --------------------------------------------------------------------------------------------

COLOURS = {
    DONE: "#2e7d32",
    FAILED: "#c62828",
    SKIPPED: "#8a8f98",
    NOT_COLLECTED: "#e08a00",
    NOT_STARTED: "#6a1b9a",
    OTHER: "#1f5fa8",
}
STATUS_COLOURS = {
    HoldStatus.ISOLATED.value: "#c62828",
    HoldStatus.ISOLATING.value: "#e08a00",
    HoldStatus.RELEASING.value: "#e08a00",
    HoldStatus.RELEASED.value: "#2e7d32",
    "not held": "#8a8f98",
}

CSS = """
:root { --ink:#1d232b; --muted:#5d6673; --line:#d9dee5; --band:#f4f6f9; --accent:#14365d; }
* { box-sizing: border-box; }
body { margin:0; background:#eef1f5; color:var(--ink);
  font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1200px; margin:0 auto; background:#fff; padding:0 40px 40px;
  box-shadow:0 1px 4px rgba(0,0,0,.08); }
header.top { margin:0 -40px 24px; padding:28px 40px 22px; background:var(--accent); color:#fff; }
header.top .kicker { text-transform:uppercase; letter-spacing:.12em; font-size:11px; opacity:.75; }
header.top h1 { margin:4px 0 6px; font-size:26px; font-weight:600; }
header.top .meta { font-size:12px; opacity:.85; }
.banner { padding:12px 16px; border-radius:4px; font-weight:600; margin-bottom:20px; border-left:6px solid; }
.banner.alert { background:#fdecea; border-color:#c62828; color:#8e1b1b; }
.banner.ok { background:#e8f5e9; border-color:#2e7d32; color:#1b5e20; }
h2 { font-size:18px; margin:32px 0 10px; padding-bottom:6px; border-bottom:2px solid var(--accent);
  color:var(--accent); }
h3 { font-size:15px; margin:22px 0 6px; }
.cards { display:grid; grid-template-columns:repeat(6, 1fr); gap:10px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 12px; background:var(--band); }
.card .n { font-size:24px; font-weight:600; }
.card .l { font-size:11px; text-transform:uppercase; letter-spacing:.06em; color:var(--muted); }
.card.bad .n { color:#c62828; } .card.good .n { color:#2e7d32; }
table { width:100%; border-collapse:collapse; margin:8px 0 4px; font-size:12.5px; }
th { text-align:left; background:var(--band); color:var(--muted); font-weight:600;
  border-bottom:1px solid var(--line); padding:6px 8px; white-space:nowrap; }
td { border-bottom:1px solid var(--line); padding:5px 8px; vertical-align:top; }
tr:nth-child(even) td { background:#fafbfc; }
table.kv th { width:260px; }
.mono, code { font-family:"SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; font-size:12px; }
.hash { word-break:break-all; }
.wrap { word-break:break-word; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff; font-size:11px;
  font-weight:600; white-space:nowrap; }
.after { color:var(--muted); margin:2px 0 8px; }
table.journal, table.evidence { table-layout:fixed; }
table.journal th:nth-child(1) { width:34px; } table.journal th:nth-child(2) { width:140px; }
table.journal th:nth-child(3) { width:170px; } table.journal th:nth-child(4) { width:180px; }
table.journal th:nth-child(6) { width:190px; }
table.evidence th:nth-child(1) { width:52px; } table.evidence th:nth-child(2) { width:200px; }
table.evidence th:nth-child(4) { width:300px; } table.evidence th:nth-child(5) { width:250px; }
.sub { color:var(--muted); font-size:11.5px; margin-top:2px; }
.req { color:var(--muted); font-size:11px; margin-top:2px; word-break:break-all; }
.req summary { cursor:pointer; }
.note { color:var(--muted); font-size:12px; }
figure { margin:0; border:1px solid var(--line); border-radius:6px; padding:8px; }
figure svg { display:block; width:100%; height:auto; }
figcaption { font-size:12px; color:var(--muted); padding:6px 4px 0; }
footer { margin-top:32px; font-size:11px; color:var(--muted); border-top:1px solid var(--line);
  padding-top:8px; }
@media print { body { background:#fff; } main { box-shadow:none; max-width:none; padding:0; }
  header.top { margin:0 0 16px; } tr, figure { break-inside:avoid; } }
"""


def _h(text: object) -> str:
    return html.escape(printable(text), quote=True)


def _pill(text: str, colour: str) -> str:
    return f'<span class="pill" style="background:{colour}">{_h(text)}</span>'


def _html_table(headers: list[str], rows: Iterable[list[str]], cls: str = "") -> str:
    """Cells are HTML already (each escaped where it was made), so they are not escaped again."""
    head = "".join(f"<th>{_h(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _mono(text: str, cls: str = "mono") -> str:
    return f'<span class="{cls}">{_h(text)}</span>'


def _result_cell(result: str) -> str:
    kind = outcome(result)
    return f"{_pill(kind, COLOURS[kind])} <span class='wrap'>{_h(result)}</span>"


def _request_ids(entry: JournalEntry) -> str:
    if not entry.request_ids:
        return ""
    # Folded, as one upload can take dozens; <details> needs no script to open.
    return (
        f'<details class="req"><summary>{len(entry.request_ids)} AWS request id(s)</summary>'
        f"{_mono(_requests(entry))}</details>"
    )


def render_html(report: CaseReport) -> str:
    s = report.summary
    still = len(report.still_isolated)
    banner = (
        f'<div class="banner alert">{still} instance(s) still held by this case: not yet released.</div>'
        if still
        else '<div class="banner ok">No instance is held: every instance of this case was released.</div>'
    )
    cards = [
        ("Instances", s.instances, ""),
        ("Isolated now", s.isolated, "bad" if s.isolated else ""),
        ("Released", s.released, "good" if s.released else ""),
        ("Actions", s.actions, ""),
        ("Failed actions", s.failures, "bad" if s.failures else "good"),
        ("Evidence items", s.evidence, ""),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Incident report: case {_h(s.case_id)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        '<header class="top"><div class="kicker">ec2ir incident report</div>',
        f"<h1>Case {_h(s.case_id)}</h1>",
        f'<div class="meta">Generated {_h(report.generated_at)} from the case journal and holds in '
        f"state table {_h(report.table)}. Times are UTC.</div></header>",
        banner,
        '<div class="cards">'
        + "".join(
            f'<div class="card {cls}"><div class="n">{n}</div><div class="l">{_h(label)}</div></div>'
            for label, n, cls in cards
        )
        + "</div>",
        "<h2>Timeline</h2>",
        '<figure id="timeline">',
        timeline_svg(report),
        "<figcaption>One lane per target; each mark is one journal entry, numbered as in the table below. "
        "Marks keep the journal's order and gaps grow with the time between entries; entries of the "
        "same moment are spread out so that each stays visible.</figcaption></figure>",
        "<h2>Still isolated</h2>",
    ]
    if report.still_isolated:
        parts.append(
            _html_table(
                ["Instance", "Status", "Since", "ENIs", "To release"],
                [
                    [
                        _mono(h.instance_id),
                        _pill(h.status, STATUS_COLOURS.get(h.status, COLOURS[OTHER])),
                        _mono(h.since),
                        str(h.enis),
                        f"<code>ec2ir release {_h(h.instance_id)} --case {_h(s.case_id)}</code>",
                    ]
                    for h in report.still_isolated
                ],
            )
        )
    else:
        parts.append('<p class="note">None: every instance this case held has been released.</p>')
    parts += [
        "<h2>Case details</h2>",
        _html_table(["Item", "Value"], [[_h(k), _h(v)] for k, v in _summary_rows(report)], "kv"),
    ]
    parts.append("<h2>Instances: before and after</h2>")
    for instance in report.instances:
        parts.append(
            f"<h3>{_mono(instance.instance_id)} "
            f"{_pill(instance.status, STATUS_COLOURS.get(instance.status, COLOURS[OTHER]))}</h3>"
            f'<p class="after">{_h(instance.after)}</p>'
        )
        if instance.recorded_at:
            parts.append(
                f'<p class="note">Originals recorded {_h(instance.recorded_at)} '
                f"by {_h(instance.recorded_by)}.</p>"
            )
        if instance.enis:
            parts.append(
                _html_table(
                    ["ENI", "VPC", "Before (original groups)", "After"],
                    [
                        [
                            _mono(e.eni_id),
                            _mono(e.vpc_id),
                            _mono(", ".join(e.before) or "none"),
                            _h(_eni_after(e)),
                        ]
                        for e in instance.enis
                    ],
                )
            )
        if instance.step_originals:
            parts.append(
                _html_table(
                    ["Step", "Recorded originals"],
                    [[_h(k), _mono(v, "mono wrap")] for k, v in instance.step_originals.items()],
                )
            )
    parts.append("<h2>Journal</h2>")
    parts.append(
        _html_table(
            ["#", "Time (UTC)", "Target", "Action", "Result", "Actor"],
            [
                [
                    f'<span id="e{n}">{n}</span>',
                    "<br>".join(_mono(part) for part in e.at.split("T", 1)),
                    _mono(e.target, "mono wrap"),
                    _mono(e.action, "mono wrap"),
                    _result_cell(e.result) + _request_ids(e),
                    _mono(e.actor, "mono hash"),
                ]
                for n, e in enumerate(report.timeline, start=1)
            ],
            "journal",
        )
    )
    parts.append("<h2>Evidence</h2>")
    if report.evidence:
        parts.append(
            _html_table(
                ["Entry", "Item", "Location", "SHA-256", "Details"],
                [
                    [
                        f'<a href="#e{item.entry}">#{item.entry}</a>',
                        f"<b>{_h(item.kind)}</b><div class='sub'>{_mono(item.target)}</div>",
                        _mono(item.location, "mono hash")
                        + (
                            f"<div class='sub'>version {_mono(item.version_id, 'mono hash')}</div>"
                            if item.version_id
                            else ""
                        ),
                        (
                            _mono(item.sha256, "mono hash")
                            if item.sha256
                            else "<span class='sub'>none: a snapshot has no hash</span>"
                        )
                        + (f"<div class='sub'>{_h(_size(item.size))}</div>" if item.size else ""),
                        "".join(
                            f"<div class='sub'>{_h(k)}: {_mono(v, 'mono wrap')}</div>"
                            for k, v in item.details.items()
                        ),
                    ]
                    for item in report.evidence
                ],
                "evidence",
            )
        )
    else:
        parts.append('<p class="note">No evidence was recorded in the journal for this case.</p>')
    parts.append(
        f"<footer>ec2ir report {_h(SCHEMA)}. The journal is append-only: entries are never updated or "
        "deleted. Snapshot evidence has no hash of its own; objects carry their SHA-256 and S3 version id."
        "</footer></main></body></html>"
    )
    return "\n".join(parts) + "\n"


# The SVG timeline --------------------------------------------------------------------------------

WIDTH = 1120
LABEL_W = 200  # the lane names on the left
RIGHT_PAD = 130  # room for the last rotated column labels
HEADER_H = 150  # the rotated column labels above the lanes
LANE_H = 38
AXIS_H = 46
LEGEND_H = 30
MIN_GAP = 18.0  # px between two consecutive marks, so that none hides another
LABEL_MIN_GAP = 13.0  # below this, only every few columns is labelled


def _parse(at: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(at)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def mark_positions(times: list[datetime | None], width: float) -> list[float]:
    """x of each entry, in journal order: a fixed step plus a share proportional to the time
    elapsed since the previous entry. One run writes dozens of entries within a second and a
    release may come hours later, so a purely linear scale would stack every mark of a run on one
    pixel; this keeps each mark visible and still shows the long pauses."""
    if not times:
        return []
    if len(times) == 1:
        return [width / 2]
    elapsed: list[float] = [0.0]
    previous = times[0]
    for stamp in times[1:]:
        if stamp is None:
            elapsed.append(0.0)
            continue
        elapsed.append(max(0.0, (stamp - previous).total_seconds()) if previous else 0.0)
        previous = stamp
    steps = len(times) - 1
    gap = min(MIN_GAP, width / steps)
    span = sum(elapsed)
    scale = (width - gap * steps) / span if span > 0 else 0.0
    xs = [0.0]
    for seconds in elapsed[1:]:
        xs.append(xs[-1] + gap + seconds * scale)
    if span == 0:  # nothing to stretch: centre the marks
        shift = (width - xs[-1]) / 2
        xs = [x + shift for x in xs]
    return xs


def _mark(kind: str, x: float, y: float) -> str:
    colour = COLOURS[kind]
    # Shapes as well as colours, so the picture still reads in black and white.
    if kind == FAILED:
        diamond = f"M{x:.1f} {y - 7:.1f} L{x + 7:.1f} {y:.1f} L{x:.1f} {y + 7:.1f} L{x - 7:.1f} {y:.1f} Z"
        return f'<path d="{diamond}" fill="{colour}" stroke="#fff" stroke-width="1.5"/>'
    if kind == SKIPPED:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#fff" stroke="{colour}" stroke-width="2"/>'
    if kind == NOT_STARTED:
        return (
            f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#fff" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
    if kind == NOT_COLLECTED:
        return (
            f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}" '
            'stroke="#fff" stroke-width="1.5"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}" stroke="#fff" stroke-width="1.5"/>'


def _clock(stamp: datetime, with_date: bool, precise: bool) -> str:
    text = stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    # Within a short case the seconds alone would label every tick the same.
    return text + (f".{stamp.microsecond // 1000:03d}Z" if precise else "Z")


def _pause(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s later"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min later"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h later"
    return f"{seconds / 86400:.1f} days later"


def _axis(times: list[datetime | None], xs: list[float], bottom: int) -> list[str]:
    """The time axis: the first moment, each burst of activity after a pause (with the pause's
    length), and the last moment, as far as their labels fit without overlapping."""
    known = [t for t in times if t is not None]
    precise = bool(known) and (known[-1] - known[0]).total_seconds() < 600
    out = [
        f'<line x1="{LABEL_W}" y1="{bottom + 6}" x2="{WIDTH - RIGHT_PAD + 10}" y2="{bottom + 6}" '
        'stroke="#5d6673" stroke-width="1"/>'
    ]
    last_label_x = -1e9
    last_day = ""
    previous: datetime | None = None
    final = max((i for i, t in enumerate(times) if t is not None), default=-1)
    for index, (stamp, x) in enumerate(zip(times, xs, strict=True)):
        if stamp is None:
            continue
        pause = (stamp - previous).total_seconds() if previous else 0.0
        previous = stamp
        first = not last_day  # no label yet
        wanted = first or pause >= 60 or index == final
        if not wanted or x - last_label_x < 170:
            continue
        day = stamp.astimezone(UTC).date().isoformat()
        anchor = "start" if first else "end" if index == final and pause < 60 else "middle"
        out.append(f'<line x1="{x:.1f}" y1="{bottom + 2}" x2="{x:.1f}" y2="{bottom + 11}" stroke="#5d6673"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 24}" font-size="11" text-anchor="{anchor}" fill="#1d232b">'
            f"{_h(_clock(stamp, day != last_day, precise))}</text>"
        )
        if pause >= 60:
            out.append(
                f'<text x="{x:.1f}" y="{bottom + 37}" font-size="10" text-anchor="middle" fill="#8a8f98">'
                f"{_h(_pause(pause))}</text>"
            )
        last_label_x, last_day = x, day
    return out


def timeline_svg(report: CaseReport) -> str:
    entries = report.timeline
    lanes: list[str] = []
    for entry in entries:
        if entry.target not in lanes:
            lanes.append(entry.target)
    status = {i.instance_id: i.status for i in report.instances}
    plot_w = WIDTH - LABEL_W - RIGHT_PAD - 20
    top = HEADER_H
    height = top + max(1, len(lanes)) * LANE_H + AXIS_H + LEGEND_H
    times = [_parse(e.at) for e in entries]
    xs = [LABEL_W + 10 + x for x in mark_positions(times, plot_w)]
    lane_y = {lane: top + index * LANE_H + LANE_H / 2 for index, lane in enumerate(lanes)}
    bottom = top + len(lanes) * LANE_H

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" role="img" aria-label="Timeline of case {_h(report.summary.case_id)}" '
        'font-family="-apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif">',
        f"<title>Timeline of case {_h(report.summary.case_id)}</title>",
    ]
    if not entries:
        out.append(
            f'<text x="{WIDTH / 2}" y="{top / 2}" text-anchor="middle" font-size="13" fill="#5d6673">'
            "The journal of this case is empty.</text></svg>"
        )
        return "\n".join(out)

    out.append('<g class="lanes">')
    for index, lane in enumerate(lanes):
        y = top + index * LANE_H
        fill = "#f4f6f9" if index % 2 == 0 else "#ffffff"
        out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{LANE_H}" fill="{fill}"/>')
        name = lane if len(lane) <= 24 else lane[:23] + "…"
        held = status.get(lane, "")
        baseline = y + (LANE_H / 2 - 1 if held else LANE_H / 2 + 4)
        out.append(
            f'<text class="lane" x="12" y="{baseline}" font-size="12" '
            'font-family="Menlo, Consolas, Liberation Mono, monospace" fill="#1d232b">'
            f"<title>{_h(lane)}</title>{_h(name)}</text>"
        )
        if held:  # an instance: where it stands now, under its name
            colour = STATUS_COLOURS.get(held, COLOURS[OTHER])
            out.append(
                f'<text x="12" y="{y + LANE_H / 2 + 11}" font-size="9.5" font-weight="600" '
                f'letter-spacing=".06em" fill="{colour}">{_h(held.upper())}</text>'
            )
        out.append(
            f'<line x1="{LABEL_W}" y1="{y + LANE_H / 2}" x2="{WIDTH - RIGHT_PAD + 10}" y2="{y + LANE_H / 2}" '
            'stroke="#c9d0d9" stroke-width="1"/>'
        )
    out.append("</g>")

    spacing = (xs[-1] - xs[0]) / max(1, len(xs) - 1) if len(xs) > 1 else MIN_GAP
    every = max(1, round(LABEL_MIN_GAP / spacing)) if spacing < LABEL_MIN_GAP else 1
    out.append('<g class="columns">')
    for number, (entry, x) in enumerate(zip(entries, xs, strict=True), start=1):
        mid = lane_y[entry.target]
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{mid:.1f}" stroke="#e3e7ec" stroke-width="1"/>'
        )
        if (number - 1) % every == 0:
            action = entry.action if len(entry.action) <= 30 else entry.action[:29] + "…"
            out.append(
                f'<text class="label" transform="translate({x + 3:.1f},{top - 6}) rotate(-55)" '
                f'font-size="11" fill="#3a424d"><tspan fill="#8a8f98">{number}</tspan> {_h(action)}</text>'
            )
    out.append("</g>")

    out.append('<g class="marks">')
    for number, (entry, x) in enumerate(zip(entries, xs, strict=True), start=1):
        kind = outcome(entry.result)
        tip = f"#{number} {entry.at} {entry.target} {entry.action}: {entry.result}"
        out.append(
            f'<g class="mark" data-outcome="{_h(kind)}"><title>{_h(tip)}</title>'
            f"{_mark(kind, x, lane_y[entry.target])}</g>"
        )
    out.append("</g>")

    out += _axis(times, xs, bottom)
    out.append(
        f'<text x="{LABEL_W - 10}" y="{bottom + 24}" font-size="11" text-anchor="end" fill="#5d6673">'
        "time (UTC)</text>"
    )

    legend_y = bottom + AXIS_H + 12
    x = float(LABEL_W)
    out.append('<g class="legend">')
    for kind in OUTCOMES:
        if kind == OTHER:
            continue
        out.append(_mark(kind, x + 6, legend_y))
        out.append(f'<text x="{x + 18}" y="{legend_y + 4}" font-size="12" fill="#1d232b">{_h(kind)}</text>')
        x += 34 + 7 * len(kind) + 20
    out.append("</g></svg>")
    return "\n".join(out)
