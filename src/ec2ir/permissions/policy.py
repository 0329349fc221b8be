"""What ec2ir may call, as an IAM policy, and whether the current credentials may call it.

Each step declares its own actions (``ec2ir.containment.steps``); the engine's own needs (identity,
discovery, the groups and the state table) are listed here. ``policy_document`` joins them,
so the printed policy can never fall behind the code: a test records every call a full isolate
and release makes against the emulator and checks that each one is covered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ec2ir.aws.session import Aws, chunks, method_name, translated
from ec2ir.containment.nacl import PERMISSIONS as NACL_PERMISSIONS
from ec2ir.containment.nacl import PURPOSE as NACL_PURPOSE
from ec2ir.containment.nacl import UNDO_PERMISSIONS as NACL_UNDO_PERMISSIONS
from ec2ir.containment.steps import STEPS, BaseStep
from ec2ir.core.errors import Ec2irError
from ec2ir.evidence.collect import BUCKET_CREATION, EVIDENCE_PERMISSIONS
from ec2ir.evidence.forensics import FORENSICS_PERMISSIONS
from ec2ir.evidence.memory import MEMORY_PERMISSIONS

ENGINE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "identity and discovery": ("sts:GetCallerIdentity", "ec2:DescribeInstances"),
    "forensic, isolation and allow-all groups": (
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSecurityGroupRules",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupEgress",
        # a group that lost the race to be recorded is removed; it was never worn
        "ec2:DeleteSecurityGroup",
        # who wears a group, before its rules are changed (never a group worn outside ec2ir's holds)
        "ec2:DescribeNetworkInterfaces",
    ),
    "state table": (
        "dynamodb:DescribeTable",
        "dynamodb:CreateTable",
        "dynamodb:TagResource",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Scan",
        "dynamodb:Query",  # the case journal
        "dynamodb:BatchWriteItem",  # the case journal, 25 entries a call
        "dynamodb:BatchGetItem",  # the holds of a group's wearers, 100 a call
    ),
    # Creating a KMS-encrypted table with the AWS managed key needs these once.
    "state table encryption": ("kms:DescribeKey", "kms:CreateGrant"),
}

FORENSIC_VOLUMES = "forensic volumes (ec2ir forensics)"
OTHER_ACCOUNTS = "other accounts (--role-name)"
# What the role in a member account needs: everything done to its instances, none of the state
# table (the case's state stays in the responder's account) and no further role to assume.
# The forensic workstation works in the command's own place only.
NOT_IN_MEMBER_ACCOUNTS = frozenset(
    {"state table", "state table encryption", OTHER_ACCOUNTS, FORENSIC_VOLUMES}
)
MEMORY = "memory (--memory)"
# The stack's functions never attach forensic volumes or run commands on instances, so their role
# does not get to delete volumes or send SSM commands.
# The stack brings its own evidence bucket, so its role cannot weaken a bucket's settings either.
# The stack's functions act in their own account only (outbreak.yaml's shard function has a role of
# its own to reach members).
RESPONDER_ONLY = frozenset({FORENSIC_VOLUMES, MEMORY, BUCKET_CREATION, OTHER_ACCOUNTS})

ALLOWED, DENIED, NOT_CHECKED = "allowed", "denied", "not checked"


def actions_by_purpose() -> dict[str, tuple[str, ...]]:
    purposes = dict(ENGINE_PERMISSIONS) | EVIDENCE_PERMISSIONS
    purposes[FORENSIC_VOLUMES] = FORENSICS_PERMISSIONS
    purposes[MEMORY] = MEMORY_PERMISSIONS
    purposes[NACL_PURPOSE] = NACL_PERMISSIONS
    purposes[OTHER_ACCOUNTS] = ("sts:AssumeRole",)
    for step in STEPS:
        purposes[_step_purpose(step)] = step.permissions
    return purposes


def required_actions(member: bool = False) -> list[str]:
    """Every action ec2ir may call; ``member``: those the role it assumes in another account
    needs (``ec2ir permissions --member``)."""
    return sorted(
        {
            action
            for purpose, actions in actions_by_purpose().items()
            if not (member and purpose in NOT_IN_MEMBER_ACCOUNTS)
            for action in actions
            # the journal, the ledger, every hold: all in the responder's account's table
            if not (member and action.startswith("dynamodb:"))
        }
    )


def function_actions() -> list[str]:
    """What the stack's functions use: everything but the commands only a responder runs."""
    return sorted(
        {
            action
            for purpose, actions in actions_by_purpose().items()
            if purpose not in RESPONDER_ONLY
            for action in actions
        }
    )


def isolate_actions() -> list[str]:
    """What the stack's isolate-only functions use (GuardDuty, the scheduled re-check): every
    function action but those only a step's undo calls, i.e. what putting originals back needs.

    An action a step's undo needs is left out only if nothing else needs it too (another step's
    apply, discovery, the groups)."""
    undo_only = {_step_purpose(step): frozenset(step.undo_permissions) for step in STEPS}
    undo_only[NACL_PURPOSE] = frozenset(NACL_UNDO_PERMISSIONS)  # removing a deny entry: release only
    return sorted(
        {
            action
            for purpose, actions in actions_by_purpose().items()
            if purpose not in RESPONDER_ONLY
            for action in actions
            if action not in undo_only.get(purpose, frozenset())
        }
    )


def release_only_actions() -> list[str]:
    """What releasing needs on top of ``isolate_actions()``: restoring the recorded originals
    (the instance profile and its role, --rejoin's Auto Scaling group and load balancers, the
    tags that were not there, the revoke-sessions deny policy). Only the function that releases
    (the stack's custom resource) is granted them. Removing a network ACL deny entry too."""
    return sorted(set(function_actions()) - set(isolate_actions()))


def _step_purpose(step: BaseStep) -> str:
    return f"step {step.name}: {step.title}"


def policy_document(member: bool = False) -> dict[str, Any]:
    """The minimal identity policy for every ec2ir command, one statement per service; ``member``:
    for the role ec2ir assumes in each other account (--role-name)."""
    by_service: dict[str, list[str]] = {}
    for action in required_actions(member):
        by_service.setdefault(action.split(":", 1)[0], []).append(action)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": f"Ec2ir{service.title().replace('-', '')}",
                "Effect": "Allow",
                "Action": actions,
                "Resource": "*",
            }
            for service, actions in sorted(by_service.items())
        ],
    }


def principal_arn(caller_arn: str) -> str:
    """The IAM principal behind an STS caller ARN, as SimulatePrincipalPolicy wants it.

    An assumed-role session ``arn:aws:sts::1:assumed-role/Role/session`` becomes
    ``arn:aws:iam::1:role/Role``; a role with a path cannot be recovered from the session ARN,
    and its actions are then reported as not checked."""
    if ":assumed-role/" in caller_arn:
        partition, account = caller_arn.split(":")[1], caller_arn.split(":")[4]
        role = caller_arn.split(":assumed-role/", 1)[1].split("/", 1)[0]
        return f"arn:{partition}:iam::{account}:role/{role}"  # aws, aws-cn, aws-us-gov alike
    return caller_arn


@dataclass(frozen=True)
class Check:
    action: str
    verdict: str  # allowed, denied or not checked
    how: str  # DryRun, SimulatePrincipalPolicy, or why it was not checked


def simulate(aws: Aws, caller_arn: str, actions: Iterable[str]) -> dict[str, Check]:
    """Ask IAM whether the caller may run each action; where IAM will not say, say so."""
    actions = sorted(set(actions))
    checks: dict[str, Check] = {}
    try:
        for batch in chunks(actions, 100):
            with translated("iam", "SimulatePrincipalPolicy"):
                results = aws.client("iam").simulate_principal_policy(
                    PolicySourceArn=principal_arn(caller_arn), ActionNames=batch
                )["EvaluationResults"]
            for result in results:
                verdict = ALLOWED if result["EvalDecision"] == "allowed" else DENIED
                checks[result["EvalActionName"]] = Check(
                    result["EvalActionName"], verdict, "iam:SimulatePrincipalPolicy"
                )
    except Ec2irError as error:
        why = f"iam:SimulatePrincipalPolicy unavailable ({error.code})"
        return {action: Check(action, NOT_CHECKED, why) for action in actions}
    except NotImplementedError:  # an emulator without IAM simulation
        return {
            action: Check(action, NOT_CHECKED, "iam:SimulatePrincipalPolicy not implemented")
            for action in actions
        }
    for action in actions:
        checks.setdefault(action, Check(action, NOT_CHECKED, "IAM returned no verdict"))
    return checks


def probe_ec2(aws: Aws, operation: str, arguments: dict[str, Any]) -> Check:
    """Run one EC2 call with DryRun=True: EC2 checks the permission and changes nothing."""
    action = f"ec2:{operation}"
    try:
        with translated("ec2", operation):
            getattr(aws.ec2(), method_name(operation))(DryRun=True, **arguments)
    except Ec2irError as error:
        if error.code == "DryRunOperation":
            return Check(action, ALLOWED, "DryRun")
        if error.code in ("UnauthorizedOperation", "AccessDenied"):
            return Check(action, DENIED, "DryRun")
        return Check(action, NOT_CHECKED, f"DryRun answered {error.code}")
    # A DryRun that succeeds would have changed something: never expected from EC2.
    return Check(action, NOT_CHECKED, "DryRun was not honoured")


def preflight(aws: Aws) -> tuple[str, list[tuple[str, str, Check]]]:
    """Peacetime check that these credentials could run every step: (caller, rows).

    IAM's simulator answers for every action where the caller may use it; EC2 DryRun probes
    against a resource that exists in the account answer for the EC2 actions they can reach,
    and take precedence, because they exercise the real authorisation path."""
    caller = aws.caller_arn()
    checks = simulate(aws, caller, required_actions())
    for operation, arguments in _harmless_probes(aws).items():
        check = probe_ec2(aws, operation, arguments)
        if check.verdict != NOT_CHECKED or checks[check.action].verdict == NOT_CHECKED:
            checks[check.action] = check
    rows = [
        (action, purpose, checks[action])
        for purpose, actions in actions_by_purpose().items()
        for action in actions
    ]
    return caller, rows


def _harmless_probes(aws: Aws) -> dict[str, dict[str, Any]]:
    """DryRun arguments naming real resources of this account, where any can be found."""
    ec2 = aws.ec2()
    probes: dict[str, dict[str, Any]] = {"DescribeInstances": {"MaxResults": 5}}
    try:
        with translated("ec2", "DescribeNetworkInterfaces"):
            enis = ec2.describe_network_interfaces(MaxResults=5)["NetworkInterfaces"]
    except Ec2irError:
        enis = []
    for eni in enis[:1]:
        probes["ModifyNetworkInterfaceAttribute"] = {
            "NetworkInterfaceId": eni["NetworkInterfaceId"],
            "Groups": [group["GroupId"] for group in eni.get("Groups", [])],
        }
        probes["CreateSecurityGroup"] = {
            "GroupName": "ec2ir-preflight",
            "Description": "ec2ir preflight",
            "VpcId": eni["VpcId"],
        }
        instance_id = eni.get("Attachment", {}).get("InstanceId")
        if instance_id:
            probes["ModifyInstanceAttribute"] = {
                "InstanceId": instance_id,
                "DisableApiTermination": {"Value": True},
            }
            probes["CreateTags"] = {
                "Resources": [instance_id],
                "Tags": [{"Key": "ec2ir:preflight", "Value": "1"}],
            }
    return probes
