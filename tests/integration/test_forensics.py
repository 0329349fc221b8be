"""Forensic volumes: the case's snapshots as read-only copies on a forensic workstation, and back.

Every check reads EC2 back on its own (DescribeVolumes, DescribeSnapshots), never the report alone.
Where moto is lenient (it accepts AttachVolume at a device name already in use, replacing the
mapping, and attaches across Availability Zones), the tests check what EC2 would refuse instead:
every device on the workstation stays distinct and its own volumes stay where they were.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.core.errors import UsageError
from ec2ir.engine.facade import Engine
from ec2ir.evidence.forensics import (
    DEVICES,
    FORENSICS_PERMISSIONS,
    attach,
    detach,
    free_devices,
    mount_commands,
    render_attach,
    render_detach,
)
from tests.support.faults import Fault, inject
from tests.support.fleets import Fleet
from tests.support.forensic_scene import ACTOR, CASE, Scene, add_volume, build_scene
from tests.support.recorders import CallRecorder

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def letter(device: str) -> str:
    match = re.match(r"^/dev/(?:sd|xvd)([a-z])", device)
    assert match, device
    return match.group(1)


def snapshot_states(aws: Aws, snapshot_ids: list[str]) -> dict[str, str]:
    answer = aws.ec2().describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
    return {s["SnapshotId"]: s["State"] for s in answer}


# -- attach and detach ----------------------------------------------------------------------------


def test_attach_then_detach_round_trip(scene: Scene) -> None:
    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert report.ok, report.as_dict()
    assert report.availability_zone == scene.workstation_zone
    assert sorted(copy.snapshot_id for copy in report.copies) == scene.snapshots
    copies = {v["VolumeId"]: v for v in scene.copies()}
    assert sorted(copies) == sorted(copy.volume_id for copy in report.copies)
    for copy in report.copies:
        volume = copies[copy.volume_id]
        assert volume["SnapshotId"] == copy.snapshot_id
        assert volume["AvailabilityZone"] == scene.workstation_zone  # not the compromised instance's
        assert tags_of(volume) | {"Name": ""} == {
            "Name": "",
            "ec2ir:case": CASE,
            "ec2ir:role": "forensic-copy",
            "ec2ir:snapshot": copy.snapshot_id,
            "ec2ir:source-instance": scene.compromised,
            "ec2ir:source-device": copy.source_device,
            "ec2ir:workstation": scene.workstation,
        }
        # encrypted as its snapshot is: the data volume is encrypted, the boot volume is not
        assert volume["Encrypted"] is (copy.source_device == "/dev/sdf")
        assert copy.source_device in ("/dev/sda1", "/dev/sdf")

    on_workstation = scene.attached_to_workstation()
    # The workstation's own volumes are still where they were (moto would move them on a clash) ...
    assert scene.workstation_volumes.items() <= on_workstation.items()
    # ... and every device on it names a different attachment point.
    letters = [letter(device) for device in on_workstation.values()]
    assert len(letters) == len(set(letters)) == len(scene.workstation_volumes) + 2
    assert {on_workstation[copy.volume_id] for copy in report.copies} == {"/dev/sdh", "/dev/sdi"}
    assert all(copy.device == on_workstation[copy.volume_id] for copy in report.copies)

    for copy in report.copies:
        mounts = [line for line in copy.mount_commands if " mount " in line]
        assert len(mounts) == 2
        assert all(re.search(r"-o ro,(noload|norecovery,nouuid) ", line) for line in mounts)
        setro = next(i for i, line in enumerate(copy.mount_commands) if "blockdev --setro" in line)
        assert setro < min(copy.mount_commands.index(line) for line in mounts)
        assert copy.volume_id.replace("-", "") in copy.mount_commands[0]
        assert not any(re.search(r"\brw\b|fsck", line) for line in copy.mount_commands)

    undone = detach(scene.aws, scene.store, CASE, ACTOR)

    assert undone.ok, undone.as_dict()
    assert sorted(copy.volume_id for copy in undone.copies) == sorted(copies)
    assert scene.copies() == []
    assert scene.attached_to_workstation() == scene.workstation_volumes
    assert snapshot_states(scene.aws, scene.snapshots) == dict.fromkeys(scene.snapshots, "completed")


def test_attach_twice_makes_no_second_copies(scene: Scene) -> None:
    first = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
    journal = scene.store.journal(CASE)
    volumes = scene.volume_count()

    again = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert again.ok
    assert [(c.volume_id, c.device) for c in again.copies] == [(c.volume_id, c.device) for c in first.copies]
    assert all(copy.result_text.startswith("skipped: already attached") for copy in again.copies)
    assert all(copy.mount_commands for copy in again.copies)  # still told how to mount them
    assert scene.volume_count() == volumes
    assert len(scene.copies()) == 2
    assert scene.store.journal(CASE) == journal  # nothing done, nothing journaled


def test_attach_after_a_failed_attach_reuses_the_copy(scene: Scene) -> None:
    """A copy created but never attached (the attach failed) is attached on the rerun, not made again."""
    fault = inject(scene.aws, Fault("ec2", "AttachVolume", "InvalidParameterValue", times=1))

    failed = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert fault.injected == 1
    assert not failed.ok
    [broken] = [copy for copy in failed.copies if not copy.ok]
    assert broken.result_text.startswith("FAILED: ec2:AttachVolume: InvalidParameterValue")
    assert not broken.mount_commands
    assert [c.ok for c in failed.copies].count(True) == 1
    made = {v["VolumeId"] for v in scene.copies()}
    assert len(made) == 2

    rerun = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert rerun.ok
    assert {v["VolumeId"] for v in scene.copies()} == made
    fixed = next(copy for copy in rerun.copies if copy.snapshot_id == broken.snapshot_id)
    assert fixed.volume_id == broken.volume_id
    assert fixed.result_text.startswith("done:")
    devices = [scene.attached_to_workstation()[copy.volume_id] for copy in rerun.copies]
    assert len(set(devices)) == 2


def test_detach_twice_is_harmless(scene: Scene) -> None:
    attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
    detach(scene.aws, scene.store, CASE, ACTOR)
    journal = scene.store.journal(CASE)

    again = detach(scene.aws, scene.store, CASE, ACTOR)

    assert again.ok
    assert again.copies == []
    assert again.notes == [f"case {CASE} has no forensic copies to detach"]
    assert scene.store.journal(CASE) == journal
    assert snapshot_states(scene.aws, scene.snapshots) == dict.fromkeys(scene.snapshots, "completed")


def test_detach_goes_on_past_a_failed_delete_and_a_rerun_finishes(scene: Scene) -> None:
    attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
    inject(scene.aws, Fault("ec2", "DeleteVolume", "IncorrectState", times=1))

    partly = detach(scene.aws, scene.store, CASE, ACTOR)

    assert [copy.ok for copy in partly.copies].count(False) == 1
    [left] = scene.copies()
    assert left["State"] == "available"  # detached, only the delete failed
    assert scene.attached_to_workstation() == scene.workstation_volumes

    rerun = detach(scene.aws, scene.store, CASE, ACTOR)

    assert rerun.ok
    assert [copy.volume_id for copy in rerun.copies] == [left["VolumeId"]]
    assert rerun.copies[0].result_text.startswith("done: deleted")
    assert scene.copies() == []
    assert snapshot_states(scene.aws, scene.snapshots) == dict.fromkeys(scene.snapshots, "completed")


def test_detach_never_touches_a_volume_without_the_copy_tags(scene: Scene) -> None:
    """A volume made from a case snapshot by hand, with every tag of a copy but the role, stays."""
    ec2 = scene.ec2
    tags = {"ec2ir:case": CASE, "ec2ir:snapshot": scene.snapshots[0], "ec2ir:workstation": scene.workstation}
    by_hand = ec2.create_volume(
        SnapshotId=scene.snapshots[0],
        AvailabilityZone=scene.workstation_zone,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )["VolumeId"]
    attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    report = detach(scene.aws, scene.store, CASE, ACTOR)

    assert by_hand not in [copy.volume_id for copy in report.copies]
    assert ec2.describe_volumes(VolumeIds=[by_hand])["Volumes"][0]["State"] == "available"


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workstation", "case", "message"),
    [
        ("i-nothex!", CASE, "workstation: malformed instance id: 'i-nothex!'"),
        ("", CASE, "workstation: malformed instance id: ''"),
        ("i-0123456789abcdef0", CASE, "workstation i-0123456789abcdef0 not found in us-east-1"),
        (None, "IR-no-such-case", "case IR-no-such-case has no snapshots"),
        (None, "bad case!", "malformed case id 'bad case!'"),
    ],
)
def test_bad_input_is_refused_and_creates_nothing(
    scene: Scene, workstation: str | None, case: str, message: str
) -> None:
    volumes = scene.volume_count()
    journal = scene.store.journal(CASE)

    with pytest.raises(UsageError) as raised:
        attach(scene.aws, scene.store, case, scene.workstation if workstation is None else workstation, ACTOR)

    assert raised.value.message == message
    assert raised.value.exit_code == 2
    assert scene.volume_count() == volumes
    assert scene.store.journal(CASE) == journal


def test_a_compromised_instance_is_never_the_workstation(scene: Scene) -> None:
    volumes = scene.volume_count()

    with pytest.raises(UsageError, match=f"{scene.compromised} is one of case {CASE}'s compromised"):
        attach(scene.aws, scene.store, CASE, scene.compromised, ACTOR)

    assert scene.volume_count() == volumes


@pytest.mark.parametrize("state", ["terminated", "stopped"])
def test_the_workstation_must_be_running_or_stopped(scene: Scene, state: str) -> None:
    if state == "terminated":
        scene.ec2.terminate_instances(InstanceIds=[scene.workstation])
        with pytest.raises(UsageError, match=f"workstation {scene.workstation} is terminated"):
            attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
        assert scene.copies() == []
    else:
        scene.ec2.stop_instances(InstanceIds=[scene.workstation])
        assert attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR).ok


def test_too_few_free_device_names_is_refused_before_any_copy(scene: Scene) -> None:
    for device in DEVICES[2:-1]:  # /dev/sdf and /dev/xvdg are taken already: leave only /dev/sdp
        add_volume(scene.aws, scene.workstation, device)
    volumes = scene.volume_count()

    with pytest.raises(UsageError, match=r"needs 2 device name\(s\) on i-\w+ but only 1 of"):
        attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert scene.volume_count() == volumes


# -- the journal ----------------------------------------------------------------------------------


def test_the_journal_names_every_copy_attached_and_detached(scene: Scene) -> None:
    attached = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
    detached = detach(scene.aws, scene.store, CASE, ACTOR)

    entries = [entry for entry in scene.store.journal(CASE) if entry.action.startswith("forensics:")]
    by_action: dict[str, dict[str, Any]] = {}
    for entry in entries:
        by_action.setdefault(entry.action, {})[entry.target] = entry
    assert set(by_action) == {"forensics:attach", "forensics:detach"}
    for action, report in (("forensics:attach", attached), ("forensics:detach", detached)):
        assert sorted(by_action[action]) == sorted(copy.volume_id for copy in report.copies)
        for copy in report.copies:
            entry = by_action[action][copy.volume_id]
            assert entry.result == copy.result_text
            assert entry.result.startswith("done:")
            assert entry.actor == ACTOR
            assert entry.request_ids  # the AWS calls behind it
            [ref] = entry.evidence
            assert (ref.kind, ref.location) == ("snapshot", copy.snapshot_id)
            assert ref.details["copy"] == copy.volume_id
            assert ref.details["workstation"] == scene.workstation
    assert "kept" in next(iter(by_action["forensics:detach"].values())).result


def test_a_failed_copy_is_journaled_as_failed(scene: Scene) -> None:
    inject(scene.aws, Fault("ec2", "CreateVolume", "InsufficientVolumeCapacity", times=1))

    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    [failed] = [entry for entry in scene.store.journal(CASE) if not entry.ok]
    assert failed.action == "forensics:attach"
    assert failed.target == scene.workstation  # no volume was made
    assert failed.result.startswith("FAILED: ec2:CreateVolume: InsufficientVolumeCapacity")
    assert len(scene.copies()) == 1
    assert not report.ok
    assert "FAILED: ec2:CreateVolume: InsufficientVolumeCapacity" in render_attach(report)


# -- end to end, and the parts ----------------------------------------------------------------------


def test_isolate_then_attach_the_snapshots_it_took(aws: Aws, fleet: Fleet, engine: Engine) -> None:
    built = build_scene(aws, fleet)
    other = fleet.instance(built.vpc, [fleet.group(built.vpc, "other")])
    isolated = engine.isolate([built.compromised], CASE)
    engine.isolate([other], "IR-other")
    [result] = isolated.results
    assert result.steps["snapshots"].startswith("done: 2 snapshot(s)"), result.as_dict()

    report = attach(aws, built.store, CASE, built.workstation, ACTOR)

    assert report.ok, report.as_dict()
    assert {copy.source_device for copy in report.copies} == {"/dev/sda1", "/dev/sdf"}
    assert {copy.source_instance for copy in report.copies} == {built.compromised}
    with pytest.raises(UsageError, match=f"{other} is held as compromised by case IR-other"):
        attach(aws, built.store, CASE, other, ACTOR)
    assert detach(aws, built.store, CASE, ACTOR).ok
    assert built.copies() == []


def test_free_devices_know_a_letter_by_either_name() -> None:
    mappings = [{"DeviceName": name} for name in ("/dev/sda1", "/dev/xvdf", "/dev/sdg", "xvdh")]
    assert free_devices(mappings)[:2] == ["/dev/sdi", "/dev/sdj"]
    assert free_devices([{"DeviceName": d} for d in DEVICES]) == []
    assert free_devices([]) == list(DEVICES)


def test_mount_commands_find_the_copy_by_serial_or_xen_name() -> None:
    lines = mount_commands("IR 1", "vol-0abc", "/dev/sdh")
    assert '$2=="vol0abc"' in lines[0]
    assert "DISK=${DISK:-/dev/xvdh}" in lines[0]
    assert "'/mnt/ec2ir/IR 1/vol-0abc'" in lines[-1]  # quoted for the shell


def test_the_renderings_say_what_was_done(scene: Scene) -> None:
    attached = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
    text = render_attach(attached)
    for copy in attached.copies:
        assert copy.volume_id in text and copy.snapshot_id in text
    assert "ro,noload" in text and "ro,norecovery,nouuid" in text and "lsblk -o NAME,SERIAL" in text
    assert f"case {CASE}: 2 copy(ies) on {scene.workstation} ({scene.workstation_zone}), 0 failed" in text

    detached = render_detach(detach(scene.aws, scene.store, CASE, ACTOR))
    assert "2 copy(ies) detached and deleted, 0 failed; the snapshots are kept" in detached
    assert attached.as_dict()["copies"][0]["mount_commands"]


def test_the_permissions_cover_every_call_attach_and_detach_make(scene: Scene) -> None:
    recorder = CallRecorder(scene.aws)

    attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)
    detach(scene.aws, scene.store, CASE, ACTOR)

    # Tagging on create is authorised as ec2:CreateTags, which is never called on its own.
    assert recorder.actions() | {"ec2:CreateTags"} == set(FORENSICS_PERMISSIONS)
    # Encrypted is asked for the encrypted snapshot only, never set to false: an account that
    # encrypts by default keeps doing so for the unencrypted one.
    encrypted = {
        params["SnapshotId"]: params.get("Encrypted")
        for action, params in recorder.calls
        if action == "ec2:CreateVolume"
    }
    states = {
        s["SnapshotId"]: s["Encrypted"]
        for s in scene.ec2.describe_snapshots(SnapshotIds=scene.snapshots)["Snapshots"]
    }
    assert encrypted == {snapshot: True if states[snapshot] else None for snapshot in scene.snapshots}
    assert sorted(states.values()) == [False, True]
