"""The commands that only read: ``status`` (with ``--check``), ``preflight``, ``report`` and ``verify``.

Each prints one document, a table for people or JSON for tools, and returns its exit code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ec2ir.core.errors import EXIT_OK, EXIT_PARTIAL, UsageError

if TYPE_CHECKING:
    from ec2ir.cli.invocation import Invocation


def status(run: Invocation) -> int:
    """``status``: what is held; with ``--check``, the live state of each hold against its record."""
    from ec2ir.render.terminal import Names, Schema, document, hold_as_dict, render_status

    args = run.args
    if args.check or args.repair:
        return _check(run)
    holds = run.engine.status(args.case, include_released=args.all)
    names = Names(*run.engine.names(holds))  # display only, read after the holds
    print(
        document(Schema.STATUS, {"holds": [hold_as_dict(h, names) for h in holds]})
        if args.output == "json"
        else render_status(holds, names)
    )
    return EXIT_OK


def _check(run: Invocation) -> int:
    from ec2ir.containment.check import lines
    from ec2ir.render.terminal import Schema, document

    args = run.args
    if not args.check:
        raise UsageError("--repair goes with --check", "run `ec2ir status --check --repair`")
    checked = run.engine.check(args.case, repair=args.repair)
    print(document(Schema.CHECK, checked.as_dict()) if args.output == "json" else "\n".join(lines(checked)))
    return EXIT_OK if checked.ok else EXIT_PARTIAL


def preflight(run: Invocation) -> int:
    """``preflight``: whether these credentials may run every step, each action with its purposes."""
    from ec2ir.permissions.policy import DENIED
    from ec2ir.permissions.policy import preflight as check_permissions
    from ec2ir.render.terminal import Schema, check_as_dict, document, render_preflight

    caller, rows = check_permissions(run.aws)
    checks = [check for _, _, check in rows]
    denied = any(c.verdict == DENIED for c in checks)
    if run.args.output != "json":
        print(render_preflight(caller, rows))
        return EXIT_PARTIAL if denied else EXIT_OK
    purposes: dict[str, list[str]] = {}  # each action once, with everything it is needed for
    for action, purpose, _ in rows:
        purposes.setdefault(action, []).append(purpose)
    by_action = {check.action: check for check in checks}
    actions = [{**check_as_dict(by_action[a]), "purposes": needed} for a, needed in purposes.items()]
    print(document(Schema.PREFLIGHT, {"caller": caller, "ok": not denied, "actions": actions}))
    return EXIT_PARTIAL if denied else EXIT_OK


def report(run: Invocation) -> int:
    """``report``: the case report, on standard output or into ``-o FILE``."""
    from ec2ir.report.build import build_report
    from ec2ir.report.formats import render

    args = run.args
    text = render(build_report(run.engine.store, args.case), args.format)
    if not args.out:
        print(text)
        return EXIT_OK
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(text)
    print(f"ec2ir: wrote the {args.format} report of case {args.case} to {args.out}", file=sys.stderr)
    return EXIT_OK


def report_format(chosen: str | None, output: str) -> str:
    """``report``'s format: ``--output json`` means ``--format json``, and goes with no other."""
    if output != "json":
        return chosen or "md"
    if chosen not in (None, "json"):
        raise UsageError(
            f"--output json asks for the JSON report, --format {chosen} for another",
            "drop one of them (--output json is the same as --format json)",
        )
    return "json"


def verify(run: Invocation) -> int:
    """``verify``: every piece of evidence re-read and checked against the journal's hashes."""
    from ec2ir.render.terminal import Schema, document, render_findings

    args = run.args
    findings = run.engine.verify(args.case)
    print(
        document(
            Schema.VERIFY,
            {
                "case_id": args.case,
                "ok": all(f.ok for f in findings),
                "findings": [f.as_dict() for f in findings],
            },
        )
        if args.output == "json"
        else render_findings(findings)
    )
    return EXIT_PARTIAL if any(not f.ok for f in findings) else EXIT_OK
