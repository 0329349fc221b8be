"""GuardDuty auto-containment across the organisation: a GuardDuty administrator account receives
its member accounts' findings too, and with the stack's MemberRoleName the function contains a
member's instance in its own account, through the role it trusts; without it, as before, only its
own account's."""

from __future__ import annotations

import json
from typing import Any

from ec2ir.aws.session import Aws
from ec2ir.core.models import HoldStatus, Place
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.engine.facade import Engine
from ec2ir.handlers import guardduty
from ec2ir.store.state import StateStore
from tests.support.outbreak import MEMBER, ROLE, outbreak_scene
from tests.support.stack import FIXTURES

HOME = "123456789012"


def member_finding(instance_id: str, account: str = MEMBER, region: str = "us-east-1") -> dict[str, Any]:
    event: dict[str, Any] = json.loads((FIXTURES / "ec2_backdoor_high.json").read_text())
    event["detail"]["resource"]["instanceDetails"]["instanceId"] = instance_id
    event["detail"]["accountId"] = account
    event["detail"]["region"] = region
    return event


def contain(aws: Aws, event: dict[str, Any], member_role: str) -> dict[str, Any]:
    return guardduty.handle(
        event,
        lambda: Engine(aws, StateStore(aws), concurrency=4),
        threshold=7.0,
        own_account=HOME,
        own_region="us-east-1",
        office_cidr="203.0.113.7",
        forensic_group="sg-0123456789abcdef0",  # the stack's, in its own VPC: never a member's
        member_role=member_role,
    )


def test_a_member_account_s_finding_contains_its_instance_there_through_the_member_role(aws: Aws) -> None:
    scene = outbreak_scene(aws)
    member = next(i for i in scene.infected if i.place == Place(MEMBER, "us-east-1"))

    outcome = contain(aws, member_finding(member.instance_id), ROLE)

    assert outcome["outcome"] == "contained", outcome
    assert scene.groups_now(member) != {member.group_id}
    [hold] = [
        h for h in StateStore(aws).holds_everywhere(outcome["case"]) if h.instance_id == member.instance_id
    ]
    assert (hold.place, hold.status) == (member.place, HoldStatus.ISOLATED)
    again = contain(aws, member_finding(member.instance_id), ROLE)
    assert again["outcome"] == "already-held", again


def test_without_the_member_role_a_member_s_finding_is_ignored_as_before(aws: Aws) -> None:
    scene = outbreak_scene(aws)
    member = next(i for i in scene.infected if i.place == Place(MEMBER, "us-east-1"))

    outcome = contain(aws, member_finding(member.instance_id), "")

    assert outcome["outcome"] == "ignored"
    assert f"account {MEMBER}" in outcome["reason"]
    assert scene.groups_now(member) == {member.group_id}


def test_a_finding_naming_no_real_account_is_ignored(aws: Aws) -> None:
    outcome = contain(aws, member_finding("i-0123456789abcdef0", account="2222-evil\x1b[2J"), ROLE)

    assert outcome["outcome"] == "ignored"
    assert "is not an account id" in outcome["reason"] and "\x1b" not in outcome["reason"]


def test_the_scheduled_recheck_repairs_a_member_account_s_breach_there(
    aws: Aws, emulator: InProcessEmulator, monkeypatch: Any
) -> None:
    from ec2ir.handlers import engine_from_environment, recheck

    scene = outbreak_scene(aws)
    member = next(i for i in scene.infected if i.place == Place(MEMBER, "us-east-1"))
    assert contain(aws, member_finding(member.instance_id), ROLE)["outcome"] == "contained"
    fleet = scene.fleet(member.place)
    [eni] = fleet.eni_groups([member.instance_id])
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[member.group_id])
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint_url)  # the function's own clients, here
    environment = {"EC2IR_TABLE": "ec2ir-state", "AWS_REGION": "us-east-1", "EC2IR_MEMBER_ROLE_NAME": ROLE}

    outcome = recheck.handle(lambda: engine_from_environment(environment), None)

    assert "breaches" in outcome, outcome
    assert [b["subject"] for b in outcome["breaches"]] == [member.instance_id]
    assert outcome["ok"], outcome
    assert scene.groups_now(member) != {member.group_id}
