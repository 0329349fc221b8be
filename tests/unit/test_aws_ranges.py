"""AWS's published ranges: which blocks would cut the forensic side off from AWS's services.

Never the network: the file is the fixture tests/conftest.py names, and the fetch path is driven
through an injected opener."""

from __future__ import annotations

import io
import ipaddress
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from ec2ir.aws import ranges as aws_ranges
from ec2ir.aws.ranges import ENV, URL, RangesUnavailable
from tests.conftest import AWS_IP_RANGES


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    aws_ranges.clear_cache()
    yield
    aws_ranges.clear_cache()


def test_the_tests_read_the_fixture_and_never_the_network() -> None:
    assert os.environ[ENV] == str(AWS_IP_RANGES)
    ranges = aws_ranges.load(opener=_refuse)
    assert ranges.source == str(AWS_IP_RANGES) and ranges.sync_token == "1767225600"


@pytest.mark.parametrize(
    ("cidr", "region", "refused_by"),
    [
        ("52.216.10.20/32", "us-east-1", "52.216.0.0/15"),  # S3 endpoint
        ("52.94.0.9/32", "us-east-1", "52.94.0.0/22"),  # DynamoDB endpoint
        ("54.239.1.0/24", "us-east-1", "54.239.0.0/19"),  # AMAZON only: other service endpoints
        ("44.210.0.1/32", "us-east-1", "44.192.0.0/11"),  # the AMAZON part no EC2 range covers
        ("44.192.0.0/10", "us-east-1", "44.192.0.0/11"),  # wider than the EC2 part
        ("18.234.5.6/32", "us-east-1", "18.234.0.0/16"),  # S3 inside an EC2 range: S3's alone
        ("13.32.0.1/32", "us-east-1", "13.32.0.0/15"),  # GLOBAL (CloudFront)
        ("205.251.193.0/24", "eu-west-1", "205.251.192.0/21"),  # GLOBAL, from any Region
        ("2600:1f70:4000::1/128", "us-east-1", "2600:1f70:4000::/40"),  # S3, IPv6
        ("2600:1f14::/48", "us-east-1", "2600:1f14::/35"),  # AMAZON only, IPv6
        ("2600:9000::5/128", "us-east-1", "2600:9000::/28"),  # GLOBAL, IPv6
        ("3.83.201.9/32", "us-east-1", "3.83.200.0/22"),  # EC2 and EC2_INSTANCE_CONNECT: the latter's
        ("3.83.0.0/16", "us-east-1", "3.83.200.0/22"),  # covers EC2_INSTANCE_CONNECT's range
    ],
)
def test_aws_service_addresses_are_refused(cidr: str, region: str, refused_by: str) -> None:
    conflict = aws_ranges.load().conflict(ipaddress.ip_network(cidr), region)

    assert conflict is not None and str(conflict.network) == refused_by


@pytest.mark.parametrize(
    ("cidr", "region"),
    [
        ("3.85.1.2/32", "us-east-1"),  # EC2: an attacker's rented instance
        ("44.200.0.0/16", "us-east-1"),  # in the EC2 part of a wider AMAZON range
        ("18.232.7.0/24", "us-east-1"),  # EC2, beside the S3 part
        ("52.95.240.1/32", "us-east-1"),  # S3 of another Region: not the forensic side's
        ("34.241.0.1/32", "eu-west-1"),  # EC2 in eu-west-1
        ("2600:1f18::7/128", "us-east-1"),  # EC2, IPv6
        ("203.0.113.9/32", "us-east-1"),  # not AWS's at all
    ],
)
def test_customer_instance_space_and_other_addresses_stay_blockable(cidr: str, region: str) -> None:
    assert aws_ranges.load().conflict(ipaddress.ip_network(cidr), region) is None


def test_the_published_file_is_fetched_once_per_process_through_the_opener() -> None:
    opened: list[tuple[str, float]] = []

    def opener(url: str, timeout: float) -> io.BytesIO:
        opened.append((url, timeout))
        return io.BytesIO(AWS_IP_RANGES.read_bytes())

    first = aws_ranges.load(opener=opener, environ={})
    second = aws_ranges.load(opener=opener, environ={})

    assert first is second and first.source == URL
    assert opened == [(URL, aws_ranges.TIMEOUT)]


@pytest.mark.parametrize(
    ("environ", "opener", "says"),
    [
        ({}, "fails", f"cannot fetch AWS's IP ranges from {URL}: TimeoutError"),
        ({}, "garbage", "not in ip-ranges.json's format"),
        ({ENV: "/nonexistent/ip-ranges.json"}, "fails", "cannot read AWS's IP ranges"),
    ],
)
def test_ranges_that_cannot_be_had_are_a_usage_error_saying_how_to_supply_them(
    environ: dict[str, str], opener: str, says: str
) -> None:
    def answer(url: str, timeout: float) -> io.BytesIO:
        if opener == "fails":
            raise TimeoutError("timed out")
        return io.BytesIO(b"<html>captive portal</html>")

    with pytest.raises(RangesUnavailable) as refused:
        aws_ranges.load(opener=answer, environ=environ)

    assert refused.value.exit_code == 2
    assert says in str(refused.value) and ENV in str(refused.value)
    # a failure is not remembered: the next call tries again
    good = aws_ranges.load(opener=lambda url, timeout: io.BytesIO(AWS_IP_RANGES.read_bytes()), environ={})
    assert good.sync_token == "1767225600"


def test_a_file_without_amazon_prefixes_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "ranges.json"
    path.write_text(json.dumps({"prefixes": [], "ipv6_prefixes": []}))

    with pytest.raises(RangesUnavailable, match="no AMAZON prefix"):
        aws_ranges.load(environ={ENV: str(path)})


def _refuse(url: str, timeout: float) -> io.BytesIO:
    raise AssertionError(f"the tests must never fetch {url}")
