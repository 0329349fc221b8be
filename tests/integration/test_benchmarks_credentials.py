"""Issue 18's figures: the time to the last credential cut and to full containment, each against
its token-bucket bound, read from the shim's log (no emulator, no clock)."""

from __future__ import annotations

import pytest
from benchmarks.figures import (
    CREDENTIAL_ACTIONS,
    calls_per_bucket_of,
    containment_moment,
    credential_cut_moment,
    is_containment,
    needed_calls_per_bucket,
    token_bucket_lower_bound,
)
from benchmarks.run import EC2IR, Fleet, build_parser, figures_from_log, medians
from benchmarks.shim import (
    EC2_BUCKETS,
    MODIFY_ENI,
    MODIFY_METADATA,
    MUTATING,
    BucketSpec,
    CallRecord,
    ec2_bucket,
    instance_named,
)

from ec2ir.engine.runtime import DEFAULT_CONCURRENCY

# The benchmark's own machinery, not ec2ir's behaviour: `pytest -m "not benchmark"` leaves it out.
pytestmark = pytest.mark.benchmark


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


def test_a_moment_after_the_cut_needs_the_swaps_until_isolation_and_its_own_calls() -> None:
    # Each swap sent by the last isolation (t = 1) counts; a later one (a re-check's) does not;
    # of the moment's own calls, those sent by the moment (t = 6) count.
    swap = CallRecord(0.5, 1.0, "ec2", "ModifyInstanceAttribute", 200, False, MUTATING, group_ids=("sg-1",))
    late_swap = CallRecord(3.0, 3.05, "ec2", "ModifyNetworkInterfaceAttribute", 200, False, MODIFY_ENI)
    protect = call("ModifyInstanceAttribute", 2.0)  # no Groups: not a swap, not needed
    records = [swap, late_swap, protect, call(MODIFY_METADATA, 6.0), call(MODIFY_METADATA, 8.0)]

    counted = needed_calls_per_bucket(records, isolated=1.0, actions=CREDENTIAL_ACTIONS, until=6.0)

    assert counted == {MUTATING: 2}
    assert needed_calls_per_bucket(records, None, (MODIFY_METADATA,), until=9.0) == {MUTATING: 2}


def test_each_moment_has_the_bound_of_what_it_needs() -> None:
    # One instance, one ENI: two swaps on the ENI bucket, the profile, IMDS, protect, a snapshot.
    fleet = Fleet(["i-1"], {"i-1": ("eni-1",)}, {"eni-1": "vpc-1"}, {"vpc-1": "subnet-1"})

    def ec2(action: str, start: float, **extra: object) -> CallRecord:
        bucket = ec2_bucket(action, {"InstanceId": ["i-1"]})
        return CallRecord(start, start + 0.05, "ec2", action, 200, False, bucket, **extra)  # type: ignore[arg-type]

    records = [
        ec2(MODIFY_ENI, 0.0, eni_id="eni-1", group_ids=("sg-allow",)),
        ec2(MODIFY_ENI, 0.1, eni_id="eni-1", group_ids=("sg-iso",)),
        ec2("DisassociateIamInstanceProfile", 0.2),
        ec2(MODIFY_METADATA, 0.3, instance_id="i-1"),
        ec2("ModifyInstanceAttribute", 0.4),
        ec2("CreateSnapshots", 0.5),
    ]
    throttled = figures_from_log(EC2IR, fleet, {"eni-1": "sg-iso"}, records, 1.0, 0.05, 1.0, 0)
    assert throttled.isolation_s == pytest.approx(0.15)
    assert throttled.credentials_s == pytest.approx(0.35)
    assert throttled.contained_s == pytest.approx(0.45)
    assert throttled.snapshot_s == pytest.approx(0.55)
    # No bucket runs dry here: each bound is one round trip.
    bounds = (throttled.swap_bound_s, throttled.credentials_needed_s, throttled.contained_bound_s)
    assert bounds == (0.05, 0.05, 0.05)
    assert throttled.snapshot_bound_s == 0.05

    # The latency regime: the same run without buckets has no bound at all.
    free = figures_from_log(EC2IR, fleet, {"eni-1": "sg-iso"}, records, 1.0, 0.05, 1.0, 0, throttling=False)
    assert free.isolation_s == throttled.isolation_s
    assert (free.lower_bound_s, free.swap_bound_s, free.credentials_needed_s) == (None, None, None)
    assert (free.contained_bound_s, free.snapshot_bound_s) == (None, None)
    assert not medians([free]).throttled_run


def test_the_bound_arithmetic_of_a_large_credential_cut() -> None:
    # N = 200: 400 swaps on the mutating bucket and 200 IMDS calls after them need
    # (600 - 50) / 5 = 110 s there; the 200 disassociations (100, then 5 a second) need 20 s.
    swaps = [
        CallRecord(1.0, 1.05, "ec2", "ModifyInstanceAttribute", 200, False, MUTATING, group_ids=("sg",))
    ] * 400
    records = swaps + [call(MODIFY_METADATA, 9.0)] * 200 + [call("DisassociateIamInstanceProfile", 2.0)] * 200

    needed = needed_calls_per_bucket(records, isolated=1.05, actions=CREDENTIAL_ACTIONS, until=9.0)

    assert needed == {MUTATING: 600, "DisassociateIamInstanceProfile": 200}
    assert token_bucket_lower_bound(needed, EC2_BUCKETS, speedup=1, round_trip_s=0.05) == 110.05
    assert token_bucket_lower_bound(needed, EC2_BUCKETS, speedup=5, round_trip_s=0.01) == 22.01


def test_the_latency_regime_is_a_flag_and_the_concurrency_is_ec2ir_s_own() -> None:
    assert build_parser().parse_args([]).throttling is True
    assert build_parser().parse_args(["--no-throttle"]).throttling is False
    assert build_parser().parse_args([]).concurrency == DEFAULT_CONCURRENCY
    assert build_parser().parse_args(["--concurrency", "8"]).concurrency == 8
