"""Writing the case journal from a run: its entries, the refusals and set-up it keeps, and the
chain heads each run leaves in the case's evidence bucket. A journal that cannot be written is
reported, never hidden, and never undoes what it describes."""

from __future__ import annotations

import json

from ec2ir.containment.steplog import StepLog
from ec2ir.containment.steps import Context
from ec2ir.core.errors import Ec2irError
from ec2ir.core.models import Hold, InstanceResult, JournalEntry
from ec2ir.core.outcomes import Outcome
from ec2ir.engine.results import RunReport
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.bucket import EvidenceBucket
from ec2ir.evidence.provenance import hold_record
from ec2ir.evidence.s3 import account_of
from ec2ir.evidence.verify import journal_head_key
from ec2ir.store.entries import RecordEntry
from ec2ir.store.items import now

# Past this many, refused instances (and breaches, and bad evidence) share one journal line.
REFUSALS_NAMED = 20


def journal(
    rt: Runtime, entries: list[JournalEntry], notes: list[str] | None = None, log: StepLog | None = None
) -> None:
    """Append to the case journal; a journal that cannot be written is reported, never hidden,
    and never undoes the containment it describes."""
    try:
        if entries:
            rt.store.append(entries)
    except Ec2irError as error:
        if log is not None:
            log.fail("journal", error)
        elif notes is not None:
            notes.append(f"WARNING: the case journal could not be written: {error}")
        else:
            raise
    finally:
        if log is None:  # a run's last journal call: its chain heads go out
            seal_runs(rt, notes)


def journal_aside(rt: Runtime, entries: list[JournalEntry], notes: list[str]) -> None:
    """Journal entries in the middle of a run (its chain heads go out with its last journal
    call); a journal that cannot be written is said in ``notes``."""
    log = StepLog()
    journal(rt, entries, log=log)
    if "journal" in log.errors:
        notes.append(f"WARNING: the case journal could not be written: {log.errors['journal']}")


def seal_runs(rt: Runtime, notes: list[str] | None) -> None:
    """End this writer's journal runs: each case's chain head becomes a new version of
    ``<case>/journal-head.json`` in the case's evidence bucket, so that ``verify`` can tell
    deleted entries; a run with no evidence bucket is said to be unprovable."""
    said = notes if notes is not None else []
    try:
        chains = rt.store.close_runs()
    except Ec2irError as error:
        said.append(f"WARNING: the journal's chain head could not be recorded: {error}")
        return
    for chain in chains:
        bucket = chain.bucket or chain.last_bucket or rt.evidence_bucket
        if not bucket:
            said.append(
                f"case {chain.case_id}: no evidence bucket holds this run's journal head (no evidence "
                "was collected), so `verify` cannot prove that none of its entries were deleted"
            )
            continue
        body = json.dumps(chain.head(), sort_keys=True, indent=2).encode()
        try:
            EvidenceBucket(rt.evidence_aws, bucket, account_of(chain.actor)).put_version(
                journal_head_key(chain.case_id),
                body,
                "journal-head",
                "application/json",
                {"ec2ir:case": chain.case_id},
            )
        except Ec2irError as error:
            said.append(
                f"WARNING: case {chain.case_id}: the journal head could not be written to s3://{bucket} "
                f"({error}); `verify` cannot prove this run's entries whole"
            )


def refusals(report: RunReport) -> list[JournalEntry]:
    """Instances refused before any step ran: the journal keeps the attempt too. Refusals
    beyond a few share one entry per error code, so ten thousand bad ids cost one line."""
    refused = [r for r in report.results if r.error_code and not r.steps]
    by_code: dict[str, list[InstanceResult]] = {}
    for result in refused:
        by_code.setdefault(result.error_code, []).append(result)
    entries = []
    for code, results in by_code.items():
        if len(results) <= REFUSALS_NAMED:
            entries += [
                JournalEntry(
                    now(),
                    report.case_id,
                    report.actor,
                    r.instance_id,
                    r.action,
                    Outcome.failed(r.detail).text,
                )
                for r in results
            ]
            continue
        named = ", ".join(r.instance_id for r in results[:REFUSALS_NAMED])
        more = len(results) - REFUSALS_NAMED
        entries.append(
            JournalEntry(
                now(),
                report.case_id,
                report.actor,
                f"{len(results)} instances",
                report.action,
                Outcome.failed(f"{code} for {len(results)} instance(s): {named} and {more} more").text,
            )
        )
    return entries


def group_entries(ctx: Context, report: RunReport) -> list[JournalEntry]:
    """The groups a run created or repaired, one entry per VPC."""
    entries = []
    for vpc_id, groups in report.groups.items():
        changes = [f"created the {role} group" for role in groups.created] + list(groups.repaired)
        if changes:
            entries.append(
                JournalEntry(
                    now(), ctx.case_id, ctx.actor, vpc_id, "groups", Outcome.done("; ".join(changes)).text
                )
            )
    return entries


def record_entry(ctx: Context, hold: Hold, actor: str, at: str, complete: bool = False) -> RecordEntry:
    """The hold's originals and step records as data: release checks a hold against it."""
    steps = f" and step record(s) {', '.join(sorted(hold.steps))}" if hold.steps else ""
    what = "all originals, as recorded by this isolate" if complete else "originals"
    return RecordEntry(
        at,
        ctx.case_id,
        actor,
        hold.instance_id,
        "isolate:record-originals",
        Outcome.done(
            f"{what}: " + ", ".join(f"{eni} {list(groups)}" for eni, groups in hold.originals.items()) + steps
        ).text,
        record=hold_record(hold, complete=complete),
    )
