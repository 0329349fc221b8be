"""What every command runs on: the clients, the state table and the run's knobs, and the few
reads and checks every command makes with them (the preflight, discovery, the steps' batched
lookups, whether Ctrl-C stops a step)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ec2ir.aws.session import Aws, discover
from ec2ir.containment.steplog import GONE_STATES, StepLog
from ec2ir.containment.steps import STEPS
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError, InstanceNotFound, InstanceTerminated, UsageError
from ec2ir.core.interrupt import Interrupt
from ec2ir.core.models import InstanceFacts, InstanceResult
from ec2ir.engine.results import RunReport, failure
from ec2ir.evidence.bucket import bucket_name
from ec2ir.store.state import StateStore

DEFAULT_CONCURRENCY = 16


class Runtime:
    """The clients and the state table one engine works with, shared by every command."""

    def __init__(
        self,
        aws: Aws,
        store: StateStore,
        concurrency: int = DEFAULT_CONCURRENCY,
        evidence_bucket: str = "",
        evidence_aws: Aws | None = None,
        lanes_aws: Aws | None = None,
        urgent_aws: Aws | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        interrupt: Interrupt | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency}")
        self.aws = aws
        self.store = store
        self.concurrency = concurrency
        # the stack's own bucket, used when a run names none
        self.evidence_bucket = bucket_name(evidence_bucket) if evidence_bucket else ""
        # Evidence calls go through clients of their own: botocore's adaptive rate limiter is per
        # client, and a throttled console read must never slow an ENI swap.
        self.evidence_aws = evidence_aws or aws.sibling()
        # The instance swap lane's clients (ec2ir.containment.lanes), for the same reason; built on first use.
        self.lanes_aws = lanes_aws or aws.sibling()
        # The swap out of the allow-all group retries on its own terms, against a deadline, so its
        # clients leave retrying to it (ec2ir.containment.lanes.SwapLanes.untrack).
        self.urgent_aws = urgent_aws or aws.sibling(retries=False)
        self.clock = clock
        self.sleep = sleep
        # Set on Ctrl-C (ec2ir.cli.app): from then on no instance and no step starts; what is in
        # flight finishes, so no ENI is left in the allow-all group (ec2ir.core.interrupt).
        self.interrupt = interrupt or Interrupt()

    def start(self, action: str, instance_ids: Iterable[str], case_id: str) -> tuple[list[str], RunReport]:
        """Validate, learn who is acting and make sure the state table is usable: the preflight
        that every run passes before its first change."""
        named = list(instance_ids)
        ids = validate.instance_ids(named)
        case = validate.case_id(case_id)
        actor = self.aws.caller_arn()
        self.store.require()  # only release starts here: with no table, nothing is held
        report = RunReport(action, case, actor, results=[])
        if len(ids) < len(named):
            report.notes.append(f"ignored {len(named) - len(ids)} repeated instance id(s)")
        return ids, report

    def stopped(self, log: StepLog, name: str) -> bool:
        """Whether the run was interrupted (Ctrl-C), so that step ``name`` must not start; if so,
        it is logged as not started. A step under way is never stopped: it finishes."""
        if not self.interrupt.is_set():
            return False
        log.not_started(name)
        return True

    def discover(
        self, ids: list[str], action: str
    ) -> tuple[dict[str, InstanceFacts], dict[str, InstanceResult]]:
        """Every named instance's facts, and a failed result for each that is missing or gone."""
        facts = discover(self.aws, ids)
        early: dict[str, InstanceResult] = {}
        for instance_id in ids:
            found = facts.get(instance_id)
            if found is None:
                error: Ec2irError = InstanceNotFound(
                    f"instance {instance_id} does not exist in this account and region"
                )
            elif found.state in GONE_STATES:
                error = InstanceTerminated(f"instance {instance_id} is {found.state}; nothing to contain")
            else:
                continue
            early[instance_id] = failure(instance_id, action, error)
        return facts, early

    def lookups(self, instance_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Ec2irError]]:
        """Each step's batched discovery, all at once; a step whose lookup fails fails on every
        instance, and the other steps go on."""
        found: dict[str, dict[str, Any]] = {}
        errors: dict[str, Ec2irError] = {}
        if not instance_ids:
            return found, errors
        with ThreadPoolExecutor(max_workers=len(STEPS)) as pool:
            asked = {step.name: pool.submit(step.lookup, self.aws, instance_ids) for step in STEPS}
            for name, future in asked.items():
                try:
                    found[name] = future.result()
                except Ec2irError as error:
                    errors[name] = error
        return found, errors
