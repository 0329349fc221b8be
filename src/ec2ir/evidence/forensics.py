"""Forensic volumes: the case's snapshots as read-only disks on a separate forensic workstation.

``attach`` creates one volume from each of the case's snapshots in the workstation's Availability
Zone, attaches them at free device names and says how to mount them read-only; ``detach`` detaches
and deletes those volumes. The volumes are working copies, found again by their tags, so both
commands can be rerun safely. The snapshots are the evidence: nothing here ever deletes one.

The case's snapshots are the ones its journal names, not the ones tagged with it: anyone who may
tag a snapshot in the account (the attacker included) can tag one with the case, and whatever
attach copies ends up on the forensic workstation. A snapshot is copied only when the journal's
entry for it (written by isolate or collect when it took the snapshot) agrees with EC2 on the
volume it was taken of and with its instance tag; a snapshot tagged with the case that the journal
does not name is left alone and named in a note. Every text shown is passed through
``ec2ir.core.text.printable``, and the mount commands hold only values ec2ir checked or quoted itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from ec2ir.aws.session import Aws, chunks, discover, patiently, request_ids, translated
from ec2ir.core import validate
from ec2ir.core.errors import AwsError, Ec2irError, StateTableError, UsageError
from ec2ir.core.models import ACTIVE_STATUSES, EvidenceRef, InstanceFacts, JournalEntry
from ec2ir.core.outcomes import Outcome, StepStatus
from ec2ir.core.text import printable, table
from ec2ir.evidence.snapshots import TAG_CASE, TAG_INSTANCE
from ec2ir.store.items import now
from ec2ir.store.state import StateStore

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        SnapshotTypeDef,
        VolumeAttachmentTypeDef,
        VolumeTypeDef,
        WaiterConfigTypeDef,
    )

FORENSICS_PERMISSIONS: tuple[str, ...] = (
    "ec2:DescribeSnapshots",
    "ec2:DescribeInstances",
    "ec2:DescribeVolumes",
    "ec2:CreateVolume",
    "ec2:CreateTags",  # tagging on create (TagSpecifications) is authorised as CreateTags
    "ec2:AttachVolume",
    "ec2:DetachVolume",
    "ec2:DeleteVolume",
    "dynamodb:GetItem",  # is the workstation itself held by a case?
    "dynamodb:Query",  # the case journal: which snapshots are the case's
    "dynamodb:BatchWriteItem",  # the case journal
)

TAG_ROLE, ROLE_COPY = "ec2ir:role", "forensic-copy"
TAG_SNAPSHOT, TAG_WORKSTATION = "ec2ir:snapshot", "ec2ir:workstation"
TAG_SOURCE_INSTANCE, TAG_SOURCE_DEVICE = "ec2ir:source-instance", "ec2ir:source-device"

# AWS recommends /dev/sd[f-p] for EBS data volumes on Linux.
DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")
# /dev/sdf and /dev/xvdf name the same attachment point, so a name is known by its letter.
DEVICE_LETTER = re.compile(r"^(?:/dev/)?(?:sd|xvd)([a-z]+)\d*$")
VOLUME_ID = re.compile(r"^vol-[0-9a-f]+$")
TAG_VALUE_LIMIT = 256
# The journal entries of the steps that take snapshots (the engine's "<verb>:snapshots").
SNAPSHOT_ACTIONS = ("isolate:snapshots", "collect:snapshots")
USABLE_STATES = ("running", "stopped")
GONE = ("deleting", "deleted")
# Volumes made from snapshots are usually ready in seconds; a mounted one never detaches, so the
# wait is bounded and the hint says to unmount.
WAITER: WaiterConfigTypeDef = {"Delay": 2, "MaxAttempts": 90}
UNMOUNT = (
    "a mounted volume never detaches: unmount it on the workstation (sudo umount ...) and run detach again"
)


@dataclass
class Copy:
    """One snapshot's forensic copy, and what this run did with it."""

    snapshot_id: str
    source_instance: str
    source_device: str
    volume_id: str = ""
    workstation_id: str = ""
    device: str = ""  # where it is attached on the workstation
    result: Outcome | None = None  # done / skipped / FAILED, or a dry run's PLANNED; None until decided
    mount_commands: tuple[str, ...] = ()
    request_ids: list[str] = field(default_factory=list)
    calls: tuple[str, ...] = ()  # a dry run's: each call it would make, with what it names

    @property
    def ok(self) -> bool:
        return self.result is None or self.result.ok

    @property
    def acted(self) -> bool:
        return self.result is None or not self.result.is_skipped

    @property
    def result_text(self) -> str:
        """The result as the journal and --output json give it (``Outcome.text``); empty until decided."""
        return "" if self.result is None else self.result.text

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "source_instance": self.source_instance,
            "source_device": self.source_device,
            "volume_id": self.volume_id,
            "workstation_id": self.workstation_id,
            "device": self.device,
            "result": self.result_text,
            "mount_commands": list(self.mount_commands),
            "calls": list(self.calls),
        }


@dataclass(kw_only=True)
class ForensicsReport:
    """What attach or detach did with the case's forensic copies (a dry run: would do)."""

    case_id: str
    actor: str
    copies: list[Copy] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(copy.ok for copy in self.copies)

    def _workstation(self) -> dict[str, Any]:
        """The workstation as --output json names it, right after the case; detach names none, as
        its copies may be on several."""
        return {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            **self._workstation(),
            "actor": self.actor,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "copies": [copy.as_dict() for copy in self.copies],
            "notes": list(self.notes),
        }


@dataclass(kw_only=True)
class AttachReport(ForensicsReport):
    """attach's report: every copy is on the one workstation, in its Availability Zone."""

    workstation_id: str
    availability_zone: str

    def _workstation(self) -> dict[str, Any]:
        return {"workstation_id": self.workstation_id, "availability_zone": self.availability_zone}


@dataclass(kw_only=True)
class DetachReport(ForensicsReport):
    """detach's report: each copy names the workstation it was on."""


# -- attach ---------------------------------------------------------------------------------------


def attach(
    aws: Aws, store: StateStore, case_id: str, workstation_id: str, actor: str, dry_run: bool = False
) -> AttachReport:
    """Attach a volume made from each of the case's snapshots to the workstation.

    Every check comes before the first change, so a refused call creates nothing. A snapshot that
    already has a copy for this workstation is not copied again. ``dry_run``: every check, then
    each copy's calls listed instead of made; nothing is created, attached or journaled."""
    case = validate.case_id(case_id)
    workstation = _workstation_id(workstation_id)
    found = case_snapshots(aws, store, case)
    facts = _checked_workstation(aws, store, case, workstation, found)
    snapshots = found.snapshots

    zone = str(facts.description.get("Placement", {}).get("AvailabilityZone", ""))
    report = AttachReport(
        case_id=case,
        workstation_id=workstation,
        availability_zone=zone,
        actor=actor,
        notes=list(found.notes),
        dry_run=dry_run,
    )
    ready = [snapshot for snapshot in snapshots if snapshot.described.get("State") == "completed"]
    for snapshot in snapshots:
        if snapshot.described.get("State") != "completed":
            report.notes.append(
                printable(
                    f"{snapshot.snapshot_id} is {snapshot.described.get('State', 'unknown')}: not copied; "
                    "run attach again once it has completed"
                )
            )
    copies = _copies_for(aws, case, workstation, ready)
    to_attach = [copy for copy in copies if copy.result is None]
    free = free_devices(facts.description.get("BlockDeviceMappings", []))
    if len(to_attach) > len(free):
        raise UsageError(
            f"case {case} needs {len(to_attach)} device name(s) on {workstation} but only "
            f"{len(free)} of {DEVICES[0]}-{DEVICES[-1]} are free",
            "detach other volumes from the workstation, or use a second workstation",
        )
    if dry_run:
        for copy, device in zip(to_attach, free, strict=False):
            _plan_attach(copy, zone, device)
        report.copies = copies
        return report
    by_snapshot = {snapshot.snapshot_id: snapshot.described for snapshot in ready}
    _make_copies(aws, case, workstation, zone, list(zip(to_attach, free, strict=False)), by_snapshot)

    for copy in copies:
        if copy.device:
            try:
                copy.mount_commands = mount_commands(case, copy.volume_id, copy.device)
            except ValueError as error:
                report.notes.append(printable(f"no mount commands for {copy.volume_id}: {error}"))
    report.copies = copies
    _journal(store, [_entry(case, actor, copy, "forensics:attach") for copy in copies if copy.acted], report)
    return report


def _checked_workstation(
    aws: Aws, store: StateStore, case: str, workstation: str, found: CaseSnapshots
) -> InstanceFacts:
    """The workstation's facts, once it is shown fit to receive the case's copies (else UsageError,
    before any change)."""
    if not found.snapshots:
        ignored = f"; {len(found.notes)} left out: {' '.join(found.notes[:3])}" if found.notes else ""
        raise UsageError(
            f"case {case} has no snapshots",
            "ec2ir isolate and ec2ir collect take them and name them in the case journal; check the case "
            f"id in `ec2ir status`{ignored}",
        )
    facts = discover(aws, [workstation]).get(workstation)
    if facts is None:
        raise UsageError(
            f"workstation {workstation} not found in {aws.region()}",
            "name a running or stopped instance in the Region of the case's snapshots",
        )
    if facts.state not in USABLE_STATES:
        raise UsageError(
            f"workstation {workstation} is {facts.state}",
            "volumes can be attached only to a running or stopped instance",
        )
    if workstation in found.instances:
        raise UsageError(
            f"{workstation} is one of case {case}'s compromised instances",
            "attach the copies to a separate, trusted forensic workstation",
        )
    _refuse_held(store, workstation)
    return facts


def _copies_for(aws: Aws, case: str, workstation: str, ready: list[CaseSnapshot]) -> list[Copy]:
    """A copy for each completed snapshot; one this workstation already has is taken as it is
    (its result said), so only those without a result are still to attach."""
    # A copy found by its tags is taken for one only if EC2 says it was made from the snapshot its
    # tag names: a volume of anyone's, tagged so, is never attached as evidence.
    existing = {
        volume["SnapshotId"]: volume
        for volume in forensic_copies(aws, case)
        if _tags(volume).get(TAG_WORKSTATION) == workstation
        and _tags(volume)[TAG_SNAPSHOT] == volume.get("SnapshotId")
        and volume.get("State") not in (*GONE, "error")
    }
    copies = [_copy_of(snapshot, workstation) for snapshot in ready]
    for copy in copies:
        volume = existing.get(copy.snapshot_id)
        if volume is not None:
            copy.volume_id = volume["VolumeId"]
            for attachment in volume.get("Attachments", []):
                if attachment.get("InstanceId") == workstation:
                    copy.device = attachment.get("Device", "")
                    copy.result = Outcome.skipped(f"already attached at {copy.device}")
                else:
                    copy.result = Outcome.failed(
                        f"the copy {copy.volume_id} is attached to {attachment.get('InstanceId')}; "
                        "run `ec2ir forensics detach` first"
                    )
    return copies


def _make_copies(
    aws: Aws,
    case: str,
    workstation: str,
    zone: str,
    placed: list[tuple[Copy, str]],
    by_snapshot: dict[str, SnapshotTypeDef],
) -> None:
    """Create, wait for and attach each copy at its device; each phase for every copy before the
    next phase, so the volumes are made side by side."""
    for copy, _ in placed:
        if not copy.volume_id:
            _step(copy, partial(_create, aws, case, by_snapshot[copy.snapshot_id], copy, zone))
    for copy, _ in placed:
        if copy.ok:
            _step(copy, partial(_wait, aws, "volume_available", copy.volume_id, "become available"))
    for copy, device in placed:
        if copy.ok:
            _step(copy, partial(_attach, aws, copy, device))
    for copy, _ in placed:
        if copy.ok:
            _step(copy, partial(_wait, aws, "volume_in_use", copy.volume_id, "attach"))
        if copy.ok:
            copy.result = Outcome.done(
                f"copy of {copy.snapshot_id} ({copy.source_instance} {copy.source_device}) "
                f"attached to {workstation} at {copy.device}"
            )


def _plan_attach(copy: Copy, zone: str, device: str) -> None:
    """A dry run's copy: the calls attach would make for it, and its result in words."""
    volume = copy.volume_id or "(new volume)"
    create = () if copy.volume_id else (f"ec2:CreateVolume {copy.snapshot_id} {zone}",)
    copy.calls = (*create, f"ec2:AttachVolume {volume} {copy.workstation_id} {device}")
    copy.device = device
    made = f"a volume from {copy.snapshot_id} in {zone}" if create else f"the copy {copy.volume_id}"
    copy.result = Outcome.planned(f"would: attach {made} to {copy.workstation_id} at {device}")


def _workstation_id(raw: str) -> str:
    try:
        return validate.instance_ids([raw])[0]
    except UsageError as error:
        raise UsageError(f"workstation: {error.message}", error.hint) from error


def _refuse_held(store: StateStore, workstation: str) -> None:
    """A workstation that ec2ir holds as compromised, in any case, must never receive evidence."""
    try:
        hold = store.get(workstation)
    except AwsError as error:
        if error.code == "ResourceNotFoundException":
            raise StateTableError(
                f"state table {store.table!r} does not exist, so the case journal cannot be written",
                "pass --table with the table `ec2ir isolate` used",
            ) from error
        raise
    if hold is not None and hold.status in ACTIVE_STATUSES:
        raise UsageError(
            f"{workstation} is held as compromised by case {hold.case_id} ({hold.status.value})",
            "attach the copies to a separate, trusted forensic workstation",
        )


def _copy_of(snapshot: CaseSnapshot, workstation: str) -> Copy:
    """The copy's source as the journal recorded it, never as the snapshot's tags say."""
    return Copy(
        snapshot_id=snapshot.snapshot_id,
        source_instance=snapshot.instance_id,
        source_device=snapshot.device,
        workstation_id=workstation,
    )


def _create(aws: Aws, case: str, snapshot: SnapshotTypeDef, copy: Copy, zone: str) -> None:
    tags = {
        "Name": f"ec2ir {case}: copy of {copy.snapshot_id}",
        TAG_CASE: case,
        TAG_ROLE: ROLE_COPY,
        TAG_SNAPSHOT: copy.snapshot_id,
        # What the journal says of the source, as it would be shown: whoever can write to the state
        # table chooses it, and EC2 takes at most 256 characters.
        TAG_SOURCE_INSTANCE: printable(copy.source_instance)[:TAG_VALUE_LIMIT],
        TAG_SOURCE_DEVICE: printable(copy.source_device)[:TAG_VALUE_LIMIT],
        TAG_WORKSTATION: copy.workstation_id,
    }
    arguments: dict[str, Any] = {
        "SnapshotId": copy.snapshot_id,
        "AvailabilityZone": zone,
        "TagSpecifications": [
            {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    }
    # An unencrypted snapshot is left to the account's encryption-by-default setting; an
    # encrypted one keeps its own key rather than being re-encrypted under the default key.
    if snapshot.get("Encrypted"):
        arguments["Encrypted"] = True
        if snapshot.get("KmsKeyId"):
            arguments["KmsKeyId"] = snapshot["KmsKeyId"]

    def create() -> str:
        with translated("ec2", "CreateVolume"):
            return str(aws.ec2().create_volume(**arguments)["VolumeId"])

    copy.volume_id = patiently(create, sleep=aws.sleep)


def _attach(aws: Aws, copy: Copy, device: str) -> None:
    def call() -> None:
        with translated("ec2", "AttachVolume"):
            aws.ec2().attach_volume(VolumeId=copy.volume_id, InstanceId=copy.workstation_id, Device=device)

    patiently(call, sleep=aws.sleep)
    copy.device = device


def free_devices(mappings: list[dict[str, Any]]) -> list[str]:
    """The recommended device names that no mapping of the instance uses, in order."""
    taken = set()
    for mapping in mappings:
        match = DEVICE_LETTER.match(str(mapping.get("DeviceName", "")))
        if match:
            taken.add(match.group(1))
    return [device for device in DEVICES if device.removeprefix("/dev/sd") not in taken]


def mount_commands(case_id: str, volume_id: str, device: str) -> tuple[str, ...]:
    """Shell lines that find the copy on the workstation and mount it read-only.

    On Nitro instances the volume appears as /dev/nvme*n1 whatever the device name, with the
    volume id (without the dash) as its serial; on Xen instances /dev/sdf appears as /dev/xvdf.
    A responder pastes these lines into a root shell, so a volume id or device name of any other
    form is refused (ValueError) rather than printed, and the mount point is quoted."""
    if not VOLUME_ID.match(volume_id):
        raise ValueError(f"{volume_id!r} is not a volume id")
    if not DEVICE_LETTER.match(device):
        raise ValueError(f"{device!r} is not a device name of the form /dev/sdf or /dev/xvdf")
    serial = volume_id.replace("-", "")
    xen = shlex.quote("/dev/xvd" + device.removeprefix("/dev/").removeprefix("sd").removeprefix("xvd"))
    point = shlex.quote(f"/mnt/ec2ir/{case_id}/{volume_id}")
    return (
        f"DISK=$(lsblk -dnpo NAME,SERIAL | awk '$2==\"{serial}\" {{print $1}}'); DISK=${{DISK:-{xen}}}",
        f'lsblk -o NAME,SERIAL,FSTYPE,SIZE "$DISK"  # SERIAL {serial} on Nitro',
        # Read-only at the block layer first, partitions included, so nothing can write to it.
        'sudo blockdev --setro $(lsblk -lnpo NAME "$DISK")',
        'PART=$(lsblk -lnpo NAME,FSTYPE "$DISK" | awk \'$2!="" {print $1; exit}\')',
        f"sudo mkdir -p {point}",
        # noload / norecovery: never replay the journal, which would write to the evidence.
        f'sudo mount -o ro,noload "$PART" {point}  # ext4, ext3',
        f'sudo mount -t xfs -o ro,norecovery,nouuid "$PART" {point}  # xfs',
    )


# -- detach ---------------------------------------------------------------------------------------


def detach(aws: Aws, store: StateStore, case_id: str, actor: str, dry_run: bool = False) -> DetachReport:
    """Detach and delete every forensic copy of the case; the snapshots stay.

    Tags say which volumes are copies, and anyone may tag a volume (a production one included),
    so a volume is deleted only when EC2 says it was made from one of the snapshots the case
    journal names: at worst that is another copy of the same evidence. Any other volume tagged as
    a copy of the case is left alone and named in a note. ``dry_run``: the same choice, then each
    copy's calls listed instead of made; nothing is detached, deleted or journaled."""
    case = validate.case_id(case_id)
    report = DetachReport(case_id=case, actor=actor, dry_run=dry_run)
    copies = []
    for volume in _journaled_copies(aws, store, case, report):
        attachments = volume.get("Attachments", [])
        copy = _copy_from_volume(volume)
        copies.append(copy)
        if dry_run:
            _plan_detach(copy, attachments)
        else:
            _start_detach(aws, copy, attachments)
    if not dry_run:
        for copy in copies:
            _finish_detach(aws, copy)
    if not copies:
        report.notes.append(f"case {case} has no forensic copies to detach")
    report.copies = copies
    if not dry_run:
        _journal(store, [_entry(case, actor, copy, "forensics:detach") for copy in copies], report)
    return report


def _start_detach(aws: Aws, copy: Copy, attachments: list[VolumeAttachmentTypeDef]) -> None:
    """Ask EC2 to detach the copy from wherever it is still attached; `_finish_detach` waits."""
    for attachment in attachments:
        if attachment.get("State") not in ("detaching", "detached"):
            _step(copy, partial(_detach, aws, copy, attachment))


def _finish_detach(aws: Aws, copy: Copy) -> None:
    """Wait for the detached copy to be available, then delete it; each call only while all went well."""
    if copy.ok:
        _step(copy, partial(_wait, aws, "volume_available", copy.volume_id, "detach", UNMOUNT))
    if copy.ok:
        _step(copy, partial(_delete, aws, copy))
    if copy.ok:
        where = f"detached from {copy.workstation_id} ({copy.device}) and " if copy.workstation_id else ""
        copy.result = Outcome.done(f"{where}deleted; the snapshot {copy.snapshot_id} is kept")


def _journaled_copies(aws: Aws, store: StateStore, case: str, report: DetachReport) -> list[VolumeTypeDef]:
    """The case's copies (not gone) that EC2 says were made from a snapshot the journal names;
    every other volume tagged as one is named in a note and left alone."""
    journaled = journaled_snapshots(store, case)
    volumes = []
    for volume in forensic_copies(aws, case):
        if volume.get("State") in GONE:
            continue
        if volume.get("SnapshotId") in journaled:
            volumes.append(volume)
        else:
            report.notes.append(
                printable(
                    f"left {volume['VolumeId']} alone: it is tagged as a copy of case {case}, but it was "
                    f"made from {volume.get('SnapshotId') or 'no snapshot'}, which the case journal does "
                    "not name"
                )
            )
    return volumes


def _copy_from_volume(volume: VolumeTypeDef) -> Copy:
    tags = _tags(volume)
    attachments = volume.get("Attachments", [])
    return Copy(
        snapshot_id=str(volume["SnapshotId"]),  # EC2's word, not the tag's
        source_instance=tags.get(TAG_SOURCE_INSTANCE, ""),
        source_device=tags.get(TAG_SOURCE_DEVICE, ""),
        volume_id=volume["VolumeId"],
        workstation_id=attachments[0].get("InstanceId", "") if attachments else "",
        device=attachments[0].get("Device", "") if attachments else "",
    )


def _plan_detach(copy: Copy, attachments: list[VolumeAttachmentTypeDef]) -> None:
    """A dry run's copy: the calls detach would make for it, and its result in words."""
    detaching = [a for a in attachments if a.get("State") not in ("detaching", "detached")]
    copy.calls = (
        *(f"ec2:DetachVolume {copy.volume_id} {a['InstanceId']} {a['Device']}" for a in detaching),
        f"ec2:DeleteVolume {copy.volume_id}",
    )
    where = f"detach from {copy.workstation_id} ({copy.device}) and " if detaching else ""
    copy.result = Outcome.planned(f"would: {where}delete; the snapshot {copy.snapshot_id} is kept")


def _detach(aws: Aws, copy: Copy, attachment: VolumeAttachmentTypeDef) -> None:
    # The instance and device are named as well: EC2 accepts them, and moto fails without them.
    def call() -> None:
        with translated("ec2", "DetachVolume"):
            aws.ec2().detach_volume(
                VolumeId=copy.volume_id, InstanceId=attachment["InstanceId"], Device=attachment["Device"]
            )

    patiently(call, sleep=aws.sleep)


def _delete(aws: Aws, copy: Copy) -> None:
    def call() -> None:
        with translated("ec2", "DeleteVolume"):
            aws.ec2().delete_volume(VolumeId=copy.volume_id)

    try:
        patiently(call, sleep=aws.sleep)
    except AwsError as error:
        if error.code != "InvalidVolume.NotFound":  # a racing detach deleted it first
            raise


# -- shared ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSnapshot:
    """One of the case's snapshots: EC2's description of it, and its source as the journal has it."""

    described: SnapshotTypeDef
    instance_id: str
    volume_id: str
    device: str
    taken_at: str

    @property
    def snapshot_id(self) -> str:
        return str(self.described["SnapshotId"])


@dataclass(frozen=True)
class CaseSnapshots:
    snapshots: list[CaseSnapshot]  # by instance, oldest first
    instances: frozenset[str]  # every instance the journal names a snapshot of
    notes: list[str]  # the snapshots left out, and why


def journaled_snapshots(store: StateStore, case_id: str) -> dict[str, EvidenceRef]:
    """Snapshot id -> the reference the case journal keeps for it: those isolate and collect
    journaled when they took them, each naming the instance (the entry's target) and the volume.
    The forensic entries also name snapshots, but repeat what attach was given, so they prove
    nothing."""
    try:
        entries = store.journal(case_id)
    except AwsError as error:
        if error.code == "ResourceNotFoundException":
            raise StateTableError(
                f"state table {store.table!r} does not exist, so the case's snapshots are unknown",
                "pass --table with the table `ec2ir isolate` used",
            ) from error
        raise
    found: dict[str, EvidenceRef] = {}
    for entry in entries:
        if entry.case_id != case_id or entry.action not in SNAPSHOT_ACTIONS:
            continue
        for ref in entry.evidence:
            named = ref.details.get("instance_id") == entry.target and ref.details.get("volume_id")
            if ref.kind == "snapshot" and named:
                found.setdefault(ref.location, ref)
    return found


def case_snapshots(aws: Aws, store: StateStore, case_id: str) -> CaseSnapshots:
    """The case's snapshots: those the journal names, as long as EC2 agrees with the journal on
    the volume each was taken of and its instance tag says the same instance. Every snapshot
    tagged with the case that the journal does not name, or that disagrees with it, is left out
    and named in a note."""
    journaled = journaled_snapshots(store, case_id)
    described = {
        snapshot["SnapshotId"]: snapshot
        for batch in chunks(sorted(journaled), 200)
        for snapshot in _describe_snapshots(aws, [{"Name": "snapshot-id", "Values": batch}])
    }
    notes: list[str] = []
    snapshots: list[CaseSnapshot] = []
    for snapshot_id, ref in journaled.items():
        snapshot = described.get(snapshot_id)
        journal_says = f"the journal says {ref.details['instance_id']} {ref.details['volume_id']}"
        if snapshot is None:
            notes.append(
                printable(f"{snapshot_id} is not in {aws.region()} any more ({journal_says}): not copied")
            )
            continue
        volume, instance = snapshot.get("VolumeId", ""), _tags(snapshot).get(TAG_INSTANCE, "")
        if (volume, instance) != (ref.details["volume_id"], ref.details["instance_id"]):
            notes.append(
                printable(
                    f"{snapshot_id} does not match the case journal ({journal_says}; EC2 says volume "
                    f"{volume or '-'}, tagged {TAG_INSTANCE}={instance or '-'}): not copied"
                )
            )
            continue
        snapshots.append(
            CaseSnapshot(
                snapshot,
                instance,
                volume,
                ref.details.get("device", ""),
                ref.details.get("taken_at", ""),
            )
        )
    for snapshot in _describe_snapshots(aws, [{"Name": f"tag:{TAG_CASE}", "Values": [case_id]}]):
        if snapshot["SnapshotId"] not in journaled:
            tags = ", ".join(f"{key}={value}" for key, value in sorted(_tags(snapshot).items()))
            notes.append(
                printable(
                    f"ignored {snapshot['SnapshotId']}: it is tagged {TAG_CASE}={case_id} but the case "
                    f"journal does not name it (tags: {tags})"
                )
            )
    snapshots.sort(key=lambda s: (s.instance_id, s.taken_at, s.device, s.snapshot_id))
    instances = frozenset(ref.details["instance_id"] for ref in journaled.values())
    return CaseSnapshots(snapshots, instances, notes)


def _describe_snapshots(aws: Aws, filters: list[FilterTypeDef]) -> list[SnapshotTypeDef]:
    """Always filtered, as an account can own thousands of snapshots."""
    with translated("ec2", "DescribeSnapshots"):
        return [
            snapshot
            for page in aws.ec2()
            .get_paginator("describe_snapshots")
            .paginate(OwnerIds=["self"], Filters=filters)
            for snapshot in page.get("Snapshots", [])
        ]


def forensic_copies(aws: Aws, case_id: str) -> list[VolumeTypeDef]:
    """The volumes tagged as the case's forensic copies. The tags are checked again here, so a
    volume without them is never detached or deleted, even if a filter were ignored."""
    filters: list[FilterTypeDef] = [
        {"Name": f"tag:{TAG_CASE}", "Values": [case_id]},
        {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_COPY]},
    ]
    with translated("ec2", "DescribeVolumes"):
        return [
            volume
            for page in aws.ec2().get_paginator("describe_volumes").paginate(Filters=filters)
            for volume in page.get("Volumes", [])
            if _tags(volume).get(TAG_CASE) == case_id
            and _tags(volume).get(TAG_ROLE) == ROLE_COPY
            and TAG_SNAPSHOT in _tags(volume)
        ]


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def _step(copy: Copy, action: Callable[[], None]) -> None:
    """Run one call for one copy; a failure marks that copy and leaves the others going."""
    with request_ids() as ids:
        try:
            action()
        except Ec2irError as error:
            copy.result = Outcome.failed(error)
    copy.request_ids.extend(ids)


def _wait(
    aws: Aws, waiter: Literal["volume_available", "volume_in_use"], volume_id: str, what: str, hint: str = ""
) -> None:
    try:
        with translated("ec2", "DescribeVolumes"):
            aws.ec2().get_waiter(waiter).wait(VolumeIds=[volume_id], WaiterConfig=WAITER)
    except AwsError as error:
        if error.code != "WaiterError":
            raise
        raise Ec2irError(f"{volume_id} did not {what}: {error.message}", hint) from error


def _entry(case: str, actor: str, copy: Copy, action: str) -> JournalEntry:
    evidence = EvidenceRef(
        kind="snapshot",
        location=copy.snapshot_id,
        details={
            "copy": copy.volume_id,
            "workstation": copy.workstation_id,
            "device": copy.device,
            "instance_id": copy.source_instance,
        },
    )
    return JournalEntry(
        at=now(),
        case_id=case,
        actor=actor,
        target=copy.volume_id or copy.workstation_id,
        action=action,
        result=copy.result_text,
        request_ids=tuple(copy.request_ids),
        evidence=(evidence,),
    )


def _journal(store: StateStore, entries: list[JournalEntry], report: ForensicsReport) -> None:
    """A journal that cannot be written is reported, never hidden; the volumes stay as they are."""
    if not entries:
        return
    try:
        store.append(entries)
    except Ec2irError as error:
        report.notes.append(f"WARNING: the case journal could not be written: {error}")


# -- rendering ------------------------------------------------------------------------------------


def render_attach(report: AttachReport) -> str:
    rows = [
        [
            copy.snapshot_id,
            f"{copy.source_instance} {copy.source_device}".strip(),
            copy.volume_id or "-",
            copy.device or "-",
            _brief(copy, "attached", "already attached"),
        ]
        for copy in report.copies
    ]
    parts = [table(["SNAPSHOT", "SOURCE", "COPY", "DEVICE", "RESULT"], rows)]
    if report.dry_run:
        return _dry_run(
            report,
            parts,
            f"{sum(bool(copy.calls) for copy in report.copies)} copy(ies) would be attached to "
            f"{report.workstation_id} ({report.availability_zone})",
        )
    mounted = [copy for copy in report.copies if copy.mount_commands]
    if mounted:
        lines = [
            f"On {printable(report.workstation_id)}, mount each copy read-only (it is evidence: never "
            "mount it writable, never run fsck on it). On Nitro instances the copy is /dev/nvme*n1 "
            "whatever its device name: `lsblk -o NAME,SERIAL` shows the volume id without the dash."
        ]
        for copy in mounted:
            lines.append("")
            # One line whatever the journal holds, so it stays a comment when pasted into a shell.
            lines.append(
                printable(
                    f"# {copy.volume_id}: copy of {copy.snapshot_id} "
                    f"({copy.source_instance} {copy.source_device}), attached at {copy.device}"
                )
            )
            lines.extend(copy.mount_commands)
        parts.append("\n".join(lines))
    parts.extend(f"note: {printable(note)}" for note in report.notes)
    failed = sum(not copy.ok for copy in report.copies)
    parts.append(
        printable(
            f"case {report.case_id}: {len(report.copies) - failed} copy(ies) on {report.workstation_id} "
            f"({report.availability_zone}), {failed} failed (acting as {report.actor})"
        )
    )
    return "\n\n".join(parts)


def render_detach(report: DetachReport) -> str:
    rows = [
        [
            copy.volume_id,
            copy.snapshot_id,
            copy.workstation_id or "-",
            copy.device or "-",
            _brief(copy, "detached, deleted", "skipped"),
        ]
        for copy in report.copies
    ]
    parts = [table(["COPY", "SNAPSHOT", "WORKSTATION", "DEVICE", "RESULT"], rows)] if rows else []
    if report.dry_run:
        return _dry_run(
            report,
            parts,
            f"{len(report.copies)} copy(ies) would be detached and deleted; the snapshots are kept",
        )
    parts.extend(f"note: {printable(note)}" for note in report.notes)
    failed = sum(not copy.ok for copy in report.copies)
    parts.append(
        printable(
            f"case {report.case_id}: {len(report.copies) - failed} copy(ies) detached and deleted, "
            f"{failed} failed; the snapshots are kept (acting as {report.actor})"
        )
    )
    return "\n\n".join(parts)


def _dry_run(report: ForensicsReport, parts: list[str], summary: str) -> str:
    """A dry run's table, then each call it would make and its notes, under a heading that says so.
    Each line goes through printable on its own: the calls and notes quote the journal and tags."""
    heading = printable(
        f"DRY RUN for case {report.case_id}, acting as {report.actor}: nothing will be created, "
        "attached, detached, deleted or journaled."
    )
    calls = [printable(f"  {call}") for copy in report.copies for call in copy.calls]
    if calls:
        parts.append("\n".join(["AWS calls it would make:", *calls]))
    parts.extend(f"note: {printable(note)}" for note in report.notes)
    failed = sum(not copy.ok for copy in report.copies)
    parts.append(
        printable(f"case {report.case_id}: dry run, nothing changed: {summary}, {failed} would fail")
    )
    return "\n\n".join([heading, *parts])


def _brief(copy: Copy, done: str, skipped: str) -> str:
    """The table's word for a copy; the journal keeps the full sentence, and a failure says why."""
    status = None if copy.result is None else copy.result.status
    if status is StepStatus.PLANNED:
        return "would " + ", ".join(call.split()[0].removeprefix("ec2:") for call in copy.calls)
    if status is StepStatus.DONE:
        return done
    if status is StepStatus.SKIPPED:
        return skipped
    return copy.result_text
