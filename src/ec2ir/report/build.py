"""A case report built from the state table alone: the case journal and the holds.

So it can be produced long after the incident, from any machine that can read the table, without
touching EC2.
"""

from __future__ import annotations

import json

from ec2ir.core import validate
from ec2ir.core.errors import UsageError
from ec2ir.core.models import EvidenceRef, Hold, HoldStatus, JournalEntry
from ec2ir.evidence.provenance import check_chain
from ec2ir.report.model import (
    FAILED,
    SKIPPED,
    CaseReport,
    EniState,
    EvidenceItem,
    InstanceState,
    StillIsolated,
    Summary,
    outcome,
)
from ec2ir.store.items import now
from ec2ir.store.state import StateStore


def build_report(store: StateStore, case_id: str) -> CaseReport:
    case = validate.case_id(case_id)
    if not store.exists():
        raise UsageError(
            f"state table {store.table!r} does not exist, so there is no journal to report on",
            "pass --table (and --region) where ec2ir recorded the case",
        )
    stored = store.journal_records(case)
    journal = [entry.entry for entry in stored]
    holds = {hold.instance_id: hold for hold in store.holds_everywhere(case)}  # every place's
    if not journal and not holds:
        raise UsageError(
            f"case {case!r} has no journal entries and no holds in state table {store.table!r}",
            "check the case id and --table; `ec2ir status` lists the cases that hold instances",
        )
    # Instances the journal names without a hold (a refused or failed isolate) belong in the report
    # too: they show what was attempted.
    instance_ids = sorted(set(holds) | {e.target for e in journal if e.target.startswith("i-")})
    instances = tuple(_instance_state(i, holds.get(i), journal) for i in instance_ids)
    evidence = _evidence(journal)
    return CaseReport(
        summary=_summary(case, journal, holds, len(instances), len(evidence)),
        timeline=tuple(journal),
        integrity=tuple(
            f"{finding.status}: {finding.detail}" for finding in check_chain(stored) if not finding.ok
        ),
        instances=instances,
        evidence=evidence,
        still_isolated=_still_isolated(holds),
        table=store.table,
        generated_at=now(),
    )


def _evidence(journal: list[JournalEntry]) -> tuple[EvidenceItem, ...]:
    """Each piece once, at the entry that first journaled it: a rerun journals again what an
    earlier run stored (its snapshots, its metadata objects), and is no new evidence."""
    first: dict[tuple[str, str, str], EvidenceItem] = {}
    for number, entry in enumerate(journal, start=1):
        for ref in entry.evidence:
            first.setdefault(evidence_key(ref), _evidence_item(number, entry, ref))
    return tuple(first.values())


def _still_isolated(holds: dict[str, Hold]) -> tuple[StillIsolated, ...]:
    still = (
        StillIsolated(
            hold.instance_id,
            hold.status.value,
            hold.isolated_at or hold.recorded_at,
            len(hold.originals),
            str(hold.place or ""),
        )
        for hold in holds.values()
        if hold.status is not HoldStatus.RELEASED
    )
    return tuple(sorted(still, key=lambda s: s.instance_id))


def _summary(
    case: str, journal: list[JournalEntry], holds: dict[str, Hold], instances: int, evidence: int
) -> Summary:
    statuses = [hold.status for hold in holds.values()]
    return Summary(
        case_id=case,
        first_at=journal[0].at if journal else "",
        last_at=journal[-1].at if journal else "",
        actors=tuple(
            sorted({e.actor for e in journal} | {h.recorded_by for h in holds.values() if h.recorded_by})
        ),
        instances=instances,
        isolated=statuses.count(HoldStatus.ISOLATED),
        in_progress=statuses.count(HoldStatus.ISOLATING) + statuses.count(HoldStatus.RELEASING),
        released=statuses.count(HoldStatus.RELEASED),
        actions=len(journal),
        failures=sum(1 for e in journal if outcome(e.result) == FAILED),
        evidence=evidence,
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
        place=str(hold.place or ""),
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
