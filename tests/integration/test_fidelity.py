"""Each correction of moto, shown to matter: the EC2 behaviour holds only with the fix applied.

Every test runs twice, on plain moto and on the corrected emulator, and asserts that the EC2
behaviour is seen exactly when the fix is on. On plain moto the EC2 assertion fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from botocore.exceptions import ClientError

from ec2ir.emulator.fixes.__main__ import main as fixes_main
from ec2ir.emulator.fixes.apply import fidelity
from ec2ir.emulator.fixes.catalogue import CATALOGUE, FIXES, readme_table
from tests.support.fleets import Fleet

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
            verdicts: list[str] = [result["EvalDecision"] for result in results]
        except Exception as error:
            verdicts = [type(error).__name__]

    assert (verdicts == ["allowed"]) is corrected, verdicts


@corrected
def test_racing_requests_are_applied_one_at_a_time(
    fleet: Fleet, corrected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from moto.ec2.models.security_groups import SecurityGroupBackend

    from ec2ir.aws.session import Aws, AwsSettings
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


# -- SSM and the console screenshot (memory acquisition and metadata) -------------------------------

LINUX_AMI = "ami-760aaa0f"  # Amazon Linux in moto's catalogue


def single_try(fleet: Fleet, service: Literal["ssm", "ec2"]) -> Any:
    """A client that does not retry, so that plain moto's HTTP 500 fails at once."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=fleet.aws.settings.endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )


def linux_instance(fleet: Fleet, vpc: str, profile_name: str = "") -> str:
    """A Linux instance; with ``profile_name``, an instance profile of that name is associated."""
    instance = str(
        fleet.ec2.run_instances(ImageId=LINUX_AMI, MinCount=1, MaxCount=1, SubnetId=fleet.subnets[vpc])[
            "Instances"
        ][0]["InstanceId"]
    )
    if profile_name:
        iam = fleet.aws.client("iam")
        profile = iam.create_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
        fleet.ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance
        )
    return instance


def outcome(call: Any) -> Any:
    try:
        return call()
    except ClientError as error:
        return error.response["Error"]["Code"]
    except Exception as error:  # plain moto's HTML 500 page does not even parse as an AWS error
        return type(error).__name__


@corrected
def test_ssm_manages_only_instances_with_a_profile(fleet: Fleet, corrected: bool) -> None:
    ssm = single_try(fleet, "ssm")
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        with_profile, without = linux_instance(fleet, vpc, "ssm-profile"), linux_instance(fleet, vpc)
        listed = outcome(
            lambda: ssm.describe_instance_information(
                Filters=[{"Key": "InstanceIds", "Values": [with_profile, without]}]
            )["InstanceInformationList"]
        )
        refused = outcome(
            lambda: ssm.send_command(
                InstanceIds=[without], DocumentName="AWS-RunShellScript", Parameters={"commands": ["id"]}
            )
        )

    as_ec2 = (
        isinstance(listed, list)
        and [(i["InstanceId"], i["PingStatus"], i["PlatformType"]) for i in listed]
        == [(with_profile, "Online", "Linux")]
        and refused == "InvalidInstanceId"
    )
    assert as_ec2 is corrected, (listed, refused)


@corrected
def test_a_command_sent_to_one_instance_reaches_only_that_one(fleet: Fleet, corrected: bool) -> None:
    ssm = fleet.aws.client("ssm")
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        target, bystander = linux_instance(fleet, vpc, "p1"), linux_instance(fleet, vpc, "p2")
        command = ssm.send_command(
            InstanceIds=[target], DocumentName="AWS-RunShellScript", Parameters={"commands": ["id"]}
        )["Command"]
        bystanders = ssm.list_commands(InstanceId=bystander)["Commands"]

    as_ec2 = command["InstanceIds"] == [target] and command["TargetCount"] == 1 and bystanders == []
    assert as_ec2 is corrected, (command["InstanceIds"], command["TargetCount"], bystanders)


@corrected
def test_the_memory_command_leaves_an_image_in_s3_and_reports_its_hash(fleet: Fleet, corrected: bool) -> None:
    import hashlib

    from ec2ir.evidence.memory import parse_report, script

    s3, ssm = fleet.aws.client("s3"), fleet.aws.client("ssm")
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        instance = linux_instance(fleet, vpc, "mem-profile")
        s3.create_bucket(Bucket="evidence")
        s3.put_bucket_versioning(Bucket="evidence", VersioningConfiguration={"Status": "Enabled"})
        key = f"IR-F/{instance}/20261128T062000000Z/memory.lime"
        url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": "evidence", "Key": key}, ExpiresIn=300
        )
        command = ssm.send_command(
            InstanceIds=[instance],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": script("IR-F", url, {"x86_64": "", "aarch64": ""})},
        )["Command"]
        invocation = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance)
        stored = outcome(lambda: s3.get_object(Bucket="evidence", Key=key)["Body"].read())

    report = parse_report(invocation.get("StandardOutputContent", ""))
    as_ec2 = (
        invocation["Status"] == "Success"
        and isinstance(stored, bytes)
        and report.get("sha256") == hashlib.sha256(stored).hexdigest()
        and report.get("size") == str(len(stored))
    )
    assert as_ec2 is corrected, (invocation["StandardOutputContent"], report)


@corrected
def test_a_command_can_be_cancelled(fleet: Fleet, corrected: bool) -> None:
    ssm = single_try(fleet, "ssm")
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        instance = linux_instance(fleet, vpc, "cancel-profile")
        command_id = ssm.send_command(
            InstanceIds=[instance], DocumentName="AWS-RunShellScript", Parameters={"commands": ["sleep 600"]}
        )["Command"]["CommandId"]
        answered = outcome(lambda: ssm.cancel_command(CommandId=command_id, InstanceIds=[instance]))

    as_ec2 = isinstance(answered, dict) and answered["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert as_ec2 is corrected, answered


@corrected
def test_a_running_instance_gives_a_jpeg_console_screenshot(fleet: Fleet, corrected: bool) -> None:
    import base64

    ec2 = single_try(fleet, "ec2")
    with fidelity(corrected):
        vpc = fleet.vpc(1)
        running, stopped = linux_instance(fleet, vpc), linux_instance(fleet, vpc)
        fleet.ec2.stop_instances(InstanceIds=[stopped])
        shot = outcome(lambda: ec2.get_console_screenshot(InstanceId=running, WakeUp=True))
        refused = outcome(lambda: ec2.get_console_screenshot(InstanceId=stopped))

    image = base64.b64decode(shot["ImageData"]) if isinstance(shot, dict) else b""
    as_ec2 = (
        isinstance(shot, dict)
        and shot["InstanceId"] == running
        and image[:3] == b"\xff\xd8\xff"  # JPEG start-of-image, then a marker
        and image[-2:] == b"\xff\xd9"
        and refused == "IncorrectInstanceState"
    )
    assert as_ec2 is corrected, (shot if not isinstance(shot, dict) else shot["InstanceId"], refused)


@corrected
def test_a_partial_metadata_options_change_keeps_the_other_fields(fleet: Fleet, corrected: bool) -> None:
    def options_of(instance: str) -> dict[str, Any]:
        described = fleet.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
        return {k: v for k, v in described["MetadataOptions"].items() if k != "State"}

    with fidelity(corrected):
        vpc = fleet.vpc(1)
        instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
        fleet.ec2.modify_instance_metadata_options(
            InstanceId=instance,
            HttpTokens="required",
            HttpPutResponseHopLimit=2,
            HttpEndpoint="enabled",
            InstanceMetadataTags="enabled",
            HttpProtocolIpv6="enabled",
        )
        before = options_of(instance)
        try:
            fleet.ec2.modify_instance_metadata_options(
                InstanceId=instance, HttpEndpoint="disabled", DryRun=True
            )
            dry_run = "accepted"
        except ClientError as error:
            dry_run = error.response["Error"]["Code"]
        after_dry_run = options_of(instance)
        fleet.ec2.modify_instance_metadata_options(InstanceId=instance, HttpTokens="optional")
        after = options_of(instance)

    as_ec2 = (
        dry_run == "DryRunOperation"
        and after_dry_run == before
        and after == {**before, "HttpTokens": "optional"}
    )
    assert as_ec2 is corrected, (before, dry_run, after_dry_run, after)


# -- network ACL entries (issue 19: attacker addresses denied at the subnet edge) --------------------

BLOCKED = "185.220.101.45/32"  # any global address; nothing is sent anywhere


def subnet_acl(fleet: Fleet) -> str:
    """The network ACL of a fresh VPC's subnet (the VPC's default one, as EC2 associates it)."""
    vpc = fleet.vpc(1)
    acls = fleet.ec2.describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [fleet.subnets[vpc]]}]
    )["NetworkAcls"]
    return str(acls[0]["NetworkAclId"])


def acl_entries(fleet: Fleet, acl: str) -> set[tuple[int, bool, str, str]]:
    (described,) = fleet.ec2.describe_network_acls(NetworkAclIds=[acl])["NetworkAcls"]
    return {
        (e["RuleNumber"], e["Egress"], e["RuleAction"], e.get("CidrBlock") or e.get("Ipv6CidrBlock", ""))
        for e in described["Entries"]
    }


def deny(acl: str, number: int = 50, egress: bool = False) -> dict[str, Any]:
    return {
        "NetworkAclId": acl,
        "RuleNumber": number,
        "Protocol": "-1",
        "RuleAction": "deny",
        "Egress": egress,
        "CidrBlock": BLOCKED,
    }


@corrected
def test_network_acl_entry_changes_honour_dry_run(fleet: Fleet, corrected: bool) -> None:
    ec2 = single_try(fleet, "ec2")
    with fidelity(corrected):
        acl = subnet_acl(fleet)
        before = acl_entries(fleet, acl)
        created = outcome(lambda: ec2.create_network_acl_entry(DryRun=True, **deny(acl)))
        after_create = acl_entries(fleet, acl)
        fleet.ec2.create_network_acl_entry(**deny(acl, 60))
        with_entry = acl_entries(fleet, acl)
        replaced = outcome(
            lambda: ec2.replace_network_acl_entry(DryRun=True, **(deny(acl, 60) | {"RuleAction": "allow"}))
        )
        deleted = outcome(
            lambda: ec2.delete_network_acl_entry(DryRun=True, NetworkAclId=acl, RuleNumber=60, Egress=False)
        )
        after = acl_entries(fleet, acl)

    as_ec2 = (
        (created, replaced, deleted) == ("DryRunOperation",) * 3
        and after_create == before
        and after == with_entry == before | {(60, False, "deny", BLOCKED)}
    )
    assert as_ec2 is corrected, (created, replaced, deleted, after_create - before, with_entry ^ after)


@corrected
def test_a_missing_network_acl_entry_or_acl_is_not_found(fleet: Fleet, corrected: bool) -> None:
    ec2 = single_try(fleet, "ec2")
    with fidelity(corrected):
        acl = subnet_acl(fleet)
        fleet.ec2.create_network_acl_entry(**deny(acl, 60))
        deleted = outcome(lambda: ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=60, Egress=True))
        replaced = outcome(lambda: ec2.replace_network_acl_entry(**deny(acl, 70)))
        described = outcome(lambda: ec2.describe_network_acls(NetworkAclIds=["acl-0123456789abcdef0"]))
        # What the engine's repair after a crash relies on, right in moto already: a rule number
        # taken in one direction is refused there, and free in the other.
        taken = outcome(lambda: ec2.create_network_acl_entry(**deny(acl, 60)))
        other_way = outcome(lambda: ec2.create_network_acl_entry(**deny(acl, 60, egress=True)))

    assert (taken, isinstance(other_way, dict)) == ("NetworkAclEntryAlreadyExists", True)
    as_ec2 = (deleted, replaced, described) == (
        "InvalidNetworkAclEntry.NotFound",
        "InvalidNetworkAclEntry.NotFound",
        "InvalidNetworkAclID.NotFound",
    )
    assert as_ec2 is corrected, (deleted, replaced, described)


@corrected
def test_network_acl_rule_numbers_run_from_1_to_32766(fleet: Fleet, corrected: bool) -> None:
    ec2 = single_try(fleet, "ec2")
    with fidelity(corrected):
        acl = subnet_acl(fleet)
        answers = {
            n: outcome(lambda n=n: ec2.create_network_acl_entry(**deny(acl, n))) for n in (0, 32767, 40000)
        }
        edges = {n: outcome(lambda n=n: ec2.create_network_acl_entry(**deny(acl, n))) for n in (1, 32766)}
        entries = acl_entries(fleet, acl)

    assert all(isinstance(answer, dict) for answer in edges.values()), edges
    as_ec2 = [a if isinstance(a, str) else "accepted" for a in answers.values()] == [
        "InvalidParameterValue"
    ] * 3 and {n for n, egress, action, _ in entries if action == "deny" and not egress} == {1, 32766, 32767}
    assert as_ec2 is corrected, (answers, sorted(entries))


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_of_fixes_is_rendered_from_their_declarations() -> None:
    """The README's table is exactly the one the declared fixes render, row for row, so the two
    cannot drift (regenerate it with ``python -m ec2ir.emulator.fixes --readme-table``)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    rendered = readme_table().splitlines()
    start = lines.index(rendered[0])
    end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or not lines[i].startswith("|"))
    assert lines[start:end] == rendered
    assert len(rendered) == 2 + len(FIXES)


def test_the_fixes_module_prints_the_readme_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert fixes_main(["--readme-table"]) == 0
    assert capsys.readouterr().out == readme_table()


def test_every_fix_is_named_once_and_patches_attributes_no_other_fix_patches() -> None:
    """Distinct (owner, attribute) pairs make the order of application immaterial and each
    revert exact: no fix's original is another fix's replacement."""
    assert len(set(FIXES)) == len(FIXES) == len(CATALOGUE)
    patched = [(id(patch.owner), patch.attribute) for fix in CATALOGUE for patch in fix.patches()]
    assert len(set(patched)) == len(patched)
    assert all(fix.patches() and fix.moto and fix.aws and fix.why for fix in CATALOGUE)
