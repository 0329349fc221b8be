"""Names for display only: each instance's Name tag and each group's name, read once the work is
done (or taken from a discovery already made). A failed read leaves the ids alone: names are never
worth a failure, and never a reason to act."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import replace

from ec2ir.aws.session import Aws, discover
from ec2ir.containment.groups import describe_by_id
from ec2ir.core.models import Hold, InstanceFacts
from ec2ir.engine.results import RunReport, group_names_of, name_tags


def name_report(aws: Aws, report: RunReport, facts: dict[str, InstanceFacts] | None = None) -> None:
    """Each result's Name tag and the shown groups' names, once the work is done and for
    display only: from ``facts`` (discovery's) when given, else from one batched read."""
    if facts is None:
        try:
            facts = discover(aws, [r.instance_id for r in report.results]) if report.results else {}
        except Exception:  # names are display only; never let one fail a run
            facts = {}
    names = name_tags(facts.values())
    report.results = [replace(r, name=names.get(r.instance_id, "")) for r in report.results]
    report.group_names = group_names(aws, report, group_names_of(facts.values()))


def group_names(aws: Aws, report: RunReport, known: dict[str, str]) -> dict[str, str]:
    """The name of every group the report shows, for display only: those ``known`` already
    (from discovery), the rest in one batched read once the work is done."""
    shown = {g for r in report.results for groups in r.enis.values() for g in groups}
    shown |= {g for v in report.groups.values() for g in (v.isolation_group_id, v.forensic_group_id)}
    shown.discard("")
    names = {g: known[g] for g in shown if g in known}
    try:
        found = describe_by_id(aws, shown - set(names))
    except Exception:  # names are display only; never let one fail a run
        found = {}
    names.update({g: seen.name for g, seen in found.items() if seen.name})
    return dict(sorted(names.items()))


def hold_names(aws: Aws, holds: Iterable[Hold]) -> tuple[dict[str, str], dict[str, str]]:
    """``status``: each held instance's Name tag and each original group's name, for display
    only, in one batched read of each after the state table's; a failed read shows ids alone."""
    holds = list(holds)
    instance_ids = sorted({hold.instance_id for hold in holds})
    group_ids = {g for hold in holds for groups in hold.originals.values() for g in groups}
    instances: dict[str, str] = {}
    groups: dict[str, str] = {}
    with contextlib.suppress(Exception):  # display only
        instances = name_tags(discover(aws, instance_ids).values()) if instance_ids else {}
    with contextlib.suppress(Exception):
        groups = {g: seen.name for g, seen in describe_by_id(aws, group_ids).items() if seen.name}
    return instances, groups
