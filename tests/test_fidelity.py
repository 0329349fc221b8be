"""Each correction of moto, shown to matter: the EC2 behaviour holds only with the fix applied.

Every test runs twice, on plain moto and on the corrected emulator, and asserts that the EC2
behaviour is seen exactly when the fix is on. On plain moto the EC2 assertion fails.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ec2ir.emulator import fidelity
from tests.conftest import Fleet

corrected = pytest.mark.parametrize("corrected", [False, True], ids=["plain-moto", "corrected"])


@corrected
def test_security_groups_belong_to_each_eni(fleet: Fleet, corrected: bool) -> None:
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        web, mgmt, iso = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt"), fleet.group(vpc, "iso")
        instance = fleet.instance(vpc, [web])
        secondary = fleet.attach_eni(instance, vpc, [mgmt], 1)
        primary = next(eni for eni in fleet.eni_groups([instance]) if eni != secondary)
        fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=primary, Groups=[iso])
        groups = fleet.eni_groups([instance])

    as_ec2 = groups == {primary: (iso,), secondary: (mgmt,)}
    assert as_ec2 is corrected, groups


@corrected
def test_modify_instance_groups_is_rejected_on_a_multi_eni_instance(fleet: Fleet, corrected: bool) -> None:
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        web, mgmt = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt")
        instance = fleet.instance(vpc, [web], extra_enis=[[mgmt]])
        try:
            fleet.ec2.modify_instance_attribute(InstanceId=instance, Groups=[mgmt])
            code = "accepted"
        except ClientError as error:
            code = error.response["Error"]["Code"]

    assert (code == "InvalidInstanceID") is corrected, code


@corrected
def test_shutdown_behaviour_is_applied_and_groups_survive(fleet: Fleet, corrected: bool) -> None:
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        web = fleet.group(vpc, "web")
        instance = fleet.instance(vpc, [web])
        before = fleet.eni_groups([instance])
        fleet.ec2.modify_instance_attribute(
            InstanceId=instance, InstanceInitiatedShutdownBehavior={"Value": "terminate"}
        )
        after = fleet.eni_groups([instance])
        behaviour = fleet.ec2.describe_instance_attribute(
            InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior"
        )["InstanceInitiatedShutdownBehavior"]["Value"]
        described = fleet.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]

    as_ec2 = after == before and behaviour == "terminate" and described["SecurityGroups"] != []
    assert as_ec2 is corrected, (before, after, behaviour)


@corrected
def test_describe_by_ids_returns_every_named_instance_in_one_page(fleet: Fleet, corrected: bool) -> None:
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        web = fleet.group(vpc, "web")
        ids = [fleet.instance(vpc, [web]) for _ in range(105)]  # one reservation each
        page = fleet.ec2.describe_instances(InstanceIds=ids)

    returned = {i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]}
    as_ec2 = returned == set(ids) and "NextToken" not in page
    assert as_ec2 is corrected, (len(returned), page.get("NextToken"))


@corrected
def test_an_unknown_group_is_refused_on_an_eni(fleet: Fleet, corrected: bool) -> None:
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
        eni = next(iter(fleet.eni_groups([instance])))
        try:
            fleet.ec2.modify_network_interface_attribute(
                NetworkInterfaceId=eni, Groups=["sg-0123456789abcdef0"]
            )
            code = "accepted"
        except ClientError as error:
            code = error.response["Error"]["Code"]

    assert (code == "InvalidGroup.NotFound") is corrected, code


@corrected
def test_the_iam_policy_simulator_answers(fleet: Fleet, corrected: bool) -> None:
    import boto3
    from botocore.config import Config

    iam = boto3.client(
        "iam",
        endpoint_url=fleet.aws.settings.endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
    with fidelity(corrected):
        try:
            results = iam.simulate_principal_policy(
                PolicySourceArn="arn:aws:iam::123456789012:user/moto", ActionNames=["ec2:DescribeInstances"]
            )["EvaluationResults"]
            verdicts = [result["EvalDecision"] for result in results]
        except Exception as error:
            verdicts = [type(error).__name__]

    assert (verdicts == ["allowed"]) is corrected, verdicts


@corrected
def test_racing_requests_are_applied_one_at_a_time(
    fleet: Fleet, corrected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from moto.ec2.models.security_groups import SecurityGroupBackend

    from ec2ir.aws import Aws, AwsSettings
    from tests.conftest import race

    vpc = fleet.vpc(1)
    name_check = SecurityGroupBackend.get_security_group_by_name_or_id

    def slow_name_check(backend: object, *args: object) -> object:
        found = name_check(backend, *args)  # type: ignore[arg-type]
        time.sleep(0.3)  # widen the window between moto's uniqueness check and its insert
        return found

    monkeypatch.setattr(SecurityGroupBackend, "get_security_group_by_name_or_id", slow_name_check)

    def client() -> object:
        aws = Aws(AwsSettings(region="us-east-1", endpoint_url=fleet.aws.settings.endpoint_url))
        return aws.ec2()

    def create(ec2: object) -> str:
        return str(ec2.create_security_group(GroupName="unique", Description="d", VpcId=vpc)["GroupId"])  # type: ignore[attr-defined]

    with fidelity(corrected):
        outcomes = race(3, client, create)

    created = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert (len(created) == 1) is corrected, outcomes
