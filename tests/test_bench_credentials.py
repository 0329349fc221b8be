"""Issue 18's figures: the time to the last credential cut and to full containment, each against
its token-bucket bound, read from the shim's log (no emulator, no clock)."""

from __future__ import annotations

from bench.figures import (
    CREDENTIAL_ACTIONS,
    calls_per_bucket_of,
    containment_moment,
    credential_cut_moment,
    is_containment,
    token_bucket_lower_bound,
)
from bench.shim import (
    EC2_BUCKETS,
    MODIFY_METADATA,
    MUTATING,
    BucketSpec,
    CallRecord,
    ec2_bucket,
    instance_named,
)


def call(action: str, end: float, status: int = 200, instance_id: str | None = None) -> CallRecord:
    bucket = ec2_bucket(action, {})
    return CallRecord(end - 0.05, end, "ec2", action, status, status == 503, bucket, instance_id=instance_id)


def test_the_credential_calls_draw_on_the_buckets_aws_gives_them() -> None:
    # The profile's calls have a bucket each (100, then 5 a second); IMDS's shares the mutating one.
    for action in ("DisassociateIamInstanceProfile", "AssociateIamInstanceProfile"):
        assert ec2_bucket(action, {"InstanceId": ["i-1"]}) == action
        assert EC2_BUCKETS[action] == BucketSpec(100, 5)
    assert ec2_bucket(MODIFY_METADATA, {"InstanceId": ["i-1"], "HttpEndpoint": ["disabled"]}) == MUTATING
    assert ec2_bucket("ModifyInstanceAttribute", {}) == MUTATING


def test_the_shim_names_the_instance_of_a_metadata_change_or_an_instance_tag() -> None:
    assert instance_named({"InstanceId": ["i-1"], "HttpEndpoint": ["disabled"]}) == "i-1"
    assert instance_named({"ResourceId.1": ["i-1"], "Tag.1.Key": ["ec2ir:case"]}) == "i-1"
    assert instance_named({"ResourceId.1": ["snap-1"]}) is None
    assert instance_named({"ResourceId.1": ["i-1"], "ResourceId.2": ["i-2"]}) is None


def test_the_credential_cut_ends_with_the_last_call_of_every_instance() -> None:
    records = [
        call("DisassociateIamInstanceProfile", 1.0),
        call("DisassociateIamInstanceProfile", 2.0),
        call(MODIFY_METADATA, 5.0, status=503),  # throttled, then retried
        call(MODIFY_METADATA, 4.0),
        call(MODIFY_METADATA, 6.0),
    ]
    both = dict.fromkeys(CREDENTIAL_ACTIONS, 2)

    assert credential_cut_moment(records, both) == 6.0
    assert credential_cut_moment(records[:4], both) is None  # one instance's IMDS still on
    assert credential_cut_moment(records[:2], {"DisassociateIamInstanceProfile": 2}) == 2.0


def test_full_containment_counts_instance_tags_but_not_evidence() -> None:
    records = [
        call("ModifyNetworkInterfaceAttribute", 1.0),
        call("DisassociateIamInstanceProfile", 2.0),
        call("CreateTags", 3.0, instance_id="i-1"),
        call("ModifyInstanceAttribute", 4.0),
        call("CreateTags", 7.0),  # a snapshot's tags: evidence
        call("CreateSnapshots", 8.0),
    ]

    assert [is_containment(r) for r in records] == [True, True, True, True, False, False]
    assert containment_moment(records) == 4.0


def test_each_bound_counts_the_calls_it_is_given() -> None:
    # 60 IMDS calls after 40 swaps on the mutating bucket (50, then 5 a second): 50 calls wait.
    records = [call("ModifyInstanceAttribute", 1.0) for _ in range(40)]
    records += [call(MODIFY_METADATA, 2.0) for _ in range(60)]
    records.append(call(MODIFY_METADATA, 3.0, status=503))  # throttled: took no token

    counted = calls_per_bucket_of(records, lambda r: True)

    assert counted == {MUTATING: 100}
    assert token_bucket_lower_bound(counted, EC2_BUCKETS, speedup=1, round_trip_s=0.05) == 10.05
