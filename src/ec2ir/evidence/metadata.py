"""The instance's metadata captured as evidence: what ec2ir is about to change, from the reads of the
run's first round trip, and what it never changes (its groups' rules, the console output and
screenshot), read after the cut."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ec2ir.aws.session import Aws, translated
from ec2ir.core.errors import AwsError, Ec2irError
from ec2ir.core.models import InstanceFacts
from ec2ir.evidence.s3 import (
    as_json,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import SecurityGroupTypeDef

SCREENSHOT_UNSUPPORTED = frozenset(
    {"UnsupportedOperation", "InvalidParameterValue", "UnsupportedInstanceType"}
)


@dataclass(frozen=True)
class Item:
    """One piece of captured metadata: its bytes, or why it could not be collected."""

    name: str
    body: bytes = b""
    content_type: str = "application/json"
    extension: str = "json"
    why_not: str = ""


# The object each metadata item is stored as, in metadata_items' order (for plans).
METADATA_FILES = (
    "describe-instances.json",
    "network.json",
    "volumes.json",
    "iam.json",
    "memberships.json",
    "console-output.json",
    "console-screenshot.jpg",
)


def metadata_items(aws: Aws, facts: InstanceFacts, lookups: dict[str, Any], volumes: Item) -> list[Item]:
    """Every metadata item of one instance, in a fixed order; a read that fails becomes an item
    that says why, and the other items are still collected."""
    memberships = {
        "auto_scaling_group": lookups.get("autoscaling"),
        "load_balancers": lookups.get("load-balancers") or {"target_groups": [], "classic": []},
    }
    readers: list[tuple[str, Callable[[], Item]]] = [
        ("describe-instances", lambda: Item("describe-instances", as_json(facts.description))),
        ("network", lambda: _network(aws, facts)),
        ("volumes", lambda: volumes),
        ("iam", lambda: _iam(aws, lookups.get("credentials"))),
        ("memberships", lambda: Item("memberships", as_json(memberships))),
        ("console-output", lambda: _console_output(aws, facts.instance_id)),
        ("console-screenshot", lambda: _console_screenshot(aws, facts.instance_id)),
    ]
    items: list[Item] = []
    for name, read in readers:
        try:
            items.append(read())
        except Ec2irError as error:
            items.append(Item(name, why_not=str(error)))
        except Exception as error:  # an unreadable answer loses this item, never the others
            items.append(Item(name, why_not=f"{type(error).__name__}: {error}"))
    return items


def _network(aws: Aws, facts: InstanceFacts) -> Item:
    group_ids = sorted({group for eni in facts.enis for group in eni.group_ids})
    groups: list[SecurityGroupTypeDef] = []
    if group_ids:
        with translated("ec2", "DescribeSecurityGroups"):
            for page in aws.ec2().get_paginator("describe_security_groups").paginate(GroupIds=group_ids):
                groups.extend(page.get("SecurityGroups", []))
    return Item(
        "network",
        as_json(
            {
                "network_interfaces": facts.description.get("NetworkInterfaces", []),
                "security_groups": groups,
            }
        ),
    )


def _iam(aws: Aws, association: dict[str, Any] | None) -> Item:
    if not association:
        return Item("iam", as_json({"association": None}))
    profile_name = association["profile_arn"].rsplit("/", 1)[-1]
    iam = aws.client("iam")
    with translated("iam", "GetInstanceProfile"):
        profile = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    roles: dict[str, Any] = {}
    for role in profile.get("Roles", []):
        name = role["RoleName"]
        with translated("iam", "ListAttachedRolePolicies"):
            attached = iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", [])
        with translated("iam", "ListRolePolicies"):
            inline = iam.list_role_policies(RoleName=name).get("PolicyNames", [])
        roles[name] = {"attached_policies": attached, "inline_policy_names": inline}
    return Item("iam", as_json({"association": association, "instance_profile": profile, "roles": roles}))


def _console_output(aws: Aws, instance_id: str) -> Item:
    ec2 = aws.ec2()
    try:
        with translated("ec2", "GetConsoleOutput"):
            answer = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    except AwsError as error:
        if error.code not in SCREENSHOT_UNSUPPORTED:
            raise
        # Latest=true exists only on Nitro instances; others give the last boot's buffer.
        with translated("ec2", "GetConsoleOutput"):
            answer = ec2.get_console_output(InstanceId=instance_id)
    encoded = answer.get("Output") or ""
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8", "replace")
    except ValueError:  # kept as given rather than lost
        text = encoded
    return Item(
        "console-output",
        as_json({"instance_id": instance_id, "timestamp": answer.get("Timestamp"), "output": text}),
    )


def _console_screenshot(aws: Aws, instance_id: str) -> Item:
    try:
        with translated("ec2", "GetConsoleScreenshot"):
            answer = aws.ec2().get_console_screenshot(InstanceId=instance_id, WakeUp=True)
    except AwsError as error:
        return Item("console-screenshot", why_not=f"the instance gives no screenshot ({error.code}: {error})")
    return Item(
        "console-screenshot",
        base64.b64decode(answer["ImageData"]),
        content_type="image/jpeg",
        extension="jpg",
    )
