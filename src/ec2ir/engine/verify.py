"""``verify``: every piece of evidence a case's journal names checked against its recorded hash,
and the journal itself against its chain and the heads its evidence bucket keeps."""

from __future__ import annotations

from ec2ir.aws.session import request_ids
from ec2ir.core import validate
from ec2ir.core.errors import UsageError
from ec2ir.core.models import JournalEntry
from ec2ir.core.outcomes import Outcome
from ec2ir.engine.journal import REFUSALS_NAMED, journal
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.provenance import check_chain, check_heads, journal_buckets
from ec2ir.evidence.verify import Finding, verify_refs
from ec2ir.store.items import now


def verify(rt: Runtime, case_id: str) -> list[Finding]:
    """Every piece of evidence the case's journal names, checked against its recorded hash."""
    case = validate.case_id(case_id)
    actor = rt.aws.caller_arn()
    if not rt.store.exists():
        raise UsageError(f"state table {rt.store.table!r} does not exist", "pass --table")
    entries = rt.store.journal(case)
    if not entries:
        raise UsageError(f"case {case} has no journal in table {rt.store.table!r}", "check the case id")
    refs = list({(r.kind, r.location, r.version_id): r for e in entries for r in e.evidence}.values())
    stored = rt.store.journal_records(case)
    pointer = rt.store.chain_pointer(case)
    buckets = journal_buckets(stored, str(pointer.get("bucket", "")), rt.evidence_bucket)
    with request_ids() as ids:
        findings = verify_refs(rt.aws, refs, case)
        # the journal itself: each entry against its key, each run's chain, each head the
        # evidence bucket keeps (whole while the bucket's object versions are)
        findings += check_chain(stored) + check_heads(rt.aws, buckets, case, stored)
    bad = [f for f in findings if not f.ok]
    named = "; ".join(f"{f.status} {f.ref.location}" for f in bad[:REFUSALS_NAMED])
    more = f" and {len(bad) - REFUSALS_NAMED} more" if len(bad) > REFUSALS_NAMED else ""
    result = (
        Outcome.failed(
            f"{len(bad)} of {len(findings)} piece(s) of evidence or journal do not match: {named}{more}"
        )
        if bad
        else Outcome.done(f"{len(findings)} piece(s) of evidence intact")
    )
    # one entry however large the case: its request ids are capped to stay far below 400 KB
    journal(rt, [JournalEntry(now(), case, actor, case, "verify", result.text, tuple(ids[:100]))])
    return findings
