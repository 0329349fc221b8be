"""Responders racing each other, and releases that meet a changed world."""

from __future__ import annotations

import json
from typing import Any

from ec2ir.aws.session import Aws, AwsSettings, discover
from ec2ir.containment.steps import Options, revoke_policy_name
from ec2ir.core.models import HoldStatus, InstanceResult
from ec2ir.engine.facade import Engine
from ec2ir.engine.results import RunReport
from ec2ir.store.items import instance_key
from ec2ir.store.state import StateStore
from tests.conftest import race
from tests.support.fleets import Fleet


def second_responder(engine: Engine) -> Engine:
    aws = Aws(AwsSettings(region="us-east-1", endpoint_url=engine.aws.settings.endpoint_url))
    return Engine(aws, StateStore(aws), concurrency=2)


def test_a_release_that_lands_mid_isolation_wins_and_the_instance_ends_released(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])
    engine.isolate([instance], "CASE-1")
    engine.release([instance], "CASE-1")  # the groups exist; the next isolate is a new episode
    releaser = second_responder(engine)
    swaps = []

    def release_between_the_two_enis(request: Any, **_: Any) -> None:
        swaps.append(request)
        if len(swaps) == 3:  # the first ENI is isolated, the second not yet
            outcome = releaser.release([instance], "CASE-1").results[0]
            assert outcome.ok, outcome.detail

    # every swap client: the swap out of allow-all goes through the urgent path's own
    for swapper in (engine.aws, engine.urgent_aws):
        swapper.ec2().meta.events.register(
            "before-send.ec2.ModifyNetworkInterfaceAttribute", release_between_the_two_enis
        )

    result = engine.isolate([instance], "CASE-1").results[0]

    assert (result.ok, result.error_code) == (False, "ReleaseInProgress")
    assert "the release stands" in result.detail
    assert fleet.eni_groups([instance]) == before
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.RELEASED


def test_two_releases_at_once_both_report_success(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instances = [
        fleet.instance(vpc, [fleet.group(vpc, f"web{i}")], extra_enis=[[fleet.group(vpc, f"m{i}")]])
        for i in range(3)
    ]
    before = fleet.eni_groups(instances)
    engine.isolate(instances, "CASE-1")

    reports = race(2, lambda: second_responder(engine), lambda e: e.release(instances, "CASE-1"))

    for report in reports:
        assert isinstance(report, RunReport), report
        assert all(r.ok for r in report.results), [r.detail for r in report.results]
    assert fleet.eni_groups(instances) == before


def test_a_release_that_finishes_before_another_reads_the_hold_is_success_for_both(
    engine: Engine, fleet: Fleet
) -> None:
    """The other release gathered the case's holds while this one was still held, then another
    responder released it before it read the hold again: the instance is released, as it asked."""
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])
    engine.isolate([instance], "CASE-1")
    late = second_responder(engine)
    early_reports: list[RunReport] = []

    def release_first(request: Any, **_: Any) -> None:
        # the late run's own read of the hold, after it gathered the journal and the holds
        if not early_reports and instance in request.body.decode():
            early_reports.append(engine.release([instance], "CASE-1"))

    late.aws.dynamodb().meta.events.register("before-send.dynamodb.GetItem", release_first)

    result = late.release([instance], "CASE-1").results[0]

    assert [r.ok for r in early_reports[0].results] == [True]
    assert result.ok, result.detail
    assert "released by a concurrent run" in result.detail
    assert fleet.eni_groups([instance]) == before


def test_a_hold_rewritten_to_released_mid_release_is_refused_not_reported_released(
    engine: Engine, fleet: Fleet
) -> None:
    """Whoever can write the state table flips the hold to RELEASED (with their own originals)
    after the run gathered it: EC2 still has the ENI in ec2ir's group, so it is not a release."""
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], "CASE-1")
    isolated = fleet.eni_groups([instance])
    eni = next(iter(isolated))
    forged: list[str] = []

    def forge(request: Any, **_: Any) -> None:
        if not forged and instance in request.body.decode():
            forged.append(instance)
            fleet.aws.dynamodb().update_item(  # the attacker's own write, not ec2ir's
                TableName=engine.store.table,
                Key=instance_key(instance),
                UpdateExpression="SET #s = :released, released_by = :who, originals.#eni = :groups",
                ExpressionAttributeNames={"#s": "status", "#eni": eni},
                ExpressionAttributeValues={
                    ":released": {"S": HoldStatus.RELEASED.value},
                    ":who": {"S": "alice"},
                    ":groups": {"L": [{"S": "sg-0attacker000000"}]},
                },
            )

    engine.aws.dynamodb().meta.events.register("before-send.dynamodb.GetItem", forge)

    result = engine.release([instance], "CASE-1").results[0]

    assert forged == [instance]
    assert (result.ok, result.error_code) == (False, "OriginalsTampered"), result.detail
    assert "still in ec2ir's groups" in result.detail
    assert fleet.eni_groups([instance]) == isolated


def test_a_deleted_original_group_does_not_keep_the_other_enis_isolated(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    doomed, mgmt = fleet.group(vpc, "doomed"), fleet.group(vpc, "mgmt")
    instance = fleet.instance(vpc, [doomed], extra_enis=[[mgmt]])
    before = fleet.eni_groups([instance])
    engine.isolate([instance], "CASE-1")
    fleet.ec2.delete_security_group(GroupId=doomed)

    result = engine.release([instance], "CASE-1").results[0]

    assert (result.ok, result.error_code) == (False, "InvalidGroup.NotFound")
    assert "network" in result.detail
    after = fleet.eni_groups([instance])
    secondary = next(eni for eni, groups in before.items() if groups == (mgmt,))
    assert after[secondary] == (mgmt,)
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.RELEASING  # a rerun can still finish it


def test_a_compromised_forensic_workstation_can_itself_be_contained(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    first = engine.isolate(
        [fleet.instance(vpc, [fleet.group(vpc, "web")])], "CASE-1", office_cidr="198.51.100.0/24"
    )
    forensic = first.groups[vpc].forensic_group_id
    workstation = fleet.instance(vpc, [forensic])

    result = engine.isolate([workstation], "CASE-2").results[0]

    assert result.ok, result.detail
    hold = engine.store.get(workstation)
    assert hold is not None and list(hold.originals.values()) == [(forensic,)]
    engine.release([workstation], "CASE-2")
    assert list(fleet.eni_groups([workstation]).values()) == [(forensic,)]


def test_a_stray_group_merely_tagged_isolation_is_an_ordinary_original(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    engine.isolate([fleet.instance(vpc, [fleet.group(vpc, "web")])], "CASE-1")
    stray = fleet.ec2.create_security_group(
        GroupName="old-isolation",
        Description="left over",
        VpcId=vpc,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": "ec2ir:role", "Value": "isolation"}]}
        ],
    )["GroupId"]
    victim = fleet.instance(vpc, [stray])

    result = engine.isolate([victim], "CASE-1").results[0]

    # A tag never makes a group ec2ir's: the victim is contained and its group is its original.
    assert result.ok, result.detail
    hold = engine.store.get(victim)
    assert hold is not None and list(hold.originals.values()) == [(stray,)]
    engine.release([victim], "CASE-1")
    assert list(fleet.eni_groups([victim]).values()) == [(stray,)]


def test_discovery_batches_more_instances_than_one_filter_takes(aws: Aws, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    launched = fleet.ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=230,
        MaxCount=230,
        SubnetId=fleet.subnets[vpc],
        SecurityGroupIds=[web],
    )
    ids = [i["InstanceId"] for i in launched["Instances"]]
    unknown = "i-0fffffffffffffff0"

    found = discover(aws, [*ids, unknown])

    assert set(found) == set(ids)
    assert all(facts.enis and facts.enis[0].group_ids == (web,) for facts in found.values())


def test_releasing_a_terminated_instance_closes_its_hold_and_lifts_the_role_deny(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance)
    engine.isolate([instance], "CASE-1", options=Options(revoke_sessions=True))
    assert iam.list_role_policies(RoleName="app")["PolicyNames"] == [revoke_policy_name("CASE-1")]
    fleet.ec2.modify_instance_attribute(InstanceId=instance, DisableApiTermination={"Value": False})
    fleet.ec2.terminate_instances(InstanceIds=[instance])

    result = engine.release([instance], "CASE-1").results[0]

    assert result.ok, result.steps
    assert "terminated" in result.detail
    assert result.steps["revoke-sessions"].startswith("done")
    assert result.steps["network"].startswith("skipped: the instance is terminated")
    assert (
        iam.list_role_policies(RoleName="app")["PolicyNames"] == []
    )  # other users of the role are free again
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.RELEASED


def test_a_release_that_lands_during_protection_wins_and_protection_is_undone(
    engine: Engine, fleet: Fleet
) -> None:
    # Protection runs after every cut, so a release can land in the middle of it: whatever this
    # run changes after the release read the hold must be undone again by this run.
    vpc = fleet.vpc(2)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    ec2 = fleet.ec2

    def settings() -> tuple[object, object, dict[str, tuple[str, ...]]]:
        termination = ec2.describe_instance_attribute(InstanceId=instance, Attribute="disableApiTermination")
        shutdown = ec2.describe_instance_attribute(
            InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior"
        )
        return (
            termination["DisableApiTermination"]["Value"],
            shutdown["InstanceInitiatedShutdownBehavior"]["Value"],
            fleet.eni_groups([instance]),
        )

    before = settings()
    releaser = second_responder(engine)
    released: list[InstanceResult] = []

    def release_during_protection(request: Any, **_: Any) -> None:
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        if b"GroupId." in body or released:
            return  # a swap, or the release already ran
        released.append(releaser.release([instance], "CASE-2").results[0])

    engine.aws.ec2().meta.events.register(
        "before-send.ec2.ModifyInstanceAttribute", release_during_protection
    )

    result = engine.isolate([instance], "CASE-2").results[0]

    assert released and released[0].ok, released
    assert (result.ok, result.error_code) == (False, "ReleaseInProgress")
    assert settings() == before
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.RELEASED
