"""The benchmark's shim behaves like EC2's throttling: fast checks, on a fake clock, no latency."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import boto3
import pytest
from benchmarks.figures import (
    isolation_moment,
    last_success,
    sequential_chain,
    successes,
    swaps_per_bucket,
    token_bucket_lower_bound,
)
from benchmarks.shim import (
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
    index_tag_lookups,
    instance_groups_change,
    keep_only_amis,
    s3_operation,
)
from botocore.config import Config
from botocore.exceptions import ClientError

# The benchmark's own machinery, not ec2ir's behaviour: `pytest -m "not benchmark"` leaves it out.
pytestmark = pytest.mark.benchmark

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


def client(server: ShimServer, service: Literal["ec2", "sts", "dynamodb", "s3"]) -> Any:
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


def test_an_instance_group_change_is_told_from_the_other_modify_instance_attribute_forms() -> None:
    body = {"Action": ["ModifyInstanceAttribute"], "InstanceId": ["i-1"]}
    swap = {**body, "GroupId.2": ["sg-b"], "GroupId.1": ["sg-a"]}
    protect = {**body, "DisableApiTermination.Value": ["true"]}
    assert instance_groups_change(swap) == ("i-1", ("sg-a", "sg-b"))
    assert instance_groups_change(protect) == (None, ())


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

    def instance_change(instance: str, groups: tuple[str, ...], end: float) -> CallRecord:
        action = "ModifyInstanceAttribute"
        return CallRecord(end - 0.05, end, "ec2", action, 200, False, MUTATING, None, groups, instance)

    log = [
        change("eni-a", ("sg-allow-all",), 1.0),  # an untracking detour does not count
        change("eni-a", ("sg-iso",), 2.0),
        change("eni-b", ("sg-iso",), 2.5, status=503),
        change("eni-b", ("sg-iso",), 3.0),
        instance_change("i-c", ("sg-allow-all",), 3.5),
        instance_change("i-c", ("sg-iso",), 4.0),  # i-c's one ENI, eni-c, through the instance
        instance_change("i-d", ("sg-iso",), 5.0),  # two ENIs: never counted for either
    ]
    enis = {"i-a": ("eni-a",), "i-b": ("eni-b",), "i-c": ("eni-c",), "i-d": ("eni-d", "eni-e")}
    assert isolation_moment(log, {"eni-a": "sg-iso", "eni-b": "sg-iso"}, enis) == 3.0
    assert isolation_moment(log, {"eni-a": "sg-iso", "eni-c": "sg-iso"}, enis) == 4.0
    assert isolation_moment(log, {"eni-a": "sg-iso", "eni-d": "sg-iso"}, enis) is None
    assert swaps_per_bucket(log, until=3.96) == {"ModifyNetworkInterfaceAttribute": 3, MUTATING: 2}

    buckets = {"ModifyNetworkInterfaceAttribute": BucketSpec(100, 5), MUTATING: BucketSpec(50, 5)}
    # 1000 swaps: (1000 - 100) / (5 x 2) = 90 s, plus one 0.025 s round trip; 60 mutating calls need 2 s.
    bound = token_bucket_lower_bound(
        {"ModifyNetworkInterfaceAttribute": 1000, MUTATING: 60}, buckets, speedup=2, round_trip_s=0.025
    )
    assert bound == pytest.approx(90.025)


def test_s3_rest_calls_are_named_as_botocore_names_them() -> None:
    def named(method: str, path: str, query: str = "", **headers: str) -> str:
        return s3_operation({"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, **headers})

    assert named("HEAD", "/evidence") == "HeadBucket"
    assert named("PUT", "/evidence") == "CreateBucket"
    assert named("GET", "/evidence", "versioning") == "GetBucketVersioning"
    assert named("PUT", "/evidence", "versioning") == "PutBucketVersioning"
    assert named("PUT", "/evidence", "publicAccessBlock") == "PutPublicAccessBlock"
    assert named("PUT", "/evidence", "object-lock") == "PutObjectLockConfiguration"
    assert named("PUT", "/evidence", "encryption") == "PutBucketEncryption"
    assert named("GET", "/evidence", "list-type=2&prefix=CASE") == "ListObjectsV2"
    assert named("PUT", "/evidence/CASE-1/i-1/20261128T000000000Z/network.json") == "PutObject"
    assert named("HEAD", "/evidence/CASE-1/i-1/a.json") == "HeadObject"
    assert named("GET", "/evidence/CASE-1/i-1/a.json") == "GetObject"
    assert named("PUT", "/evidence/a.json", "tagging") == "PutObjectTagging"
    assert named("PUT", "/evidence/b.json", HTTP_X_AMZ_COPY_SOURCE="/evidence/a.json") == "CopyObject"
    assert named("POST", "/evidence/big.bin", "uploads") == "CreateMultipartUpload"
    assert named("PUT", "/evidence/big.bin", "partNumber=1&uploadId=u") == "UploadPart"
    assert named("GET", "/") == "ListBuckets"


def test_s3_and_dynamodb_pass_through_with_latency_only(server: ShimServer, shim: Shim) -> None:
    """The evidence path: S3's path-style REST with object bodies, DynamoDB's JSON; no EC2 bucket."""
    shim.configure(ShimSettings(latency=False, buckets=tiny_buckets(0, 0)))
    s3, dynamodb = client(server, "s3"), client(server, "dynamodb")
    s3.create_bucket(Bucket="evidence")
    s3.head_bucket(Bucket="evidence")
    s3.put_bucket_versioning(Bucket="evidence", VersioningConfiguration={"Status": "Enabled"})
    body = bytes(range(256)) * 64  # binary, like a console screenshot
    s3.put_object(Bucket="evidence", Key="CASE-1/i-1/shot.jpg", Body=body, ContentType="image/jpeg")
    s3.put_object(
        Bucket="evidence",
        Key="CASE-1/i-1/form.txt",
        Body=b"Action=CreateVpc&a=b",
        ContentType="application/x-www-form-urlencoded",
    )
    assert s3.get_object(Bucket="evidence", Key="CASE-1/i-1/shot.jpg")["Body"].read() == body
    assert s3.get_bucket_versioning(Bucket="evidence")["Status"] == "Enabled"
    dynamodb.create_table(
        TableName="journal",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="journal", Item={"k": {"S": "one"}, "v": {"S": "Action=x"}})
    assert dynamodb.get_item(TableName="journal", Key={"k": {"S": "one"}})["Item"]["v"] == {"S": "Action=x"}

    records = shim.records()
    assert [(r.service, r.action) for r in records] == [
        ("s3", "CreateBucket"),
        ("s3", "HeadBucket"),
        ("s3", "PutBucketVersioning"),
        ("s3", "PutObject"),
        ("s3", "PutObject"),  # a form-encoded object body is not read as a query
        ("s3", "GetObject"),
        ("s3", "GetBucketVersioning"),
        ("dynamodb", "CreateTable"),
        ("dynamodb", "PutItem"),
        ("dynamodb", "GetItem"),
    ]
    assert all(r.status == 200 and not r.throttled and r.bucket is None for r in records)


def test_a_chunked_body_reaches_the_emulator_whole(server: ShimServer, shim: Shim) -> None:
    """A body sent without a length (Transfer-Encoding: chunked) is read to its end and handed on."""
    shim.configure(ShimSettings(latency=False))
    client(server, "s3").create_bucket(Bucket="chunks")
    body = b"evidence " * 1000
    address = urlsplit(server.endpoint_url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    scope = "Credential=testing/20261128/us-east-1/s3/aws4_request"
    connection.putrequest("PUT", "/chunks/chunked.txt")
    connection.putheader("Authorization", f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=0")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.putheader("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    connection.endheaders()
    for start in range(0, len(body), 4096):
        piece = body[start : start + 4096]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    response.read()
    connection.close()

    assert response.status == 200
    assert [(r.service, r.action) for r in shim.records()][-1] == ("s3", "PutObject")
    stored = client(server, "s3").get_object(Bucket="chunks", Key="chunked.txt")["Body"].read()
    assert stored == body


def test_evidence_figures_from_a_log() -> None:
    def call(action: str, start: float, end: float, status: int = 200) -> CallRecord:
        return CallRecord(start, end, "ec2", action, status, status == 503, None)

    log = [
        call("DescribeInstances", 0.0, 0.05),
        call("GetCallerIdentity", 0.0, 0.05),
        call("PutItem", 0.06, 0.11),
        call("ModifyNetworkInterfaceAttribute", 0.12, 0.17),
        call("DescribeInstanceAttribute", 0.12, 0.17),
        call("ModifyNetworkInterfaceAttribute", 0.18, 0.23),
        call("CreateSnapshots", 0.24, 0.29),
        call("CreateSnapshots", 0.30, 0.35, status=503),
    ]
    assert last_success(log, {"CreateSnapshots"}) == 0.29
    assert last_success(log, {"CreateVolume"}) is None
    assert successes(log, {"CreateSnapshots", "PutItem"}) == 2
    chain = sequential_chain(log, until=0.23)
    assert [r.action for r in chain] == [
        "DescribeInstances",
        "PutItem",
        "ModifyNetworkInterfaceAttribute",
        "ModifyNetworkInterfaceAttribute",
    ]
    assert sequential_chain(log, until=0.2) == []


def test_indexed_tag_lookups_give_moto_s_own_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.core import TaggedEC2Resource

    scanning = TaggedEC2Resource.get_tags
    monkeypatch.setattr(TaggedEC2Resource, "get_tags", scanning)  # restored after the test
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc_id = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
        ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "1"}])
        for case in ("CASE-1", "CASE-2"):
            ec2.create_snapshots(
                InstanceSpecification={"InstanceId": instance["InstanceId"]},
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": [{"Key": "ec2ir:case", "Value": case}]}
                ],
            )

        def case_2_snapshots() -> list[Any]:
            return list(
                ec2.describe_snapshots(
                    OwnerIds=["self"], Filters=[{"Name": "tag:ec2ir:case", "Values": ["CASE-2"]}]
                )["Snapshots"]
            )

        before = case_2_snapshots()
        account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
        backend = ec2_backends[account][REGION]
        resources = [
            *backend.snapshots.values(),
            *backend.vpcs.values(),
            *backend.volumes.values(),
            backend.get_instance(instance["InstanceId"]),
        ]
        scanned = [scanning(resource) for resource in resources]

        index_tag_lookups()
        assert TaggedEC2Resource.get_tags is not scanning
        assert [resource.get_tags() for resource in resources] == scanned
        assert any(scanned) and not all(scanned)  # tagged and untagged resources both compared
        assert case_2_snapshots() == before
        assert len(before) == 1


def test_the_ami_catalogue_is_cut_only_before_moto_loads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut itself is proven in a fresh process by the served-shim test below."""
    import moto.ec2.models.amis  # noqa: F401 (loaded here, as in any test process)

    monkeypatch.delenv("MOTO_AMIS_PATH", raising=False)
    with pytest.raises(SystemExit):
        keep_only_amis(["ami-00000000"])
    with pytest.raises(RuntimeError):
        keep_only_amis(["ami-12c6146b"])
    assert "MOTO_AMIS_PATH" not in os.environ


def test_the_served_shim_runs_the_bench_emulator() -> None:
    """The child process run.py starts: one AMI, its snapshots filtered by tag, EC2 and S3 logged."""
    from benchmarks.run import AMI, served_shim

    with served_shim() as remote:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        ec2 = session.client("ec2", endpoint_url=remote.endpoint_url)
        s3 = session.client("s3", endpoint_url=remote.endpoint_url)
        assert [image["ImageId"] for image in ec2.describe_images()["Images"]] == [AMI]
        instance_id = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ec2.create_snapshots(
            InstanceSpecification={"InstanceId": instance_id},
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "case", "Value": "C"}]}],
        )
        found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:case", "Values": ["C"]}])
        assert len(found["Snapshots"]) == 1
        s3.create_bucket(Bucket="evidence")
        s3.put_object(Bucket="evidence", Key="CASE/i-1/network.json", Body=b"{}")
        assert [(r.service, r.action) for r in remote.records()][-3:] == [
            ("ec2", "DescribeSnapshots"),
            ("s3", "CreateBucket"),
            ("s3", "PutObject"),
        ]


def test_cached_dispatch_lookups_give_moto_s_own_answers() -> None:
    """In a fresh process, as the bench's server runs it: the same modules and action names,
    looked up once. An unknown action is still unknown."""
    import subprocess
    import sys

    script = (
        "from moto import backends\n"
        "from moto.core import responses\n"
        "from moto.ec2.responses import EC2Response\n"
        "before = (sorted(backends.list_of_moto_modules()),"
        " sorted(responses.method_names_from_class(EC2Response)))\n"
        "from benchmarks.shim import cache_dispatch_lookups\n"
        "cache_dispatch_lookups()\n"
        "after = (sorted(backends.list_of_moto_modules()),"
        " sorted(responses.method_names_from_class(EC2Response)))\n"
        "assert after == before and 'ec2' in after[0] and 'describe_instances' in after[1]\n"
        "assert responses.method_names_from_class(EC2Response) is"
        " responses.method_names_from_class(EC2Response)\n"
        "assert 'no_such_action' not in responses.method_names_from_class(EC2Response)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
