"""The case report as one self-contained HTML page, for people: inline CSS and SVG, no script and
no external URL, so it can be mailed, archived or opened offline.

Every piece of journal text is escaped where its cell is made (``ec2ir.report.style.escape``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ec2ir.core.models import JournalEntry
from ec2ir.report.model import (
    OTHER,
    SCHEMA,
    CaseReport,
    EvidenceItem,
    InstanceState,
    eni_after,
    outcome,
    request_ids_text,
    size_text,
    summary_rows,
)
from ec2ir.report.style import COLOURS, STATUS_COLOURS
from ec2ir.report.style import escape as _h
from ec2ir.report.timeline import timeline_svg

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
        f"{_mono(request_ids_text(entry))}</details>"
    )


def render_html(report: CaseReport) -> str:
    parts = [*_head(report), _banner(report), _cards(report), *_timeline(report)]
    parts += ["<h2>Still isolated</h2>", _still_isolated(report)]
    parts += [
        "<h2>Case details</h2>",
        _html_table(["Item", "Value"], [[_h(k), _h(v)] for k, v in summary_rows(report)], "kv"),
    ]
    parts.append("<h2>Instances: before and after</h2>")
    for instance in report.instances:
        parts += _instance(instance)
    parts += ["<h2>Journal</h2>", _journal(report), "<h2>Evidence</h2>", _evidence(report)]
    parts.append(
        f"<footer>ec2ir report {_h(SCHEMA)}. The journal is append-only: entries are never updated or "
        "deleted. Snapshot evidence has no hash of its own; objects carry their SHA-256 and S3 version id."
        "</footer></main></body></html>"
    )
    return "\n".join(parts) + "\n"


def _head(report: CaseReport) -> list[str]:
    case = _h(report.summary.case_id)
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Incident report: case {case}</title>",
        f"<style>{CSS}</style></head><body><main>",
        '<header class="top"><div class="kicker">ec2ir incident report</div>',
        f"<h1>Case {case}</h1>",
        f'<div class="meta">Generated {_h(report.generated_at)} from the case journal and holds in '
        f"state table {_h(report.table)}. Times are UTC.</div></header>",
    ]


def _banner(report: CaseReport) -> str:
    still = len(report.still_isolated)
    if still:
        return (
            f'<div class="banner alert">{still} instance(s) still held by this case: not yet released.</div>'
        )
    return '<div class="banner ok">No instance is held: every instance of this case was released.</div>'


def _cards(report: CaseReport) -> str:
    s = report.summary
    cards = [
        ("Instances", s.instances, ""),
        ("Isolated now", s.isolated, "bad" if s.isolated else ""),
        ("Released", s.released, "good" if s.released else ""),
        ("Actions", s.actions, ""),
        ("Failed actions", s.failures, "bad" if s.failures else "good"),
        ("Evidence items", s.evidence, ""),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {cls}"><div class="n">{n}</div><div class="l">{_h(label)}</div></div>'
            for label, n, cls in cards
        )
        + "</div>"
    )


def _timeline(report: CaseReport) -> list[str]:
    return [
        "<h2>Timeline</h2>",
        '<figure id="timeline">',
        timeline_svg(report),
        "<figcaption>One lane per target; each mark is one journal entry, numbered as in the table below. "
        "Marks keep the journal's order and gaps grow with the time between entries; entries of the "
        "same moment are spread out so that each stays visible.</figcaption></figure>",
    ]


def _status_pill(status: str) -> str:
    return _pill(status, STATUS_COLOURS.get(status, COLOURS[OTHER]))


def _still_isolated(report: CaseReport) -> str:
    if not report.still_isolated:
        return '<p class="note">None: every instance this case held has been released.</p>'
    return _html_table(
        ["Instance", "Status", "Since", "ENIs", "To release"],
        [
            [
                _mono(h.instance_id) + _where(h.place),
                _status_pill(h.status),
                _mono(h.since),
                str(h.enis),
                f"<code>ec2ir release {_h(h.instance_id)} --case {_h(report.summary.case_id)}</code>",
            ]
            for h in report.still_isolated
        ],
    )


def _where(place: str) -> str:
    """An instance's account and Region, when not the table's own."""
    return f" in {_mono(place)}" if place else ""


def _instance(instance: InstanceState) -> list[str]:
    """One instance: where it is now, each ENI's groups before and after, each step's originals."""
    parts = [
        f"<h3>{_mono(instance.instance_id)}{_where(instance.place)} {_status_pill(instance.status)}</h3>"
        f'<p class="after">{_h(instance.after)}</p>'
    ]
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
                    [_mono(e.eni_id), _mono(e.vpc_id), _mono(", ".join(e.before) or "none"), _h(eni_after(e))]
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
    return parts


def _journal(report: CaseReport) -> str:
    return _html_table(
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


def _evidence(report: CaseReport) -> str:
    if not report.evidence:
        return '<p class="note">No evidence was recorded in the journal for this case.</p>'
    return _html_table(
        ["Entry", "Item", "Location", "SHA-256", "Details"],
        [_evidence_row(item) for item in report.evidence],
        "evidence",
    )


def _evidence_row(item: EvidenceItem) -> list[str]:
    version = (
        f"<div class='sub'>version {_mono(item.version_id, 'mono hash')}</div>" if item.version_id else ""
    )
    digest = (
        _mono(item.sha256, "mono hash")
        if item.sha256
        else "<span class='sub'>none: a snapshot has no hash</span>"
    )
    size = f"<div class='sub'>{_h(size_text(item.size))}</div>" if item.size else ""
    return [
        f'<a href="#e{item.entry}">#{item.entry}</a>',
        f"<b>{_h(item.kind)}</b><div class='sub'>{_mono(item.target)}</div>",
        _mono(item.location, "mono hash") + version,
        digest + size,
        "".join(f"<div class='sub'>{_h(k)}: {_mono(v, 'mono wrap')}</div>" for k, v in item.details.items()),
    ]
