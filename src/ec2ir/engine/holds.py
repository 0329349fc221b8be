"""The hold protocol every command keeps: whose a hold is, whether it is still the episode a run
began on (``same_episode``, the one re-read every command makes), the records each step is undone
from, whether a hold is what isolation captured, what an isolate adds to a hold it finds, and how an
isolate yields to a release that ran while it worked."""

from __future__ import annotations

from collections.abc import Mapping

from ec2ir.containment.records import NetworkRecord, StoredRecord
from ec2ir.containment.steplog import StepLog
from ec2ir.containment.steps import NETWORK, STEPS, Context, Target
from ec2ir.core.errors import (
    Ec2irError,
    HeldByOtherCase,
    NotIsolated,
    OriginalsTampered,
    ReleaseInProgress,
    SeveralFailed,
)
from ec2ir.core.models import Hold, HoldStatus
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.provenance import Provenance
from ec2ir.store.state import StateStore


def same_episode(store: StateStore, hold: Hold) -> Hold | None:
    """The hold as the state table has it now, if it is still the episode ``hold`` belongs to
    (an isolate after a release begins a new one, with a new ``recorded_at``); else None."""
    current = store.get(hold.instance_id)
    if current is None or current.recorded_at != hold.recorded_at:
        return None
    return current


def network_record(originals: Mapping[str, tuple[str, ...]]) -> NetworkRecord:
    """The network step's record: it keeps none of its own, as the hold's originals are it."""
    return {"originals": originals}


def records_of(hold: Hold, originals: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, StoredRecord]:
    """Every step's record in the hold, the network step's from ``originals`` (default: the
    hold's own)."""
    return {**hold.steps, NETWORK.name: network_record(hold.originals if originals is None else originals)}


def check_owner(hold: Hold, case: str) -> None:
    if hold.case_id != case:
        raise HeldByOtherCase(
            f"{hold.instance_id} is already held by case {hold.case_id} "
            f"(since {hold.recorded_at}, by {hold.recorded_by})",
            f"work under case {hold.case_id}, or release it from that case first",
        )


def releasable(hold: Hold | None, instance_id: str, case: str) -> Hold:
    if hold is None or hold.status is HoldStatus.RELEASED:
        raise NotIsolated(
            f"{instance_id} is not isolated by ec2ir"
            + (f" (released {hold.released_at} by {hold.released_by})" if hold else ""),
            "nothing was changed; `ec2ir status` lists what is isolated"
            + ("; `ec2ir rejoin` puts a released instance back in service" if hold else ""),
        )
    check_owner(hold, case)
    return hold


def capture(ctx: Context, target: Target, log: StepLog, skip: set[str]) -> dict[str, dict[str, object]]:
    """Each step's originals; a step that cannot read them fails here and changes nothing."""
    records: dict[str, dict[str, object]] = {}
    for step in STEPS:
        if step is NETWORK or step.name in skip or not step.cheap_capture:
            continue
        try:
            record = step.capture_stored(ctx, target)
        except Ec2irError as error:
            log.fail(step.name, error)
            continue
        if record is not None:
            records[step.name] = record
    return records


def record_what_is_new(
    rt: Runtime, ctx: Context, target: Target, hold: Hold, log: StepLog, managed: set[str]
) -> Hold:
    """On an instance already held: record ENIs attached since, and steps not yet recorded.

    Conditional writes keep whatever an earlier run recorded first."""
    changed = False
    for eni in target.facts.enis:
        if eni.eni_id in hold.originals or eni.eni_id in hold.unknown_originals:
            continue
        if managed & set(eni.group_ids):  # attached since, already in one of ec2ir's groups
            changed |= rt.store.add_unknown_eni(hold, eni.eni_id, eni.vpc_id)
            continue
        changed |= rt.store.add_eni_originals(hold, eni.eni_id, eni.group_ids, eni.vpc_id)
    skip = set(log.errors) | set(hold.steps)
    for name, record in capture(ctx, target, log, skip).items():
        changed |= rt.store.add_step_record(hold, name, record)
    if not changed:
        return hold
    return rt.store.get(target.instance_id) or hold


def yield_to_release(rt: Runtime, ctx: Context, hold: Hold, logs: list[StepLog]) -> None:
    """If a release of this very hold ran while this run worked on it, the release wins.

    What ``logs`` say this run applied is undone again, from the records in the hold, so the
    instance ends exactly as the release left it; then ReleaseInProgress is raised."""
    current = same_episode(rt.store, hold)
    if current is None or current.status not in (HoldStatus.RELEASING, HoldStatus.RELEASED):
        return
    records = records_of(current)
    failures: list[tuple[str, Ec2irError]] = []
    for step in reversed(STEPS):
        record = records.get(step.name)
        if record is not None and any(
            step.name in log.outcomes and log.outcomes[step.name].is_done for log in logs
        ):
            try:
                step.undo_stored(ctx, hold.instance_id, record)
            except Ec2irError as error:
                failures.append((step.name, error))
    raise ReleaseInProgress(
        f"{hold.instance_id} was released by case {current.case_id} while this run isolated it; "
        "the release stands and this run's changes were undone"
        + (f", except: {SeveralFailed(failures)}" if failures else ""),
        "isolate again if the instance must stay contained",
    )


def released_meanwhile(store: StateStore, hold: Hold) -> Hold | None:
    """The hold, if a concurrent release of this very episode has finished it; else None."""
    current = same_episode(store, hold)
    return current if current is not None and current.status is HoldStatus.RELEASED else None


def check_originals(hold: Hold, provenance: Provenance | None) -> tuple[str, ...]:
    """Refuse a hold whose originals differ from what isolation captured; the warnings."""
    if provenance is None:
        raise OriginalsTampered(
            f"{hold.instance_id}: its hold could not be checked against the case journal",
            "nothing was changed; run release again",
        )
    check_records(hold)
    differences, warnings = provenance.check(hold)
    if differences:
        raise OriginalsTampered(
            f"{hold.instance_id}: the hold's originals are not what isolation captured: "
            + "; ".join(differences),
            "nothing was changed; someone rewrote the hold in the state table: restore it from the "
            "case journal (`ec2ir report`) and the evidence, and find out who wrote it",
        )
    return tuple(warnings)


def check_records(hold: Hold) -> None:
    """Refuse a hold with a step record that is not what the step ever records, before any change
    (and before the journal's check, which compares records it expects well formed). The network
    step's record is the hold's originals, not one of these."""
    for step in STEPS:
        stored = hold.steps.get(step.name)
        if stored is not None and step is not NETWORK:
            step.check(hold.instance_id, stored)
