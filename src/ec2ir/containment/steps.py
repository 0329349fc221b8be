"""The containment steps, one small unit each, in the order ``isolate`` runs them.

Every step declares the IAM actions it needs next to its code, and has four parts:

* ``capture`` reads the instance's current settings that the step will change. The engine writes
  that record to the state table *before* ``apply`` runs; a record already stored is never
  replaced, so the first originals always win.
* ``apply`` makes the change; it is idempotent, so a rerun after a crash simply finishes it.
* ``undo`` puts back exactly what the record says; it is idempotent too.
* ``plan`` lists the calls ``apply`` would make, for ``--dry-run``.

Each step is a ``Step`` of its own record type (ec2ir.containment.records), stored in the hold as it
is. The engine drives every step as a ``BaseStep``, through the ``*_stored`` forms of these parts:
they take a record as read back from the state table, which whoever holds the instance's
credentials may have rewritten, and ``parse`` it (refusing what ec2ir never records) before acting.

The network step's record is the hold's ENI originals, which the engine writes with the hold.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ec2ir.aws.session import Aws, chunks, method_name, translated
from ec2ir.containment import records
from ec2ir.containment.lanes import SwapLanes, set_eni_groups
from ec2ir.containment.records import (
    METADATA_FIELDS,
    REVOKE_POLICY_PREFIX,
    AutoScalingRecord,
    LoadBalancersRecord,
    MetadataRecord,
    NetworkRecord,
    ProfileRecord,
    ProtectRecord,
    RevokeRecord,
    RoleRecord,
    StoredRecord,
    TagsRecord,
    TargetGroupRecord,
)
from ec2ir.core.errors import AwsError, Ec2irError, OriginalsTampered, SeveralFailed
from ec2ir.core.models import InstanceFacts, VpcGroups
from ec2ir.store.items import now

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import AutoScalingInstanceDetailsTypeDef
    from mypy_boto3_ec2.literals import InstanceAttributeNameType
    from mypy_boto3_ec2.type_defs import (
        ModifyInstanceAttributeRequestInstanceModifyAttributeTypeDef as Modification,
    )
    from mypy_boto3_ec2.type_defs import TagTypeDef
    from mypy_boto3_elbv2.type_defs import TargetDescriptionTypeDef, TargetGroupTypeDef

TAG_CASE, TAG_STATE, TAG_ISOLATED_AT = records.TAG_CASE, records.TAG_STATE, records.TAG_ISOLATED_AT
# Each step's record type (ec2ir.containment.records)
R = TypeVar("R", bound=Mapping[str, object])


@dataclass(frozen=True)
class Options:
    untrack: bool = True  # swap through the allow-all group so tracked flows drop
    revoke_sessions: bool = False  # deny the role's credentials issued before now
    rejoin: bool = False  # on release, rejoin the Auto Scaling group and the load balancers
    forensic_group: str = ""  # a forensic group ec2ir does not manage, to admit SSH from
    forensic_group_owner: str = ""  # that group's account, when it is another account
    # an isolation group the caller's own stack made (the stack passes its own group's id):
    # recorded as ec2ir's for its VPC on first use; never one found by tag
    isolation_group: str = ""
    evidence: bool = True  # snapshots and metadata (the memory too, with ``memory``)
    evidence_bucket: str = ""  # default: ec2ir-evidence-<account>-<region>
    object_lock_days: int = 0  # Object Lock (compliance mode) when ec2ir creates the bucket
    memory: bool = False  # acquire RAM through SSM and AVML before the cut
    memory_timeout: float = 600.0  # seconds; the cut goes ahead after this, memory or not
    untrack_deadline: float = 5.0  # seconds an ENI may spend in the allow-all group
    keep_metadata: bool = False  # leave the instance metadata service (IMDS) as it is
    # attacker addresses (CIDRs) to deny at the subnet edge, in the network ACLs of the subnets
    # the case's instances sit in (ec2ir.containment.nacl)
    block_ips: tuple[str, ...] = ()
    # a block that is unsafe (ec2ir's own side, AWS's services, too wide) is left out with a note
    # instead of refusing the run: for GuardDuty, whose finding must still contain the instance
    block_ips_skip_unsafe: bool = False


@dataclass(frozen=True)
class Context:
    aws: Aws
    case_id: str
    actor: str
    started_at: str
    options: Options = field(default_factory=Options)
    lanes: SwapLanes | None = None  # isolate's swaps; None sends every swap per ENI


@dataclass(frozen=True)
class Target:
    """One instance as this run found it, with what the batched lookups learned about it."""

    facts: InstanceFacts
    groups: dict[str, VpcGroups]
    lookups: dict[str, Any] = field(default_factory=dict)  # step name -> that step's finding
    stored: Mapping[str, StoredRecord] = field(default_factory=dict)  # records an earlier run wrote

    @property
    def instance_id(self) -> str:
        return self.facts.instance_id


@dataclass(frozen=True)
class PlannedCall:
    """One API call a step would make; EC2 calls carry the arguments for a DryRun probe."""

    action: str  # the IAM action, e.g. ec2:ModifyInstanceAttribute
    resources: tuple[str, ...]
    dry_run: dict[str, Any] | None = None


URGENT, AFTER, BESIDE = "urgent", "after", "beside"


class BaseStep:
    """A step as the engine drives it, whatever its record: the engine reads records from the
    hold and writes them to it as stored, and each step checks a record's shape itself before it
    acts on one (``Step.parsed``)."""

    name: ClassVar[str]
    title: ClassVar[str]
    permissions: ClassVar[tuple[str, ...]]
    # The actions of ``permissions`` that only ``undo`` calls (restoring originals on release):
    # the stack's isolate-only functions (GuardDuty, the re-check) are not granted them
    # (ec2ir.permissions.policy.isolate_actions). Each step declares its own, even when empty.
    undo_permissions: ClassVar[tuple[str, ...]] = ()
    # When the engine runs it: URGENT steps cut the instance off, one after another, on the
    # critical path. The rest waits until every instance of the run is cut off: AFTER steps one
    # after another, BESIDE steps beside them on workers of their own, because their throttled
    # bucket would hold the others up (ModifyInstanceAttribute's, which single-ENI cuts share).
    phase: ClassVar[str] = AFTER
    # Among BESIDE steps, the lower rank goes first across all instances: every instance's
    # credential cut is sent before any instance's protection, since both draw on one bucket.
    beside_rank: ClassVar[int] = 1
    # Whether capture makes no API call (it reads what discovery found), so that its record can
    # join the one write-ahead put; other steps record their originals just before they apply.
    cheap_capture: ClassVar[bool] = True
    # Whether its undo changes the instance itself; once the instance is terminated there is
    # nothing left to put back, while a change elsewhere (a role's deny policy) must still go.
    acts_on_instance: ClassVar[bool] = True

    def lookup(self, aws: Aws, instance_ids: list[str]) -> dict[str, Any]:
        """Batched discovery for the whole run; instance id -> finding. Most steps need none."""
        return {}

    def check(self, instance_id: str, stored: StoredRecord) -> None:
        """Refuse a record read back from the hold that is not what this step ever records."""
        raise NotImplementedError

    def capture_stored(self, ctx: Context, target: Target) -> dict[str, object] | None:
        """``capture``'s record as the hold stores it."""
        raise NotImplementedError

    def apply_stored(self, ctx: Context, target: Target, stored: StoredRecord) -> str:
        raise NotImplementedError

    def undo_stored(self, ctx: Context, instance_id: str, stored: StoredRecord) -> str:
        raise NotImplementedError

    def plan_stored(self, ctx: Context, target: Target, stored: StoredRecord) -> list[PlannedCall]:
        raise NotImplementedError


class Step(BaseStep, Generic[R]):
    """One step with its own record type ``R``: ``capture`` gives one, ``apply``, ``undo`` and
    ``plan`` take one, and ``parse`` makes one of a record read back from the hold, or refuses it."""

    def parse(self, stored: object) -> R:
        raise NotImplementedError

    def capture(self, ctx: Context, target: Target) -> R | None:
        """The originals this step would change, or None when it has nothing to do here."""
        raise NotImplementedError

    def apply(self, ctx: Context, target: Target, record: R) -> str:
        raise NotImplementedError

    def undo(self, ctx: Context, instance_id: str, record: R) -> str:
        raise NotImplementedError

    def plan(self, ctx: Context, target: Target, record: R) -> list[PlannedCall]:
        raise NotImplementedError

    def parsed(self, instance_id: str, stored: object) -> R:
        """The record, checked; a malformed one is refused naming the instance, before any change."""
        try:
            return self.parse(stored)
        except OriginalsTampered as error:
            raise OriginalsTampered(f"{instance_id}: {error.message}", error.hint) from None

    def check(self, instance_id: str, stored: StoredRecord) -> None:
        self.parsed(instance_id, stored)

    def capture_stored(self, ctx: Context, target: Target) -> dict[str, object] | None:
        record = self.capture(ctx, target)
        return None if record is None else dict(record)

    def apply_stored(self, ctx: Context, target: Target, stored: StoredRecord) -> str:
        return self.apply(ctx, target, self.parsed(target.instance_id, stored))

    def undo_stored(self, ctx: Context, instance_id: str, stored: StoredRecord) -> str:
        return self.undo(ctx, instance_id, self.parsed(instance_id, stored))

    def plan_stored(self, ctx: Context, target: Target, stored: StoredRecord) -> list[PlannedCall]:
        return self.plan(ctx, target, self.parsed(target.instance_id, stored))


def _tolerate(codes: frozenset[str], call: Callable[[], object]) -> bool:
    """Run ``call``; False if AWS answered with one of ``codes`` (the change was already there)."""
    try:
        call()
    except AwsError as error:
        if error.code in codes:
            return False
        raise
    return True


# -- 1. evidence protection -----------------------------------------------------------------------


class ProtectEvidence(Step[ProtectRecord]):
    name = "protect"
    title = "termination protection, stop on shutdown, keep volumes"
    permissions = ("ec2:DescribeInstanceAttribute", "ec2:DescribeInstances", "ec2:ModifyInstanceAttribute")
    undo_permissions = ()  # undo reads and modifies the same attributes apply does
    phase = BESIDE
    cheap_capture = False
    # The three settings, each set (and put back) by a call of its own.
    TERMINATION: ClassVar[str] = "termination protection"
    SHUTDOWN: ClassVar[str] = "shutdown behaviour"
    VOLUMES: ClassVar[str] = "DeleteOnTermination"
    # EC2 refuses termination protection for a Spot instance, on or off, with UnsupportedOperation:
    # "Modifying 'disableApiTermination' is not supported for spot instances." The other two
    # settings still keep its evidence, so that refusal is reported, not a failure of the step.
    SPOT_REFUSAL: ClassVar[str] = "UnsupportedOperation"
    NOT_FOR_SPOT: ClassVar[str] = "termination protection not possible for a Spot instance"

    def parse(self, stored: object) -> ProtectRecord:
        return records.protect_record(stored)

    def capture(self, ctx: Context, target: Target) -> ProtectRecord:
        aws, instance_id = ctx.aws, target.instance_id
        return {
            "disable_api_termination": bool(self._attribute(aws, instance_id, "disableApiTermination")),
            "shutdown_behavior": str(self._attribute(aws, instance_id, "instanceInitiatedShutdownBehavior")),
            "delete_on_termination": {v.device_name: v.delete_on_termination for v in target.facts.volumes},
        }

    @staticmethod
    def _attribute(aws: Aws, instance_id: str, attribute: InstanceAttributeNameType) -> object:
        key = attribute[0].upper() + attribute[1:]
        with translated("ec2", "DescribeInstanceAttribute"):
            described: Mapping[str, Any] = aws.ec2().describe_instance_attribute(
                InstanceId=instance_id, Attribute=attribute
            )
        return described[key]["Value"]

    @staticmethod
    def _delete_on_termination_now(aws: Aws, instance_id: str) -> dict[str, bool]:
        with translated("ec2", "DescribeInstances"):
            reservations = aws.ec2().describe_instances(InstanceIds=[instance_id])["Reservations"]
        return {
            mapping["DeviceName"]: bool(mapping["Ebs"].get("DeleteOnTermination", False))
            for reservation in reservations
            for instance in reservation["Instances"]
            for mapping in instance.get("BlockDeviceMappings", [])
            if "Ebs" in mapping
        }

    @staticmethod
    def _volumes(devices: list[str], delete: bool) -> Modification | None:
        if not devices:
            return None
        return {
            "BlockDeviceMappings": [
                {"DeviceName": device, "Ebs": {"DeleteOnTermination": delete}} for device in sorted(devices)
            ]
        }

    @staticmethod
    def _is_spot(target: Target) -> bool:
        return target.facts.description.get("InstanceLifecycle") == "spot"

    def _refused_for_spot(self, setting: str, error: Ec2irError) -> bool:
        spot_refusal = error.code == self.SPOT_REFUSAL and "spot" in str(error).lower()
        return setting == self.TERMINATION and spot_refusal

    def _modify_each(
        self,
        aws: Aws,
        instance_id: str,
        changes: list[tuple[str, str, Callable[[], Modification | None]]],
    ) -> tuple[list[str], int, list[tuple[str, Ec2irError]]]:
        """Make each change on its own: one refused must never keep the others from being made.

        A change is (setting, its outcome once done, what gives the ModifyInstanceAttribute
        arguments, or None when the setting is already so; it may read the setting first).
        Returns the outcomes, the number of calls made, and the refusals by setting."""
        outcomes: list[str] = []
        failures: list[tuple[str, Ec2irError]] = []
        calls = 0
        for setting, outcome, arguments_for in changes:
            try:
                arguments = arguments_for()
                if arguments is not None:
                    with translated("ec2", "ModifyInstanceAttribute"):
                        aws.ec2().modify_instance_attribute(InstanceId=instance_id, **arguments)
                    calls += 1
            except Ec2irError as error:
                if self._refused_for_spot(setting, error):
                    outcomes.append(self.NOT_FOR_SPOT)
                else:
                    failures.append((setting, error))
                continue
            outcomes.append(outcome)
        return outcomes, calls, failures

    @staticmethod
    def _outcome(outcomes: list[str], calls: int, failures: list[tuple[str, Ec2irError]], retry: str) -> str:
        if failures:
            error = SeveralFailed(failures)
            error.hint = (f"still done: {', '.join(outcomes)}; " if outcomes else "") + retry
            raise error
        return f"{', '.join(outcomes)} ({calls} change(s))"

    def apply(self, ctx: Context, target: Target, record: ProtectRecord) -> str:
        # Only what differs from the protected state is changed: ModifyInstanceAttribute draws on
        # EC2's shared mutating bucket (50, then 5 a second), the scarcest at scale. A Spot
        # instance's termination protection is not even asked for: EC2 always refuses it.
        spot = self._is_spot(target)
        deleted = [device for device, delete in record["delete_on_termination"].items() if delete]
        termination: Modification | None = (
            None if spot or record["disable_api_termination"] else {"DisableApiTermination": {"Value": True}}
        )
        shutdown: Modification | None = (
            None
            if record["shutdown_behavior"] == "stop"
            else {"InstanceInitiatedShutdownBehavior": {"Value": "stop"}}
        )
        volumes = self._volumes(deleted, delete=False)
        outcomes, calls, failures = self._modify_each(
            ctx.aws,
            target.instance_id,
            [
                (
                    self.TERMINATION,
                    self.NOT_FOR_SPOT if spot else "termination protection on",
                    lambda: termination,
                ),
                (self.SHUTDOWN, "shutdown stops", lambda: shutdown),
                (
                    self.VOLUMES,
                    f"{len(record['delete_on_termination'])} volume(s) kept on termination",
                    lambda: volumes,
                ),
            ],
        )
        return self._outcome(outcomes, calls, failures, "run isolate again to retry the rest")

    def undo(self, ctx: Context, instance_id: str, record: ProtectRecord) -> str:
        # Each setting is read and put back only where it differs from its original now, so that
        # what apply could not change (a Spot instance's termination protection, which EC2 refuses
        # even to turn off) is never asked for.
        aws = ctx.aws
        original_shutdown = str(record["shutdown_behavior"])
        deleted = [device for device, delete in record["delete_on_termination"].items() if delete]

        def termination() -> Modification | None:
            if record["disable_api_termination"]:
                return None  # it was on before ec2ir: nothing to put back
            if not self._attribute(aws, instance_id, "disableApiTermination"):
                return None
            return {"DisableApiTermination": {"Value": False}}

        def shutdown() -> Modification | None:
            if original_shutdown == "stop" or (
                self._attribute(aws, instance_id, "instanceInitiatedShutdownBehavior") == original_shutdown
            ):
                return None
            return {"InstanceInitiatedShutdownBehavior": {"Value": original_shutdown}}

        def volumes() -> Modification | None:
            if not deleted:
                return None
            now_kept = [
                device
                for device, delete in self._delete_on_termination_now(aws, instance_id).items()
                if device in deleted and not delete
            ]
            return self._volumes(now_kept, delete=True)

        outcomes, calls, failures = self._modify_each(
            aws,
            instance_id,
            [
                (
                    self.TERMINATION,
                    f"termination protection {'on' if record['disable_api_termination'] else 'off'}",
                    termination,
                ),
                (self.SHUTDOWN, f"shutdown behaviour {original_shutdown}", shutdown),
                (
                    self.VOLUMES,
                    f"DeleteOnTermination as it was on {len(record['delete_on_termination'])} volume(s)",
                    volumes,
                ),
            ],
        )
        return "restored: " + self._outcome(outcomes, calls, failures, "run release again to retry the rest")

    def plan(self, ctx: Context, target: Target, record: ProtectRecord) -> list[PlannedCall]:
        iid = target.instance_id
        calls = [
            PlannedCall(
                "ec2:ModifyInstanceAttribute",
                (iid,),
                {"InstanceId": iid, "InstanceInitiatedShutdownBehavior": {"Value": "stop"}},
            ),
        ]
        if not self._is_spot(target):  # apply never asks for a Spot instance's termination protection
            calls.insert(
                0,
                PlannedCall(
                    "ec2:ModifyInstanceAttribute",
                    (iid,),
                    {"InstanceId": iid, "DisableApiTermination": {"Value": True}},
                ),
            )
        if record["delete_on_termination"]:
            calls.append(
                PlannedCall(
                    "ec2:ModifyInstanceAttribute",
                    (iid, *sorted(v.volume_id for v in target.facts.volumes)),
                )
            )
        return calls


# -- 2. Auto Scaling --------------------------------------------------------------------------------


class DetachFromAutoScaling(Step[AutoScalingRecord]):
    name = "autoscaling"
    title = "detach from the Auto Scaling group (capacity is replaced)"
    permissions = (
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DetachInstances",
        "autoscaling:AttachInstances",
    )
    undo_permissions = ("autoscaling:AttachInstances",)  # --rejoin
    phase = URGENT  # before the cut: an ASG health check would terminate the isolated instance

    # Why AWS may refuse to detach an instance still in its group, by its lifecycle state.
    STUCK_HINTS: ClassVar[dict[str, str]] = {
        "Pending:Wait": "a launch lifecycle hook holds it: complete that lifecycle action "
        "(aws autoscaling complete-lifecycle-action), then run isolate again",
        "Terminating:Wait": "a termination lifecycle hook holds it and the group terminates it when the "
        "hook ends: keep the hook waiting (aws autoscaling record-lifecycle-action-heartbeat) while the "
        "evidence is taken",
        "Detaching": "a detach is already under way: run isolate again in a minute",
    }

    def lookup(self, aws: Aws, instance_ids: list[str]) -> dict[str, Any]:
        memberships = self._memberships(aws, instance_ids)
        return {item["InstanceId"]: item["AutoScalingGroupName"] for item in memberships}

    @staticmethod
    def _memberships(aws: Aws, instance_ids: list[str]) -> list[AutoScalingInstanceDetailsTypeDef]:
        """DescribeAutoScalingInstances' item (group, LifecycleState) of each instance in a group."""
        found: list[AutoScalingInstanceDetailsTypeDef] = []
        client = aws.client("autoscaling")
        with translated("autoscaling", "DescribeAutoScalingInstances"):
            for batch in chunks(instance_ids, 50):
                pages = client.get_paginator("describe_auto_scaling_instances").paginate(InstanceIds=batch)
                for page in pages:
                    found.extend(page.get("AutoScalingInstances", []))
        return found

    def parse(self, stored: object) -> AutoScalingRecord:
        return records.autoscaling_record(stored)

    def capture(self, ctx: Context, target: Target) -> AutoScalingRecord | None:
        group = target.lookups.get(self.name)
        return {"group": group} if group else None

    def apply(self, ctx: Context, target: Target, record: AutoScalingRecord) -> str:
        try:
            with translated("autoscaling", "DetachInstances"):
                ctx.aws.client("autoscaling").detach_instances(
                    InstanceIds=[target.instance_id],
                    AutoScalingGroupName=record["group"],
                    ShouldDecrementDesiredCapacity=False,
                )
        except AwsError as error:
            # AWS answers ValidationError both when the instance is no longer in the group (a
            # rerun) and when its lifecycle state forbids a detach: only a fresh look tells which.
            if error.code != "ValidationError":
                raise
            still_in = self._memberships(ctx.aws, [target.instance_id])
            if not still_in or still_in[0].get("LifecycleState") == "Detached":
                return f"detached from {record['group']} (already)"
            group, state = still_in[0]["AutoScalingGroupName"], still_in[0].get("LifecycleState", "unknown")
            stuck = AwsError(
                error.code,
                f"{target.instance_id} is still in Auto Scaling group {group}, in lifecycle state "
                f"{state}; AWS said: {error.message.removeprefix(f'{error.action}: {error.code}: ')}",
                error.action,
                error.request_id,
            )
            stuck.hint = self.STUCK_HINTS.get(
                state, "run isolate again; if it is refused again, read the group's activity history"
            )
            raise stuck from error
        return f"detached from {record['group']}"

    def undo(self, ctx: Context, instance_id: str, record: AutoScalingRecord) -> str:
        if not ctx.options.rejoin:
            return f"left out of {record['group']} (its capacity was replaced; use --rejoin to attach)"
        client = ctx.aws.client("autoscaling")
        if instance_id in self.lookup(ctx.aws, [instance_id]):
            return f"already in {record['group']}"
        try:
            with translated("autoscaling", "AttachInstances"):
                client.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=record["group"])
        except AwsError as error:
            if error.code == "ValidationError":  # AWS's answer to a group at its max size, among others
                error.hint = (
                    "Auto Scaling attaches only a running instance, and only while the group's desired "
                    f"capacity stays within its max size: raise {record['group']}'s max size if it is "
                    "there, then run `ec2ir rejoin` to finish"
                )
            raise
        return f"attached to {record['group']} again (its desired capacity grew by one)"

    def plan(self, ctx: Context, target: Target, record: AutoScalingRecord) -> list[PlannedCall]:
        return [PlannedCall("autoscaling:DetachInstances", (record["group"], target.instance_id))]


# -- 3. network ---------------------------------------------------------------------------------


ENI_GONE = "InvalidNetworkInterfaceID.NotFound"
# An original group deleted since isolation: release never guesses what to put in its place.
GROUP_GONE = "InvalidGroup.NotFound"
GROUP_GONE_HINT = (
    "it stays in the isolation group; run release again with --replace-group OLD=NEW (a group of "
    "the ENI's VPC in the deleted one's place) or --skip-missing-groups (the other original groups)"
)


class IsolateNetwork(Step[NetworkRecord]):
    """Every ENI into its VPC's isolation group, through the allow-all group unless told not to.

    Its record is the hold's ENI originals, written with the hold itself."""

    name = "network"
    title = "move every ENI into its VPC's isolation group"
    # ModifyInstanceAttribute: a single-ENI instance's swap may go through it (ec2ir.containment.lanes)
    permissions = ("ec2:ModifyNetworkInterfaceAttribute", "ec2:ModifyInstanceAttribute")
    undo_permissions = ()  # the same swaps, back to the originals
    phase = URGENT

    def parse(self, stored: object) -> NetworkRecord:
        return records.network_record(stored)

    def capture(self, ctx: Context, target: Target) -> NetworkRecord:
        return {
            "originals": {eni.eni_id: list(eni.group_ids) for eni in target.facts.enis},
            "eni_vpcs": {eni.eni_id: eni.vpc_id for eni in target.facts.enis},
        }

    def apply(self, ctx: Context, target: Target, record: NetworkRecord) -> str:
        moved = 0
        failures: list[tuple[str, Ec2irError]] = []
        single_eni = len(target.facts.enis) == 1

        lanes = ctx.lanes or SwapLanes(ctx.aws, ctx.aws)
        for eni in target.facts.enis:  # every ENI is tried: one refusal must not leave the rest open
            groups = target.groups[eni.vpc_id]
            isolation = (groups.isolation_group_id,)
            allow_all = groups.allow_all_group_id
            if eni.group_ids == isolation:
                continue
            try:
                if allow_all and eni.group_ids == (allow_all,):
                    # Left there by a run that stopped between its two swaps: out first. Should
                    # even that fail, its recorded originals are the only groups known to be safe.
                    before = tuple(record["originals"].get(eni.eni_id, ())) or isolation
                    lanes.isolate_from_allow_all(
                        target.instance_id, eni.eni_id, isolation, before, single_eni
                    )
                elif ctx.options.untrack:
                    # Allow-all makes every tracked flow untracked; the next swap then drops it.
                    lanes.untrack(
                        target.instance_id, eni.eni_id, allow_all, isolation, eni.group_ids, single_eni
                    )
                else:
                    lanes.swap(target.instance_id, eni.eni_id, isolation, single_eni)
                moved += 1
            except Ec2irError as error:
                failures.append((eni.eni_id, error))
        if failures:
            raise SeveralFailed(failures)
        how = "via the allow-all group" if ctx.options.untrack else "directly (--no-untrack)"
        return f"{len(target.facts.enis)} ENI(s) isolated ({moved} moved now, {how})"

    def undo(self, ctx: Context, instance_id: str, record: NetworkRecord) -> str:
        gone: list[str] = []
        failures: list[tuple[str, Ec2irError]] = []
        for eni_id, originals in record["originals"].items():
            try:
                set_eni_groups(ctx.aws, eni_id, originals)
            except Ec2irError as error:
                if error.code == ENI_GONE:
                    gone.append(eni_id)
                else:
                    if error.code == GROUP_GONE:  # deleted since release checked (ec2ir.containment.restore)
                        error.hint = GROUP_GONE_HINT
                    failures.append((eni_id, error))
        if failures:
            raise SeveralFailed(failures)
        restored = len(record["originals"]) - len(gone)
        return f"{restored} ENI(s) back in their original groups" + (
            f"; {', '.join(gone)} no longer exist(s)" if gone else ""
        )

    def plan(self, ctx: Context, target: Target, record: NetworkRecord) -> list[PlannedCall]:
        calls = []
        for eni in target.facts.enis:
            groups = target.groups[eni.vpc_id]
            swaps = [groups.allow_all_group_id] if ctx.options.untrack else []
            for group in [*swaps, groups.isolation_group_id]:
                # A group not created yet cannot be named; the probe asks with the ENI's own groups,
                # which needs the same permission.
                probe_groups = [group] if group else list(eni.group_ids)
                calls.append(
                    PlannedCall(
                        "ec2:ModifyNetworkInterfaceAttribute",
                        (eni.eni_id, group or f"(new group in {eni.vpc_id})"),
                        {"NetworkInterfaceId": eni.eni_id, "Groups": probe_groups},
                    )
                )
        return calls


# -- 4. load balancers ------------------------------------------------------------------------------


def _balancers(record: LoadBalancersRecord) -> str:
    return f"{len(record['target_groups'])} target group(s) and {len(record['classic'])} Classic ELB(s)"


class DeregisterLoadBalancers(Step[LoadBalancersRecord]):
    name = "load-balancers"
    title = "deregister from ELBv2 target groups and Classic ELBs"
    permissions = (
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
    )
    undo_permissions = (  # --rejoin
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
    )
    # DeregisterTargets' answer for an instance that is not a target (or not in the group's VPC)
    NOT_A_TARGET: ClassVar[str] = "InvalidTarget"
    # DescribeTargetHealth's states of a target that no longer takes traffic
    NOT_SERVING: ClassVar[frozenset[str]] = frozenset({"unused", "draining"})

    def lookup(self, aws: Aws, instance_ids: list[str]) -> dict[str, Any]:
        # Target groups and Classic ELBs are read side by side, and every target group's health
        # at once, so that this lookup costs two round trips however many balancers there are.
        wanted = set(instance_ids)
        found: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=8) as pool:
            classic = pool.submit(self._classic_members, aws, wanted)
            groups = self._instance_target_groups(aws)
            healths = pool.map(functools.partial(self._targets_of, aws), groups)
            for group, targets in zip(groups, healths, strict=True):
                for target_id, port in targets:
                    if target_id in wanted:
                        entry = {"arn": group["TargetGroupArn"], "port": port or int(group.get("Port", 0))}
                        found.setdefault(target_id, {"target_groups": [], "classic": []})[
                            "target_groups"
                        ].append(entry)
            for instance_id, names in classic.result().items():
                found.setdefault(instance_id, {"target_groups": [], "classic": []})["classic"].extend(names)
        return found

    @staticmethod
    def _instance_target_groups(aws: Aws) -> list[TargetGroupTypeDef]:
        with translated("elasticloadbalancing", "DescribeTargetGroups"):
            return [
                group
                for page in aws.client("elbv2").get_paginator("describe_target_groups").paginate()
                for group in page.get("TargetGroups", [])
                if group.get("TargetType", "instance") == "instance"
            ]

    @staticmethod
    def _targets_of(aws: Aws, group: TargetGroupTypeDef) -> list[tuple[str, int]]:
        with translated("elasticloadbalancing", "DescribeTargetHealth"):
            health = aws.client("elbv2").describe_target_health(TargetGroupArn=group["TargetGroupArn"])
        return [
            (d["Target"]["Id"], int(d["Target"].get("Port", 0)))
            for d in health.get("TargetHealthDescriptions", [])
        ]

    @staticmethod
    def _classic_members(aws: Aws, wanted: set[str]) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        with translated("elasticloadbalancing", "DescribeLoadBalancers"):
            for page in aws.client("elb").get_paginator("describe_load_balancers").paginate():
                for balancer in page.get("LoadBalancerDescriptions", []):
                    for instance in balancer.get("Instances", []):
                        if instance["InstanceId"] in wanted:
                            members.setdefault(instance["InstanceId"], []).append(
                                balancer["LoadBalancerName"]
                            )
        return members

    def parse(self, stored: object) -> LoadBalancersRecord:
        return records.load_balancers_record(stored)

    def capture(self, ctx: Context, target: Target) -> LoadBalancersRecord | None:
        membership = target.lookups.get(self.name)
        return self.parse(membership) if membership else None

    def apply(self, ctx: Context, target: Target, record: LoadBalancersRecord) -> str:
        already = self._membership(ctx.aws, target.instance_id, record, register=False, target=target)
        return f"deregistered from {_balancers(record)}" + (
            f" (already out of {len(already)} target group(s))" if already else ""
        )

    def undo(self, ctx: Context, instance_id: str, record: LoadBalancersRecord) -> str:
        if not ctx.options.rejoin:
            return "left out of its load balancers (use --rejoin to register it again)"
        self._membership(ctx.aws, instance_id, record, register=True)
        return f"registered again with {_balancers(record)}"

    def _membership(
        self,
        aws: Aws,
        instance_id: str,
        record: LoadBalancersRecord,
        register: bool,
        target: Target | None = None,
    ) -> list[str]:
        """Register or deregister; the target groups a deregistration found the instance already
        out of (a rerun: see ``_already_out``)."""
        elbv2_operation = "RegisterTargets" if register else "DeregisterTargets"
        elb_operation = (
            "RegisterInstancesWithLoadBalancer" if register else "DeregisterInstancesFromLoadBalancer"
        )
        already: list[str] = []
        for group in record["target_groups"]:
            try:
                with translated("elasticloadbalancing", elbv2_operation):
                    getattr(aws.client("elbv2"), method_name(elbv2_operation))(
                        TargetGroupArn=group["arn"], Targets=[{"Id": instance_id, "Port": group["port"]}]
                    )
            except AwsError as error:
                if register or target is None or not self._already_out(aws, target, group, error):
                    raise
                already.append(group["arn"])
        for name in record["classic"]:
            with translated("elasticloadbalancing", elb_operation):
                getattr(aws.client("elb"), method_name(elb_operation))(
                    LoadBalancerName=name, Instances=[{"InstanceId": instance_id}]
                )
        return already

    def _already_out(self, aws: Aws, target: Target, group: TargetGroupRecord, error: AwsError) -> bool:
        """Whether AWS's InvalidTarget means a rerun's "not registered": the hold records the
        membership (ec2ir saw it and deregistered it), this run's discovery no longer found the
        instance in that group, and a fresh look says it is not registered (or is draining).
        As the Auto Scaling step does with its ValidationError; anything else is a real failure."""
        if error.code != self.NOT_A_TARGET:
            return False
        stored = target.stored.get(self.name)
        recorded = self.parsed(target.instance_id, stored)["target_groups"] if stored else []
        if group["arn"] not in {g["arn"] for g in recorded}:
            return False
        found = target.lookups.get(self.name) or {}
        if group["arn"] in {g["arn"] for g in found.get("target_groups", [])}:
            return False  # this run saw it registered: InvalidTarget is something else
        described: TargetDescriptionTypeDef = {"Id": target.instance_id}
        if group["port"]:
            described["Port"] = group["port"]
        try:
            with translated("elasticloadbalancing", "DescribeTargetHealth"):
                health = aws.client("elbv2").describe_target_health(
                    TargetGroupArn=group["arn"], Targets=[described]
                )
        except AwsError:
            return False
        return all(
            d["TargetHealth"].get("State") in self.NOT_SERVING
            for d in health.get("TargetHealthDescriptions", [])
            if d["Target"]["Id"] == target.instance_id
        )

    def plan(self, ctx: Context, target: Target, record: LoadBalancersRecord) -> list[PlannedCall]:
        return [
            PlannedCall("elasticloadbalancing:DeregisterTargets", (g["arn"], target.instance_id))
            for g in record["target_groups"]
        ] + [
            PlannedCall(
                "elasticloadbalancing:DeregisterInstancesFromLoadBalancer", (name, target.instance_id)
            )
            for name in record["classic"]
        ]


# -- 5. credentials ----------------------------------------------------------------------------------


def revoke_policy_name(case_id: str) -> str:
    """The role's inline deny policy for one case, a valid IAM name for every valid case id.

    IAM names allow ``[\\w+=,.@-]``, not the ``:`` a case id may hold; ``=``, which no case id
    holds, stands in for it, so that two cases never share a name. A hold records the name it
    used, and undo reads it from there."""
    return REVOKE_POLICY_PREFIX + case_id.replace(":", "=")


def deny_older_sessions(issued_before: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Ec2irRevokeOlderSessions",
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}},
                }
            ],
        }
    )


class DisassociateProfile(Step[ProfileRecord]):
    name = "credentials"
    title = "disassociate the instance profile"
    permissions = (
        "ec2:DescribeIamInstanceProfileAssociations",
        "ec2:DisassociateIamInstanceProfile",
        "ec2:AssociateIamInstanceProfile",
        "iam:PassRole",
    )
    undo_permissions = ("ec2:AssociateIamInstanceProfile", "iam:PassRole")
    # Right after the instance's network cut, on the critical path: the profile's calls have
    # buckets of their own (100, then 5 a second each), so they take no swap's token.
    phase = URGENT

    def lookup(self, aws: Aws, instance_ids: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        paginator = aws.ec2().get_paginator("describe_iam_instance_profile_associations")
        with translated("ec2", "DescribeIamInstanceProfileAssociations"):
            for batch in chunks(instance_ids, 200):
                pages = paginator.paginate(Filters=[{"Name": "instance-id", "Values": batch}])
                for page in pages:
                    for item in page.get("IamInstanceProfileAssociations", []):
                        if item.get("State") in ("associating", "associated"):
                            found[item["InstanceId"]] = {
                                "association_id": item["AssociationId"],
                                "profile_arn": item["IamInstanceProfile"]["Arn"],
                            }
        return found

    def parse(self, stored: object) -> ProfileRecord:
        return records.profile_record(stored)

    def capture(self, ctx: Context, target: Target) -> ProfileRecord | None:
        association = target.lookups.get(self.name)
        return self.parse(association) if association else None

    def apply(self, ctx: Context, target: Target, record: ProfileRecord) -> str:
        # A profile associated again since the record (by anyone) is the one to cut; release
        # still restores the recorded one.
        live = target.lookups.get(self.name) or record

        def disassociate() -> None:
            with translated("ec2", "DisassociateIamInstanceProfile"):
                ctx.aws.ec2().disassociate_iam_instance_profile(AssociationId=live["association_id"])

        done = _tolerate(frozenset({"InvalidAssociationID.NotFound"}), disassociate)
        return f"instance profile {live['profile_arn']} disassociated" + ("" if done else " (already)")

    def undo(self, ctx: Context, instance_id: str, record: ProfileRecord) -> str:
        current = self.lookup(ctx.aws, [instance_id]).get(instance_id)
        if current:
            return f"instance profile {current['profile_arn']} is already associated"
        with translated("ec2", "AssociateIamInstanceProfile"):
            ctx.aws.ec2().associate_iam_instance_profile(
                IamInstanceProfile={"Arn": record["profile_arn"]}, InstanceId=instance_id
            )
        return f"instance profile {record['profile_arn']} associated again"

    def plan(self, ctx: Context, target: Target, record: ProfileRecord) -> list[PlannedCall]:
        return [
            PlannedCall(
                "ec2:DisassociateIamInstanceProfile", (record["association_id"], record["profile_arn"])
            )
        ]


class CutMetadata(Step[MetadataRecord]):
    """The instance metadata service (IMDS) off: no more credentials, user data or identity
    documents for whoever runs code on the instance, which IMDS serves on a link-local address that
    no security group can close."""

    name = "metadata"
    title = "disable the instance metadata service (IMDS)"
    permissions = ("ec2:ModifyInstanceMetadataOptions",)
    undo_permissions = ()  # the same call, with the recorded options
    # ModifyInstanceMetadataOptions has no bucket of its own in AWS's list: it draws on the
    # shared mutating bucket, as ModifyInstanceAttribute does, whose tokens single-ENI swaps take.
    # So it waits until every instance is cut off, on the beside workers with the protect step,
    # and goes before it: IMDS serves fresh role credentials, the protect step guards evidence.
    phase = BESIDE
    beside_rank = 0
    # Every field is recorded, and every field is sent back on release: nothing is left to
    # EC2's defaults.
    FIELDS: ClassVar[tuple[str, ...]] = METADATA_FIELDS

    def parse(self, stored: object) -> MetadataRecord:
        return records.metadata_record(stored)

    def capture(self, ctx: Context, target: Target) -> MetadataRecord | None:
        if ctx.options.keep_metadata:
            return None
        options = target.facts.description.get("MetadataOptions") or {}
        if options.get("HttpEndpoint", "enabled") == "disabled":
            return None  # already off: nothing to change, nothing to put back
        return {"options": {key: options[key] for key in self.FIELDS if key in options}}

    def apply(self, ctx: Context, target: Target, record: MetadataRecord) -> str:
        with translated("ec2", "ModifyInstanceMetadataOptions"):
            ctx.aws.ec2().modify_instance_metadata_options(
                InstanceId=target.instance_id, HttpEndpoint="disabled"
            )
        return "instance metadata service disabled (HttpEndpoint=disabled)"

    def undo(self, ctx: Context, instance_id: str, record: MetadataRecord) -> str:
        options: dict[str, Any] = dict(record["options"])
        with translated("ec2", "ModifyInstanceMetadataOptions"):
            ctx.aws.ec2().modify_instance_metadata_options(InstanceId=instance_id, **options)
        return "metadata options restored: " + ", ".join(f"{k}={v}" for k, v in options.items())

    def plan(self, ctx: Context, target: Target, record: MetadataRecord) -> list[PlannedCall]:
        iid = target.instance_id
        return [
            PlannedCall(
                "ec2:ModifyInstanceMetadataOptions",
                (iid,),
                {"InstanceId": iid, "HttpEndpoint": "disabled"},
            )
        ]


class RevokeSessions(Step[RevokeRecord]):
    """Only a deny on ``aws:TokenIssueTime`` invalidates credentials already stolen; it applies
    to every instance and person using the role, so it runs only when asked for."""

    name = "revoke-sessions"
    title = "deny the role's sessions issued before isolation (affects every user of the role)"
    permissions = ("iam:GetInstanceProfile", "iam:GetRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy")
    undo_permissions = ("iam:DeleteRolePolicy",)
    cheap_capture = False
    acts_on_instance = False

    def parse(self, stored: object) -> RevokeRecord:
        return records.revoke_record(stored)

    def capture(self, ctx: Context, target: Target) -> RevokeRecord | None:
        if not ctx.options.revoke_sessions:
            return None
        profile_arn = self._profile_arn(target)
        if not profile_arn:
            return None
        iam = ctx.aws.client("iam")
        with translated("iam", "GetInstanceProfile"):
            profile = iam.get_instance_profile(InstanceProfileName=profile_arn.rsplit("/", 1)[-1])
        policy = revoke_policy_name(ctx.case_id)
        roles: list[RoleRecord] = []
        for role in profile["InstanceProfile"]["Roles"]:

            def existing(role_name: str = role["RoleName"]) -> None:
                with translated("iam", "GetRolePolicy"):
                    iam.get_role_policy(RoleName=role_name, PolicyName=policy)

            pre_existing = _tolerate(frozenset({"NoSuchEntity"}), existing)
            roles.append({"role": role["RoleName"], "pre_existing": pre_existing})
        # Not the run's start: credentials the instance fetched from IMDS until the profile was
        # disassociated must die too. The engine captures this record just before apply, after
        # the credentials step, so now is after the disassociation.
        return {"policy": policy, "issued_before": now(), "roles": roles}

    @staticmethod
    def _profile_arn(target: Target) -> str:
        """The profile whose roles to deny: as this run found it associated, else as the hold
        recorded it, else as discovery saw it."""
        found = target.lookups.get(DisassociateProfile.name)
        if found:
            return str(found.get("profile_arn") or target.facts.profile_arn)
        stored = target.stored.get(DisassociateProfile.name)
        recorded = DisassociateProfile().parsed(target.instance_id, stored)["profile_arn"] if stored else ""
        return recorded or target.facts.profile_arn

    def apply(self, ctx: Context, target: Target, record: RevokeRecord) -> str:
        for role in record["roles"]:
            with translated("iam", "PutRolePolicy"):
                ctx.aws.client("iam").put_role_policy(
                    RoleName=role["role"],
                    PolicyName=record["policy"],
                    PolicyDocument=deny_older_sessions(record["issued_before"]),
                )
        names = ", ".join(role["role"] for role in record["roles"])
        return f"sessions of role(s) {names} issued before {record['issued_before']} are denied"

    def undo(self, ctx: Context, instance_id: str, record: RevokeRecord) -> str:
        removed = []
        for role in record["roles"]:
            if role["pre_existing"]:
                continue  # the policy was there before ec2ir: not ours to remove

            def delete(role_name: str = role["role"]) -> None:
                with translated("iam", "DeleteRolePolicy"):
                    ctx.aws.client("iam").delete_role_policy(RoleName=role_name, PolicyName=record["policy"])

            _tolerate(frozenset({"NoSuchEntity"}), delete)
            removed.append(role["role"])
        return f"deny policy removed from {', '.join(removed) or 'no role'}"

    def plan(self, ctx: Context, target: Target, record: RevokeRecord) -> list[PlannedCall]:
        return [
            PlannedCall("iam:PutRolePolicy", (role["role"], record["policy"])) for role in record["roles"]
        ]


# -- 6. tags ---------------------------------------------------------------------------------------


class TagInstance(Step[TagsRecord]):
    name = "tags"
    title = "tag the instance with the case"
    permissions = ("ec2:CreateTags", "ec2:DeleteTags")
    undo_permissions = ("ec2:DeleteTags",)  # tags that were not there before isolation

    def parse(self, stored: object) -> TagsRecord:
        return records.tags_record(stored)

    def capture(self, ctx: Context, target: Target) -> TagsRecord:
        # ``isolated_at`` is the run that began the hold: a rerun tags that time, not its own.
        return {
            "previous": {key: target.facts.tags.get(key) for key in (TAG_CASE, TAG_ISOLATED_AT)},
            "isolated_at": ctx.started_at,
        }

    def _tags(self, ctx: Context, isolated_at: str = "") -> list[TagTypeDef]:
        return [
            {"Key": TAG_CASE, "Value": ctx.case_id},
            {"Key": TAG_STATE, "Value": "isolated"},
            {"Key": TAG_ISOLATED_AT, "Value": isolated_at or ctx.started_at},
        ]

    def apply(self, ctx: Context, target: Target, record: TagsRecord) -> str:
        tags = self._tags(ctx, self._isolated_at(ctx, target, record))
        now_tagged = target.facts.tags
        if all(now_tagged.get(tag["Key"]) == tag["Value"] for tag in tags):
            return f"tagged {TAG_CASE}={ctx.case_id} (already)"  # a rerun changes no tag
        with translated("ec2", "CreateTags"):
            ctx.aws.ec2().create_tags(Resources=[target.instance_id], Tags=tags)
        return f"tagged {TAG_CASE}={ctx.case_id}"

    @staticmethod
    def _isolated_at(ctx: Context, target: Target, record: TagsRecord) -> str:
        """When the hold began: from its record; for a hold recorded before the record said so,
        the instance's own tag if it already carries this case's isolation."""
        if record.get("isolated_at"):
            return str(record["isolated_at"])
        tags = target.facts.tags
        if tags.get(TAG_CASE) == ctx.case_id and tags.get(TAG_STATE) == "isolated":
            return tags.get(TAG_ISOLATED_AT) or ctx.started_at
        return ctx.started_at

    def undo(self, ctx: Context, instance_id: str, record: TagsRecord) -> str:
        previous: dict[str, str | None] = record["previous"]
        put_back: list[TagTypeDef] = [{"Key": k, "Value": v} for k, v in previous.items() if v is not None]
        remove: list[TagTypeDef] = [{"Key": k} for k, v in previous.items() if v is None]
        ec2 = ctx.aws.ec2()
        with translated("ec2", "CreateTags"):
            ec2.create_tags(
                Resources=[instance_id], Tags=[{"Key": TAG_STATE, "Value": "released"}, *put_back]
            )
        if remove:
            with translated("ec2", "DeleteTags"):
                ec2.delete_tags(Resources=[instance_id], Tags=remove)
        return f"{TAG_STATE}=released"

    def plan(self, ctx: Context, target: Target, record: TagsRecord) -> list[PlannedCall]:
        iid = target.instance_id
        return [PlannedCall("ec2:CreateTags", (iid,), {"Resources": [iid], "Tags": self._tags(ctx)})]


NETWORK = IsolateNetwork()
# The order isolate runs them in, as the field's best practice has it (docs/design.md,
# "Containment order"); release undoes them in the reverse order.
STEPS: tuple[BaseStep, ...] = (
    ProtectEvidence(),
    DetachFromAutoScaling(),
    NETWORK,
    DeregisterLoadBalancers(),
    DisassociateProfile(),
    CutMetadata(),
    RevokeSessions(),
    TagInstance(),
)
