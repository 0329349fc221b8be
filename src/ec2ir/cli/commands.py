"""Which function runs each command: a table from the command's name to its handler.

The commands that need no AWS session (``completion``, ``permissions``) take their arguments; every
other one takes an ``Invocation``, opened once its instances are settled. ``demo`` and ``emulator``
start the embedded emulator, an adapter of its own: ``ec2ir.cli.app`` runs them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from ec2ir.cli import runs, views
from ec2ir.cli.invocation import Invocation, open_invocation
from ec2ir.core.errors import EXIT_OK, EXIT_PARTIAL, UsageError

if TYPE_CHECKING:
    from ec2ir.containment.nacl_report import NaclReport

COMPLETION_INSTALL = "pip install 'ec2ir[completion]'"


def dispatch(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its exit code."""
    standalone = STANDALONE.get(args.command)
    if standalone is not None:
        return standalone(args)
    if args.command == "report":  # before any work: never Markdown when JSON was asked for
        args.format = views.report_format(args.format, args.output)
    return WITH_AWS[args.command](open_invocation(args))


def print_completion(args: argparse.Namespace) -> int:
    """``ec2ir completion SHELL``: shtab is optional, so it is imported here and only here."""
    from ec2ir.cli.parser import build_parser

    try:
        import shtab
    except ImportError:
        raise UsageError(
            "shell completion needs the optional shtab package, which is not installed",
            f"install it with: {COMPLETION_INSTALL}",
        ) from None
    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


def print_permissions(args: argparse.Namespace) -> int:
    """``ec2ir permissions``: the IAM policy every step's actions add up to."""
    from ec2ir.permissions.policy import policy_document
    from ec2ir.render.terminal import to_json

    print(to_json(policy_document(member=getattr(args, "member", False))))
    return EXIT_OK


def attach_or_detach(run: Invocation) -> int:
    """``forensics attach`` and ``forensics detach``: the case's snapshots on a workstation."""
    from ec2ir.aws import targets
    from ec2ir.evidence import forensics
    from ec2ir.render.terminal import Schema, document

    args, engine = run.args, run.engine
    engine.store.require()  # the case's snapshots are known from its journal, never from tags
    actor = engine.aws.caller_arn()
    if args.forensics_command == "attach":
        workstation = targets.workstation(engine.aws, args.workstation)  # an id or its ARN
        attached = forensics.attach(
            engine.aws, engine.store, args.case, workstation, actor, dry_run=args.dry_run
        )
        print(
            document(Schema.FORENSICS_ATTACH, attached.as_dict())
            if args.output == "json"
            else forensics.render_attach(attached)
        )
        return EXIT_OK if attached.ok else EXIT_PARTIAL
    detached = forensics.detach(engine.aws, engine.store, args.case, actor, dry_run=args.dry_run)
    print(
        document(Schema.FORENSICS_DETACH, detached.as_dict())
        if args.output == "json"
        else forensics.render_detach(detached)
    )
    return EXIT_OK if detached.ok else EXIT_PARTIAL


def block_ip(run: Invocation) -> int:
    return _edge(run, run.engine.block_ip)


def unblock_ip(run: Invocation) -> int:
    return _edge(run, run.engine.unblock_ip)


def _edge(run: Invocation, act: Callable[..., NaclReport]) -> int:
    """block-ip and unblock-ip: the deny entries for addresses in the case's network ACLs."""
    from ec2ir.containment.nacl_report import render as render_edge
    from ec2ir.render.terminal import Schema, document

    args = run.args
    edge = act(args.cidrs, args.case, dry_run=args.dry_run)
    print(document(Schema.EDGE, edge.as_dict()) if args.output == "json" else render_edge(edge))
    return EXIT_OK if edge.ok else EXIT_PARTIAL


STANDALONE: dict[str, Callable[[argparse.Namespace], int]] = {
    "completion": print_completion,
    "permissions": print_permissions,
}
WITH_AWS: dict[str, Callable[[Invocation], int]] = {
    "isolate": runs.isolate,
    "collect": runs.collect,
    "release": runs.release,
    "rejoin": runs.rejoin,
    "status": views.status,
    "preflight": views.preflight,
    "report": views.report,
    "verify": views.verify,
    "forensics": attach_or_detach,
    "block-ip": block_ip,
    "unblock-ip": unblock_ip,
}
