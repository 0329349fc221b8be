"""Shared test helpers (moved from tests/integration/test_forensics.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ec2ir.aws.session import Aws, discover
from ec2ir.core.models import JournalEntry
from ec2ir.evidence.snapshots import take_snapshots
from ec2ir.store.items import now
from ec2ir.store.state import StateStore
from tests.support.fleets import AMI, Fleet

CASE = "IR-2026-0042"
ACTOR = "arn:aws:iam::123456789012:user/responder"


@dataclass
class Scene:
    """A compromised instance with a boot and a data volume, and a workstation in another AZ that
    already has two volumes of its own at /dev/sdf and /dev/xvdg."""

    aws: Aws
    store: StateStore
    vpc: str
    compromised: str
    workstation: str
    workstation_zone: str
    workstation_volumes: dict[str, str]  # volume id -> device, before any attach
    snapshots: list[str]

    @property
    def ec2(self) -> Any:
        return self.aws.ec2()

    def attached_to_workstation(self) -> dict[str, str]:
        """Volume id -> device of everything on the workstation, read from the volumes' side."""
        volumes = self.ec2.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.workstation]}]
        )["Volumes"]
        return {
            v["VolumeId"]: a["Device"]
            for v in volumes
            for a in v["Attachments"]
            if a["InstanceId"] == self.workstation
        }

    def copies(self) -> list[dict[str, Any]]:
        return list(
            self.ec2.describe_volumes(Filters=[{"Name": "tag:ec2ir:role", "Values": ["forensic-copy"]}])[
                "Volumes"
            ]
        )

    def volume_count(self) -> int:
        return len(self.ec2.describe_volumes()["Volumes"])


def zone_of(aws: Aws, instance_id: str) -> str:
    return str(discover(aws, [instance_id])[instance_id].description["Placement"]["AvailabilityZone"])


def journaled_scene(aws: Aws, fleet: Fleet) -> Scene:
    """The scene with the case's snapshots taken directly and journaled, as ``isolate`` takes and
    journals them after the cut."""
    built = build_scene(aws, fleet)
    facts = discover(aws, [built.compromised])[built.compromised]
    refs = take_snapshots(aws, CASE, facts, episode="2026-11-28T06:20:00.000+00:00", refs=[])
    built.store.append(
        [
            JournalEntry(
                now(), CASE, ACTOR, built.compromised, "isolate:snapshots", "done: 2", evidence=tuple(refs)
            )
        ]
    )
    built.snapshots = sorted(ref.location for ref in refs)
    assert len(built.snapshots) == 2  # boot and data volume
    return built


def build_scene(aws: Aws, fleet: Fleet) -> Scene:
    vpc = fleet.vpc(1)
    group = fleet.group(vpc, "web")
    compromised = fleet.instance(vpc, [group])
    add_volume(aws, compromised, "/dev/sdf", encrypted=True)
    workstation = workstation_in_other_zone(fleet, vpc, group, zone_of(aws, compromised))
    add_volume(aws, workstation, "/dev/sdf")
    add_volume(aws, workstation, "/dev/xvdg")  # the Xen name of /dev/sdg: that letter is taken too
    store = StateStore(aws)
    store.ensure_table()
    scene = Scene(aws, store, vpc, compromised, workstation, zone_of(aws, workstation), {}, [])
    scene.workstation_volumes = scene.attached_to_workstation()
    return scene


def add_volume(aws: Aws, instance_id: str, device: str, encrypted: bool = False) -> str:
    ec2 = aws.ec2()
    volume_id = str(
        ec2.create_volume(Size=4, AvailabilityZone=zone_of(aws, instance_id), Encrypted=encrypted)["VolumeId"]
    )
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
    return volume_id


def workstation_in_other_zone(fleet: Fleet, vpc_id: str, group: str, not_zone: str) -> str:
    ec2 = fleet.ec2
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    zone = next(z for z in zones if z != not_zone)
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.1.2.0/24", AvailabilityZone=zone)["Subnet"]
    return str(
        ec2.run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"], SecurityGroupIds=[group]
        )["Instances"][0]["InstanceId"]
    )
