"""``isolate``'s cut: every instance's originals recorded (write-ahead) and the instance cut off, on
the urgent pool; then, once every instance is cut off, its ENIs read again, and the late phase
(ec2ir.engine.late) started for each."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import replace

from ec2ir.aws.session import discover
from ec2ir.containment.steplog import GONE_STATES, StepLog
from ec2ir.containment.steps import NETWORK, URGENT, Context, Target
from ec2ir.core.errors import Ec2irError, OriginalsUnknown, ReleaseInProgress
from ec2ir.core.models import Eni, HoldStatus, InstanceFacts, InstanceResult, Phase
from ec2ir.core.pools import RankedPool
from ec2ir.engine.contained import Containment, run_steps
from ec2ir.engine.gather import Collection
from ec2ir.engine.holds import capture, check_owner, network_record, record_what_is_new
from ec2ir.engine.late import after_cut, collect_for
from ec2ir.engine.results import Progress, failure, interrupted_before
from ec2ir.engine.runtime import Runtime
from ec2ir.store.items import now


def contain_all(
    rt: Runtime,
    ctx: Context,
    targets: list[Target],
    vpc_errors: dict[str, Ec2irError],
    lookup_errors: dict[str, Ec2irError],
    progress: Progress | None,
    collection: Collection | None = None,
    memory: dict[str, StepLog] | None = None,
    after_cuts: Callable[[list[InstanceFacts]], None] | None = None,
) -> dict[str, InstanceResult]:
    """Cut every instance off first, then do the rest.

    The urgent pool only records and cuts (autoscaling, network). Everything else starts once
    every instance is cut off, as it would take workers, CPU and token-bucket time from the
    cuts still to come: the after-steps on a second pool, and, on a third, the steps with a
    throttled bucket of their own, so that they never hold the after-steps up.
    """
    results: dict[str, InstanceResult] = {}
    workers = max(1, min(rt.concurrency, len(targets) or 1))
    # ``beside`` is listed before ``background``, whose tasks submit to it, so it closes after.
    with (
        ThreadPoolExecutor(workers) as urgent,
        ThreadPoolExecutor(workers) as beside_pool,
        ThreadPoolExecutor(workers) as background,
    ):
        beside = RankedPool(beside_pool)
        cut = functools.partial(
            cut_one, rt, ctx, vpc_errors=vpc_errors, lookup_errors=lookup_errors, memory=memory
        )
        cuts = {urgent.submit(cut, target): target.instance_id for target in targets}
        cut_off = wait_for_cuts(cuts, results, progress)
        said_contained = [c for c in cut_off if NETWORK.name not in c.log.errors]
        recheck_enis(rt, ctx, cut_off)
        if progress:  # the check after the cut found one open after all: say so, as live
            for containment in said_contained:
                if NETWORK.name in containment.log.errors:
                    progress(containment.contained(), Phase.CONTAINED)
        if after_cuts is not None and not rt.interrupt.stops("the network ACL blocks (--block-ip)"):
            # The network ACL blocks (--block-ip), once every instance is cut off and before any
            # late step: a deny entry is a cut too (stateless, it stops the flows a swap leaves
            # tracked), and CreateNetworkAclEntry draws on EC2's shared mutating bucket, which
            # single-ENI swaps use and protect and metadata would then drain. After the cuts it
            # takes no token a swap needs; before the late steps, it gets its tokens at once.
            after_cuts([containment.target.facts for containment in cut_off])
        finishing = start_late(rt, ctx, cut_off, collection, memory, background, beside)
        for finished in as_completed(finishing):
            containment = finishing[finished]
            try:
                result = containment.result(finished)
            except Exception as error:  # a surprise in a late step still ends as a result
                result = failure(containment.target.instance_id, "isolate", error)
            results[result.instance_id] = result
            if progress:
                progress(result)
    return results


def start_late(
    rt: Runtime,
    ctx: Context,
    cut_off: list[Containment],
    collection: Collection | None,
    memory: dict[str, StepLog] | None,
    background: ThreadPoolExecutor,
    beside: RankedPool,
) -> dict[Future[StepLog], Containment]:
    """Each cut instance's late phase (ec2ir.engine.late) on the background pool, and its evidence
    on the collection's own workers."""
    finishing: dict[Future[StepLog], Containment] = {}
    for containment in cut_off:
        if memory and containment.target.instance_id in memory:
            containment.memory = memory[containment.target.instance_id]
        if collection is not None:
            collect = functools.partial(collect_for, rt, ctx, containment, collection)
            containment.evidence = collection.pool.submit(collect)
        finishing[background.submit(after_cut, rt, ctx, containment, beside)] = containment
    return finishing


def cut_one(
    rt: Runtime,
    ctx: Context,
    target: Target,
    vpc_errors: dict[str, Ec2irError],
    lookup_errors: dict[str, Ec2irError],
    memory: dict[str, StepLog] | None,
) -> Containment:
    """One instance's cut, unless its VPC's groups are not verified safe, or Ctrl-C came first."""
    broken = [vpc_errors[v] for v in sorted(target.facts.vpc_ids) if v in vpc_errors]
    if broken:
        raise broken[0]  # never isolate into a group that is not verified safe
    taken = memory is not None and target.instance_id in memory and memory[target.instance_id].evidence
    if rt.interrupt.is_set() and not taken:  # Ctrl-C: no instance starts, not even its record
        raise interrupted_before(target.instance_id, "isolate")
    # an instance whose memory was taken has begun: it is cut, and the image journaled
    return cut_instance(rt, ctx, target, lookup_errors)


def wait_for_cuts(
    cuts: dict[Future[Containment], str],
    results: dict[str, InstanceResult],
    progress: Progress | None,
) -> list[Containment]:
    """Every cut once all have ended; a failed cut is a result at once."""
    cut_off: list[Containment] = []
    for future in as_completed(cuts):
        instance_id = cuts[future]
        try:
            cut_off.append(future.result())
        except Exception as error:  # one instance's failure must never stop the others
            results[instance_id] = failure(instance_id, "isolate", error)
            if progress:
                progress(results[instance_id], Phase.CONTAINED)
                progress(results[instance_id])
        else:
            if progress:  # live, as each cut ends: the responder sees containment as it happens
                progress(cut_off[-1].contained(), Phase.CONTAINED)
    return cut_off


def cut_instance(
    rt: Runtime, ctx: Context, target: Target, lookup_errors: dict[str, Ec2irError]
) -> Containment:
    """Record every original, then detach and isolate."""
    facts = target.facts
    log = StepLog()
    for name, error in lookup_errors.items():
        log.fail(name, error)
    # The forensic group is not here: a compromised forensic workstation is contained too.
    managed = {group_id for vpc in facts.vpc_ids for group_id in target.groups[vpc].containment_group_ids}
    # An ENI already in one of ec2ir's containment groups with no hold to say where it came
    # from: its originals cannot be known, so none is recorded, but it is isolated all the same.
    unknown = frozenset(eni.eni_id for eni in facts.enis if managed & set(eni.group_ids))
    records = capture(ctx, target, log, skip=set(log.errors))
    hold, created = rt.store.record_originals(facts, ctx.case_id, ctx.actor, steps=records, unknown=unknown)
    check_owner(hold, ctx.case_id)
    if hold.status is HoldStatus.RELEASING:
        raise ReleaseInProgress(
            f"{facts.instance_id} is being released by case {hold.case_id} (or a release was interrupted)",
            "run `ec2ir release` to finish it, then isolate again",
        )
    if not created:
        hold = record_what_is_new(rt, ctx, replace(target, stored=hold.steps), hold, log, managed)
    target = replace(target, stored=dict(hold.steps))
    containment = Containment(target, hold, created, log)
    run_steps(rt, ctx, containment, URGENT, log)
    containment.cut_at = now()
    return containment


def recheck_enis(rt: Runtime, ctx: Context, containments: list[Containment]) -> None:
    """Every cut instance's ENIs, read once more in one batch after the cut. An ENI attached
    since discovery, or moved back by someone, is recorded and isolated before the instance is
    reported isolated; if the read fails, the cut cannot be shown whole and is reported failed."""
    cut = [c for c in containments if NETWORK.name not in c.log.errors]
    if not cut:
        return
    try:
        live = discover(rt.aws, [c.target.instance_id for c in cut])
    except Ec2irError as error:
        for containment in cut:
            containment.log.fail(NETWORK.name, error)
        return
    for containment in cut:
        facts = live.get(containment.target.instance_id)
        if facts is None or facts.state in GONE_STATES:
            continue
        target = containment.target
        isolation = {vpc: groups.isolation_group_id for vpc, groups in target.groups.items()}
        strays = [eni for eni in facts.enis if eni.group_ids != (isolation.get(eni.vpc_id),)]
        if strays:
            isolate_strays(rt, ctx, containment, facts, strays)


def isolate_strays(
    rt: Runtime, ctx: Context, containment: Containment, facts: InstanceFacts, strays: list[Eni]
) -> None:
    """ENIs found outside the isolation group after the cut: recorded, then isolated."""
    target, log = containment.target, containment.log
    unknown_vpcs = sorted({eni.vpc_id for eni in strays} - set(target.groups))
    if unknown_vpcs:
        log.fail(
            NETWORK.name,
            OriginalsUnknown(
                f"{target.instance_id}: ENI(s) {', '.join(e.eni_id for e in strays)} attached during the "
                f"run in {', '.join(unknown_vpcs)}, where this run has no isolation group",
                "run isolate again",
            ),
        )
        return
    managed = {gid for vpc in facts.vpc_ids for gid in target.groups[vpc].containment_group_ids}
    now_target = replace(target, facts=facts)
    try:
        hold = record_what_is_new(rt, ctx, now_target, containment.hold, log, managed)
    except Ec2irError as error:
        log.fail(NETWORK.name, error)
        return
    containment.hold, containment.target = hold, replace(now_target, stored=dict(hold.steps))
    record = network_record(hold.originals)
    log.run(
        NETWORK.name,
        functools.partial(NETWORK.apply, ctx, containment.target, record),
        subject=containment.target.instance_id,
    )
    if NETWORK.name not in log.errors:
        log.outcomes[NETWORK.name] = log.outcomes[NETWORK.name].extended(
            f"; after the cut, {len(strays)} ENI(s) outside the isolation group "
            f"({', '.join(e.eni_id for e in strays)}) were recorded and isolated"
        )
