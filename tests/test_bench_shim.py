"""The benchmark's shim behaves like EC2's throttling: fast checks, on a fake clock, no latency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import boto3
import pytest
from bench.figures import isolation_moment, token_bucket_lower_bound
from bench.shim import (
    DESCRIBE,
    EC2_BUCKETS,
    MUTATING,
    SECURITY_GROUP_RULES,
    UNFILTERED_DESCRIBE,
    BucketSpec,
    CallRecord,
    RemoteShim,
    Shim,
    ShimServer,
    ShimSettings,
    ec2_bucket,
)
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"


class FakeClock:
    """Time that moves only when a test says so, so that refills are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def server(clock: FakeClock) -> Iterator[ShimServer]:
    with ShimServer(ShimSettings(latency=False), clock=clock) as running:
        yield running


@pytest.fixture
def shim(server: ShimServer) -> Shim:
    assert server.shim is not None
    RemoteShim(server.endpoint_url).reset_emulator()
    server.shim.configure(ShimSettings(latency=False, throttling=False))
    server.shim.clear_log()
    return server.shim


def client(server: ShimServer, service: Literal["ec2", "sts", "dynamodb"]) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # One attempt: a throttle must reach the test, not be retried away.
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def tiny_buckets(size: int, refill_per_s: float) -> dict[str, BucketSpec]:
    return {name: BucketSpec(size, refill_per_s) for name in EC2_BUCKETS}


def test_calls_draw_on_the_buckets_design_lists() -> None:
    assert ec2_bucket("DescribeInstances", {"Action": ["x"], "Filter.1.Name": ["instance-id"]}) == DESCRIBE
    assert ec2_bucket("DescribeInstances", {"Action": ["x"], "InstanceId.1": ["i-1"]}) == DESCRIBE
    assert (
        ec2_bucket("DescribeInstances", {"Action": ["x"], "Version": ["2016-11-15"]}) == UNFILTERED_DESCRIBE
    )
    assert ec2_bucket("ModifyInstanceAttribute", {}) == MUTATING
    assert ec2_bucket("CreateSecurityGroup", {}) == MUTATING
    assert ec2_bucket("RevokeSecurityGroupEgress", {}) == SECURITY_GROUP_RULES
    for own in ("ModifyNetworkInterfaceAttribute", "CreateSnapshots", "CreateTags", "RunInstances"):
        assert ec2_bucket(own, {}) == own
    assert EC2_BUCKETS["ModifyNetworkInterfaceAttribute"] == BucketSpec(100, 5)
    assert EC2_BUCKETS[MUTATING] == BucketSpec(50, 5)


def test_an_empty_bucket_answers_request_limit_exceeded_as_ec2_does(server: ShimServer, shim: Shim) -> None:
    shim.configure(ShimSettings(latency=False, buckets=tiny_buckets(2, 1)))
    ec2 = client(server, "ec2")
    ec2.describe_vpcs()
    ec2.describe_vpcs()
    with pytest.raises(ClientError) as raised:
        ec2.describe_vpcs()

    error = raised.value.response
    assert error["Error"]["Code"] == "RequestLimitExceeded"
    assert error["Error"]["Message"] == "Request limit exceeded."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["ResponseMetadata"]["RequestId"]
    assert [(r.status, r.throttled) for r in shim.records()] == [(200, False), (200, False), (503, True)]


def test_a_bucket_refills_at_its_rate_times_the_speedup(
    server: ShimServer, shim: Shim, clock: FakeClock
) -> None:
    shim.configure(ShimSettings(latency=False, speedup=10, buckets=tiny_buckets(1, 1)))
    ec2 = client(server, "ec2")
    ec2.describe_vpcs()
    with pytest.raises(ClientError):
        ec2.describe_vpcs()

    clock.advance(0.1)  # one token at 1/s x 10
    ec2.describe_vpcs()
    with pytest.raises(ClientError):
        ec2.describe_vpcs()

    clock.advance(60)  # a long pause fills the bucket only to its size
    ec2.describe_vpcs()
    with pytest.raises(ClientError):
        ec2.describe_vpcs()


def test_buckets_are_separate(server: ShimServer, shim: Shim) -> None:
    shim.configure(ShimSettings(latency=False, buckets=tiny_buckets(1, 0)))
    ec2 = client(server, "ec2")
    ec2.describe_vpcs()
    with pytest.raises(ClientError):
        ec2.describe_vpcs()
    ec2.create_vpc(CidrBlock="10.9.0.0/16")  # the mutating bucket is still full


def test_other_services_are_never_throttled(server: ShimServer, shim: Shim) -> None:
    shim.configure(ShimSettings(latency=False, buckets=tiny_buckets(0, 0)))
    sts, dynamodb = client(server, "sts"), client(server, "dynamodb")
    for _ in range(5):
        sts.get_caller_identity()
        dynamodb.list_tables()
    with pytest.raises(ClientError):
        client(server, "ec2").describe_vpcs()

    records = shim.records()
    assert [(r.service, r.action) for r in records[:2]] == [
        ("sts", "GetCallerIdentity"),
        ("dynamodb", "ListTables"),
    ]
    assert not any(r.throttled for r in records if r.service != "ec2")
    assert all(r.bucket is None for r in records if r.service != "ec2")


def test_the_log_records_each_interface_change(server: ShimServer, shim: Shim) -> None:
    ec2 = client(server, "ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    first, second = (
        ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"]
        for name in ("one", "two")
    )
    eni_id = ec2.create_network_interface(SubnetId=subnet_id, Groups=[first])["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    shim.configure(ShimSettings(latency=False))  # throttling on, every bucket full
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni_id, Groups=[second, first])

    change = shim.records()[-1]
    assert change.action == "ModifyNetworkInterfaceAttribute"
    assert (change.status, change.throttled, change.bucket) == (200, False, "ModifyNetworkInterfaceAttribute")
    assert (change.eni_id, change.group_ids) == (eni_id, (second, first))
    assert change.end >= change.start
    assert [r.action for r in shim.records()[:2]] == ["CreateVpc", "CreateSubnet"]
    # The change really reached the emulator: the body was handed on intact.
    groups = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]["Groups"]
    assert sorted(g["GroupId"] for g in groups) == sorted([first, second])


def test_the_shim_is_driven_remotely(server: ShimServer, shim: Shim) -> None:
    remote = RemoteShim(server.endpoint_url)
    client(server, "sts").get_caller_identity()
    assert [r.action for r in remote.records()] == ["GetCallerIdentity"]

    remote.clear_log()
    remote.configure(throttling=True, speedup=4.0)
    assert remote.records() == []
    assert (shim.settings.throttling, shim.settings.speedup) == (True, 4.0)


def test_isolation_moment_and_lower_bound_from_a_log() -> None:
    def change(eni: str, groups: tuple[str, ...], end: float, status: int = 200) -> CallRecord:
        bucket = "ModifyNetworkInterfaceAttribute"
        return CallRecord(end - 0.05, end, "ec2", bucket, status, status == 503, bucket, eni, groups)

    log = [
        change("eni-a", ("sg-allow-all",), 1.0),  # an untracking detour does not count
        change("eni-a", ("sg-iso",), 2.0),
        change("eni-b", ("sg-iso",), 2.5, status=503),
        change("eni-b", ("sg-iso",), 3.0),
    ]
    assert isolation_moment(log, {"eni-a": "sg-iso", "eni-b": "sg-iso"}) == 3.0
    assert isolation_moment(log, {"eni-a": "sg-iso", "eni-c": "sg-iso"}) is None

    buckets = {"ModifyNetworkInterfaceAttribute": BucketSpec(100, 5), MUTATING: BucketSpec(50, 5)}
    # 1000 swaps: (1000 - 100) / (5 x 2) = 90 s, plus one 0.025 s round trip; 60 mutating calls need 2 s.
    bound = token_bucket_lower_bound(
        {"ModifyNetworkInterfaceAttribute": 1000, MUTATING: 60}, buckets, speedup=2, round_trip_s=0.025
    )
    assert bound == pytest.approx(90.025)
