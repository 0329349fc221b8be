"""Contained means contained: what an attacker with a shell (and often the instance's role) can
touch never steers ec2ir. Each test here is an attack that worked before its fix."""

from __future__ import annotations

from typing import Any

import pytest

from ec2ir.engine import Engine
from ec2ir.groups import GROUP_NAMES, ISOLATION, ROLE_TAG
from ec2ir.steps import Options
from tests.conftest import Fleet

CASE = "IR-12"
OFFICE = "203.0.113.0/24"
QUIET = Options(evidence=False)


def tag(fleet: Fleet, group_id: str, role: str) -> None:
    """What anyone with ec2:CreateTags (a stolen instance role included) can do."""
    fleet.ec2.create_tags(Resources=[group_id], Tags=[{"Key": ROLE_TAG, "Value": role}])


def rules(fleet: Fleet, group_id: str) -> set[tuple[bool, str, str]]:
    return fleet.group_rules(group_id)


def open_to(fleet: Fleet, group_id: str, cidr: str) -> None:
    fleet.ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": cidr}]}],
    )


@pytest.mark.parametrize("role", ["allow-all", "isolation", "forensic"])
def test_a_production_group_tagged_as_ec2irs_is_left_untouched(
    engine: Engine, fleet: Fleet, role: str
) -> None:
    vpc = fleet.vpc(1)
    production = fleet.group(vpc, "production")
    open_to(fleet, production, "10.1.0.0/16")
    bystander = fleet.instance(vpc, [production])
    tag(fleet, production, role)
    before = rules(fleet, production)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([victim], CASE, office_cidr=OFFICE, options=QUIET)

    assert report.results[0].ok, report.results[0].detail
    assert rules(fleet, production) == before  # neither opened, emptied nor made the SSH source
    groups = report.groups[vpc]
    assert production not in {groups.forensic_group_id, groups.isolation_group_id, groups.allow_all_group_id}
    assert (False, "tcp/22", production) not in rules(fleet, groups.isolation_group_id)
    assert any(production in note and "left untouched" in note for note in report.notes), report.notes
    assert fleet.eni_groups([bystander]) and set(fleet.eni_groups([bystander]).values()) == {(production,)}


def test_a_victim_whose_own_group_is_tagged_isolation_is_still_contained_and_restored(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    own = fleet.group(vpc, "web")
    victim = fleet.instance(vpc, [own])
    tag(fleet, own, ISOLATION)  # the attacker's attempt to make ec2ir refuse

    report = engine.isolate([victim], CASE, options=QUIET)

    assert report.results[0].ok, report.results[0].detail
    isolation = report.groups[vpc].isolation_group_id
    assert set(fleet.eni_groups([victim]).values()) == {(isolation,)}
    engine.release([victim], CASE)
    assert set(fleet.eni_groups([victim]).values()) == {(own,)}


def test_ec2irs_groups_are_found_by_record_even_when_their_tags_are_removed(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET).groups[vpc]
    fleet.ec2.delete_tags(Resources=[first.isolation_group_id], Tags=[{"Key": ROLE_TAG}])

    second = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET)

    assert second.groups[vpc].isolation_group_id == first.isolation_group_id
    assert second.groups[vpc].created == ()


def legacy_group(fleet: Fleet, vpc: str, role: str) -> str:
    """A group as an earlier ec2ir made it: its exact name and its tag, nothing recorded."""
    group_id = str(
        fleet.ec2.create_security_group(
            GroupName=GROUP_NAMES[role],
            Description="made by an earlier ec2ir",
            VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": ROLE_TAG, "Value": role}]}],
        )["GroupId"]
    )
    return group_id


def make_allow_all(fleet: Fleet, group_id: str) -> None:
    everything: list[dict[str, Any]] = [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
    ]
    fleet.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=everything)
    fleet.ec2.authorize_security_group_egress(
        GroupId=group_id, IpPermissions=[{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]
    )


def test_an_earlier_versions_group_is_adopted_once_when_its_rules_are_exactly_ec2irs(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    legacy = legacy_group(fleet, vpc, "allow-all")
    make_allow_all(fleet, legacy)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([victim], CASE, options=QUIET)

    assert report.groups[vpc].allow_all_group_id == legacy
    assert any("adopted" in note and legacy in note for note in report.notes), report.notes
    again = engine.isolate([fleet.instance(vpc, [fleet.group(vpc, "db")])], CASE, options=QUIET)
    assert again.groups[vpc].allow_all_group_id == legacy
    assert not any("adopted" in note for note in again.notes)  # once: it is recorded now


def test_an_earlier_versions_group_worn_by_a_foreign_eni_is_never_adopted(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    legacy = legacy_group(fleet, vpc, "allow-all")
    make_allow_all(fleet, legacy)
    bystander = fleet.instance(vpc, [legacy])
    before = rules(fleet, legacy)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([victim], CASE, options=QUIET)

    assert report.groups[vpc].allow_all_group_id != legacy
    assert rules(fleet, legacy) == before
    assert set(fleet.eni_groups([bystander]).values()) == {(legacy,)}


def test_a_drifted_isolation_group_worn_by_a_foreign_eni_is_replaced_not_changed(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET).groups[vpc]
    outsider = fleet.instance(vpc, [first.isolation_group_id])  # put there by hand, not held by ec2ir
    open_to(fleet, first.isolation_group_id, "10.1.0.0/16")
    drifted = rules(fleet, first.isolation_group_id)

    report = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET)

    replacement = report.groups[vpc].isolation_group_id
    assert replacement != first.isolation_group_id
    assert rules(fleet, first.isolation_group_id) == drifted  # someone else's traffic: not ours to change
    assert set(fleet.eni_groups([outsider]).values()) == {(first.isolation_group_id,)}
    assert (True, "-1/-1", "0.0.0.0/0") not in rules(fleet, replacement)
    assert any("replaced by a new group" in note for note in report.notes), report.notes
    # the first victim, still in the retired group, is recognised as held, never as an original
    assert first.isolation_group_id in report.groups[vpc].containment_group_ids
