"""The outbreak benchmark's machinery: EC2's buckets are per place (account, Region) in the shim, as
in AWS, and benchmarks.outbreak reads an outbreak's figures per Region. Fake clock, no latency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from benchmarks.outbreak import (
    OUTBREAK,
    SINGLE,
    Budget,
    Ceiling,
    Row,
    RunFigures,
    Settings,
    ceiling_lines,
    measure_once,
    paired_ratio,
    render_table,
    target_lines,
)
from benchmarks.shim import EC2_BUCKETS, BucketSpec, RemoteShim, Shim, ShimServer, ShimSettings
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.benchmark

HOME, ELSEWHERE = "us-east-1", "eu-west-1"
OTHER_ACCOUNT = "111111111111"


class FakeClock:
    """Time that moves only when a test says so: no bucket refills behind a test's back."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[ShimServer]:
    with ShimServer(ShimSettings(latency=False), clock=FakeClock()) as running:
        yield running


@pytest.fixture
def shim(server: ShimServer) -> Shim:
    assert server.shim is not None
    RemoteShim(server.endpoint_url).reset_emulator()
    # One token a bucket and no refill: a second call in the same place is throttled.
    server.shim.configure(
        ShimSettings(latency=False, buckets={name: BucketSpec(1, 0) for name in EC2_BUCKETS})
    )
    server.shim.clear_log()
    return server.shim


def ec2_client(
    server: ShimServer, region: str, key: str = "testing", secret: str = "testing", token: str | None = None
) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=server.endpoint_url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),  # a throttle reaches us
    )


def throttled(call: Any) -> bool:
    try:
        call()
    except ClientError as error:
        assert error.response["Error"]["Code"] == "RequestLimitExceeded"
        return True
    return False


def test_two_regions_do_not_share_buckets(server: ShimServer, shim: Shim) -> None:
    home, elsewhere = ec2_client(server, HOME), ec2_client(server, ELSEWHERE)
    assert not throttled(home.describe_vpcs)
    assert throttled(home.describe_vpcs)  # the home Region's bucket is empty

    assert not throttled(elsewhere.describe_vpcs)  # another Region's is still full
    assert throttled(elsewhere.describe_vpcs)
    assert [(r.region, r.throttled) for r in shim.records()] == [
        (HOME, False),
        (HOME, True),
        (ELSEWHERE, False),
        (ELSEWHERE, True),
    ]


def test_two_accounts_in_one_region_do_not_share_buckets(server: ShimServer, shim: Shim) -> None:
    sts = boto3.client(
        "sts",
        endpoint_url=server.endpoint_url,
        region_name=HOME,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assumed = sts.assume_role(RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/responder", RoleSessionName="ir")
    keys = assumed["Credentials"]
    other = ec2_client(server, HOME, keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"])
    mine = ec2_client(server, HOME)
    assert not throttled(mine.describe_vpcs)
    assert throttled(mine.describe_vpcs)

    assert not throttled(other.describe_vpcs)  # the other account's buckets are its own
    ec2_calls = [r for r in shim.records() if r.service == "ec2"]
    assert [r.account for r in ec2_calls] == ["123456789012", "123456789012", OTHER_ACCOUNT]


def test_configure_fills_every_place_s_buckets_again(server: ShimServer, shim: Shim) -> None:
    elsewhere = ec2_client(server, ELSEWHERE)
    assert not throttled(elsewhere.describe_vpcs)
    assert throttled(elsewhere.describe_vpcs)

    shim.configure(shim.settings)
    assert not throttled(elsewhere.describe_vpcs)


def test_an_outbreak_is_measured_region_by_region(
    server: ShimServer, shim: Shim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bench")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bench")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = Settings(latency_s=0.05, speedup=1, concurrency=4, max_attempts=2)

    figures = measure_once(RemoteShim(server.endpoint_url), OUTBREAK, 2, 3, settings, throttling=False)

    assert (figures.places, figures.per_place, figures.failed) == (2, 3, 0)
    assert figures.isolation_s is not None
    assert len(figures.place_isolation_s) == 2
    assert figures.isolation_s == max(m for m in figures.place_isolation_s if m is not None)
    assert figures.swaps_until_isolation >= 3 * 2  # every ENI's swap, in both Regions
    regions = {r.region for r in shim.records() if r.service == "ec2"}
    assert regions == {HOME, ELSEWHERE}


def run(contender: str, places: int, isolation_s: float | None) -> RunFigures:
    return RunFigures(
        contender, places, 10, isolation_s, (isolation_s,), 1.0, 2.0, 100, 0, 0, 1.0, 1.0, 24, 40 * places
    )


def test_the_outbreak_is_judged_against_one_region_in_the_same_repeat() -> None:
    single = Row(SINGLE, [run(SINGLE, 1, 10.0), run(SINGLE, 1, 20.0), run(SINGLE, 1, 10.0)])
    outbreak = Row(OUTBREAK, [run(OUTBREAK, 4, 12.0), run(OUTBREAK, 4, 22.0), run(OUTBREAK, 4, None)])

    # Paired per repeat: 1.2 and 1.1 (the run that never isolated is left out), not 17 / 10.
    assert paired_ratio(outbreak, single) == pytest.approx(1.15)
    baseline = Row("baseline, Region by Region", [run("baseline", 4, 40.0)])
    lines = target_lines([single, outbreak, baseline])
    assert lines[0].startswith("- MET: ")
    assert "4.00x one Region's time" in lines[1]


def test_the_emulator_floor_is_the_calls_until_isolation_served_one_at_a_time() -> None:
    single = Row(SINGLE, [run(SINGLE, 1, 10.0)])
    outbreak = Row(OUTBREAK, [run(OUTBREAK, 4, 12.0)])
    table = render_table([single, outbreak], emulator_s_per_call=0.005)

    header = [cell.strip() for cell in table[0].split("|")]
    floors = [row.split("|")[header.index("emulator floor (s)")].strip() for row in table[2:]]
    assert floors == ["0.20", "0.80"]  # 40 and 160 calls at 5 ms


def test_the_ceiling_arithmetic() -> None:
    # 2 swaps an instance: a Region at its swap buckets' 10 a second isolates 5 instances a
    # second, so at 8 calls an instance it needs 40 calls a second; a process served 400 calls
    # per CPU second keeps 10 Regions at that bound. Containing, 4 mutating calls an instance at
    # 5 a second is 1.25 instances a second, at 20 calls each 25 calls a second: 16 Regions.
    ceiling = Ceiling(places=4, per_place=100, calls=4000, wall_s=20.0, client_cpu_s=10.0, server_cpu_s=15.0)
    lines = ceiling_lines(ceiling, Budget(swaps=2.0, calls=8.0, mutating=4.0, total=20.0))
    text = "\n".join(lines)
    assert "400 calls per CPU second" in text
    assert "needs 40 calls a second from ec2ir: one process at 400 calls a second keeps 10.0 Regions" in text
    assert "needs 25 calls a second: 16.0 Regions per process" in text
    # 250 an instance: (500 - 150) / 10 = 35 s of swap buckets; 250 x 8 calls at 400 a second
    # take 5 s a Region, so 7 Regions (1,750 instances) fit in those 35 s. Containing:
    # (1000 - 50) / 5 = 190 s; 250 x 20 calls take 12.5 s a Region: 15.2 Regions.
    assert "| 250 | 35.0 | 7.0 (1,750 instances) | 190.0 | 15.2 (3,800 instances) |" in lines
    assert any(line.startswith("| 25 | 0.0 | none: the burst admits every call") for line in lines)
