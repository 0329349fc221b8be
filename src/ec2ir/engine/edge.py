"""The network ACL blocks as a run sees them: ``isolate --block-ip``'s entries and problems folded into
the run's report, the case's entries removed after ``release``, and the ``block-ip`` and
``unblock-ip`` commands. The ACL work itself is ``ec2ir.containment.nacl``'s, which never names a run."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import replace

from ec2ir.aws.session import Aws
from ec2ir.containment import nacl
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError
from ec2ir.engine.journal import journal, journal_aside
from ec2ir.engine.results import RunReport
from ec2ir.engine.runtime import Runtime
from ec2ir.store.state import StateStore


def finish_blocks(blocks: nacl.RunBlocks, run: RunReport) -> None:
    """The ACLs changed in the run's notes; what could not be, as warnings."""
    run.blocks = blocks.report
    run.notes += blocks.report.all_notes()
    attach_warnings(run, blocks.report, blocks.instance_subnets)


def attach_warnings(
    run: RunReport, report: nacl.NaclReport, instance_subnets: dict[str, set[str]] | None
) -> None:
    """Each problem, as a warning on the results of the instances its ACL serves (or all of them)."""
    if not report.problems:
        return
    results = []
    for result in run.results:
        subnets = (instance_subnets or {}).get(result.instance_id)
        warnings = [
            problem.warning or problem.note
            for problem in report.problems
            if instance_subnets is None
            or not problem.acl_id
            or subnets is None
            or subnets & set(report.acl_subnets.get(problem.acl_id, ()))
        ]
        results.append(
            replace(result, warnings=result.warnings + tuple(warnings)) if result.ok and warnings else result
        )
    run.results = results


def after_release(aws: Aws, store: StateStore, run: RunReport, journal: nacl.Journal) -> None:
    """After ``release``: the case's entries go from every ACL that serves no subnet where the
    case still holds an instance, by its hold or by EC2 (an ENI still in one of ec2ir's groups).
    Reading the case's ACLs costs one read when it has none."""
    report = nacl.NaclReport("release", run.case_id, run.actor)
    edge = nacl.Edge(aws, store, report, journal)
    try:
        if not edge.records.index(run.case_id):
            return
        # from the group records themselves, whatever the run read or proved (it may have read
        # nothing: a release run again, or of holds all marked released)
        own_groups = nacl.every_containment_group(store.group_records(aws.region()).values())
        still = nacl.still_held_facts(aws, store.holds(run.case_id), own_groups)
        edge.release(set().union(*(nacl.subnets_of(facts) for facts in still.values())))
    except Ec2irError as error:  # the instances are released; the entries wait for the next run
        report.problems.append(
            nacl.Problem("", f"the case's entries could not be removed: {error}", str(error))
        )
    run.notes += report.all_notes()
    attach_warnings(run, report, None)


def block_or_unblock(
    rt: Runtime, action: str, cidrs: Iterable[str], case_id: str, dry_run: bool
) -> nacl.NaclReport:
    """``ec2ir block-ip`` (deny addresses at the subnet edge of every instance the case holds) or
    ``ec2ir unblock-ip`` (remove the case's deny entries for them, wherever they are)."""
    case = validate.case_id(case_id)
    raw = list(cidrs)
    nacl.parse_blocks(raw, skip_unsafe=False, check=action == "block-ip")  # bad input: exit 2 at once
    actor = rt.aws.caller_arn()
    rt.store.require()
    report = nacl.NaclReport(action, case, actor, dry_run=dry_run)
    aside = functools.partial(journal_aside, rt, notes=report.notes)
    if action == "block-ip":
        nacl.block_held(rt.aws, rt.store, report, raw, aside)
    else:
        nacl.unblock_held(rt.aws, rt.store, report, raw, aside)
    journal(rt, [], report.notes)  # the run's journal chain heads
    return report
