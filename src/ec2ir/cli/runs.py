"""The commands that change instances: ``isolate``, ``collect``, ``release`` and ``rejoin``, and
their ``--dry-run`` plans.

A run shows its progress live, stops starting new work at the first Ctrl-C, prints its results,
then says on standard error each instance that failed and each thing asked for and not done.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ec2ir.cli import via
from ec2ir.cli.interrupts import interruptible
from ec2ir.core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL
from ec2ir.core.text import printable

if TYPE_CHECKING:
    from ec2ir.aws.session import Aws
    from ec2ir.cli.invocation import Invocation
    from ec2ir.containment.steps import Options
    from ec2ir.core.models import Place
    from ec2ir.engine.results import RunReport
    from ec2ir.render.terminal import ProgressPrinter

    Start = Callable[[ProgressPrinter | None], RunReport]


def options_from(args: argparse.Namespace) -> Options:
    """The engine's options from the flags of isolate or collect (collect has fewer of them)."""
    from ec2ir.containment.steps import Options

    return Options(
        untrack=not getattr(args, "no_untrack", False),
        revoke_sessions=getattr(args, "revoke_sessions", False),
        evidence=not getattr(args, "no_evidence", False),
        evidence_bucket=getattr(args, "evidence_bucket", ""),
        object_lock_days=getattr(args, "object_lock_days", 0),
        memory=getattr(args, "memory", False),
        memory_timeout=float(getattr(args, "memory_timeout", 600)),
        untrack_deadline=getattr(args, "untrack_deadline", 5.0),
        keep_metadata=getattr(args, "keep_metadata", False),
        forensic_group=getattr(args, "forensic_group_id", ""),
        forensic_group_owner=getattr(args, "forensic_group_owner", ""),
        block_ips=tuple(getattr(args, "block_ip", None) or ()),
    )


def isolate(run: Invocation) -> int:
    args = run.args
    options = options_from(args)
    if args.dry_run:
        return _plan_isolate(run, options)
    if args.via == "stepfunctions":
        shard_options = {
            "office_cidr": args.office_cidr,
            "evidence": options.evidence,
            "untrack": options.untrack,
            "revoke_sessions": options.revoke_sessions,
        }
        return finish(run, via.via_stepfunctions(run, shard_options))
    return _run(
        run,
        lambda progress: run.engine.isolate(
            args.instance_ids,
            args.case,
            office_cidr=args.office_cidr,
            allow_any_source=args.allow_any_source,
            options=options,
            progress=progress,
        ),
        wait=args.wait and options.evidence,
    )


def _plan_isolate(run: Invocation, options: Options) -> int:
    from ec2ir.render.terminal import Schema, document, render_plan

    args, chosen = run.args, run.chosen
    plan = run.engine.plan(
        args.instance_ids,
        args.case,
        args.office_cidr,
        allow_any_source=args.allow_any_source,
        options=options,
    )
    shown, text = plan.as_dict(), render_plan(plan)
    if chosen.filters:  # which instances the filters selected, right under the plan's heading
        shown["selected_by_filters"] = chosen.as_dict()
        head, _, steps = text.partition("\n\n")
        text = f"{head}\n\n{chosen.describe()}\n\n{steps}"
    print(document(Schema.PLAN, shown) if args.output == "json" else text)
    return EXIT_PARTIAL if plan.would_fail else EXIT_OK


def collect(run: Invocation) -> int:
    from ec2ir.render.terminal import Schema, document, render_plan

    args = run.args
    options = options_from(args)
    if args.dry_run:  # the same plan's shape as isolate's; its "action" is collect
        plan = run.engine.plan_collect(args.instance_ids, args.case, options=options)
        print(document(Schema.PLAN, plan.as_dict()) if args.output == "json" else render_plan(plan))
        return EXIT_PARTIAL if plan.would_fail else EXIT_OK
    return _run(
        run,
        lambda progress: run.engine.collect(args.instance_ids, args.case, options=options, progress=progress),
        wait=args.wait and options.evidence,
    )


def release(run: Invocation) -> int:
    args = run.args
    fixes: dict[str, Any] = {
        "replace_groups": args.replace_group,
        "skip_missing_groups": args.skip_missing_groups,
    }
    if args.dry_run:
        return _plan_release(run, fixes)
    if args.via == "stepfunctions":
        return finish(run, via.via_stepfunctions(run, {"rejoin": args.rejoin}))
    return _run(
        run,
        lambda progress: run.engine.release(
            args.instance_ids, args.case, rejoin=args.rejoin, progress=progress, **fixes
        ),
    )


def _plan_release(run: Invocation, fixes: dict[str, Any]) -> int:
    from ec2ir.containment.restore import render_plan as render_release_plan
    from ec2ir.render.terminal import Schema, document

    args = run.args
    planned = run.engine.plan_release(args.instance_ids, args.case, rejoin=args.rejoin, **fixes)
    print(
        document(Schema.RELEASE_PLAN, {**planned.as_dict(), "dry_run": True})
        if args.output == "json"
        else render_release_plan(planned.results, planned.case_id, planned.notes)
    )
    return EXIT_PARTIAL if planned.failed else EXIT_OK


def rejoin(run: Invocation) -> int:
    args = run.args
    return _run(run, lambda progress: run.engine.rejoin(args.instance_ids, args.case, progress=progress))


def _run(run: Invocation, start: Start, wait: bool = False) -> int:
    """One run of ``start``: live progress, Ctrl-C handled, the results printed, the exit code."""
    from ec2ir.render.terminal import PROGRESS_THRESHOLD, ProgressPrinter, Schema, document, render_run

    args, engine = run.args, run.engine
    count = len(set(args.instance_ids))
    # isolate's containment is shown for any run of more than one instance; the rest of each run,
    # and every other run, from PROGRESS_THRESHOLD instances (ProgressPrinter)
    progress = ProgressPrinter(count, args.command, quiet_below=PROGRESS_THRESHOLD) if count > 1 else None
    # Ctrl-C: the first stops new work and the run returns what it did; the second aborts at once
    with interruptible(engine.interrupt, args.command):
        report = start(progress)
    interrupted = engine.interrupt.is_set()
    if interrupted:
        report.notes.append(
            "interrupted (Ctrl-C): no instance or step started after it; those in flight finished. "
            f"Run `ec2ir {args.command}` again to finish what was not done"
        )
    if not interrupted and not wait:
        return finish(run, report)
    print(document(Schema.RUN, report.as_dict()) if args.output == "json" else render_run(report))
    if wait and not interrupted:  # each place's snapshots, from there: a snapshot is its Region's
        by_place: dict[Place | None, list[str]] = {}
        for result in report.results:
            by_place.setdefault(result.place, []).extend(result.snapshot_ids)
        for place, snapshot_ids in by_place.items():
            wait_for_evidence(engine.engine_at(place).aws, snapshot_ids)
    _say_what_was_not_done(report)
    if interrupted:
        from ec2ir.render.terminal import interrupt_lines

        for line in interrupt_lines(report, engine.interrupt.skipped):
            print(line, file=sys.stderr)
        return EXIT_INTERRUPTED
    return _exit_code(run, report)


def finish(run: Invocation, report: RunReport) -> int:
    """A finished run's result printed (a table, or JSON), what was not done said, its exit code."""
    from ec2ir.render.terminal import Schema, document, render_run

    print(document(Schema.RUN, report.as_dict()) if run.args.output == "json" else render_run(report))
    _say_what_was_not_done(report)
    return _exit_code(run, report)


def _exit_code(run: Invocation, report: RunReport) -> int:
    incomplete = [r for r in report.results if r.ok and r.evidence_failed]
    warned = [r for r in report.results if r.warnings]
    # a Region --regions named that could not be searched may hold instances the run missed
    unsearched = run.engine.places.unreachable
    return EXIT_PARTIAL if report.failed or incomplete or warned or unsearched else EXIT_OK


def _say_what_was_not_done(report: RunReport) -> None:
    from ec2ir.render.terminal import run_warnings

    for failed in report.failed:
        print(
            printable(f"ec2ir: {failed.instance_id}: {failed.error_code}: {failed.detail}"), file=sys.stderr
        )
    # one WARNING line for each thing asked for and not done: a failed step, evidence not
    # collected (a contained instance's too), a step skipped for a reason, a result's warning
    for line in run_warnings(report):
        print(line, file=sys.stderr)


def wait_for_evidence(aws: Aws, snapshot_ids: list[str]) -> None:
    """--wait: a progress bar on standard error until every snapshot is completed."""
    from ec2ir.evidence.snapshots import wait_for_snapshots
    from ec2ir.render.terminal import progress_bar

    if not snapshot_ids:
        return
    states = wait_for_snapshots(
        aws, snapshot_ids, lambda done, total: progress_bar(sys.stderr, "snapshots", done, total)
    )
    failed = sorted(s for s, state in states.items() if state != "completed")
    print(
        f"ec2ir: {len(snapshot_ids) - len(failed)} of {len(snapshot_ids)} snapshot(s) completed"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
