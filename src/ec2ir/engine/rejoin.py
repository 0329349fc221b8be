"""``rejoin``: released instances back into their Auto Scaling group and load balancers, from their
holds' records (ec2ir.containment.rejoin), each change journaled like release's."""

from __future__ import annotations

from collections.abc import Iterable

from ec2ir.aws.session import discover
from ec2ir.containment.steplog import StepLog
from ec2ir.containment.steps import Context, Options
from ec2ir.core.errors import StaleRecord
from ec2ir.core.models import InstanceResult
from ec2ir.engine.holds import check_originals
from ec2ir.engine.journal import journal, refusals
from ec2ir.engine.names import name_report
from ec2ir.engine.release import gathered_provenance
from ec2ir.engine.results import Progress, RunReport, run_each
from ec2ir.engine.runtime import Runtime
from ec2ir.store.items import now


def rejoin(
    rt: Runtime, instance_ids: Iterable[str], case_id: str, progress: Progress | None = None
) -> RunReport:
    """Released instances back into their Auto Scaling group and load balancers, from their
    holds' records (ec2ir.containment.rejoin); each change journaled like release's."""
    from ec2ir.containment import rejoin as rejoining

    ids, report = rt.start("rejoin", instance_ids, case_id)
    ctx = Context(rt.aws, report.case_id, report.actor, now(), Options(rejoin=True))
    facts = discover(rt.aws, ids)
    holds = rt.store.get_many(ids)
    provenance = gathered_provenance(rt, report.case_id, ids, released=True)

    def rejoin_one(instance_id: str) -> InstanceResult:
        hold = rejoining.released_hold(instance_id, holds.get(instance_id), report.case_id)
        unproven = check_originals(hold, provenance)
        log = StepLog()

        def still_released() -> None:
            current = rejoining.released_hold(instance_id, rt.store.get(instance_id), report.case_id)
            if current.recorded_at != hold.recorded_at:
                raise StaleRecord(
                    f"{instance_id} was isolated and released again during this rejoin",
                    "run rejoin again: it acts on the latest release's records",
                )

        try:
            summary = rejoining.rejoin_one(
                ctx, instance_id, hold, facts.get(instance_id), log, still_released
            )
        finally:  # what was put back before a refusal is journaled all the same
            journal(rt, log.journal_entries(ctx, instance_id, "rejoin"), log=log)
        return log.result(instance_id, "rejoin", summary, warnings=unproven)

    done = run_each(ids, rejoin_one, "rejoin", rt.concurrency, progress, rt.interrupt)
    report.results = [done[i] for i in ids]
    journal(rt, refusals(report), report.notes)
    name_report(rt.aws, report, facts)
    return report
