"""What a run reports: each command's result types, and how a run turns every instance into a
result (``run_each``), a failure or an instance it never started on included."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ec2ir.containment import nacl
from ec2ir.containment.steps import PlannedCall
from ec2ir.core.errors import Ec2irError, Interrupted
from ec2ir.core.interrupt import Interrupt
from ec2ir.core.models import InstanceFacts, InstanceResult, Phase, VpcGroups
from ec2ir.permissions.policy import DENIED, Check


class Progress(Protocol):
    """Called as each instance reaches a phase, from the run's worker threads: it must be
    thread-safe (ec2ir.render.terminal.ProgressPrinter is)."""

    def __call__(self, result: InstanceResult, phase: Phase = Phase.DONE) -> None: ...


def name_tags(facts: Iterable[InstanceFacts]) -> dict[str, str]:
    """Each instance's Name tag, for display only: never a reason to act (anyone who can tag an
    instance sets it), so it is read from what discovery returned, at no extra call."""
    return {f.instance_id: f.tags["Name"] for f in facts if f.tags.get("Name")}


def group_names_of(facts: Iterable[InstanceFacts]) -> dict[str, str]:
    """The names of the groups each ENI wore at discovery, as DescribeInstances gave them."""
    return {
        str(group["GroupId"]): str(group["GroupName"])
        for f in facts
        for nic in f.description.get("NetworkInterfaces", [])
        for group in nic.get("Groups", [])
        if group.get("GroupId") and group.get("GroupName")
    }


@dataclass
class RunReport:
    """The outcome of one isolate or release run, in the order the instances were named."""

    action: str
    case_id: str
    actor: str
    results: list[InstanceResult]
    groups: dict[str, VpcGroups] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    blocks: nacl.NaclReport | None = None  # isolate --block-ip: the deny entries, as data
    group_names: dict[str, str] = field(default_factory=dict)  # group id -> name, display only

    @property
    def failed(self) -> list[InstanceResult]:
        return [result for result in self.results if not result.ok]

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "case_id": self.case_id,
            "actor": self.actor,
            "ok": not self.failed,
            "results": [result.as_dict() for result in self.results],
            "groups": {
                vpc: {
                    "forensic_group_id": g.forensic_group_id,
                    "isolation_group_id": g.isolation_group_id,
                    "allow_all_group_id": g.allow_all_group_id,
                    "created": list(g.created),
                    "repaired": list(g.repaired),
                }
                for vpc, g in self.groups.items()
            },
            "notes": self.notes,
            "group_names": self.group_names,
        }


def failure(instance_id: str, action: str, error: Exception, **extra: Any) -> InstanceResult:
    code = error.code if isinstance(error, Ec2irError) else type(error).__name__
    return InstanceResult(instance_id, action, ok=False, detail=str(error), error_code=code, **extra)


def interrupted_before(instance_id: str, action: str) -> Interrupted:
    """Why an instance the run never began on, as it was interrupted first, is as it was."""
    return Interrupted(
        f"interrupted (Ctrl-C) before {action} began on {instance_id}: nothing was changed on it",
        f"run `ec2ir {action}` again to finish",
    )


def not_started(instance_id: str, action: str) -> InstanceResult:
    return failure(instance_id, action, interrupted_before(instance_id, action))


def run_each(
    items: Iterable[str],
    work: Callable[[str], InstanceResult],
    action: str,
    concurrency: int,
    progress: Progress | None,
    interrupt: Interrupt | None = None,
) -> dict[str, InstanceResult]:
    """Run ``work`` for each item on a bounded pool; every item ends with a result, never a raise.
    Once ``interrupt`` is set no item starts (each is a ``not_started`` result); those under way
    finish."""
    items = list(items)
    results: dict[str, InstanceResult] = {}

    def guarded(item: str) -> InstanceResult:
        try:
            result = not_started(item, action) if interrupt and interrupt.is_set() else work(item)
        except Exception as error:  # one instance's failure must never stop the others
            result = failure(item, action, error)
        if progress:
            progress(result)
        return result

    if not items:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
        for item, result in zip(items, pool.map(guarded, items), strict=True):
            results[item] = result
    return results


@dataclass(frozen=True)
class PlannedStep:
    step: str
    title: str
    calls: tuple[PlannedCall, ...] = ()
    note: str = ""


@dataclass
class PlanReport:
    """What ``isolate`` (or ``collect``) would do, per instance and step, and whether the caller
    may do it. For isolate, ``evidence`` holds the evidence steps that follow the cut and
    ``eni_paths`` each ENI's way from its groups into the isolation group; for collect, whose
    steps are all evidence, ``instances`` holds them."""

    case_id: str
    actor: str
    setup: list[str] = field(default_factory=list)
    instances: dict[str, list[PlannedStep]] = field(default_factory=dict)
    refused: list[InstanceResult] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    action: str = "isolate"
    evidence_bucket: str = ""  # where the evidence would go; "" when none would be taken
    evidence_refusal: str = ""  # why no evidence would be collected, if the bucket is unusable
    evidence: dict[str, list[PlannedStep]] = field(default_factory=dict)
    eni_paths: dict[str, dict[str, EniPath]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # instance id -> Name tag, display only

    @property
    def denied(self) -> list[Check]:
        return [check for check in self.checks.values() if check.verdict == DENIED]

    @property
    def would_fail(self) -> bool:
        """Whether the run would leave something asked for undone (exit 1)."""
        return bool(self.denied or self.refused or self.evidence_refusal)

    def as_dict(self) -> dict[str, object]:
        return {
            "case_id": self.case_id,
            "actor": self.actor,
            "action": self.action,
            "dry_run": True,
            "setup": self.setup,
            "instances": _planned_steps(self.instances),
            "evidence": {
                "bucket": self.evidence_bucket,
                "refusal": self.evidence_refusal,
                "instances": _planned_steps(self.evidence),
            },
            "eni_paths": {
                instance_id: {eni: path.as_dict() for eni, path in paths.items()}
                for instance_id, paths in self.eni_paths.items()
            },
            "refused": [result.as_dict() for result in self.refused],
            "permissions": {a: {"verdict": c.verdict, "how": c.how} for a, c in sorted(self.checks.items())},
            "names": self.names,
        }


@dataclass(frozen=True)
class EniPath:
    """One ENI's way through isolate: its groups now, the allow-all group it passes through (none
    with --no-untrack) and the isolation group it ends in, each ec2ir group as "sg-id (name)", or
    as the name a group still to be created gets."""

    current: tuple[str, ...]
    allow_all: str
    isolation: str
    current_names: tuple[str, ...] = ()  # each current group's name, as discovery read it; display only

    def as_dict(self) -> dict[str, object]:
        return {"current": list(self.current), "allow_all": self.allow_all, "isolation": self.isolation}

    def describe(self) -> str:
        now = [f"{g} ({n})" if n else g for g, n in zip(self.current, self.current_names, strict=False)]
        now += list(self.current[len(now) :])
        hops = [",".join(now) or "-", *filter(None, (self.allow_all, self.isolation))]
        return " -> ".join(hops)


def _planned_steps(by_instance: dict[str, list[PlannedStep]]) -> dict[str, list[dict[str, object]]]:
    return {
        instance_id: [
            {
                "step": planned.step,
                "title": planned.title,
                "note": planned.note,
                "calls": [{"action": c.action, "resources": list(c.resources)} for c in planned.calls],
            }
            for planned in steps
        ]
        for instance_id, steps in by_instance.items()
    }
