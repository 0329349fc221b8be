"""The flags of a run across places, parsed without AWS: --regions and --role-name."""

from __future__ import annotations

import argparse

import pytest

from ec2ir.cli.options import region_list, role_name


def test_regions_are_a_comma_list_of_region_names_or_all() -> None:
    assert region_list("us-east-1, eu-west-1,us-east-1") == ("us-east-1", "eu-west-1")  # repeats once
    assert region_list("all") == ("all",)
    assert region_list("us-gov-west-1,cn-north-1") == ("us-gov-west-1", "cn-north-1")
    for bad in (
        "",
        ",",
        "all,us-east-1",
        "US-EAST-1",
        "us-east",
        "us-east-1;rm -rf /",
        "eu-west-1\x1b[2J",
    ):
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            region_list(bad)
        assert "\x1b" not in str(refused.value)


def test_role_names_are_iam_s_with_an_optional_path() -> None:
    assert role_name("") == ""  # none: another account is then refused before anything changes
    assert role_name("ec2ir-responder") == "ec2ir-responder"
    assert role_name("/ir/ec2ir-responder") == "ir/ec2ir-responder"
    assert role_name("a+b=c,d.e@f_g-h") == "a+b=c,d.e@f_g-h"
    for bad in ("ec2ir responder", "x" * 65, "role/../../admin*", "name\x1b[2J", "*", "rôle", "ec2ir\n"):
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            role_name(bad)
        assert "\x1b" not in str(refused.value)


def test_the_member_role_s_policy_has_no_table_and_no_forensic_volumes() -> None:
    from ec2ir.permissions.policy import required_actions

    member = set(required_actions(member=True))

    assert not {a for a in member if a.startswith("dynamodb:")}  # the state is the responder's
    assert not member & {"ec2:CreateVolume", "ec2:AttachVolume", "ec2:DeleteVolume", "sts:AssumeRole"}
    assert {"ec2:ModifyNetworkInterfaceAttribute", "ec2:CreateSnapshots", "s3:PutObject"} <= member
