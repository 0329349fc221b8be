"""Evidence as a run takes it, for ``isolate`` and ``collect`` alike: the bucket and workers of a
run's collection, the memory image before the cut, then the snapshots and each metadata item,
every piece named in the run's step log for the journal."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ec2ir.containment.steplog import MEMORY, METADATA, SNAPSHOTS, StepLog
from ec2ir.containment.steps import Context, Options, Target
from ec2ir.core.errors import Ec2irError, EvidenceNotCollected, Unexpected, UsageError
from ec2ir.core.models import EvidenceRef, InstanceFacts
from ec2ir.core.outcomes import Outcome
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.bucket import EvidenceBucket, bucket_name, default_bucket, validate_object_lock_days
from ec2ir.evidence.metadata import Item, metadata_items
from ec2ir.evidence.s3 import account_of, as_json, compact_time
from ec2ir.evidence.snapshots import take_snapshots
from ec2ir.store.items import now

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import VolumeTypeDef


def validate_evidence_options(options: Options) -> None:
    """Refused before any change, like every other bad input."""
    if options.evidence_bucket:
        bucket_name(options.evidence_bucket)
    validate_object_lock_days(options.object_lock_days)
    if options.memory and options.memory_timeout <= 0:
        raise UsageError(f"memory timeout must be positive, not {options.memory_timeout}")
    if options.untrack_deadline <= 0:
        raise UsageError(f"the untrack deadline must be positive, not {options.untrack_deadline}")


def key_prefix(case_id: str, instance_id: str, stamp: str) -> str:
    return f"{case_id}/{instance_id}/{compact_time(stamp)}"


def evidence_bucket_name(rt: Runtime, options: Options, account: str) -> str:
    """The run's own bucket, else the stack's, else the account's default one."""
    return options.evidence_bucket or rt.evidence_bucket or default_bucket(account, rt.aws.region())


@dataclass
class Collection:
    """What one run collects as evidence, where it goes, and the pool that does it: evidence has
    its own workers, so it never holds up another instance's containment."""

    bucket: EvidenceBucket
    pool: ThreadPoolExecutor
    volumes: Future[dict[str, list[VolumeTypeDef]]] | None = None

    def volumes_of(self, instance_id: str) -> Item:
        """The instance's volumes as read in the first round trip, or why they are unknown."""
        if self.volumes is None:
            return Item("volumes", why_not="not read")
        try:
            return Item("volumes", as_json(self.volumes.result().get(instance_id, [])))
        except Exception as error:  # evidence must never stop containment
            return Item("volumes", why_not=f"{type(error).__name__}: {error}")


def open_collection(
    rt: Runtime,
    actor: str,
    options: Options,
    pool: ThreadPoolExecutor,
    volumes: Future[dict[str, list[VolumeTypeDef]]] | None,
) -> Collection:
    account = account_of(actor)
    name = evidence_bucket_name(rt, options, account)
    bucket = EvidenceBucket(rt.evidence_aws, name, account, options.object_lock_days, store=rt.store)
    return Collection(bucket, pool, volumes)


def acquire_memory(
    rt: Runtime, ctx: Context, targets: list[Target], collection: Collection
) -> dict[str, StepLog]:
    """Each instance's memory image, bounded by --memory-timeout, as a step log of its own."""
    from ec2ir.evidence.memory import acquire

    try:
        outcomes = acquire(
            rt.evidence_aws,
            collection.bucket,
            ctx.case_id,
            [target.instance_id for target in targets],
            timeout=ctx.options.memory_timeout,
        )
    except Exception as error:  # no memory is ever worth not containing the instances
        failed = {target.instance_id: StepLog() for target in targets}
        for log in failed.values():
            log.fail(MEMORY, error if isinstance(error, Ec2irError) else Unexpected(error))
        return failed
    logs: dict[str, StepLog] = {}
    for instance_id, outcome in outcomes.items():
        log = StepLog()
        log._set(MEMORY, outcome.result)
        if outcome.ref is None:  # asked for and not collected: the run is incomplete (exit 1)
            log.errors[MEMORY] = EvidenceNotCollected(f"memory {outcome.result.text}")
        log.requests[MEMORY] = list(outcome.request_ids)
        if outcome.ref is not None:
            log.evidence[MEMORY] = [outcome.ref]
        logs[instance_id] = log
    return logs


def take_evidence(
    rt: Runtime,
    ctx: Context,
    target: Target,
    collection: Collection,
    episode: str,
    log: StepLog,
    rerun: bool = False,
) -> None:
    """Snapshots, then the metadata, each unless Ctrl-C came first, into ``log``."""
    subject = target.instance_id
    if not rt.stopped(log, SNAPSHOTS):
        log.run(SNAPSHOTS, lambda: snapshot(rt, ctx, target.facts, episode, log), subject)
    if not rt.stopped(log, METADATA):
        log.run(
            METADATA,
            lambda: capture_metadata(rt, ctx, target, collection, episode, log, rerun),
            subject,
        )


def snapshot(rt: Runtime, ctx: Context, facts: InstanceFacts, episode: str, log: StepLog) -> str:
    refs = take_snapshots(
        rt.evidence_aws, ctx.case_id, facts, episode, log.evidence.setdefault(SNAPSHOTS, [])
    )
    if not refs:
        return "no EBS volumes to snapshot"
    return f"{len(refs)} snapshot(s), crash-consistent: " + ", ".join(
        f"{ref.location} ({ref.details['device'] or ref.details['volume_id']})" for ref in refs
    )


def capture_metadata(
    rt: Runtime,
    ctx: Context,
    target: Target,
    collection: Collection,
    episode: str,
    log: StepLog,
    rerun: bool = False,
) -> str:
    """Each item to its own object under the episode's prefix. A rerun on a held instance
    stores only the items an interrupted run did not (captured now, after the hold began)."""
    facts = target.facts
    items = metadata_items(rt.evidence_aws, facts, target.lookups, collection.volumes_of(facts.instance_id))
    prefix = key_prefix(ctx.case_id, facts.instance_id, episode)
    tags = {"ec2ir:case": ctx.case_id, "ec2ir:instance": facts.instance_id}
    stored: list[EvidenceRef] = []
    kept = 0
    for item in items:
        action = f"evidence:{item.name}"
        key = f"{prefix}/{item.name}.{item.extension}"
        earlier = collection.bucket.stored(key, f"metadata:{item.name}") if rerun else None
        if earlier is not None:  # stored by the interrupted run; journaled again to be sure
            kept += 1
            log.extra.append(
                (action, now(), Outcome.done(f"sha256 {earlier.sha256} (stored earlier)"), [earlier])
            )
            continue
        if item.why_not:
            log.extra.append((action, now(), Outcome.not_collected(item.why_not), []))
            continue
        ref = collection.bucket.put(key, item.body, f"metadata:{item.name}", item.content_type, tags)
        stored.append(ref)
        log.extra.append((action, now(), Outcome.done(f"sha256 {ref.sha256}"), [ref]))
    missing = [item.name for item in items if item.why_not]
    already = f", {kept} already there from the run that began the hold" if kept else ""
    return f"{len(stored)} item(s) in s3://{collection.bucket.name}/{prefix}/{already}" + (
        f"; not collected: {', '.join(missing)}" if missing else ""
    )
