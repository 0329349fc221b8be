"""Compromised fleets built in the emulator, and their ENIs' groups read back independently."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws.session import Aws

AMI = "ami-12c6146b"  # in moto's built-in catalogue


@dataclass
class Fleet:
    """Builds compromised fleets in the emulator and reads ENI groups back independently."""

    aws: Aws
    subnets: dict[str, str] = field(default_factory=dict)

    @property
    def ec2(self) -> Any:
        return self.aws.ec2()

    def vpc(self, second_octet: int) -> str:
        vpc_id = str(self.ec2.create_vpc(CidrBlock=f"10.{second_octet}.0.0/16")["Vpc"]["VpcId"])
        subnet = self.ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.{second_octet}.1.0/24")
        self.subnets[vpc_id] = subnet["Subnet"]["SubnetId"]
        return vpc_id

    def group(self, vpc_id: str, name: str) -> str:
        return str(self.ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"])

    def asg_member(self, vpc_id: str, groups: list[str], name: str = "web-asg") -> str:
        """The one instance of a new Auto Scaling group (launch configuration ``web-lc``, 1 to 3
        instances) in the VPC's subnet."""
        autoscaling = self.aws.client("autoscaling")
        autoscaling.create_launch_configuration(
            LaunchConfigurationName="web-lc", ImageId=AMI, InstanceType="t3.micro", SecurityGroups=groups
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchConfigurationName="web-lc",
            MinSize=1,
            MaxSize=3,
            DesiredCapacity=1,
            VPCZoneIdentifier=self.subnets[vpc_id],
        )
        [group] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return str(group["Instances"][0]["InstanceId"])

    def alb_target_group(self, vpc_id: str, groups: list[str]) -> str:
        """A target group (HTTP 80) behind a new application load balancer across the VPC's subnet
        and a second one: its ARN."""
        other = self.ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.2.0/24", AvailabilityZone="us-east-1b")
        elbv2 = self.aws.client("elbv2")
        balancer = elbv2.create_load_balancer(
            Name="web-alb", Subnets=[self.subnets[vpc_id], other["Subnet"]["SubnetId"]], SecurityGroups=groups
        )["LoadBalancers"][0]
        target_group = str(
            elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc_id)["TargetGroups"][
                0
            ]["TargetGroupArn"]
        )
        elbv2.create_listener(
            LoadBalancerArn=balancer["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}],
        )
        return target_group

    def instance(
        self, vpc_id: str, groups: list[str], extra_enis: list[list[str]] | None = None, image_id: str = AMI
    ) -> str:
        instance_id = str(
            self.ec2.run_instances(
                ImageId=image_id,
                MinCount=1,
                MaxCount=1,
                SubnetId=self.subnets[vpc_id],
                SecurityGroupIds=groups,
            )["Instances"][0]["InstanceId"]
        )
        for index, eni_groups in enumerate(extra_enis or [], start=1):
            self.attach_eni(instance_id, vpc_id, eni_groups, index)
        return instance_id

    def attach_eni(self, instance_id: str, vpc_id: str, groups: list[str], index: int) -> str:
        eni = self.ec2.create_network_interface(SubnetId=self.subnets[vpc_id], Groups=groups)
        eni_id = str(eni["NetworkInterface"]["NetworkInterfaceId"])
        self.ec2.attach_network_interface(
            NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=index
        )
        return eni_id

    def eni_groups(self, instance_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """Every ENI's groups, read through DescribeNetworkInterfaces (not the engine's discovery)."""
        response = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": instance_ids}]
        )
        return {
            eni["NetworkInterfaceId"]: tuple(sorted(g["GroupId"] for g in eni["Groups"]))
            for eni in response["NetworkInterfaces"]
        }

    def group_rules(self, group_id: str) -> set[tuple[bool, str, str]]:
        rules = self.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
        return {
            (
                bool(rule["IsEgress"]),
                f"{rule['IpProtocol']}/{rule.get('FromPort', -1)}",
                rule.get("CidrIpv4") or rule.get("CidrIpv6") or rule["ReferencedGroupInfo"]["GroupId"],
            )
            for rule in rules["SecurityGroupRules"]
        }

    def ec2ir_groups(self) -> list[str]:
        groups = self.ec2.describe_security_groups(Filters=[{"Name": "tag-key", "Values": ["ec2ir:role"]}])
        return [g["GroupId"] for g in groups["SecurityGroups"]]


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
