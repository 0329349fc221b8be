"""The case report in Markdown, for tickets.

Journal text is hostile: each cell has its tags and table syntax neutralised and its control
characters shown as visible escapes, as a Markdown report is often read in a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ec2ir.core.text import printable
from ec2ir.report.model import CaseReport, InstanceState, eni_after, request_ids_text, size_text, summary_rows

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


def _details(details: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in details.items())


def render_markdown(report: CaseReport) -> str:
    out = _heading(report)
    out += ["## Summary", "", *_md_table(["Item", "Value"], [[k, v] for k, v in summary_rows(report)]), ""]
    out += ["## Still isolated", "", *_still_isolated(report)]
    out += ["", "## Instances: before and after", ""]
    for instance in report.instances:
        out += _instance(instance)
    out += ["## Timeline", "", *_timeline(report)]
    out += ["", "## Evidence", "", *_evidence(report)]
    return "\n".join(out) + "\n"


def _heading(report: CaseReport) -> list[str]:
    """The title, where the report comes from, and a warning when the journal does not prove itself."""
    out = [
        f"# Incident report: case {_md(report.summary.case_id)}",
        "",
        f"Generated {_md(report.generated_at)} by ec2ir from the case journal and holds in state table "
        f"{_md(report.table)}. Times are UTC.",
        "",
    ]
    if report.integrity:
        out += [
            "**WARNING: the case journal does not prove itself** (`ec2ir verify` has details):",
            "",
            *(f"- {_md(problem)}" for problem in report.integrity),
            "",
        ]
    return out


def _still_isolated(report: CaseReport) -> list[str]:
    if not report.still_isolated:
        return ["None: every instance this case held has been released."]
    return _md_table(
        ["Instance", "Status", "Since", "ENIs", "To release"],
        [
            [
                f"{h.instance_id} in {h.place}" if h.place else h.instance_id,
                h.status,
                h.since,
                str(h.enis),
                f"ec2ir release {h.instance_id} --case {report.summary.case_id}",
            ]
            for h in report.still_isolated
        ],
    )


def _instance(instance: InstanceState) -> list[str]:
    """One instance: where it is now, each ENI's groups before and after, each step's originals."""
    where = f" in {_md(instance.place)}" if instance.place else ""
    out = [f"### {_md(instance.instance_id)}{where} ({_md(instance.status)})", "", _md(instance.after), ""]
    if instance.recorded_at:
        out += [f"Originals recorded {_md(instance.recorded_at)} by {_md(instance.recorded_by)}.", ""]
    if instance.enis:
        out += _md_table(
            ["ENI", "VPC", "Before (original groups)", "After"],
            [[e.eni_id, e.vpc_id, ", ".join(e.before) or "none", eni_after(e)] for e in instance.enis],
        )
        out.append("")
    if instance.step_originals:
        out += _md_table(["Step", "Recorded originals"], [[k, v] for k, v in instance.step_originals.items()])
        out.append("")
    return out


def _timeline(report: CaseReport) -> list[str]:
    return _md_table(
        ["#", "Time (UTC)", "Target", "Action", "Result", "Actor", "Request ids"],
        [
            [str(n), e.at, e.target, e.action, e.result, e.actor, request_ids_text(e)]
            for n, e in enumerate(report.timeline, start=1)
        ],
    )


def _evidence(report: CaseReport) -> list[str]:
    if not report.evidence:
        return ["No evidence was recorded in the journal for this case."]
    return _md_table(
        ["Entry", "Target", "Kind", "Location", "SHA-256", "Size", "Version id", "Details"],
        [
            [
                f"#{item.entry}",
                item.target,
                item.kind,
                item.location,
                item.sha256,
                size_text(item.size),
                item.version_id,
                _details(item.details),
            ]
            for item in report.evidence
        ],
    )
