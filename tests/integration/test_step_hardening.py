"""Steps that say "done" are done: stolen credentials cut off from after the disassociation, a
detach AWS refused is never reported as done, each evidence protection set on its own (Spot
instances included), and no office range that is the internet in disguise."""

from __future__ import annotations

import json
import random
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest

from ec2ir.aws.session import Aws, discover
from ec2ir.containment.steps import (
    Context,
    DisassociateProfile,
    Options,
    RevokeSessions,
    Target,
    revoke_policy_name,
)
from ec2ir.core import validate
from ec2ir.core.errors import UsageError
from ec2ir.engine.facade import Engine
from ec2ir.store.items import now
from tests.support.faults import Fault, inject
from tests.support.fleets import AMI, Fleet

CASE = "IR-HARDEN"
CONTAIN_ONLY = Options(evidence=False)
REVOKE = Options(evidence=False, revoke_sessions=True)
# IAM's pattern for a policy name (\w is ASCII there), up to 128 characters.
IAM_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
# AWS's answer to DisableApiTermination for a Spot instance, as AWS words it.
SPOT_MESSAGE = "Modifying 'disableApiTermination' is not supported for spot instances."


@dataclass
class FaultWhen(Fault):
    """A ``Fault`` for only those requests of the operation whose body names ``parameter``: one
    form of ModifyInstanceAttribute, say, while its other forms go through."""

    parameter: str = ""

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if self.parameter not in body:
            return None
        return super().__call__(request, **kwargs)


class SentRequests:
    """The bodies of every ``operation`` request one Aws sends."""

    def __init__(self, aws: Aws, service: str, operation: str) -> None:
        self.bodies: list[str] = []
        client = aws.client(service)
        service_id = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-send.{service_id}.{operation}", self._note)

    def _note(self, request: Any, **_: Any) -> None:
        self.bodies.append(request.body.decode() if isinstance(request.body, bytes) else str(request.body))

    def naming(self, parameter: str) -> list[str]:
        return [body for body in self.bodies if parameter in body]


def profiled_instance(fleet: Fleet) -> tuple[str, str]:
    """An instance with an instance profile whose role is "app-role"; (instance, role)."""
    vpc = fleet.vpc(1)
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance)
    return instance, "app-role"


def deny_policy(fleet: Fleet, role: str, name: str) -> dict[str, Any]:
    document = fleet.aws.client("iam").get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    decoded: dict[str, Any] = json.loads(urllib.parse.unquote(json.dumps(document)))
    return decoded


def cut_off(policy: dict[str, Any]) -> str:
    return str(policy["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"])


# -- 1. stolen credentials are really cut off ------------------------------------------------------


def test_revoke_sessions_denies_credentials_issued_until_after_the_disassociation(
    aws: Aws, fleet: Fleet
) -> None:
    instance, role = profiled_instance(fleet)
    # A run that started long before its credentials step: the memory acquisition, say.
    ctx = Context(aws, CASE, "tester", "2000-01-01T00:00:00.000+00:00", REVOKE)
    credentials, revoke = DisassociateProfile(), RevokeSessions()
    target = Target(
        discover(aws, [instance])[instance],
        groups={},
        lookups={credentials.name: credentials.lookup(aws, [instance])[instance]},
    )
    association = credentials.capture(ctx, target)
    assert association is not None
    credentials.apply(ctx, target, association)
    disassociated_by = now()

    record = revoke.capture(ctx, target)
    assert record is not None
    revoke.apply(ctx, target, record)

    assert record["issued_before"] > ctx.started_at
    assert record["issued_before"] >= disassociated_by
    assert cut_off(deny_policy(fleet, role, record["policy"])) == record["issued_before"]


def test_isolate_cuts_off_credentials_from_after_its_disassociation(engine: Engine, fleet: Fleet) -> None:
    instance, role = profiled_instance(fleet)

    report = engine.isolate([instance], CASE, options=REVOKE)

    assert report.results[0].ok, report.results[0].steps
    hold = engine.store.get(instance)
    assert hold is not None
    record = RevokeSessions().parse(hold.steps[RevokeSessions.name])
    (disassociation,) = [
        entry
        for entry in engine.store.journal(CASE)
        if entry.target == instance and entry.action == "isolate:credentials"
    ]
    assert disassociation.result.startswith("done")
    assert record["issued_before"] >= disassociation.at
    assert cut_off(deny_policy(fleet, role, record["policy"])) == record["issued_before"]


def test_a_case_id_with_a_colon_gets_a_valid_deny_policy_that_release_removes(
    engine: Engine, fleet: Fleet
) -> None:
    instance, role = profiled_instance(fleet)
    case = "IR:2024:0042"
    iam = fleet.aws.client("iam")

    isolated = engine.isolate([instance], case, options=REVOKE)

    assert isolated.results[0].ok, isolated.results[0].steps
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert names == [revoke_policy_name(case)]
    assert all(IAM_NAME.fullmatch(name) for name in names), names

    released = engine.release([instance], case)

    assert released.results[0].ok, released.results[0].steps
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []


def tricky_case_ids() -> list[str]:
    alphabet = "abcXYZ0189._:-"
    generated = random.Random(20240917)
    ids = {
        "a",
        "0",
        "a:b",
        "a-b",
        "a.b",
        "a_b",
        "a:",
        "a::",
        "a:-",
        "a-:",
        "9" * 64,
        "Z" + ":" * 63,
        "Z" + "-" * 63,
        "arn:aws:guardduty:us-east-1:123456789012:detector",
    }
    for _ in range(3000):
        length = generated.randint(0, 63)
        ids.add(generated.choice("aZ7") + "".join(generated.choice(alphabet) for _ in range(length)))
    return sorted(ids)


def test_every_valid_case_id_maps_to_its_own_valid_iam_policy_name() -> None:
    ids = tricky_case_ids()
    assert all(validate.CASE_ID.match(case) for case in ids)  # the generator makes valid ids only

    names = {case: revoke_policy_name(case) for case in ids}

    assert [case for case, name in names.items() if not IAM_NAME.fullmatch(name)] == []
    assert len(set(names.values())) == len(ids)  # no two cases ever share (and delete) one policy


# -- 2a. a refused detach is not "done" ----------------------------------------------------------


def asg_member(fleet: Fleet) -> tuple[str, str]:
    """An instance that an Auto Scaling group launched; (instance, group)."""
    vpc = fleet.vpc(1)
    autoscaling = fleet.aws.client("autoscaling")
    autoscaling.create_launch_configuration(
        LaunchConfigurationName="web-lc", ImageId=AMI, InstanceType="t3.micro", SecurityGroups=[]
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchConfigurationName="web-lc",
        MinSize=1,
        MaxSize=3,
        DesiredCapacity=1,
        VPCZoneIdentifier=fleet.subnets[vpc],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"])["AutoScalingGroups"][
        0
    ]
    return group["Instances"][0]["InstanceId"], "web-asg"


def members(fleet: Fleet, group: str) -> list[str]:
    described = fleet.aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    return [i["InstanceId"] for i in described["AutoScalingGroups"][0]["Instances"]]


def test_a_detach_refused_while_the_instance_is_still_in_its_group_fails_naming_group_and_state(
    engine: Engine, fleet: Fleet
) -> None:
    instance, group = asg_member(fleet)
    # What AWS answers for an instance held in a lifecycle state that forbids the detach.
    inject(
        engine.aws,
        Fault(
            "autoscaling",
            "DetachInstances",
            "ValidationError",
            message=f"The instance {instance} is not in InService or Standby.",
        ),
    )

    report = engine.isolate([instance], CASE, options=CONTAIN_ONLY)

    (result,) = report.results
    outcome = result.steps["autoscaling"]
    assert (result.ok, result.error_code) == (False, "ValidationError")
    assert outcome.startswith("FAILED"), outcome
    assert f"still in Auto Scaling group {group}" in outcome
    assert "lifecycle state InService" in outcome
    assert instance in members(fleet, group)
    assert result.steps["network"].startswith("done")  # the cut still happened


def test_a_detach_refused_because_the_instance_already_left_its_group_is_done(
    engine: Engine, fleet: Fleet
) -> None:
    instance, group = asg_member(fleet)
    bystander = engine.aws.sibling().client("autoscaling")

    def racing_detach(request: Any, **kwargs: Any) -> Any:
        # Another responder detaches it first; AWS then refuses this detach as ValidationError.
        bystander.detach_instances(
            InstanceIds=[instance], AutoScalingGroupName=group, ShouldDecrementDesiredCapacity=False
        )
        refusal = Fault("autoscaling", "DetachInstances", "ValidationError", message="not part of the group")
        return refusal(request, **kwargs)

    client = engine.aws.client("autoscaling")
    client.meta.events.register("before-send.auto-scaling.DetachInstances", racing_detach)

    report = engine.isolate([instance], CASE, options=CONTAIN_ONLY)

    (result,) = report.results
    assert result.ok, result.steps
    assert result.steps["autoscaling"] == f"done: detached from {group} (already)"
    assert instance not in members(fleet, group)


# -- 2b. each evidence protection on its own ------------------------------------------------------


def protections(fleet: Fleet, instance: str) -> tuple[bool, str, dict[str, bool]]:
    """Termination protection, shutdown behaviour and each volume's DeleteOnTermination, read back."""
    ec2 = fleet.ec2
    termination = ec2.describe_instance_attribute(InstanceId=instance, Attribute="disableApiTermination")
    shutdown = ec2.describe_instance_attribute(
        InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior"
    )
    described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    return (
        termination["DisableApiTermination"]["Value"],
        shutdown["InstanceInitiatedShutdownBehavior"]["Value"],
        {m["DeviceName"]: m["Ebs"]["DeleteOnTermination"] for m in described["BlockDeviceMappings"]},
    )


def unprotected_instance(fleet: Fleet, **run_arguments: Any) -> str:
    """An instance that terminates on shutdown and deletes its volumes on termination."""
    vpc = fleet.vpc(1)
    instance = str(
        fleet.ec2.run_instances(
            ImageId=AMI,
            MinCount=1,
            MaxCount=1,
            SubnetId=fleet.subnets[vpc],
            SecurityGroupIds=[fleet.group(vpc, "web")],
            InstanceInitiatedShutdownBehavior="terminate",
            **run_arguments,
        )["Instances"][0]["InstanceId"]
    )
    before = protections(fleet, instance)
    assert before[:2] == (False, "terminate") and before[2] and all(before[2].values()), before
    return instance


def test_a_refused_termination_protection_still_stops_on_shutdown_and_keeps_volumes(
    engine: Engine, fleet: Fleet
) -> None:
    instance = unprotected_instance(fleet)
    before = protections(fleet, instance)
    inject(
        engine.aws,
        FaultWhen(
            "ec2", "ModifyInstanceAttribute", "InvalidParameterValue", parameter="DisableApiTermination"
        ),
    )

    report = engine.isolate([instance], CASE, options=CONTAIN_ONLY)

    termination, shutdown, volumes = protections(fleet, instance)
    assert (termination, shutdown) == (False, "stop")
    assert set(volumes.values()) == {False}
    (result,) = report.results
    outcome = result.steps["protect"]
    assert (result.ok, result.error_code) == (False, "InvalidParameterValue")
    assert outcome.startswith("FAILED: termination protection: "), outcome
    assert "still done: shutdown stops, 1 volume(s) kept on termination" in outcome

    released = engine.release([instance], CASE)

    assert released.results[0].ok, released.results[0].steps
    assert protections(fleet, instance) == before


def test_the_spot_refusal_of_termination_protection_is_reported_and_the_rest_is_done(
    engine: Engine, fleet: Fleet
) -> None:
    instance = unprotected_instance(fleet)
    before = protections(fleet, instance)
    inject(
        engine.aws,
        FaultWhen(
            "ec2",
            "ModifyInstanceAttribute",
            "UnsupportedOperation",
            message=SPOT_MESSAGE,
            parameter="DisableApiTermination",
        ),
    )

    report = engine.isolate([instance], CASE, options=CONTAIN_ONLY)

    (result,) = report.results
    assert result.ok, result.steps
    assert result.steps["protect"] == (
        "done: termination protection not possible for a Spot instance, shutdown stops, "
        "1 volume(s) kept on termination (2 change(s))"
    )
    termination, shutdown, volumes = protections(fleet, instance)
    assert (termination, shutdown) == (False, "stop")
    assert set(volumes.values()) == {False}

    sent = SentRequests(engine.aws, "ec2", "ModifyInstanceAttribute")
    released = engine.release([instance], CASE)

    assert released.results[0].ok, released.results[0].steps
    assert protections(fleet, instance) == before
    assert sent.naming("DisableApiTermination") == []  # what apply could not change is never asked


def test_a_spot_instance_is_never_asked_for_termination_protection(engine: Engine, fleet: Fleet) -> None:
    instance = unprotected_instance(fleet, InstanceMarketOptions={"MarketType": "spot"})
    before = protections(fleet, instance)
    sent = SentRequests(engine.aws, "ec2", "ModifyInstanceAttribute")

    plan = engine.plan([instance], CASE)
    report = engine.isolate([instance], CASE, options=CONTAIN_ONLY)

    (result,) = report.results
    assert result.ok, result.steps
    assert result.steps["protect"].startswith("done: termination protection not possible for a Spot instance")
    (protect,) = [step for step in plan.instances[instance] if step.step == "protect"]
    assert not any("DisableApiTermination" in (call.dry_run or {}) for call in protect.calls)
    assert sent.naming("DisableApiTermination") == []
    assert protections(fleet, instance)[1] == "stop"

    released = engine.release([instance], CASE)

    assert released.results[0].ok, released.results[0].steps
    assert protections(fleet, instance) == before


def test_a_refused_restore_of_one_setting_still_restores_the_others(engine: Engine, fleet: Fleet) -> None:
    instance = unprotected_instance(fleet)
    before = protections(fleet, instance)
    engine.isolate([instance], CASE, options=CONTAIN_ONLY)
    refusal = inject(
        engine.aws,
        FaultWhen(
            "ec2",
            "ModifyInstanceAttribute",
            "InvalidParameterValue",
            parameter="InstanceInitiatedShutdownBehavior",
        ),
    )

    released = engine.release([instance], CASE)

    termination, shutdown, volumes = protections(fleet, instance)
    assert (termination, shutdown, volumes) == (before[0], "stop", before[2])
    (result,) = released.results
    outcome = result.steps["protect"]
    assert not result.ok and outcome.startswith("FAILED: shutdown behaviour: "), outcome
    assert "still done: termination protection off" in outcome

    refusal.times = refusal.injected  # AWS accepts it again
    again = engine.release([instance], CASE)

    assert again.results[0].ok, again.results[0].steps
    assert protections(fleet, instance) == before


# -- 3. no office range that is the internet in disguise ------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "limit"),
    [
        ("0.0.0.0/1", "/8"),
        ("128.0.0.0/1", "/8"),
        ("10.0.0.0/7", "/8"),
        ("::/1", "/32"),
        ("2000::/3", "/32"),
        ("2001:db8::/31", "/32"),
    ],
)
def test_an_office_cidr_wider_than_an_organisation_is_refused_unless_any_source_is_allowed(
    cidr: str, limit: str
) -> None:
    with pytest.raises(UsageError) as refused:
        validate.office_cidr(cidr)

    assert limit in str(refused.value) and "--allow-any-source" in str(refused.value)
    assert validate.office_cidr(cidr, allow_any_source=True) == cidr


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "203.0.113.0/24", "2001:db8::/32", "2001:db8:1::/48"])
def test_an_office_cidr_at_or_inside_the_limit_is_accepted(cidr: str) -> None:
    assert validate.office_cidr(cidr) == cidr
