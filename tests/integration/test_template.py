"""template.yaml: lint clean, deployable, hardened, and wired to the same engine as the CLI.

The stack is translated with samtranslator (as ``sam build``/``sam deploy`` would) and created in the
corrected emulator with ``cloudformation create_stack``. moto's CloudFormation differs from AWS in
ways each test works around explicitly (see docs/design.md, "The emulator"):

* Custom resources never complete without Docker (moto would have to run the Lambda), so
  ``Custom::Containment`` and the outputs that read it are removed before the deploy; the tests
  then drive the custom resource handler themselves against the deployed stack.
* A ``SecurityGroupEgress`` list on ``AWS::EC2::SecurityGroup`` is ignored: the deployed isolation
  group keeps the default allow-all egress. The template is checked to declare loopback only, and
  the end-to-end test shows the engine's own verification repairing the group before any use.
* ``AWS::EC2::SecurityGroupEgress``, ``AWS::S3::BucketPolicy``, ``AWS::SNS::Subscription`` and
  ``AWS::Lambda::EventInvokeConfig`` are not implemented (``MOTO_SKIPS``); versioning, public
  access blocks, ownership controls and Object Lock on buckets, PITR and SSE on tables, and an
  instance's metadata options and ``SecurityGroupIds`` are ignored. Those are checked in the translated
  template, which is what CloudFormation receives.
* An ``AWS::SSM::Parameter::Value`` default is resolved even when a value is given, and the public
  Canonical parameters do not exist: the default is pointed at a test parameter.
* A JSON-string ``EventPattern`` is JSON-encoded a second time: it is handed over as an object.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped]
from samtranslator.translator.transform import transform  # type: ignore[import-untyped]
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-untyped]

from ec2ir.aws.session import Aws
from ec2ir.containment.groups import create_group
from ec2ir.containment.steps import STEPS
from ec2ir.core import validate
from ec2ir.core.models import HoldStatus
from ec2ir.engine.facade import Engine
from ec2ir.handlers import cloudformation, custom_resource, guardduty
from ec2ir.permissions.policy import function_actions, isolate_actions, release_only_actions
from ec2ir.store.state import StateStore
from ec2ir.store.table import KEY_SCHEMA
from tests.support.fleets import AMI, Fleet
from tests.support.stack import FIXTURES, LambdaRuntimeContext, ResponseCatcher, StackStatus

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
PACKAGE = ROOT / "src" / "ec2ir"
AMI_PARAMETER = "/ec2ir/tests/forensic-ami"
# Any value of the parameter's form: the emulator never runs the bootstrap that checks it.
CAST_SHA256 = "5f2b7c9e4a1d3b6f8e0a2c4d6b8f1e3a5c7d9b0f2e4a6c8d0b1f3e5a7c9d2b4f"
STACK_NAME = "incident-ir-2026-042"
MOTO_SKIPS = frozenset(
    {
        "AWS::EC2::SecurityGroupEgress",
        "AWS::S3::BucketPolicy",
        "AWS::SNS::Subscription",
        "AWS::Lambda::EventInvokeConfig",
    }
)
# moto warns once per resource it cannot create; only the expected ones are silenced (a warning
# filter cannot contain a colon, so "." stands for each one in the type names).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..(EC2..SecurityGroupEgress|S3..BucketPolicy|SNS..Subscription"
    "|Lambda..EventInvokeConfig) but:UserWarning"
)
READ_ONLY = re.compile(r"^[a-z0-9-]+:(Describe|Get|List)[A-Za-z]*$")
# iam:GetInstanceProfile is not here: evidence reads the instance's profile on every run.
REVOKE_SESSIONS_ACTIONS = {
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
}


class ManagedPolicies:
    """samtranslator asks for AWS managed policy ARNs by name; the template names none."""

    def load(self) -> dict[str, str]:
        return {}


def sam_template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


def translated(code_uri: str = "s3://ec2ir-artifacts/ec2ir.zip") -> dict[str, Any]:
    """The CloudFormation template `sam deploy` would send, code already packaged at ``code_uri``."""
    template = sam_template()
    for function in resources_of(template, "AWS::Serverless::Function").values():
        assert function["Properties"]["CodeUri"] == "src/"
        function["Properties"]["CodeUri"] = code_uri
    result: dict[str, Any] = transform(template, {}, ManagedPolicies())
    return result


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def condition_holds(template: dict[str, Any], name: str | None, parameters: dict[str, str]) -> bool:
    """Evaluate one of the template's conditions for a set of parameter values."""
    if name is None:
        return True
    values = {key: p.get("Default", "") for key, p in template["Parameters"].items()} | parameters

    def evaluate(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ((function, argument),) = node.items()
        if function == "Ref":
            return values[argument]
        if function == "Condition":
            return evaluate(template["Conditions"][argument])
        if function == "Fn::Equals":
            return evaluate(argument[0]) == evaluate(argument[1])
        if function == "Fn::Not":
            return not evaluate(argument[0])
        raise AssertionError(f"condition function {function} is not evaluated here")

    return bool(evaluate(template["Conditions"][name]))


# -- lint and parameters ------------------------------------------------------------------------------


def test_template_is_cfn_lint_clean_in_several_regions() -> None:
    # Informational checks included. No rule is ignored (the template has no cfn-lint metadata and
    # there is no .cfnlintrc); a rule ignored later needs its reason written next to it.
    matches = lint_file(
        TEMPLATE, ManualArgs(regions=["us-east-1", "eu-west-1", "ap-southeast-2"], include_checks=["I"])
    )
    assert [str(match) for match in matches] == []


def test_parameters_refuse_what_the_engine_refuses() -> None:
    parameters = sam_template()["Parameters"]
    assert parameters["CaseId"]["AllowedPattern"] == validate.CASE_ID.pattern

    def allowed(name: str, value: str) -> bool:
        # CloudFormation matches AllowedPattern against the whole value.
        return re.fullmatch(parameters[name]["AllowedPattern"], value) is not None

    for office in ("203.0.113.7", "203.0.113.0/24", "10.0.0.0/8", "198.51.100.9/32", "100.64.0.0/10"):
        assert allowed("CompanyIp", office), office
        assert validate.office_cidr(office)
    for office in ("0.0.0.0/0", "203.0.113.7/0", "203.0.113.7/33", "256.1.1.1", "example.com", "", "::/0"):
        assert not allowed("CompanyIp", office), office
    # Shorter than /8 is a slice of the internet: 0.0.0.0/1 and 128.0.0.0/1 are all of it.
    for prefix in range(1, 8):
        for office in (f"0.0.0.0/{prefix}", f"128.0.0.0/{prefix}", f"203.0.113.7/{prefix}"):
            assert not allowed("CompanyIp", office), office
    for digest in ("", "5f2b7c9e4a1d3b6f8e0a2c4d6b8f1e3a5c7d9b0f2e4a6c8d0b1f3e5a7c9d2b4f"):
        assert allowed("CastSha256", digest), digest
    for digest in ("5F2B" * 16, "5f2b" * 15, "sha256:" + "0" * 64, "latest"):
        assert not allowed("CastSha256", digest), digest
    # The digest is optional only where no workstation is created (an outside forensic group).
    rule = sam_template()["Rules"]["WorkstationNeedsCastDigest"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "ForensicSecurityGroupId"}, ""]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CastSha256"}, ""]}]}
    for severity in ("", "1", "7", "7.5", "8.9", "10", "10.0"):
        assert allowed("AutoContainSeverity", severity), severity
    for severity in ("0", "0.5", "11", "7.55", "high", "-7"):
        assert not allowed("AutoContainSeverity", severity), severity
    assert parameters["ForensicAmiId"]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert parameters["ForensicAmiId"]["Default"] == (
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    )
    assert parameters["AutoContainSeverity"]["Default"] == ""  # off unless asked for
    assert parameters["RevokeSessions"]["Default"] == "false"


# -- the deploy -----------------------------------------------------------------------------------------


@dataclass
class Deployed:
    template: dict[str, Any]  # as created in the emulator
    parameters: dict[str, str]
    stack_id: str
    resources: dict[str, str]  # logical id -> physical id
    statuses: dict[str, str]
    outputs: dict[str, str]
    instance_ids: list[str]
    vpc_id: str


def package_code(aws: Aws) -> str:
    """Zip the ec2ir package as `sam build` lays it out and upload it, as `sam deploy` does."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(PACKAGE.rglob("*.py")):
            bundle.write(path, path.relative_to(PACKAGE.parent).as_posix())
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="ec2ir-artifacts")
    s3.put_object(Bucket="ec2ir-artifacts", Key="ec2ir.zip", Body=archive.getvalue())
    return "s3://ec2ir-artifacts/ec2ir.zip"


def for_the_emulator(template: dict[str, Any], severity: str) -> dict[str, Any]:
    """The moto workarounds listed in this module's docstring, each applied visibly."""
    adapted: dict[str, Any] = json.loads(json.dumps(template))
    del adapted["Resources"]["Containment"]
    for name, output in list(adapted["Outputs"].items()):
        if "Containment" in json.dumps(output["Value"]):
            del adapted["Outputs"][name]
    adapted["Parameters"]["ForensicAmiId"]["Default"] = AMI_PARAMETER
    if severity:
        rule = adapted["Resources"]["GuardDutyFindingRule"]["Properties"]
        rule["EventPattern"] = json.loads(
            rule["EventPattern"]["Fn::Sub"].replace("${AutoContainSeverity}", severity)
        )
    return adapted


def deploy(aws: Aws, fleet: Fleet, **overrides: str) -> Deployed:
    vpc = fleet.vpc(20)
    web = fleet.group(vpc, "web")
    instance_ids = [fleet.instance(vpc, [web]), fleet.instance(vpc, [web], extra_enis=[[web]])]
    fleet.ec2.create_key_pair(KeyName="incident-responders")
    aws.client("ssm").put_parameter(Name=AMI_PARAMETER, Value=AMI, Type="String")
    parameters = {
        "CaseId": "IR-2026-042",
        "CompromisedInstanceList": ",".join(instance_ids),
        "VpcId": vpc,
        "SubnetId": fleet.subnets[vpc],
        "Ec2KeyName": "incident-responders",
        "CompanyIp": "203.0.113.7",
        "ForensicAmiId": AMI_PARAMETER,
        "CastSha256": CAST_SHA256,
    } | overrides
    template = for_the_emulator(translated(package_code(aws)), parameters.get("AutoContainSeverity", ""))
    return create_stack(aws, template, parameters, instance_ids, vpc)


def create_stack(
    aws: Aws, template: dict[str, Any], parameters: dict[str, str], instance_ids: list[str], vpc: str
) -> Deployed:
    cloudformation = aws.client("cloudformation")
    stack_id = cloudformation.create_stack(
        StackName=STACK_NAME,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )["StackId"]
    stack = cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    summaries = cloudformation.list_stack_resources(StackName=stack_id)["StackResourceSummaries"]
    # moto lists what it did not create (unimplemented types, false conditions) as blank entries.
    summaries = [s for s in summaries if s["LogicalResourceId"]]
    return Deployed(
        template=template,
        parameters=parameters,
        stack_id=stack_id,
        resources={s["LogicalResourceId"]: s.get("PhysicalResourceId", "") for s in summaries},
        statuses={s["LogicalResourceId"]: s["ResourceStatus"] for s in summaries},
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        instance_ids=instance_ids,
        vpc_id=vpc,
    )


FULL = {
    "AutoContainSeverity": "7",
    "BlockRemoteIpSeverity": "8",
    "NotificationEmail": "ir@example.com",
    "RevokeSessions": "true",
}


@pytest.mark.parametrize("options", ["full", "defaults", "external-forensic-group"])
def test_the_translated_stack_creates_every_resource_in_the_emulator(
    aws: Aws, fleet: Fleet, options: str
) -> None:
    overrides = dict(FULL) if options == "full" else {}
    if options == "external-forensic-group":
        # Stands in for a security account's group reachable over peering.
        overrides["ForensicSecurityGroupId"] = fleet.group(fleet.vpc(30), "security-account-forensic")
    deployed = deploy(aws, fleet, **overrides)

    expected = {
        name: resource["Type"]
        for name, resource in deployed.template["Resources"].items()
        if condition_holds(deployed.template, resource.get("Condition"), deployed.parameters)
    }
    created = set(deployed.statuses)
    assert set(deployed.statuses.values()) == {"CREATE_COMPLETE"}
    assert created <= set(expected)
    not_created = set(expected) - created
    assert {expected[name] for name in not_created} <= MOTO_SKIPS
    assert {"IsolationSecurityGroup", "StateTable", "EvidenceBucket", "ContainmentFunction"} <= created
    assert ("GuardDutyFunction" in created) == (options == "full")
    assert ("ForensicWorkstation" in created) == (options != "external-forensic-group")
    assert deployed.outputs["CaseId"] == "IR-2026-042"
    assert deployed.outputs["IsolationSecurityGroupId"] == deployed.resources["IsolationSecurityGroup"]
    assert deployed.outputs["StateTableName"] == deployed.resources["StateTable"]
    assert deployed.outputs["EvidenceBucketName"] == deployed.resources["EvidenceBucket"]
    if options == "external-forensic-group":
        assert deployed.outputs["ForensicSecurityGroupId"] == overrides["ForensicSecurityGroupId"]
    else:
        assert deployed.outputs["ForensicSecurityGroupId"] == deployed.resources["ForensicSecurityGroup"]
        assert deployed.outputs["ForensicWorkstationPrivateIp"].startswith("10.20.")
    # The two outputs read from Custom::Containment exist in the real template.
    outputs = translated()["Outputs"]
    assert outputs["ContainmentIsolationGroupIds"]["Value"] == {
        "Fn::GetAtt": ["Containment", "IsolationGroupIds"]
    }
    assert outputs["SnapshotIds"]["Value"] == {"Fn::GetAtt": ["Containment", "SnapshotIds"]}


@pytest.mark.parametrize(
    ("office", "rule"), [("203.0.113.7", "203.0.113.7/32"), ("198.51.100.0/24", "198.51.100.0/24")]
)
def test_the_forensic_group_admits_ssh_from_the_office_only(
    aws: Aws, fleet: Fleet, office: str, rule: str
) -> None:
    deployed = deploy(aws, fleet, CompanyIp=office)
    rules = fleet.group_rules(deployed.resources["ForensicSecurityGroup"])
    ingress = {r for r in rules if not r[0]}
    assert ingress == {(False, "tcp/22", rule)}
    assert not any(peer in ("0.0.0.0/0", "::/0") for egress, _, peer in rules if not egress)
    group = fleet.ec2.describe_security_groups(GroupIds=[deployed.resources["ForensicSecurityGroup"]])
    assert group["SecurityGroups"][0]["VpcId"] == deployed.vpc_id  # not the default VPC
    # The workstation may SSH on to the isolated instances, and only there (moto skips this resource).
    egress = sam_template()["Resources"]["ForensicToIsolatedSsh"]["Properties"]
    assert (egress["IpProtocol"], egress["FromPort"], egress["ToPort"]) == ("tcp", 22, 22)
    assert egress["DestinationSecurityGroupId"] == {"Fn::GetAtt": ["IsolationSecurityGroup", "GroupId"]}


# -- the stack and the engine, end to end ----------------------------------------------------------------


def containment_request(
    deployed: Deployed, request_type: str, url: str, physical_id: str = ""
) -> dict[str, Any]:
    """The request CloudFormation sends for the template's Custom::Containment, its properties
    resolved with the stack's parameters and resources."""
    declared = sam_template()["Resources"]["Containment"]["Properties"]
    assert declared["InstanceIds"] == {"Ref": "CompromisedInstanceList"}
    assert declared["CaseId"] == {"Ref": "CaseId"} and declared["OfficeCidr"] == {"Ref": "CompanyIp"}
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": deployed.stack_id,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "Containment",
        "ResourceType": "Custom::Containment",
        "ResourceProperties": {
            "ServiceToken": deployed.resources["ContainmentFunction"],
            "ServiceTimeout": str(declared["ServiceTimeout"]),
            "CaseId": deployed.parameters["CaseId"],
            "InstanceIds": deployed.instance_ids,
            "OfficeCidr": deployed.parameters["CompanyIp"],
            "RevokeSessions": deployed.parameters.get("RevokeSessions", "false"),
            "Untrack": declared["Untrack"],
            "IsolationGroupId": deployed.resources["IsolationSecurityGroup"],
            "ForensicGroupId": deployed.resources["ForensicSecurityGroup"],
        },
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    return event


def handle(
    deployed: Deployed, catcher: ResponseCatcher, event: dict[str, Any], engine: Any
) -> dict[str, Any]:
    """The function as the stack deploys it: its own stack is the deployed one (EC2IR_STACK_ID);
    answers may go to the loopback catcher too."""
    return custom_resource.handle(
        event,
        LambdaRuntimeContext(),
        engine,
        own_stack_id=deployed.stack_id,
        extra_response_origins={catcher.origin},
    )


def test_the_engine_finds_verifies_and_uses_the_stacks_groups(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher
) -> None:
    deployed = deploy(aws, fleet)
    isolation = deployed.resources["IsolationSecurityGroup"]
    forensic = deployed.resources["ForensicSecurityGroup"]
    before = fleet.eni_groups(deployed.instance_ids)
    # moto's gap: the declared loopback-only egress was dropped and allow-all egress remains ...
    assert (True, "-1/-1", "0.0.0.0/0") in fleet.group_rules(isolation)
    # ... where the template declares exactly loopback.
    declared = sam_template()["Resources"]["IsolationSecurityGroup"]["Properties"]
    assert declared["SecurityGroupEgress"] == [
        {"Description": "Nothing out (loopback only)", "IpProtocol": "-1", "CidrIp": "127.0.0.1/32"}
    ]
    assert [
        (r["IpProtocol"], r["FromPort"], r["SourceSecurityGroupId"]) for r in declared["SecurityGroupIngress"]
    ] == [
        (
            "tcp",
            22,
            {
                "Fn::If": [
                    "CreateForensicGroup",
                    {"Fn::GetAtt": ["ForensicSecurityGroup", "GroupId"]},
                    {"Ref": "ForensicSecurityGroupId"},
                ]
            },
        )
    ]
    table = deployed.resources["StateTable"]

    def engine() -> Engine:
        return Engine(aws, StateStore(aws, table), concurrency=4)

    created = handle(
        deployed, catcher, containment_request(deployed, "Create", catcher.url("create")), engine
    )

    assert created["Status"] == "SUCCESS", created["Reason"]
    assert created["Data"]["IsolationGroupIds"] == isolation  # the stack's group, named by the stack
    assert created["Data"]["ForensicGroupIds"] == forensic
    assert (
        f"isolation group {isolation} had drifted: revoked egress all traffic to 0.0.0.0/0"
        in created["Reason"]
    )
    assert fleet.group_rules(isolation) == {(False, "tcp/22", forensic), (True, "-1/-1", "127.0.0.1/32")}
    assert set(fleet.eni_groups(deployed.instance_ids).values()) == {(isolation,)}

    # The emulator's stack is CREATE_COMPLETE; CloudFormation's, while it deletes, says so.
    StackStatus(aws, "DELETE_IN_PROGRESS", deployed.stack_id)
    deleted = handle(
        deployed,
        catcher,
        containment_request(deployed, "Delete", catcher.url("delete"), created["PhysicalResourceId"]),
        engine,
    )
    assert deleted["Status"] == "SUCCESS", deleted["Reason"]
    assert fleet.eni_groups(deployed.instance_ids) == before
    holds = [StateStore(aws, table).get(i) for i in deployed.instance_ids]
    assert all(h is not None and h.status is HoldStatus.RELEASED for h in holds)  # the journal stays


# -- state, evidence, functions, workstation, auto-containment ------------------------------------------


def test_the_state_table_is_the_engines_and_outlives_the_stack(aws: Aws, fleet: Fleet) -> None:
    declared = sam_template()["Resources"]["StateTable"]
    assert (declared["DeletionPolicy"], declared["UpdateReplacePolicy"]) == ("Retain", "Retain")
    properties = declared["Properties"]
    assert properties["KeySchema"] == KEY_SCHEMA
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS"}
    assert properties["DeletionProtectionEnabled"] is True

    deployed = deploy(aws, fleet)
    table = aws.dynamodb().describe_table(TableName=deployed.resources["StateTable"])["Table"]
    assert table["KeySchema"] == KEY_SCHEMA
    StateStore(aws, deployed.resources["StateTable"]).ensure_table()  # the engine accepts it as its own


def test_the_evidence_bucket_is_retained_private_encrypted_and_tls_only(aws: Aws, fleet: Fleet) -> None:
    resources = sam_template()["Resources"]
    bucket = resources["EvidenceBucket"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    properties = bucket["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    policy = resources["EvidenceBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "EvidenceBucket"}
    denials = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Principal"] == "*" and s["Action"] in ("s3:*", ["s3:*"])
    ]
    assert len(denials) == 1
    assert denials[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert denials[0]["Resource"] == [
        {"Fn::GetAtt": ["EvidenceBucket", "Arn"]},
        {"Fn::Sub": "${EvidenceBucket.Arn}/*"},
    ]

    deployed = deploy(aws, fleet)
    encryption = aws.client("s3").get_bucket_encryption(Bucket=deployed.resources["EvidenceBucket"])
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


def test_the_functions_run_the_engine_package_with_its_least_privilege_policy(aws: Aws, fleet: Fleet) -> None:
    template = translated()
    functions = resources_of(template, "AWS::Lambda::Function")
    assert set(functions) == {"ContainmentFunction", "GuardDutyFunction", "RecheckFunction"}
    for function in functions.values():
        properties = function["Properties"]
        assert properties["Runtime"] in ("python3.12", "python3.13")
        module, _, name = properties["Handler"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))
        assert properties["Environment"]["Variables"]["EC2IR_TABLE"] == {"Ref": "StateTable"}
    assert functions["ContainmentFunction"]["Properties"]["Timeout"] == 900

    policies = resources_of(template, "AWS::IAM::Policy")
    statements = [
        (name, statement)
        for name, policy in policies.items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    allowed = {
        action
        for _, statement in statements
        if statement["Effect"] == "Allow"
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    every_role = role_needs("EngineRole") | role_needs("IsolateOnlyRole")
    assert allowed == every_role, sorted(allowed ^ every_role)
    # a member account is reached through the one role name it trusts, and only when asked
    member = policies["MemberAccountsPolicy"]
    assert member["Condition"] == "ReachesMembers"
    assert member["Properties"]["Roles"] == [{"Ref": "IsolateOnlyRole"}]
    [assume] = member["Properties"]["PolicyDocument"]["Statement"]
    assert (assume["Action"], assume["Resource"]) == (
        "sts:AssumeRole",
        {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"},
    )
    (own_stack,) = [s for _, s in statements if s["Action"] in custom_resource.HANDLER_ACTIONS]
    assert own_stack["Resource"] == {"Ref": "AWS::StackId"}  # its own stack's status, nothing else
    containment = functions["ContainmentFunction"]["Properties"]["Environment"]["Variables"]
    assert containment[custom_resource.STACK_ENV] == {"Ref": "AWS::StackId"}
    for name, statement in statements:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if statement["Effect"] == "Allow" and statement["Resource"] == "*":
            mutating = [a for a in actions if not READ_ONLY.match(a) and a != "sts:GetCallerIdentity"]
            assert mutating == [], f"{name}: {mutating} on every resource"
        if REVOKE_SESSIONS_ACTIONS & set(actions) and statement["Effect"] == "Allow":
            assert policies[name].get("Condition") == "RevokeSessionsEnabled"
    dynamodb = [s for _, s in statements if any(a.startswith("dynamodb:") for a in s["Action"])]
    assert [s["Resource"] for s in dynamodb] == [{"Fn::GetAtt": ["StateTable", "Arn"]}]
    guard = [s for _, s in statements if s["Effect"] == "Deny"]
    assert guard and guard[0]["Resource"] == [
        {"Fn::GetAtt": [role, "Arn"]} for role in ("EngineRole", "IsolateOnlyRole")
    ]
    assert "iam:PutRolePolicy" in guard[0]["Action"]
    assert policies[next(n for n, s in statements if s is guard[0])]["Properties"]["Roles"] == [
        {"Ref": "EngineRole"},
        {"Ref": "IsolateOnlyRole"},
    ]

    deployed = deploy(aws, fleet)
    configuration = aws.client("lambda").get_function_configuration(
        FunctionName=deployed.resources["ContainmentFunction"]
    )
    assert configuration["Environment"]["Variables"]["EC2IR_TABLE"] == deployed.resources["StateTable"]
    assert configuration["Environment"]["Variables"][custom_resource.STACK_ENV] == deployed.stack_id


def test_the_workstation_is_hardened_and_installs_sift_with_cast(aws: Aws, fleet: Fleet) -> None:
    workstation = sam_template()["Resources"]["ForensicWorkstation"]
    properties = workstation["Properties"]
    assert properties["MetadataOptions"]["HttpTokens"] == "required"
    assert properties["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (root,) = properties["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/sda1" and root["Ebs"]["Encrypted"] is True
    assert properties["SecurityGroupIds"] == [{"Fn::GetAtt": ["ForensicSecurityGroup", "GroupId"]}]
    assert workstation["CreationPolicy"] == {"ResourceSignal": {"Count": 1, "Timeout": "PT30M"}}
    user_data = properties["UserData"]["Fn::Base64"]["Fn::Sub"]
    # cast's release assets are goreleaser's "{{ .PackageName }}-v{{ .Version }}-{{ .Os }}-{{ .Arch }}"
    # (github.com/ekristen/cast .goreleaser.yml, nfpms.file_name_template, since v1.0.0).
    assert 'deb="cast-v${CastVersion}-linux-amd64.deb"' in user_data
    assert "https://github.com/ekristen/cast/releases/download/v${CastVersion}/$deb" in user_data
    assert "cast_v" not in user_data and "_linux_amd64" not in user_data
    # Installed only if its digest is the pinned one, and nothing else is downloaded unpinned.
    check = user_data.index('echo "${CastSha256}  $deb" | sha256sum -c - &&')
    assert check < user_data.index('dpkg -i "$deb"')
    assert "checksums.txt" not in user_data  # a list from the same place as the file proves nothing
    assert "latest" not in user_data and "pip install" not in user_data
    assert "AWS::CloudFormation::Init" not in workstation.get("Metadata", {})
    # The signal follows the checked install of cast and precedes the long SIFT install (the reason
    # is in the template: a slow or failed SIFT install must not fail the stack).
    assert user_data.index("if install_cast; then") < user_data.index("signal SUCCESS")
    assert user_data.index("signal SUCCESS") < user_data.index(
        "cast install --mode=server --user ubuntu teamdfir/sift-saltstack"
    )
    assert "signal FAILURE" in user_data
    parameters = sam_template()["Parameters"]
    assert parameters["CastVersion"]["Default"] == "1.0.21"
    # The role may signal this stack, and read (not write) evidence; nothing else.
    (policy,) = resources_of(sam_template(), "AWS::IAM::Role")["WorkstationRole"]["Properties"]["Policies"]
    (signal,) = [s for s in policy["PolicyDocument"]["Statement"] if s["Sid"] == "SignalBootstrap"]
    assert (signal["Action"], signal["Resource"]) == (
        "cloudformation:SignalResource",
        {"Ref": "AWS::StackId"},
    )

    deployed = deploy(aws, fleet)
    instance_id = deployed.resources["ForensicWorkstation"]
    volumes = fleet.ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )
    assert [v["Encrypted"] for v in volumes["Volumes"]] == [True]


def fixture_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return event


def test_the_guardduty_rule_selects_ec2_findings_at_or_above_the_severity(aws: Aws, fleet: Fleet) -> None:
    pattern_text = sam_template()["Resources"]["GuardDutyFindingRule"]["Properties"]["EventPattern"][
        "Fn::Sub"
    ]
    severity = json.loads(pattern_text.replace("${AutoContainSeverity}", "7.5"))["detail"]["severity"]
    assert severity == [{"numeric": [">=", 7.5]}]  # a number, as numeric matching requires

    deployed = deploy(aws, fleet, **FULL)
    events = aws.client("events")
    pattern = events.describe_rule(Name=deployed.resources["GuardDutyFindingRule"])["EventPattern"]
    assert json.loads(pattern)["detail"]["severity"] == [{"numeric": [">=", 7]}]
    targets = events.list_targets_by_rule(Rule=deployed.resources["GuardDutyFindingRule"])["Targets"]
    function_arn = aws.client("lambda").get_function(FunctionName=deployed.resources["GuardDutyFunction"])
    assert [t["Arn"] for t in targets] == [function_arn["Configuration"]["FunctionArn"]]

    # moto cannot deliver to the Lambda target, so the same pattern is replayed on a bus of its own
    # that delivers to a queue: the findings that reach the queue are those the rule selects.
    sqs = aws.client("sqs")
    queue = sqs.create_queue(QueueName="selected-findings")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.create_event_bus(Name="replay")
    events.put_rule(Name="replay", EventBusName="replay", EventPattern=pattern)
    events.put_targets(Rule="replay", EventBusName="replay", Targets=[{"Id": "queue", "Arn": queue_arn}])
    names = sorted(path.name for path in FIXTURES.glob("*.json"))
    for name in names:
        event = fixture_event(name)
        sent = events.put_events(
            Entries=[
                {
                    "EventBusName": "replay",
                    "Source": event["source"],
                    "DetailType": event["detail-type"],
                    "Detail": json.dumps(event["detail"]),
                }
            ]
        )
        assert sent["FailedEntryCount"] == 0
    deadline = time.monotonic() + 5
    selected: set[str] = set()  # the EventBridge ids of the events delivered
    while time.monotonic() < deadline and len(selected) < 4:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            delivered = json.loads(message["Body"])
            selected.add(json.dumps([delivered["detail"]["id"], delivered["detail"].get("updatedAt")]))
    by_key = {
        json.dumps(
            [fixture_event(name)["detail"]["id"], fixture_event(name)["detail"].get("updatedAt")]
        ): name
        for name in names
    }
    # The sample passes the rule (it is a high EC2 finding); the handler drops it (test_handlers).
    assert {by_key[key] for key in selected} == {
        "ec2_backdoor_high.json",
        "ec2_backdoor_high_updated.json",
        "ec2_c2_outbound_high.json",
        "ec2_sample_high.json",
    }


# -- the stack's lifecycle is the incident's -----------------------------------------------------------


def test_log_groups_are_retained_and_named_by_cloudformation_so_the_stack_can_be_created_again(
    aws: Aws, fleet: Fleet
) -> None:
    log_groups = resources_of(sam_template(), "AWS::Logs::LogGroup")
    assert set(log_groups) == {"ContainmentLogGroup", "GuardDutyLogGroup", "RecheckLogGroup"}
    for name, group in log_groups.items():
        assert (group["DeletionPolicy"], group["UpdateReplacePolicy"]) == ("Retain", "Retain"), name
        assert "LogGroupName" not in group["Properties"], name  # a fixed name outlives the stack

    first = deploy(aws, fleet, **FULL)
    logs = aws.client("logs")
    kept = {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]}
    assert {first.resources["ContainmentLogGroup"], first.resources["GuardDutyLogGroup"]} <= kept
    # The stack fails (here: it is deleted, as after ROLLBACK_COMPLETE) and is created again under
    # the same name. The retained groups stay, and are no obstacle.
    aws.client("cloudformation").delete_stack(StackName=first.stack_id)
    assert kept <= {g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]}
    again = create_stack(aws, first.template, first.parameters, first.instance_ids, first.vpc_id)
    assert again.stack_id != first.stack_id
    assert again.resources["ContainmentLogGroup"] not in kept
    assert set(again.statuses.values()) == {"CREATE_COMPLETE"}


def test_the_deployed_function_obeys_its_own_stack_and_a_rollback_releases_nothing(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher
) -> None:
    deployed = deploy(aws, fleet)
    table = deployed.resources["StateTable"]
    own = aws.client("lambda").get_function_configuration(
        FunctionName=deployed.resources["ContainmentFunction"]
    )
    assert own["Environment"]["Variables"][custom_resource.STACK_ENV] == deployed.stack_id

    def engine() -> Engine:
        return Engine(aws, StateStore(aws, table), concurrency=4)

    created = handle(
        deployed, catcher, containment_request(deployed, "Create", catcher.url("create")), engine
    )
    assert created["Status"] == "SUCCESS", created["Reason"]
    contained = fleet.eni_groups(deployed.instance_ids)

    # A Delete from another stack (or anyone allowed to invoke the function) is refused unanswered.
    forged = containment_request(deployed, "Delete", catcher.url("forged"), created["PhysicalResourceId"])
    forged["StackId"] = deployed.stack_id.replace(STACK_NAME, "another-stack")
    assert "not for this function's stack" in handle(deployed, catcher, forged, engine)["Refused"]
    assert catcher.answers("forged") == []

    # A Delete while the stack is not being deleted (the emulator's stack is CREATE_COMPLETE, as
    # DescribeStacks says): every instance stays held.
    kept = handle(
        deployed,
        catcher,
        containment_request(deployed, "Delete", catcher.url("delete"), created["PhysicalResourceId"]),
        engine,
    )
    assert kept["Status"] == "SUCCESS", kept["Reason"]
    assert f"not released: stack {STACK_NAME} is CREATE_COMPLETE" in kept["Reason"]
    assert f"--case {deployed.parameters['CaseId']} --table {table}" in kept["Reason"]
    assert fleet.eni_groups(deployed.instance_ids) == contained
    holds = [StateStore(aws, table).get(i) for i in deployed.instance_ids]
    assert all(h is not None and h.status is HoldStatus.ISOLATED for h in holds)


def test_the_guardduty_function_uses_the_stacks_forensic_group(aws: Aws, fleet: Fleet) -> None:
    functions = resources_of(translated(), "AWS::Lambda::Function")
    variables = functions["GuardDutyFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["EC2IR_FORENSIC_GROUP_ID"] == {
        "Fn::If": [
            "CreateForensicGroup",
            {"Fn::GetAtt": ["ForensicSecurityGroup", "GroupId"]},
            {"Ref": "ForensicSecurityGroupId"},
        ]
    }
    assert variables["EC2IR_FORENSIC_GROUP_OWNER_ID"] == {"Ref": "ForensicSecurityGroupOwnerId"}
    # The same group Custom::Containment admits SSH from.
    containment = sam_template()["Resources"]["Containment"]["Properties"]
    assert containment["ForensicGroupId"] == variables["EC2IR_FORENSIC_GROUP_ID"]

    outside = fleet.group(fleet.vpc(30), "security-account-forensic")
    deployed = deploy(aws, fleet, **FULL, ForensicSecurityGroupId=outside)
    configuration = aws.client("lambda").get_function_configuration(
        FunctionName=deployed.resources["GuardDutyFunction"]
    )
    assert configuration["Environment"]["Variables"]["EC2IR_FORENSIC_GROUP_ID"] == outside
    # and blocks the remote addresses of findings at or above BlockRemoteIpSeverity
    assert configuration["Environment"]["Variables"][guardduty.BLOCK_SEVERITY_ENV] == "8"


def test_the_outputs_carry_what_failed_and_where_the_snapshot_list_is() -> None:
    template = sam_template()
    outputs = {name: o["Value"] for name, o in template["Outputs"].items()}
    assert outputs["ContainmentFailedInstanceIds"] == {"Fn::GetAtt": ["Containment", "FailedInstanceIds"]}
    assert outputs["SnapshotIdsKey"] == {"Fn::GetAtt": ["Containment", "SnapshotIdsKey"]}
    # Every attribute an output reads is a key of every answer the handler gives.
    request = cloudformation.Request.from_event(
        {
            "RequestType": "Create",
            "RequestId": "r",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/g",
            "LogicalResourceId": "Containment",
            "ResponseURL": "https://example.invalid/",
            "ResourceProperties": {"CaseId": "IR-1"},
        }
    )
    answer = custom_resource._outcome("IR-1", None)
    data = json.loads(cloudformation.response_body(request, answer))["Data"]
    read = {
        v["Fn::GetAtt"][1]
        for v in outputs.values()
        if "Fn::GetAtt" in v and v["Fn::GetAtt"][0] == "Containment"
    }
    assert read <= set(data)
    # Raised with each new attribute, so that updating an existing stack asks the function again.
    assert template["Resources"]["Containment"]["Properties"]["AnswerVersion"] == "2"


def test_the_stack_rechecks_what_it_holds_every_15_minutes() -> None:
    resources = sam_template()["Resources"]
    function = resources["RecheckFunction"]["Properties"]
    assert function["Handler"] == "ec2ir.handlers.recheck.handler"
    assert function["Role"] == {"Fn::GetAtt": ["IsolateOnlyRole", "Arn"]}  # re-isolates, never releases
    assert set(function["Environment"]["Variables"]) == {
        "EC2IR_TABLE",
        "EC2IR_EVIDENCE_BUCKET",
        "EC2IR_TOPIC_ARN",
        "EC2IR_MEMBER_ROLE_NAME",  # a member account's holds are checked there, through it
    }
    schedule = resources["RecheckSchedule"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(15 minutes)"
    assert schedule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["RecheckFunction", "Arn"]}
    permission = resources["RecheckInvokePermission"]["Properties"]
    assert permission["SourceArn"] == {"Fn::GetAtt": ["RecheckSchedule", "Arn"]}
    # retained and named by CloudFormation, like every log group of the stack
    assert "LogGroupName" not in resources["RecheckLogGroup"]["Properties"]
    assert resources["RecheckLogGroup"]["DeletionPolicy"] == "Retain"


# -- least privilege in the template (issue 14, point 5) -------------------------------------------------

# sns:Publish is each handler's notification (ec2ir.handlers.notify).
FUNCTION_ROLES = ("EngineRole", "IsolateOnlyRole")


def role_needs(role: str) -> set[str]:
    if role == "EngineRole":  # the custom resource isolates, releases, and reads its stack's status
        return {*function_actions(), *custom_resource.HANDLER_ACTIONS, "sns:Publish"}
    # GuardDuty and the re-check only isolate (and repair, which is isolating again); with
    # MemberRoleName, in member accounts too, through that role (MemberAccountsPolicy)
    return {*isolate_actions(), "sns:Publish", "sts:AssumeRole"}


HANDLER_ROLES = {
    "ContainmentFunction": "EngineRole",
    "GuardDutyFunction": "IsolateOnlyRole",
    "RecheckFunction": "IsolateOnlyRole",
}


def actions_of(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every statement of every policy the role carries, whatever the policy's condition."""
    return [
        statement
        for policy in resources_of(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def role_allows(template: dict[str, Any], role: str) -> set[str]:
    return {a for s in role_statements(template, role) if s["Effect"] == "Allow" for a in actions_of(s)}


@pytest.mark.usefixtures("emulator")  # samtranslator needs a Region
def test_each_function_has_a_role_with_exactly_what_its_handler_needs() -> None:
    template = translated()
    functions = resources_of(template, "AWS::Lambda::Function")
    for function, role in HANDLER_ROLES.items():
        assert functions[function]["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}, function
    assert set(resources_of(template, "AWS::IAM::Role")) >= set(FUNCTION_ROLES)
    for role in FUNCTION_ROLES:
        allowed, needs = role_allows(template, role), role_needs(role)
        assert allowed == needs, (role, sorted(allowed - needs), sorted(needs - allowed))
    # What only restoring originals needs is the containment function's alone.
    release_only = {*release_only_actions(), *custom_resource.HANDLER_ACTIONS}
    assert release_only >= {
        "ec2:AssociateIamInstanceProfile",
        "iam:PassRole",
        "autoscaling:AttachInstances",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
        "iam:DeleteRolePolicy",
        "cloudformation:DescribeStacks",
    }
    assert role_allows(template, "IsolateOnlyRole") & release_only == set()
    assert release_only <= role_allows(template, "EngineRole")
    # The custom resource must hold the release permissions while it releases: created before
    # it, deleted after it.
    containment = sam_template()["Resources"]["Containment"]
    assert set(containment["DependsOn"]) == {"EnginePolicy", "ReleasePolicy"}
    assert containment["Properties"]["RevokeSessionsReleasePolicy"] == {
        "Fn::If": ["RevokeSessionsEnabled", {"Ref": "RevokeSessionsReleasePolicy"}, {"Ref": "AWS::NoValue"}]
    }


def test_every_step_declares_what_only_its_undo_needs() -> None:
    for step in STEPS:
        assert "undo_permissions" in type(step).__dict__, f"{step.name} declares no undo_permissions"
        assert set(step.undo_permissions) <= set(step.permissions), step.name
    assert set(isolate_actions()) | set(release_only_actions()) == set(function_actions())
    assert set(isolate_actions()) & set(release_only_actions()) == set()
    # An action undo shares with apply stays with isolating: containment never loses a permission.
    assert {"ec2:ModifyNetworkInterfaceAttribute", "ec2:ModifyInstanceAttribute", "ec2:CreateTags"} <= set(
        isolate_actions()
    )


@pytest.mark.usefixtures("emulator")  # samtranslator needs a Region
def test_pass_role_reaches_only_the_restorable_instance_roles() -> None:
    template = sam_template()
    parameter = template["Parameters"]["RestorableInstanceRolePath"]
    assert parameter["Default"] == "/"
    for path in ("/", "/ec2/", "/workloads/web-tier/", "/a.b@c_d=e,f+g-h/"):
        assert re.fullmatch(parameter["AllowedPattern"], path), path
    for path in ("", "ec2/", "/ec2", "//", "/*/", "/ec2/*", "/a b/"):
        assert not re.fullmatch(parameter["AllowedPattern"], path), path
    translated_template = translated()
    passing = [
        s
        for role in FUNCTION_ROLES
        for s in role_statements(translated_template, role)
        if "iam:PassRole" in actions_of(s)
    ]
    assert len(passing) == 1
    (statement,) = passing
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role${RestorableInstanceRolePath}*"
    }
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert "iam:PassRole" not in role_allows(translated_template, "IsolateOnlyRole")
    # The template says, next to the statement, what a role outside the path means.
    comment = TEMPLATE.read_text().split("- Sid: PassRestorableInstanceRoles")[0].splitlines()[-5:]
    said = " ".join(line.strip().lstrip("#").strip() for line in comment)
    assert "fails with AccessDenied" in said and "the instance stays contained (safe)" in said


GROUP_RULE_CHANGES = {
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:DeleteSecurityGroup",
}
ANY_GROUP = {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:security-group/*"}
CREATED_FOR_CASE = {"Null": {"aws:ResourceTag/ec2ir:created-for-case": "false"}}


def test_group_rules_change_only_on_ec2irs_own_groups(aws: Aws, fleet: Fleet) -> None:
    template = translated()
    for role in FUNCTION_ROLES:
        statements = [s for s in role_statements(template, role) if s["Effect"] == "Allow"]
        for statement in statements:
            changes = GROUP_RULE_CHANGES & set(actions_of(statement))
            if not changes:
                continue
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            groups = [r for r in resources if "security-group/" in json.dumps(r)]
            assert resources == groups or all("security-group-rule/" in json.dumps(r) for r in resources)
            if groups == [ANY_GROUP]:  # any group: only with the engine's creation tag
                assert statement["Condition"] == CREATED_FOR_CASE, statement["Sid"]
            elif groups:  # else the stack's own isolation group, by ARN, never deleted
                assert groups == [
                    {
                        "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}"
                        ":security-group/${IsolationSecurityGroup.GroupId}"
                    }
                ], statement["Sid"]
                assert "ec2:DeleteSecurityGroup" not in changes
            else:  # rule ids: revoking only; the group each rule belongs to is fenced above
                assert changes <= {"ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"}
        # Nobody may give an existing group the tag: groups are tagged only as they are created.
        tagging = [s for s in statements if "ec2:CreateTags" in actions_of(s)]
        for statement in tagging:
            if "security-group/" in json.dumps(statement["Resource"]):
                assert statement["Resource"] == ANY_GROUP
                assert statement["Condition"] == {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}
        # ENI and instance swaps stay account- and Region-wide; the template says why.
        (cut,) = [s for s in statements if "ec2:ModifyNetworkInterfaceAttribute" in actions_of(s)]
        assert "Condition" not in cut
    text = TEMPLATE.read_text()
    assert "never trusts a tag" in text and "VPC sharing" in text
    # The engine tags a group as it creates it, which is what the fence asks for.
    vpc = fleet.vpc(40)
    group_id = create_group(aws, vpc, "isolation", "IR-2026-042")
    tags = fleet.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["Tags"]
    assert {"Key": "ec2ir:created-for-case", "Value": "IR-2026-042"} in tags


def test_evidence_is_object_locked_and_its_versions_cannot_be_deleted(aws: Aws, fleet: Fleet) -> None:
    template = sam_template()
    parameters = template["Parameters"]
    days = parameters["EvidenceRetentionDays"]
    assert days["Default"] == "90"
    for value in ("0", "1", "90", "365", "3650", "36500"):
        assert re.fullmatch(days["AllowedPattern"], value), value
    for value in ("", "-1", "01", "1.5", "36501", "99999", "ninety"):
        assert not re.fullmatch(days["AllowedPattern"], value), value
    assert parameters["BreakGlassRoleArn"]["Default"] == ""
    assert template["Conditions"]["EvidenceLocked"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "EvidenceRetentionDays"}, "0"]}]
    }
    assert condition_holds(template, "EvidenceLocked", {})
    assert not condition_holds(template, "EvidenceLocked", {"EvidenceRetentionDays": "0"})
    properties = template["Resources"]["EvidenceBucket"]["Properties"]
    assert properties["ObjectLockEnabled"] == {"Fn::If": ["EvidenceLocked", True, {"Ref": "AWS::NoValue"}]}
    assert properties["ObjectLockConfiguration"] == {
        "Fn::If": [
            "EvidenceLocked",
            {
                "ObjectLockEnabled": "Enabled",
                "Rule": {
                    "DefaultRetention": {"Mode": "COMPLIANCE", "Days": {"Ref": "EvidenceRetentionDays"}}
                },
            },
            {"Ref": "AWS::NoValue"},
        ]
    }
    statements = template["Resources"]["EvidenceBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if "s3:DeleteObjectVersion" in actions_of(s)]
    assert (deny["Effect"], deny["Principal"]) == ("Deny", "*")
    assert set(actions_of(deny)) == {
        "s3:DeleteObjectVersion",
        "s3:PutBucketObjectLockConfiguration",
        "s3:BypassGovernanceRetention",
    }
    assert deny["Resource"] == [
        {"Fn::GetAtt": ["EvidenceBucket", "Arn"]},
        {"Fn::Sub": "${EvidenceBucket.Arn}/*"},
    ]
    assert deny["Condition"] == {
        "Fn::If": [
            "HasBreakGlassRole",
            {"ArnNotEquals": {"aws:PrincipalArn": {"Ref": "BreakGlassRoleArn"}}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    # No role of the stack may delete a version either.
    for role in FUNCTION_ROLES:
        assert not {a for a in role_allows(translated(), role) if a.startswith("s3:Delete")}
    # moto ignores a bucket's Object Lock (module docstring): CloudFormation receives it as declared.
    bucket = translated()["Resources"]["EvidenceBucket"]["Properties"]
    assert bucket["ObjectLockConfiguration"] == properties["ObjectLockConfiguration"]
    assert bucket["ObjectLockEnabled"] == properties["ObjectLockEnabled"]

    deployed = deploy(aws, fleet, BreakGlassRoleArn="arn:aws:iam::123456789012:role/ir/break-glass")
    assert deployed.statuses["EvidenceBucket"] == "CREATE_COMPLETE"


# -- network ACL blocks of a finding's remote addresses (issue 19) ----------------------------------------

NETWORK_ACLS = {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:network-acl/*"}


def test_block_remote_ip_severity_is_the_handlers_rule_and_needs_auto_containment() -> None:
    template = sam_template()
    parameter = template["Parameters"]["BlockRemoteIpSeverity"]
    assert parameter["Default"] == ""  # off unless asked for
    assert parameter["AllowedPattern"] == guardduty.BLOCK_SEVERITY_PATTERN
    assert parameter["AllowedPattern"] == template["Parameters"]["AutoContainSeverity"]["AllowedPattern"]
    for value in ("", "1", "7", "7.5", "10", "10.0", "5.0"):
        assert re.fullmatch(parameter["AllowedPattern"], value), value
        assert guardduty.block_setting_from(value).problem == "", value
    for value in ("0", "11", "7.55", "high", "-1", "1e1", ".5"):
        assert not re.fullmatch(parameter["AllowedPattern"], value), value
        assert guardduty.block_setting_from(value).threshold is None, value
    # Only the GuardDuty function blocks, and it exists only with AutoContainSeverity.
    rule = template["Rules"]["BlockingNeedsAutoContainment"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "BlockRemoteIpSeverity"}, ""]}]}
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AutoContainSeverity"}, ""]}]
    }
    function = template["Resources"]["GuardDutyFunction"]
    assert function["Condition"] == "AutoContainEnabled"
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables[guardduty.BLOCK_SEVERITY_ENV] == {"Ref": "BlockRemoteIpSeverity"}


@pytest.mark.usefixtures("emulator")  # samtranslator needs a Region
def test_network_acl_entries_are_added_by_both_roles_and_removed_only_by_a_release() -> None:
    template = translated()
    for role in FUNCTION_ROLES:
        statements = [s for s in role_statements(template, role) if s["Effect"] == "Allow"]
        (create,) = [s for s in statements if "ec2:CreateNetworkAclEntry" in actions_of(s)]
        assert (actions_of(create), create["Resource"]) == (["ec2:CreateNetworkAclEntry"], NETWORK_ACLS)
        (read,) = [s for s in statements if "ec2:DescribeNetworkAcls" in actions_of(s)]
        assert "ec2:DescribeVpcs" in actions_of(read) and read["Resource"] == "*"  # no resource-level
    engine = [s for s in role_statements(template, "EngineRole") if s["Effect"] == "Allow"]
    (delete,) = [s for s in engine if "ec2:DeleteNetworkAclEntry" in actions_of(s)]
    assert (actions_of(delete), delete["Resource"]) == (["ec2:DeleteNetworkAclEntry"], NETWORK_ACLS)
    assert "ec2:DeleteNetworkAclEntry" not in role_allows(template, "IsolateOnlyRole")
    # Not ReplaceNetworkAclEntry nor any change to an ACL itself or its subnets.
    granted = set().union(*(role_allows(template, role) for role in FUNCTION_ROLES))
    assert {a for a in granted if "NetworkAcl" in a} == {
        "ec2:CreateNetworkAclEntry",
        "ec2:DeleteNetworkAclEntry",
        "ec2:DescribeNetworkAcls",
    }
