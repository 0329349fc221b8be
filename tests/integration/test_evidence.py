"""Evidence and chain of custody: snapshots, captured metadata, the evidence bucket, the journal,
``collect`` and ``verify``, against the corrected emulator."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from typing import Any, TypedDict

import pytest

from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.containment.steps import Options
from ec2ir.core.errors import AwsError, UsageError
from ec2ir.core.models import EvidenceRef, HoldStatus, JournalEntry
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.engine.facade import Engine
from ec2ir.evidence.s3 import split_location
from ec2ir.evidence.snapshots import TAG_CASE, TAG_DEVICE, TAG_EPISODE, TAG_INSTANCE, TAG_VOLUME
from ec2ir.store.items import now
from ec2ir.store.state import StateStore
from tests.support.faults import Crash, Fault, FaultPoint, inject
from tests.support.fleets import Fleet

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it

CASE = "IR-EV"
OFFICE = "198.51.100.0/24"
METADATA_ITEMS = {
    "describe-instances",
    "network",
    "volumes",
    "iam",
    "memberships",
    "console-output",
    "console-screenshot",
}


def case_snapshots(fleet: Fleet, case: str = CASE) -> list[dict[str, Any]]:
    # moto seeds about 1,300 snapshots of its own: only the tag tells ours apart
    return list(
        fleet.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_CASE}", "Values": [case]}]
        )["Snapshots"]
    )


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in resource.get("Tags", [])}


def with_data_volume(fleet: Fleet, instance: str) -> str:
    described = fleet.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    zone = described["Placement"]["AvailabilityZone"]
    volume = fleet.ec2.create_volume(Size=8, AvailabilityZone=zone)["VolumeId"]
    fleet.ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
    return str(volume)


def metadata_refs(engine: Engine, case: str = CASE) -> dict[tuple[str, str], EvidenceRef]:
    return {
        (entry.target, ref.kind.removeprefix("metadata:")): ref
        for entry in engine.store.journal(case)
        for ref in entry.evidence
        if ref.kind.startswith("metadata:")
    }


def test_isolate_snapshots_every_volume_once_tagged_and_release_keeps_them(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    data_volume = with_data_volume(fleet, instance)

    report = engine.isolate([instance], CASE, office_cidr=OFFICE)

    assert report.results[0].ok, report.results[0].steps
    snapshots = case_snapshots(fleet)
    described = fleet.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    devices = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in described["BlockDeviceMappings"]}
    assert {s["VolumeId"] for s in snapshots} == set(devices) and data_volume in devices
    assert len(snapshots) == len(devices) == 2  # boot volume included, one snapshot per volume
    hold = engine.store.get(instance)
    assert hold is not None
    for snapshot in snapshots:
        tags = tags_of(snapshot)
        assert tags[TAG_INSTANCE] == instance
        assert tags[TAG_EPISODE] == hold.recorded_at
        assert tags[TAG_VOLUME] == snapshot["VolumeId"]
        assert tags[TAG_DEVICE] == devices[snapshot["VolumeId"]]
    assert sorted(report.results[0].snapshot_ids) == sorted(s["SnapshotId"] for s in snapshots)

    again = engine.isolate([instance], CASE, office_cidr=OFFICE)  # a rerun of the same episode
    assert again.results[0].ok
    assert len(case_snapshots(fleet)) == 2

    released = engine.release([instance], CASE)
    assert released.results[0].ok
    assert {s["SnapshotId"] for s in case_snapshots(fleet)} == {s["SnapshotId"] for s in snapshots}


def test_metadata_objects_exist_with_the_hashes_the_journal_holds(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance = fleet.instance(vpc, [web])

    report = engine.isolate([instance], CASE, office_cidr=OFFICE)

    assert report.results[0].ok, report.results[0].steps
    refs = metadata_refs(engine)
    assert {item for target, item in refs if target == instance} == METADATA_ITEMS
    s3 = engine.aws.client("s3")
    for ref in refs.values():
        bucket, key = split_location(ref.location)
        assert key.startswith(f"{CASE}/{instance}/")
        stored = s3.get_object(Bucket=bucket, Key=key, VersionId=ref.version_id)
        body = stored["Body"].read()
        assert hashlib.sha256(body).hexdigest() == ref.sha256 == stored["Metadata"]["sha256"]
        assert len(body) == ref.size
    description = json.loads(
        s3.get_object(**object_of(refs[(instance, "describe-instances")]))["Body"].read()
    )
    # captured before any change: the ENI still shows its original group, not the isolation group
    assert [g["GroupId"] for g in description["NetworkInterfaces"][0]["Groups"]] == [web]
    network = json.loads(s3.get_object(**object_of(refs[(instance, "network")]))["Body"].read())
    assert [g["GroupId"] for g in network["security_groups"]] == [web]
    assert "IpPermissionsEgress" in network["security_groups"][0]  # each group's full rules


class ObjectVersion(TypedDict):
    """The arguments that name one object version, for both GetObject and DeleteObject."""

    Bucket: str
    Key: str
    VersionId: str


def object_of(ref: EvidenceRef) -> ObjectVersion:
    bucket, key = split_location(ref.location)
    return {"Bucket": bucket, "Key": key, "VersionId": ref.version_id}


def test_the_evidence_bucket_is_created_hardened(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([instance], CASE, options=Options(object_lock_days=30))

    bucket = "ec2ir-evidence-123456789012-us-east-1"
    assert any(f"created evidence bucket s3://{bucket}" in note for note in report.notes)
    s3 = engine.aws.client("s3")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 30)


def test_no_evidence_takes_no_snapshot_and_writes_no_object(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([instance], CASE, options=Options(evidence=False))

    assert report.results[0].ok
    assert case_snapshots(fleet) == []
    assert engine.aws.client("s3").list_buckets()["Buckets"] == []
    assert not metadata_refs(engine)


def test_evidence_that_fails_never_undoes_containment(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    inject(engine.evidence_aws, Fault("ec2", "CreateSnapshots", "UnauthorizedOperation", status=403))

    report = engine.isolate([instance], CASE, office_cidr=OFFICE)

    result = report.results[0]
    assert result.ok and result.error_code == ""  # contained: evidence is reported apart
    assert [failed.split(":")[0] for failed in result.evidence_failed] == ["snapshots"]
    assert (
        result.steps["snapshots"].startswith("FAILED") and "ec2:CreateSnapshots" in result.steps["snapshots"]
    )
    assert result.steps["network"].startswith("done")
    assert result.steps["evidence-metadata"].startswith("done")  # the other evidence is still collected
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.ISOLATED
    failed = [e for e in engine.store.journal(CASE) if e.action == "isolate:snapshots"]
    assert len(failed) == 1 and failed[0].result.startswith("FAILED")


def test_the_journal_records_every_action_in_order_with_actor_and_request_ids(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    engine.isolate([instance], CASE, office_cidr=OFFICE)
    engine.release([instance], CASE)

    journal = engine.store.journal(CASE)
    actions = [entry.action for entry in journal if entry.target == instance]
    assert actions.index("isolate:record-originals") < actions.index("isolate:network")
    # evidence runs on its own workers, beside the after-steps, but only once the cut is made
    assert actions.index("isolate:network") < actions.index("isolate:snapshots")
    assert actions.index("isolate:network") < actions.index("isolate:tags")
    assert actions.index("isolate:tags") < actions.index("release:tags") < actions.index("release:network")
    assert [e.at for e in journal] == sorted(e.at for e in journal)
    assert {e.actor for e in journal} == {"arn:aws:sts::123456789012:user/moto"}
    network = next(e for e in journal if e.action == "isolate:network")
    assert len(network.request_ids) == 2  # the allow-all swap, then the isolation swap
    assert any(e.target == vpc and e.action == "groups" for e in journal)


def test_a_retried_journal_append_adds_no_second_copy(engine: Engine) -> None:
    engine.store.ensure_table()
    entries = [
        JournalEntry(
            "2026-11-28T06:00:00.000+00:00", CASE, "arn:aws:iam::1:user/a", "i-1", "isolate:x", "done: 1"
        ),
        JournalEntry(
            "2026-11-28T06:00:00.000+00:00", CASE, "arn:aws:iam::1:user/a", "i-1", "isolate:x", "done: 2"
        ),
    ]

    engine.store.append(entries)
    engine.store.append(entries)  # the same batch again, as after a lost answer
    engine.store.append(entries[:1])

    # Two entries of the same millisecond come back in their keys' order, which holds a digest of
    # the chain link: either order is right, but each entry exactly once.
    assert sorted(engine.store.journal(CASE), key=lambda entry: entry.result) == entries


def test_the_journal_writes_many_entries_in_batches_and_one_refused_entry_costs_no_other(
    engine: Engine,
) -> None:
    engine.store.ensure_table()

    def entry(index: int, result: str = "done") -> JournalEntry:
        at = f"2026-11-28T07:00:{index:02d}.000+00:00"
        return JournalEntry(at, CASE, "arn:aws:iam::1:user/a", f"i-{index}", "isolate:x", result)

    entries = [entry(index) for index in range(30)]
    engine.store.append(entries + entries[:5])  # more than one batch, with repeats
    assert engine.store.journal(CASE) == entries

    too_big = entry(31, "x" * 500_000)  # beyond DynamoDB's 400 KB an item
    with pytest.raises(AwsError):
        engine.store.append([entry(30), too_big, entry(32)])
    assert [e.target for e in engine.store.journal(CASE)][-2:] == ["i-30", "i-32"]


def test_a_crash_between_two_threads_journal_writes_leaves_no_hole_in_the_run_s_chain(
    engine: Engine,
) -> None:
    """Threads of one run write one case's journal in the order of its chain. If a later entry
    could be stored while an earlier one was still in flight, a crash would leave a hole that
    ``verify`` reports as a deletion (seen in the crash sweep: "entries of its chain are gone")."""
    engine.store.ensure_table()
    dead = threading.Event()
    first_held, later_sent = threading.Event(), threading.Event()

    def hold_the_first_write(**_: Any) -> None:
        if not first_held.is_set():  # the first thread's write, in flight
            first_held.set()
            # The other thread may try meanwhile; if its entry could be stored before this one,
            # it would be within this bound (its outcome never depends on it: with the fix it
            # simply passes).
            later_sent.wait(timeout=1.0)
            dead.set()  # the process dies with this write unsent
            raise Crash("died with the first write in flight")
        if dead.is_set():
            raise Crash("the process is dead")
        later_sent.set()

    events = engine.aws.dynamodb().meta.events
    events.register("before-send.dynamodb.BatchWriteItem", hold_the_first_write)

    def write(target: str) -> None:
        with contextlib.suppress(Crash):
            engine.store.append(
                [JournalEntry(now(), CASE, "arn:aws:iam::1:user/a", target, "isolate:x", "done")]
            )

    first = threading.Thread(target=write, args=("i-first",))
    first.start()
    first_held.wait()
    later = threading.Thread(target=write, args=("i-later",))
    later.start()
    first.join()
    later.join()

    seqs = sorted(r.link.seq for r in engine.store.journal_records(CASE) if r.link is not None)
    assert seqs == list(range(len(seqs)))  # only a tail may be lost

    events.unregister("before-send.dynamodb.BatchWriteItem", hold_the_first_write)
    rerun = StateStore(engine.aws)  # the next process
    rerun.append([JournalEntry(now(), CASE, "arn:aws:iam::1:user/a", "i-first", "isolate:x", "done")])
    assert not [f for f in engine.verify(CASE) if f.status == "MISSING"]


def test_collect_takes_evidence_without_isolating(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance = fleet.instance(vpc, [web])

    first = engine.collect([instance], CASE)
    second = engine.collect([instance], CASE)

    assert first.results[0].ok and second.results[0].ok, first.results[0].steps
    assert engine.store.get(instance) is None
    assert set(fleet.eni_groups([instance]).values()) == {(web,)}
    assert len(case_snapshots(fleet)) == 2  # each collect is a fresh set
    actions = {e.action for e in engine.store.journal(CASE)}
    assert {"collect:snapshots", "collect:evidence-metadata", "evidence:console-output"} <= actions


def test_verify_passes_then_catches_an_overwritten_and_a_deleted_object(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], CASE, office_cidr=OFFICE)
    assert all(finding.ok for finding in engine.verify(CASE))

    s3 = engine.aws.client("s3")
    refs = metadata_refs(engine)
    overwritten = refs[(instance, "console-output")]
    bucket, key = split_location(overwritten.location)
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"output": "nothing to see here"}')
    deleted = refs[(instance, "iam")]
    s3.delete_object(**object_of(deleted))  # the journaled version itself, gone for good

    findings = engine.verify(CASE)

    bad = {(f.status, f.ref.location) for f in findings if not f.ok}
    assert bad == {("UNJOURNALED", overwritten.location), ("MISSING", deleted.location)}
    assert engine.store.journal(CASE)[-1].result.startswith("FAILED: 2 of")


def test_verify_catches_a_modified_object_in_an_unversioned_bucket(engine: Engine, fleet: Fleet) -> None:
    s3 = engine.aws.client("s3")
    s3.create_bucket(Bucket="team-evidence")  # the team's own bucket, without versioning
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    report = engine.isolate([instance], CASE, options=Options(evidence_bucket="team-evidence"))
    assert any("does not keep versions" in note for note in report.notes)

    ref = metadata_refs(engine)[(instance, "volumes")]
    bucket, key = split_location(ref.location)
    s3.put_object(Bucket=bucket, Key=key, Body=b"[]")

    findings = {f.ref.location: f for f in engine.verify(CASE)}
    assert findings[ref.location].status == "MODIFIED"
    assert not findings[ref.location].ok


def test_a_bad_bucket_name_is_refused_before_any_change(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance = fleet.instance(vpc, [web])

    with pytest.raises(Exception, match="not a valid S3 bucket name"):
        engine.isolate([instance], CASE, options=Options(evidence_bucket="Bad_Bucket"))

    assert set(fleet.eni_groups([instance]).values()) == {(web,)}


# The sweep is split into shards, so that parallel workers share it.
CRASH_SHARDS = 3


@pytest.mark.slow  # one whole isolation per evidence call
@pytest.mark.parametrize("shard", range(CRASH_SHARDS), ids=[f"shard-{n}" for n in range(CRASH_SHARDS)])
def test_a_crash_at_any_evidence_call_is_finished_by_a_rerun_without_duplicates(
    emulator: InProcessEmulator, fleet: Fleet, shard: int
) -> None:
    """The scene is built once and saved; each crash starts from a restored copy of it."""
    services = ("sts", "dynamodb", "ec2", "autoscaling", "elbv2", "elb", "iam", "s3")
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    with_data_volume(fleet, instance)
    scene = emulator.save()

    def engine_of(point: FaultPoint | None = None) -> Engine:
        aws = Aws(AwsSettings(region="us-east-1", endpoint_url=emulator.endpoint_url))
        if point is not None:
            point.install(aws, services)
        return Engine(aws, StateStore(aws), concurrency=1, evidence_aws=aws)  # one count of every call

    counting = FaultPoint()
    engine_of(counting).isolate([instance], CASE)
    first_evidence = counting.calls.index("DescribeSnapshots")
    crash_points = range(first_evidence + 1, len(counting.calls) + 1)
    assert len(crash_points) >= 15

    for k in crash_points[shard::CRASH_SHARDS]:
        emulator.restore(scene)
        with contextlib.suppress(Crash):
            engine_of(FaultPoint(at=k, crash_after=True)).isolate([instance], CASE)

        engine = engine_of()
        rerun = engine.isolate([instance], CASE)

        assert rerun.results[0].ok, (k, counting.calls[k - 1], rerun.results[0].steps)
        assert len(case_snapshots(fleet)) == 2, k  # one per volume, never a second set
        findings = engine.verify(CASE)
        assert all(f.ok for f in findings), (k, [(f.status, f.ref.location) for f in findings if not f.ok])
        items = {item for target, item in metadata_refs(engine) if target == instance}
        assert items == METADATA_ITEMS, (k, items)


def test_verify_catches_a_plain_delete_that_leaves_a_delete_marker(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], CASE, office_cidr=OFFICE)
    ref = metadata_refs(engine)[(instance, "network")]
    bucket, key = split_location(ref.location)

    engine.aws.client("s3").delete_object(Bucket=bucket, Key=key)  # `aws s3 rm`: no version id

    findings = [f for f in engine.verify(CASE) if not f.ok]
    assert [(f.status, f.ref.location) for f in findings] == [("DELETED", ref.location)]


def test_bad_evidence_options_are_refused_before_any_change(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance = fleet.instance(vpc, [web])

    for options in (Options(object_lock_days=-1), Options(object_lock_days=36501)):
        with pytest.raises(UsageError, match="object lock days"):
            engine.isolate([instance], CASE, options=options)
        with pytest.raises(UsageError, match="object lock days"):
            engine.collect([instance], CASE, options=options)

    assert set(fleet.eni_groups([instance]).values()) == {(web,)}
    assert engine.aws.client("s3").list_buckets()["Buckets"] == []


def test_a_bucket_made_by_hand_is_not_taken_for_a_half_made_one(engine: Engine, fleet: Fleet) -> None:
    """A bucket of ec2ir's default name without ec2ir's record is someone else's: used, checked,
    never hardened (ec2ir once took any such bucket for one an interrupted run had left, and
    replaced its policy and tags). An interrupted run's own bucket is finished: see
    tests/integration/test_evidence_bucket_ownership.py."""
    s3 = engine.aws.client("s3")
    bucket = "ec2ir-evidence-123456789012-us-east-1"
    s3.create_bucket(Bucket=bucket)
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([instance], CASE, office_cidr=OFFICE)

    assert report.results[0].ok, report.results[0].steps
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled"
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=bucket)
    assert any(f"WARNING: evidence bucket s3://{bucket} does not keep versions" in n for n in report.notes)
    assert metadata_refs(engine)  # the evidence is still kept, in that bucket
