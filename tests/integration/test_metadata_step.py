"""Issue 18: the metadata step cuts IMDS and release restores it exactly; the instance profile is
cut on the critical path, right after each instance's network cut."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from ec2ir.cli import app as cli
from ec2ir.containment.steps import AFTER, BESIDE, STEPS, URGENT, Options
from ec2ir.emulator.server import Emulator
from ec2ir.engine.facade import Engine
from ec2ir.permissions.policy import required_actions
from tests.support.fleets import Fleet
from tests.support.recorders import CallRecorder

CASE = "IR-18"
OFFICE = "198.51.100.0/24"
# Nothing here is EC2's default, so a field restored to a default would show.
CUSTOM = {
    "HttpEndpoint": "enabled",
    "HttpTokens": "required",
    "HttpPutResponseHopLimit": 3,
    "InstanceMetadataTags": "enabled",
    "HttpProtocolIpv6": "enabled",
}


def metadata_options(fleet: Fleet, instance: str) -> dict[str, Any]:
    described = fleet.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    return {k: v for k, v in described["MetadataOptions"].items() if k != "State"}


def custom_instance(fleet: Fleet, vpc: str) -> str:
    groups = fleet.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    instance = fleet.instance(vpc, [fleet.group(vpc, f"web-{len(groups['SecurityGroups'])}")])
    fleet.ec2.modify_instance_metadata_options(InstanceId=instance, **CUSTOM)
    return instance


def profiled_instances(fleet: Fleet, count: int) -> tuple[str, list[str]]:
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(count)]
    for instance in instances:
        fleet.ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance
        )
    return vpc, instances


def test_isolate_disables_imds_and_release_restores_every_field(engine: Engine, fleet: Fleet) -> None:
    instance = custom_instance(fleet, fleet.vpc(1))
    assert metadata_options(fleet, instance) == CUSTOM

    report = engine.isolate([instance], CASE, options=Options(evidence=False))

    assert report.results[0].ok, report.results[0].steps
    assert metadata_options(fleet, instance) == {**CUSTOM, "HttpEndpoint": "disabled"}
    hold = engine.store.get(instance)
    assert hold is not None and hold.steps["metadata"] == {"options": CUSTOM}

    released = engine.release([instance], CASE)

    assert released.results[0].ok, released.results[0].steps
    assert metadata_options(fleet, instance) == CUSTOM


def test_the_metadata_record_joins_the_write_ahead_put(engine: Engine, fleet: Fleet) -> None:
    instance = custom_instance(fleet, fleet.vpc(1))
    recorder = CallRecorder(engine.aws, engine.lanes_aws)

    engine.isolate([instance], CASE, options=Options(evidence=False))

    order = [action for action, _ in recorder.calls]
    first_put = order.index("dynamodb:PutItem")
    put = recorder.calls[first_put][1]
    assert "metadata" in json.dumps(put, default=str)  # the record is in the hold's first put
    assert first_put < order.index("ec2:ModifyInstanceMetadataOptions")
    [cut] = [params for action, params in recorder.calls if action == "ec2:ModifyInstanceMetadataOptions"]
    assert cut == {"InstanceId": instance, "HttpEndpoint": "disabled"}


def test_keep_metadata_leaves_imds_alone(engine: Engine, fleet: Fleet) -> None:
    instance = custom_instance(fleet, fleet.vpc(1))

    report = engine.isolate([instance], CASE, options=Options(evidence=False, keep_metadata=True))

    assert report.results[0].ok
    assert metadata_options(fleet, instance) == CUSTOM
    hold = engine.store.get(instance)
    assert hold is not None and "metadata" not in hold.steps


def test_an_instance_with_imds_already_off_is_left_so_after_release(engine: Engine, fleet: Fleet) -> None:
    instance = custom_instance(fleet, fleet.vpc(1))
    fleet.ec2.modify_instance_metadata_options(InstanceId=instance, HttpEndpoint="disabled")

    engine.isolate([instance], CASE, options=Options(evidence=False))
    engine.release([instance], CASE)

    assert metadata_options(fleet, instance) == {**CUSTOM, "HttpEndpoint": "disabled"}


def test_the_cli_flag_keeps_metadata(
    fleet: Fleet, emulator: Emulator, capsys: pytest.CaptureFixture[str], aws: Any
) -> None:
    vpc = fleet.vpc(1)
    kept, cut = custom_instance(fleet, vpc), custom_instance(fleet, vpc)
    common = ["--office-cidr", OFFICE, "--no-evidence", "--endpoint-url", emulator.endpoint_url]

    assert cli.main(["isolate", kept, "--case", CASE, "--keep-metadata", *common]) == 0
    assert cli.main(["isolate", cut, "--case", CASE, *common]) == 0
    capsys.readouterr()

    assert metadata_options(fleet, kept)["HttpEndpoint"] == "enabled"
    assert metadata_options(fleet, cut)["HttpEndpoint"] == "disabled"


def test_the_metadata_action_is_in_the_policy() -> None:
    assert "ec2:ModifyInstanceMetadataOptions" in required_actions()


def test_the_urgent_steps_are_autoscaling_network_then_credentials() -> None:
    urgent = [step.name for step in STEPS if step.phase == URGENT]
    assert urgent == ["autoscaling", "network", "credentials"]
    phases = {step.name: step.phase for step in STEPS}
    # ModifyInstanceMetadataOptions draws on the shared mutating bucket, as single-ENI swaps do.
    assert phases["metadata"] == BESIDE
    assert phases["revoke-sessions"] == AFTER
    names = [step.name for step in STEPS]
    assert names.index("credentials") < names.index("metadata") < names.index("revoke-sessions")


def test_every_profile_is_cut_right_after_its_swaps_and_before_the_cuts_are_checked(
    engine: Engine, fleet: Fleet
) -> None:
    _, instances = profiled_instances(fleet, 3)
    described = fleet.ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    instance_of = {a["AssociationId"]: a["InstanceId"] for a in described}
    enis = {instance: set(fleet.eni_groups([instance])) for instance in instances}
    recorder = CallRecorder(engine.aws, engine.lanes_aws)

    report = engine.isolate(instances, CASE, options=Options(evidence=False, revoke_sessions=True))

    assert all(r.ok for r in report.results), [r.steps for r in report.results]
    calls = recorder.calls
    order = [action for action, _ in calls]
    swap_actions = ("ec2:ModifyInstanceAttribute", "ec2:ModifyNetworkInterfaceAttribute")
    cuts = {
        instance_of[params["AssociationId"]]: i
        for i, (action, params) in enumerate(calls)
        if action == "ec2:DisassociateIamInstanceProfile"
    }
    assert set(cuts) == set(instances)
    for instance in instances:
        swaps = [
            i
            for i, (action, params) in enumerate(calls)
            if action in swap_actions
            and "Groups" in params
            and (params.get("InstanceId") == instance or params.get("NetworkInterfaceId") in enis[instance])
        ]
        assert swaps and max(swaps) < cuts[instance]
    # The one re-read of every cut instance's ENIs, once all the cuts are done, comes after every
    # profile's cut: the profiles are part of the cut, not of the work after it.
    first_swap = min(
        i for i, (action, params) in enumerate(calls) if action in swap_actions and "Groups" in params
    )
    recheck = order.index("ec2:DescribeInstances", first_swap)
    assert max(cuts.values()) < recheck
    # revoke-sessions (after the cut) reads the role, and so takes its issue time, after every
    # disassociation, and still denies the role's older sessions.
    assert max(cuts.values()) < order.index("iam:GetInstanceProfile") < order.index("iam:PutRolePolicy")
    policies = fleet.aws.client("iam").list_role_policies(RoleName="app-role")["PolicyNames"]
    assert any(name.startswith("ec2ir-revoke-sessions-") for name in policies)


def test_every_imds_cut_waiting_goes_before_any_protection(aws: Any, fleet: Fleet) -> None:
    """Both draw on EC2's shared mutating bucket: an instance's protection must not take the
    tokens the next instance's credential cut needs. The only beside worker is held in the first
    IMDS call until every instance's late steps have been queued; what runs next is every other
    IMDS cut, then the protections."""
    from ec2ir.store.state import StateStore

    engine = Engine(aws, StateStore(aws), concurrency=1)
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(4)]
    tagged = threading.Semaphore(0)
    order: list[str] = []

    def on_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name == "CreateTags" and set(params.get("Resources", ())) & set(instances):
            tagged.release()  # an instance's after-steps have run: its beside steps are queued
        beside = model.name == "ModifyInstanceMetadataOptions" or (
            model.name == "ModifyInstanceAttribute" and "Groups" not in params  # not a swap
        )
        if beside:
            if not order:  # the first beside call waits for every instance's after-steps
                for _instance in instances:
                    assert tagged.acquire(timeout=60)
            order.append(model.name)

    engine.aws.ec2().meta.events.register("before-parameter-build.ec2", on_call)

    report = engine.isolate(instances, CASE, options=Options(evidence=False))

    assert all(r.ok for r in report.results), [r.steps for r in report.results]
    imds = [i for i, name in enumerate(order) if name == "ModifyInstanceMetadataOptions"]
    protections = [i for i, name in enumerate(order) if name == "ModifyInstanceAttribute"]
    assert len(imds) == len(instances) and protections
    assert max(imds) < min(protections)


@pytest.mark.evidence
def test_an_imds_cut_that_fails_is_a_containment_failure_not_missing_evidence(
    engine: Engine, fleet: Fleet
) -> None:
    from botocore.exceptions import ClientError

    instance = custom_instance(fleet, fleet.vpc(1))

    def refuse(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"}},
            "ModifyInstanceMetadataOptions",
        )

    engine.aws.ec2().meta.events.register("before-call.ec2.ModifyInstanceMetadataOptions", refuse)

    report = engine.isolate([instance], CASE)  # evidence on: its metadata must not hide the step's

    [result] = report.results
    assert not result.ok and "metadata" in result.detail
    assert result.steps["metadata"].startswith("FAILED")
    assert result.steps["evidence-metadata"].startswith("done")
    assert not any(line.startswith("metadata") for line in result.evidence_failed)
