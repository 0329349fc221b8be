"""``ec2ir rejoin``: a released instance back into its Auto Scaling group and load balancers.

A plain ``release`` leaves the instance out of service; ``release --rejoin`` is only for a hold
still active. ``rejoin`` finishes the job for a hold already released: it runs the same undos
``release --rejoin`` runs (``DetachFromAutoScaling.undo``, ``DeregisterLoadBalancers.undo``), from
the hold's recorded originals, checked against the case journal first; never from tags or names.

What is already back is left as it is, so a second rejoin changes nothing and says so. Auto
Scaling attaches only a running instance (and only while the group's desired capacity stays
within its max size, which only AttachInstances itself tells without a new IAM action): a stopped
instance is refused before any change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ec2ir.aws.session import Aws, translated
from ec2ir.containment.records import StoredRecord, autoscaling_record, load_balancers_record
from ec2ir.containment.steplog import GONE_STATES, StepLog
from ec2ir.containment.steps import (
    STEPS,
    BaseStep,
    Context,
    DeregisterLoadBalancers,
    DetachFromAutoScaling,
)
from ec2ir.core.errors import (
    AwsError,
    HeldByOtherCase,
    InstanceNotRunning,
    InstanceTerminated,
    NotReleased,
    StillHeld,
)
from ec2ir.core.models import Hold, HoldStatus, InstanceFacts

if TYPE_CHECKING:
    from mypy_boto3_elbv2.type_defs import TargetDescriptionTypeDef

# DescribeTargetHealth's states of a target that is not (or no longer) registered
NOT_REGISTERED = frozenset({"draining"})
NOT_REGISTERED_REASON = "Target.NotRegistered"
# In the order isolate took it out of service: the group first, then its load balancers.
REJOIN_STEPS: tuple[BaseStep, ...] = tuple(
    step for step in STEPS if isinstance(step, DetachFromAutoScaling | DeregisterLoadBalancers)
)


def released_hold(instance_id: str, hold: Hold | None, case_id: str) -> Hold:
    """The hold, if ``rejoin`` may act on it; refused (nothing changed) otherwise."""
    unchanged = "nothing was changed"
    if hold is None:
        raise NotReleased(
            f"{instance_id} was never held by ec2ir: there is no record of what it was in",
            f"{unchanged}; rejoin puts back what a release of ec2ir left out of service",
        )
    if hold.case_id != case_id:
        raise HeldByOtherCase(
            f"{instance_id}'s hold belongs to case {hold.case_id}, not {case_id}",
            f"{unchanged}; run rejoin with --case {hold.case_id}",
        )
    if hold.status is not HoldStatus.RELEASED:
        raise StillHeld(
            f"{instance_id} is still held ({hold.status.value}) by case {hold.case_id}",
            f"{unchanged}; use `ec2ir release --rejoin {instance_id} --case {hold.case_id}`, which "
            "puts its groups back first",
        )
    return hold


def _asg_out(aws: Aws, instance_id: str, stored: StoredRecord) -> list[str]:
    record = autoscaling_record(stored)
    found = DetachFromAutoScaling._memberships(aws, [instance_id])
    inside = any(
        item["AutoScalingGroupName"] == record["group"]
        and item.get("LifecycleState") not in ("Detaching", "Detached")
        for item in found
    )
    return [] if inside else [record["group"]]


def _balancers_out(aws: Aws, instance_id: str, stored: StoredRecord) -> list[str]:
    record = load_balancers_record(stored)
    out: list[str] = []
    for group in record["target_groups"]:
        target: TargetDescriptionTypeDef = {"Id": instance_id}
        if group["port"]:
            target["Port"] = group["port"]
        with translated("elasticloadbalancing", "DescribeTargetHealth"):
            health = aws.client("elbv2").describe_target_health(TargetGroupArn=group["arn"], Targets=[target])
        registered = any(
            d["Target"]["Id"] == instance_id
            and d["TargetHealth"].get("State") not in NOT_REGISTERED
            and d["TargetHealth"].get("Reason") != NOT_REGISTERED_REASON
            for d in health.get("TargetHealthDescriptions", [])
        )
        if not registered:
            out.append(group["arn"])
    for name in record["classic"]:
        with translated("elasticloadbalancing", "DescribeLoadBalancers"):
            described = aws.client("elb").describe_load_balancers(LoadBalancerNames=[name])
        members = {
            instance["InstanceId"]
            for balancer in described["LoadBalancerDescriptions"]
            for instance in balancer.get("Instances", [])
        }
        if instance_id not in members:
            out.append(name)
    return out


OUT_OF: dict[str, Callable[[Aws, str, StoredRecord], list[str]]] = {
    DetachFromAutoScaling.name: _asg_out,
    DeregisterLoadBalancers.name: _balancers_out,
}


def rejoin_one(
    ctx: Context,
    instance_id: str,
    hold: Hold,
    facts: InstanceFacts | None,
    log: StepLog,
    still_released: Callable[[], None] = lambda: None,
) -> str:
    """Put one released instance back in service; what it did, in ``log``, and its summary.
    ``still_released`` raises if the hold changed since it was read (isolated again meanwhile):
    it is called right before each change, as rejoining a contained instance to its Auto Scaling
    group would let the group terminate it, evidence and all."""
    if facts is None or facts.state in GONE_STATES:
        raise InstanceTerminated(f"{instance_id} is terminated: there is nothing to put back in service")
    records = {step.name: hold.steps[step.name] for step in REJOIN_STEPS if step.name in hold.steps}
    if not records:
        return "nothing to rejoin: it was in no Auto Scaling group or load balancer when isolated"
    try:
        out = {name: OUT_OF[name](ctx.aws, instance_id, record) for name, record in records.items()}
    except AwsError as error:
        error.hint = error.hint or "nothing was changed; run rejoin again"
        raise
    if not any(out.values()):
        return "already in service: " + "; ".join(_where(name, record) for name, record in records.items())
    if out.get(DetachFromAutoScaling.name) and facts.state != "running":
        raise InstanceNotRunning(
            f"{instance_id} is {facts.state}: Auto Scaling attaches only a running instance",
            "nothing was changed; start it (aws ec2 start-instances), then run rejoin again",
        )
    for step in REJOIN_STEPS:
        if step.name not in records:
            continue
        if not out[step.name]:
            log.skip(step.name, f"already in {_where(step.name, records[step.name])}")
            continue
        still_released()
        log.run(
            step.name,
            functools.partial(step.undo_stored, ctx, instance_id, records[step.name]),
            subject=instance_id,
        )
    return "back in service: " + "; ".join(_where(name, record) for name, record in records.items())


def _where(name: str, stored: StoredRecord) -> str:
    if name == DetachFromAutoScaling.name:
        return f"Auto Scaling group {autoscaling_record(stored)['group']}"
    record = load_balancers_record(stored)
    return ", ".join([g["arn"] for g in record["target_groups"]] + list(record["classic"]))
