"""Crash-consistent snapshots of every attached volume, tagged with the case, the instance and the
episode so that a rerun after a crash finds them instead of taking them again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ec2ir.aws.session import Aws, chunks, patiently, translated
from ec2ir.core.models import EvidenceRef, InstanceFacts

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef, SnapshotInfoTypeDef, SnapshotTypeDef, VolumeTypeDef

TAG_CASE, TAG_INSTANCE, TAG_EPISODE = "ec2ir:case", "ec2ir:instance", "ec2ir:episode"
TAG_VOLUME, TAG_DEVICE, TAG_TAKEN_AT = "ec2ir:volume", "ec2ir:device", "ec2ir:taken-at"


def volumes_of(aws: Aws, instance_ids: list[str]) -> dict[str, list[VolumeTypeDef]]:
    """Every volume attached to the named instances, by instance: one batched read."""
    found: dict[str, list[VolumeTypeDef]] = {}
    paginator = aws.ec2().get_paginator("describe_volumes")
    with translated("ec2", "DescribeVolumes"):
        for batch in chunks(instance_ids, 200):
            for page in paginator.paginate(Filters=[{"Name": "attachment.instance-id", "Values": batch}]):
                for volume in page.get("Volumes", []):
                    for attachment in volume.get("Attachments", []):
                        if attachment.get("InstanceId") in batch:
                            found.setdefault(attachment["InstanceId"], []).append(volume)
    return found


def existing_snapshots(aws: Aws, case_id: str, instance_id: str, episode: str) -> list[SnapshotTypeDef]:
    """Snapshots this episode already took of the instance (a rerun after a crash finds them)."""
    filters: list[FilterTypeDef] = [
        {"Name": f"tag:{TAG_CASE}", "Values": [case_id]},
        {"Name": f"tag:{TAG_INSTANCE}", "Values": [instance_id]},
        {"Name": f"tag:{TAG_EPISODE}", "Values": [episode]},
    ]
    with translated("ec2", "DescribeSnapshots"):
        return [
            snapshot
            for page in aws.ec2()
            .get_paginator("describe_snapshots")
            .paginate(OwnerIds=["self"], Filters=filters)
            for snapshot in page.get("Snapshots", [])
        ]


def take_snapshots(
    aws: Aws, case_id: str, facts: InstanceFacts, episode: str, refs: list[EvidenceRef]
) -> list[EvidenceRef]:
    """One crash-consistent CreateSnapshots of every attached volume, boot included, tagged with
    the case, instance, episode and time, then each with its own volume and device.

    Each snapshot joins ``refs`` as soon as it exists, so that a failure while tagging it never
    hides it from the journal."""
    found: Sequence[SnapshotTypeDef | SnapshotInfoTypeDef] = existing_snapshots(
        aws, case_id, facts.instance_id, episode
    )
    if not found:
        found = _create_snapshots(aws, case_id, facts.instance_id, episode)
    devices = {volume.volume_id: volume.device_name for volume in facts.volumes}
    for snapshot in sorted(found, key=lambda s: devices.get(s.get("VolumeId", ""), "")):
        refs.append(_snapshot_ref(snapshot, facts.instance_id, devices))
    for snapshot in found:
        volume_id = snapshot.get("VolumeId", "")
        if _tags_of(snapshot).get(TAG_VOLUME) != volume_id:
            _tag(aws, snapshot["SnapshotId"], {TAG_VOLUME: volume_id, TAG_DEVICE: devices.get(volume_id, "")})
    return refs


def _create_snapshots(aws: Aws, case_id: str, instance_id: str, episode: str) -> list[SnapshotInfoTypeDef]:
    """The CreateSnapshots call, each snapshot tagged on creation with the case, instance, episode
    and time (and the tags it copies from its volume)."""
    tags = {
        TAG_CASE: case_id,
        TAG_INSTANCE: instance_id,
        TAG_EPISODE: episode,
        TAG_TAKEN_AT: datetime.now(UTC).isoformat(timespec="seconds"),
    }

    def create() -> list[SnapshotInfoTypeDef]:
        with translated("ec2", "CreateSnapshots"):
            return list(
                aws.ec2().create_snapshots(
                    InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
                    Description=f"ec2ir case {case_id}: {instance_id}",
                    TagSpecifications=[
                        {
                            "ResourceType": "snapshot",
                            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                        }
                    ],
                    CopyTagsFromSource="volume",
                )["Snapshots"]
            )

    created = patiently(create, sleep=aws.sleep)
    # Should the answer leave out the tags just set, the journal still reads the taken-at time from them.
    for snapshot in created:
        snapshot.setdefault("Tags", [{"Key": k, "Value": v} for k, v in tags.items()])
    return created


def _snapshot_ref(
    snapshot: SnapshotTypeDef | SnapshotInfoTypeDef, instance_id: str, devices: dict[str, str]
) -> EvidenceRef:
    """The journal's reference to one snapshot: its volume, that volume's device and when it was taken."""
    volume_id = snapshot.get("VolumeId", "")
    return EvidenceRef(
        kind="snapshot",
        location=snapshot["SnapshotId"],
        details={
            "volume_id": volume_id,
            "device": devices.get(volume_id, ""),
            "taken_at": _tags_of(snapshot).get(TAG_TAKEN_AT, ""),
            "instance_id": instance_id,
        },
    )


def _tags_of(snapshot: SnapshotTypeDef | SnapshotInfoTypeDef) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in snapshot.get("Tags", [])}


def _tag(aws: Aws, resource: str, tags: dict[str, str]) -> None:
    def create() -> None:
        with translated("ec2", "CreateTags"):
            aws.ec2().create_tags(
                Resources=[resource], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )

    patiently(create, sleep=aws.sleep)


def wait_for_snapshots(
    aws: Aws, snapshot_ids: list[str], progress: Callable[[int, int], None] | None = None, delay: float = 5.0
) -> dict[str, str]:
    """Poll until every snapshot is completed or failed; returns each one's final state."""
    states: dict[str, str] = {}
    while True:
        pending = [
            snapshot for snapshot in snapshot_ids if states.get(snapshot) not in ("completed", "error")
        ]
        for batch in chunks(pending, 200):
            with translated("ec2", "DescribeSnapshots"):
                for page in aws.ec2().get_paginator("describe_snapshots").paginate(SnapshotIds=batch):
                    for snapshot in page.get("Snapshots", []):
                        states[snapshot["SnapshotId"]] = snapshot.get("State", "pending")
        done = sum(states.get(s) in ("completed", "error") for s in snapshot_ids)
        if progress:
            progress(done, len(snapshot_ids))
        if done == len(snapshot_ids):
            return states
        aws.sleep(delay)
