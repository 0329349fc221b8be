"""``status``: what is held; and ``status --check``: every held instance against the live state,
and with ``--repair`` the groups re-hardened and whatever is in breach contained again through
``isolate``."""

from __future__ import annotations

import functools

from ec2ir.containment import nacl
from ec2ir.containment.check import Breach, CheckReport, find_breaches
from ec2ir.containment.groups import ForensicSource, GroupSetup, describe_groups, ensure_groups
from ec2ir.containment.steps import Options
from ec2ir.core import validate
from ec2ir.core.models import GroupRecord, Hold, HoldStatus, JournalEntry
from ec2ir.core.outcomes import Outcome
from ec2ir.engine.isolate import isolate
from ec2ir.engine.journal import REFUSALS_NAMED, journal, journal_aside
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.s3 import account_of
from ec2ir.store.items import now


def status(rt: Runtime, case_id: str | None = None, include_released: bool = False) -> list[Hold]:
    case = validate.case_id(case_id) if case_id is not None else None
    rt.store.require()
    holds = rt.store.holds(case)
    return [h for h in holds if include_released or h.status is not HoldStatus.RELEASED]


def check(rt: Runtime, case_id: str | None = None, repair: bool = False) -> CheckReport:
    """Every held instance (of one case, or all) against the live state; with ``repair``,
    re-harden the groups and re-contain what is in breach through ``isolate``, then check
    again. Each case with a breach gets a journal entry."""
    case = validate.case_id(case_id) if case_id is not None else None
    rt.store.require()
    actor = rt.aws.caller_arn()
    account, region = account_of(actor), rt.aws.region()
    records = rt.store.group_records(region)
    holds = rt.store.holds(case)
    checked, breaches, notes = find_breaches(rt.aws, holds, records, account)
    breaches += nacl.find_breaches(rt.aws, rt.store, holds)  # the cases' network ACL entries
    report = CheckReport(checked, breaches, notes=notes)
    if repair and breaches:
        repair_breaches(rt, report, holds, records, account, region)
        acl_cases = {b.case_id for b in breaches if b.kind in nacl.BREACH_KINDS}
        aside = functools.partial(journal_aside, rt, notes=report.notes)
        report.notes += nacl.repair(rt.aws, rt.store, acl_cases, actor, aside)
        held = rt.store.holds(case)
        _, report.remaining, _ = find_breaches(rt.aws, held, rt.store.group_records(region), account)
        report.remaining += nacl.find_breaches(rt.aws, rt.store, held)
    journal(rt, breach_entries(report, breaches, actor, repair), report.notes)
    return report


def breach_entries(
    report: CheckReport, breaches: list[Breach], actor: str, repair: bool
) -> list[JournalEntry]:
    """One journal entry per case with a breach (and what was repaired)."""
    by_case: dict[str, list[Breach]] = {}
    for breach in breaches:
        by_case.setdefault(breach.case_id or "", []).append(breach)
    return [
        JournalEntry(
            now(),
            breach_case,
            actor,
            breach_case,
            "status:check",
            Outcome.failed(
                f"{len(found)} breach(es): "
                + "; ".join(f"{b.kind.value} {b.subject}: {b.detail}" for b in found[:REFUSALS_NAMED])
                + (f"; repaired: {', '.join(report.repaired.get(breach_case, []))}" if repair else "")
            ).text,
        )
        for breach_case, found in by_case.items()
        if breach_case
    ]


def repair_breaches(
    rt: Runtime,
    report: CheckReport,
    holds: list[Hold],
    records: dict[str, GroupRecord],
    account: str,
    region: str,
) -> None:
    """Each VPC's groups back to their recorded safe sets, then each case's instances in breach
    isolated again."""
    vpcs = sorted({vpc for hold in holds for vpc in hold.eni_vpcs.values()} & set(records))
    seen = describe_groups(rt.aws)
    for vpc in vpcs:
        record = records[vpc]
        setup = GroupSetup(
            rt.aws,
            rt.store,
            region,
            account,
            "status-check",
            record.office_cidr or None,
            forensic=forensic_source(record),
            records=records,
            seen=seen,
        )
        groups, errors = ensure_groups(setup, [vpc])
        report.notes += [f"{vpc}: {change}" for g in groups.values() for change in g.repaired]
        report.notes += [f"{vpc}: could not re-harden: {error}" for error in errors.values()]
    recontain(rt, report, {hold.instance_id: hold for hold in holds}, records)


def recontain(
    rt: Runtime, report: CheckReport, held: dict[str, Hold], records: dict[str, GroupRecord]
) -> None:
    """Each case's instances in breach, through ``isolate`` again, with their VPC's forensic source."""
    cases: dict[str, list[str]] = {}
    for breach in report.breaches:
        if breach.subject in held:
            cases.setdefault(breach.case_id, []).append(breach.subject)
    for case, instance_ids in cases.items():
        ids = list(dict.fromkeys(instance_ids))
        first_vpc = records.get(next(iter(held[ids[0]].eni_vpcs.values()), ""))
        source = forensic_source(first_vpc) if first_vpc else None
        options = Options(
            evidence=False,
            forensic_group=source.group_id if source else "",
            forensic_group_owner=source.owner if source else "",
        )
        repaired = isolate(rt, ids, case, options=options)
        report.repaired[case] = [r.instance_id for r in repaired.results if r.ok]
        report.notes += [
            f"{r.instance_id}: repair failed: {r.error_code}: {r.detail}" for r in repaired.failed
        ]


def forensic_source(record: GroupRecord) -> ForensicSource | None:
    if not record.forensic_source:
        return None
    return ForensicSource(record.forensic_source, record.forensic_source_owner)
