"""``collect``: snapshots and metadata (and memory, if asked) without isolating, each run a fresh
set journaled under the case; and ``collect --dry-run``, with only reads."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ec2ir.containment.steplog import StepLog
from ec2ir.containment.steps import Context, Options, Target
from ec2ir.core import validate
from ec2ir.core.models import InstanceResult
from ec2ir.engine.gather import acquire_memory, open_collection, take_evidence, validate_evidence_options
from ec2ir.engine.journal import journal, refusals
from ec2ir.engine.names import name_report
from ec2ir.engine.plan import plan_evidence
from ec2ir.engine.results import (
    PlannedStep,
    PlanReport,
    Progress,
    RunReport,
    name_tags,
    not_started,
    run_each,
)
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.snapshots import volumes_of
from ec2ir.permissions.policy import simulate
from ec2ir.store.items import now


def collect(
    rt: Runtime,
    instance_ids: Iterable[str],
    case_id: str,
    options: Options | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Snapshots and metadata (and memory, if asked) without isolating: each run takes a
    fresh set, journaled under the case."""
    options = replace(options or Options(), evidence=True)
    validate_evidence_options(options)
    ids = validate.instance_ids(list(instance_ids))
    case = validate.case_id(case_id)
    with ThreadPoolExecutor(max_workers=5) as pool:
        asked_actor = pool.submit(rt.aws.caller_arn)
        asked_table = pool.submit(rt.store.ensure_table)
        asked_facts = pool.submit(rt.discover, ids, "collect")
        asked_lookups = pool.submit(rt.lookups, ids)
        volumes = pool.submit(volumes_of, rt.evidence_aws, ids)
        actor = asked_actor.result()
        asked_table.result()
        facts, early = asked_facts.result()
        lookups, lookup_errors = asked_lookups.result()
        collection = open_collection(rt, actor, options, pool, volumes)
    report = RunReport("collect", case, actor, results=[])
    ctx = Context(rt.aws, case, actor, now(), options)
    targets = {
        i: Target(facts[i], {}, lookups={name: hits.get(i) for name, hits in lookups.items()})
        for i in ids
        if i not in early
    }
    memory = acquire_memory(rt, ctx, list(targets.values()), collection) if options.memory else {}

    def collect_one(instance_id: str) -> InstanceResult:
        log = memory.get(instance_id) or StepLog()
        if rt.interrupt.is_set() and not log.evidence:  # Ctrl-C before anything was taken
            return not_started(instance_id, "collect")
        take_evidence(rt, ctx, targets[instance_id], collection, ctx.started_at, log)
        # always journaled: a memory image taken before a Ctrl-C is evidence like any other
        journal(rt, log.journal_entries(ctx, instance_id, "collect"), log=log)
        return log.result(instance_id, "collect", "evidence collected", evidence_counts=True)

    done = run_each(list(targets), collect_one, "collect", rt.concurrency, progress)
    report.results = [early.get(i) or done[i] for i in ids]
    report.notes.extend(f"lookup {name} failed: {error}" for name, error in lookup_errors.items())
    report.notes.extend(collection.bucket.notes)
    journal(rt, refusals(report), report.notes)
    name_report(rt.aws, report, facts)
    return report


def plan_collect(
    rt: Runtime, instance_ids: Iterable[str], case_id: str, options: Options | None = None
) -> PlanReport:
    """Everything ``collect`` would do (``collect --dry-run``), refusing what it refuses, with
    only reads: no snapshot, no object, no journal entry, no state table."""
    options = replace(options or Options(), evidence=True)
    validate_evidence_options(options)
    ids = validate.instance_ids(list(instance_ids))
    case = validate.case_id(case_id)
    report = PlanReport(case, rt.aws.caller_arn(), action="collect")
    ctx = Context(rt.aws, case, report.actor, now(), options)
    if not rt.store.exists():
        report.setup.append(f"create the state table {rt.store.table} (on-demand, KMS-encrypted)")
    facts, early = rt.discover(ids, "collect")
    report.refused = list(early.values())
    live = [facts[i] for i in ids if i not in early]
    report.names = name_tags(live)  # display only, from the discovery just made
    needed = plan_evidence(rt, report, ctx, live, {}, report.instances)
    if report.evidence_refusal:
        for instance in live:
            report.instances[instance.instance_id].insert(
                0, PlannedStep("evidence", "would fail", note=report.evidence_refusal)
            )
    report.checks = simulate(rt.aws, report.actor, needed | {"dynamodb:GetItem", "dynamodb:PutItem"})
    return report
