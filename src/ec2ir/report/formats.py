"""The formats a case report is rendered in: Markdown for tickets, JSON for tools, HTML for people.

Journal text comes from AWS error messages, tags and instance metadata, so every renderer treats
it as hostile: HTML escapes it, Markdown neutralises tags and table syntax, and both show control
characters as visible escapes (``ec2ir.core.text.printable``), as a Markdown report is often read
in a terminal and an HTML one may be printed to one.
"""

from __future__ import annotations

import dataclasses
import json

from ec2ir.core.errors import UsageError
from ec2ir.report.html import render_html
from ec2ir.report.markdown import render_markdown
from ec2ir.report.model import SCHEMA, CaseReport

FORMATS = ("md", "html", "json")


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
