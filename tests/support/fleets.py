"""Shared test helpers (moved from tests/integration/test_cli_output.py)."""

from __future__ import annotations

import json

from tests.conftest import Fleet


def web_member(fleet: Fleet) -> tuple[str, str]:
    """An Auto Scaling group's instance, registered in a target group (port 8080), with an instance
    profile: every containment step has something to do. Returns it and the target group's ARN."""
    aws = fleet.aws
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance = fleet.asg_member(vpc, [web])
    elbv2 = aws.client("elbv2")
    group = str(
        elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0][
            "TargetGroupArn"
        ]
    )
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instance, "Port": 8080}])
    iam = aws.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance)
    return instance, group
