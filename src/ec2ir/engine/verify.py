"""``verify``: every piece of evidence a case's journal names checked against its recorded hash,
and the journal itself against its chain and the heads its evidence bucket keeps."""

from __future__ import annotations

from collections.abc import Callable

from ec2ir.aws.session import Aws, request_ids
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError, UsageError
from ec2ir.core.models import EvidenceRef, JournalEntry
from ec2ir.core.outcomes import Outcome
from ec2ir.engine.journal import REFUSALS_NAMED, journal
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.provenance import check_chain, check_heads, journal_buckets
from ec2ir.evidence.s3 import split_location
from ec2ir.evidence.verify import Finding, Verdict, verify_refs
from ec2ir.store.items import now

# The clients of the place an entry's target (an instance) is in, for a case across places
# (ec2ir.engine.outbreak): a snapshot can only be found, and a bucket of another account only read,
# from there. It raises when the place cannot be reached.
Reach = Callable[[str], Aws]


def verify(rt: Runtime, case_id: str, reach: Reach | None = None) -> list[Finding]:
    """Every piece of evidence the case's journal names, checked against its recorded hash, each
    from the place that took it (``reach``; the run's own clients without one)."""
    case = validate.case_id(case_id)
    actor = rt.aws.caller_arn()
    if not rt.store.exists():
        raise UsageError(f"state table {rt.store.table!r} does not exist", "pass --table")
    entries = rt.store.journal(case)
    if not entries:
        raise UsageError(f"case {case} has no journal in table {rt.store.table!r}", "check the case id")
    places = _by_place(entries, reach or (lambda _target: rt.aws))
    stored = rt.store.journal_records(case)
    pointer = rt.store.chain_pointer(case)
    buckets = journal_buckets(stored, str(pointer.get("bucket", "")), rt.evidence_bucket)
    bucket_reach = {
        split_location(ref.location)[0]: aws
        for aws, refs in places
        if isinstance(aws, Aws)
        for ref in refs
        if ref.location.startswith("s3://")
    }
    with request_ids() as ids:
        findings: list[Finding] = []
        for aws, refs in places:
            findings += verify_refs(aws, refs, case) if isinstance(aws, Aws) else _unreachable(refs, aws)
        # the journal itself: each entry against its key, each run's chain, each head the
        # evidence bucket keeps (whole while the bucket's object versions are)
        findings += check_chain(stored) + check_heads(rt.aws, buckets, case, stored, bucket_reach)
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


def _by_place(entries: list[JournalEntry], reach: Reach) -> list[tuple[Aws | Ec2irError, list[EvidenceRef]]]:
    """Each piece of evidence (once), with the clients of its entry's place, or why that place
    cannot be reached; one group for each place's clients."""
    groups: list[tuple[Aws | Ec2irError, list[EvidenceRef]]] = []
    seen: set[tuple[str, str, str]] = set()
    for entry in entries:
        fresh = [r for r in entry.evidence if (r.kind, r.location, r.version_id) not in seen]
        if not fresh:
            continue
        seen.update((r.kind, r.location, r.version_id) for r in fresh)
        try:
            aws: Aws | Ec2irError = reach(entry.target)
        except Ec2irError as error:
            aws = error
        group = next((g for g in groups if g[0] is aws), None)
        if group is None:
            groups.append((aws, fresh))
        else:
            group[1].extend(fresh)
    return groups


def _unreachable(refs: list[EvidenceRef], error: Ec2irError) -> list[Finding]:
    return [Finding(ref, Verdict.UNREADABLE, f"its place cannot be reached: {error}") for ref in refs]
