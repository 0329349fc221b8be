"""The one engine behind every adapter (the CLI, the Lambda handlers, the benchmarks): each command
is a method here, with the signature every adapter calls, and is done by its own module of
``ec2ir.engine``; this class only holds what they share (ec2ir.engine.runtime) and hands it on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ec2ir.containment import nacl
from ec2ir.containment.check import CheckReport
from ec2ir.containment.steps import Options
from ec2ir.core.models import Hold
from ec2ir.engine import (
    collect,
    edge,
    isolate,
    names,
    plan,
    rejoin,
    release,
    snapshot_list,
    status,
    verify,
)
from ec2ir.engine.results import PlanReport, Progress, RunReport
from ec2ir.engine.runtime import Runtime
from ec2ir.evidence.verify import Finding


class Engine(Runtime):
    """Isolate, plan, release, rejoin, collect, verify, block and status for many instances; built
    as ``Runtime`` is (the clients, the state table, the concurrency, Ctrl-C)."""

    def isolate(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        office_cidr: str | None = None,
        allow_any_source: bool = False,
        options: Options | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        return isolate.isolate(self, instance_ids, case_id, office_cidr, allow_any_source, options, progress)

    def plan(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        office_cidr: str | None = None,
        allow_any_source: bool = False,
        options: Options | None = None,
    ) -> PlanReport:
        """Everything ``isolate`` would do, with only reads and DryRun probes: nothing changes."""
        return plan.plan(self, instance_ids, case_id, office_cidr, allow_any_source, options)

    def release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        rejoin: bool = False,
        progress: Progress | None = None,
        replace_groups: Iterable[str] = (),
        skip_missing_groups: bool = False,
    ) -> RunReport:
        """``replace_groups`` (``OLD=NEW``) and ``skip_missing_groups``: what to do about original
        groups deleted since isolation (ec2ir.containment.restore)."""
        return release.release(
            self, instance_ids, case_id, rejoin, progress, replace_groups, skip_missing_groups
        )

    def gone(self, instance_ids: list[str]) -> list[str]:
        """Which of these instances no longer exist (unknown, or terminated); raises when it
        cannot tell. What a release says of them (the stack's Delete) depends on it."""
        return release.gone_instances(self, instance_ids)

    def plan_release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        rejoin: bool = False,
        replace_groups: Iterable[str] = (),
        skip_missing_groups: bool = False,
    ) -> RunReport:
        """``release --dry-run``: nothing is changed."""
        return release.plan_release(self, instance_ids, case_id, rejoin, replace_groups, skip_missing_groups)

    def rejoin(
        self, instance_ids: Iterable[str], case_id: str, progress: Progress | None = None
    ) -> RunReport:
        return rejoin.rejoin(self, instance_ids, case_id, progress)

    def collect(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        options: Options | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        return collect.collect(self, instance_ids, case_id, options, progress)

    def plan_collect(
        self, instance_ids: Iterable[str], case_id: str, options: Options | None = None
    ) -> PlanReport:
        """``collect --dry-run``: nothing is changed."""
        return collect.plan_collect(self, instance_ids, case_id, options)

    def store_snapshot_list(
        self, report: RunReport, place: str, about: Mapping[str, str]
    ) -> snapshot_list.SnapshotList:
        """The run's full list of snapshot ids as one object in the evidence bucket, for an
        adapter whose answer cannot hold it (the stack's 4 KB)."""
        return snapshot_list.store_snapshot_list(self, report, place, about)

    def verify(self, case_id: str, reach: verify.Reach | None = None) -> list[Finding]:
        """``reach``: the clients of the place each journal entry's instance is in (an outbreak's)."""
        return verify.verify(self, case_id, reach)

    def block_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """``ec2ir block-ip``: deny addresses at the subnet edge of every instance the case holds."""
        return edge.block_or_unblock(self, "block-ip", cidrs, case_id, dry_run)

    def unblock_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """``ec2ir unblock-ip``: remove the case's deny entries for these addresses, wherever they are."""
        return edge.block_or_unblock(self, "unblock-ip", cidrs, case_id, dry_run)

    def status(self, case_id: str | None = None, include_released: bool = False) -> list[Hold]:
        return status.status(self, case_id, include_released)

    def names(self, holds: Iterable[Hold]) -> tuple[dict[str, str], dict[str, str]]:
        """``status``: each held instance's Name tag and each original group's name, display only."""
        return names.hold_names(self.aws, holds)

    def check(self, case_id: str | None = None, repair: bool = False) -> CheckReport:
        """``status --check`` (and ``--repair``)."""
        return status.check(self, case_id, repair)
