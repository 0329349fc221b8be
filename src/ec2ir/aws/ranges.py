"""AWS's own published address ranges (ip-ranges.json): which addresses a network ACL block must
never cut, because the forensic side reaches AWS's services there.

AWS publishes every range its services use on the public internet at
https://ip-ranges.amazonaws.com/ip-ranges.json (AWS, "AWS IP address ranges"). Every range of any
service is also listed under the service code ``AMAZON``, and the ``EC2`` ranges are, for the most
part, the addresses of customers' instances: an attacker renting an instance sits there, so those
must stay blockable. What ec2ir refuses to block (``AwsRanges.conflict``), in the instance's Region
and ``GLOBAL``:

* any ``AMAZON`` range that no ``EC2`` range covers: the endpoints of S3, DynamoDB, SSM, STS, KMS,
  the EC2 API and the other services, which evidence, the state table and memory acquisition use;
* any range of a specific service (any code but ``AMAZON`` and ``EC2``: ``S3``, ``DYNAMODB``,
  ``EC2_INSTANCE_CONNECT``, ``CLOUDFRONT``, ``ROUTE53_HEALTHCHECKS`` ...), even where an ``EC2``
  range lists or covers it too: AWS documents that a range listed under both ``EC2`` and another
  service code is used only by that service ("Range overlaps" in the same guide). So an ``EC2``
  range listed under another code too is not customer space.

The file is read from ``$EC2IR_AWS_IP_RANGES`` (a path: the stack, or a host without internet
access, ships a copy) or fetched from AWS with a short timeout, and kept for the life of the process.
When it cannot be had, nothing is known to be safe: the CLI refuses the block and says how to supply
the file; GuardDuty leaves the address out with a note.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from ec2ir.core.errors import UsageError

ENV = "EC2IR_AWS_IP_RANGES"
URL = "https://ip-ranges.amazonaws.com/ip-ranges.json"
TIMEOUT = 5.0  # seconds; the published file is a few MB, served from CloudFront
MAX_BYTES = 64 * 1024 * 1024
AMAZON, EC2, GLOBAL = "AMAZON", "EC2", "GLOBAL"
# Services whose ranges the forensic side uses directly (the evidence bucket, the state table): named
# first when a block conflicts with several. Every specific service's ranges are refused.
NEEDED_SERVICES = frozenset({"S3", "DYNAMODB"})
GENERAL = frozenset({AMAZON, EC2})  # every other service code is a specific service

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Opener = Callable[..., IO[bytes]]


class RangesUnavailable(UsageError):
    """AWS's published ranges could not be loaded, so no block can be shown to spare AWS's services."""

    code = "AwsIpRangesUnavailable"


@dataclass(frozen=True)
class Prefix:
    network: Network
    region: str
    service: str
    border_group: str = ""

    def describe(self) -> str:
        return f"{self.network} ({self.service}, {self.region})"


@dataclass(frozen=True)
class AwsRanges:
    """The published file, parsed: every prefix, and where it came from."""

    source: str
    sync_token: str
    create_date: str
    prefixes: tuple[Prefix, ...]
    _protected: dict[str, tuple[Prefix, ...]] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def _protected_in(self, region: str) -> tuple[Prefix, ...]:
        with self._lock:
            if region not in self._protected:
                protected = [
                    prefix
                    for prefix in self.prefixes
                    if prefix.region in (region, GLOBAL) and prefix.service != EC2
                ]
                # the specific services first (S3 and DynamoDB before them), so that a conflict names
                # S3 rather than AMAZON
                protected.sort(
                    key=lambda prefix: (prefix.service == AMAZON, prefix.service not in NEEDED_SERVICES)
                )
                self._protected[region] = tuple(protected)
            return self._protected[region]

    def _specific(self) -> frozenset[Network]:
        """Every range a specific service (not AMAZON, not EC2) lists, in any Region."""
        return frozenset(p.network for p in self.prefixes if p.service not in GENERAL)

    def name(self, prefix: Prefix) -> str:
        """The prefix with the services AWS lists it under (AMAZON only when it is the only one)."""
        services = {
            p.service for p in self.prefixes if p.network == prefix.network and p.region == prefix.region
        }
        named = sorted(services - {AMAZON}) or [AMAZON]
        return f"{prefix.network} ({', '.join(named)}, {prefix.region})"

    def conflict(self, cidr: Network, region: str) -> Prefix | None:
        """The first of AWS's ranges that ``cidr`` would cut the forensic side off from, if any.

        An ``AMAZON`` range conflicts where its overlap with ``cidr`` is not wholly covered by
        ``EC2`` ranges that no specific service lists too (customer instance space); a specific
        service's range (any code but AMAZON and EC2) conflicts wherever it overlaps, so no part of
        an EC2 range that such a range covers is ever blockable."""
        specific = self._specific()
        ec2 = [
            p.network
            for p in self.prefixes
            if p.service == EC2 and p.network.version == cidr.version and p.network not in specific
        ]
        for prefix in self._protected_in(region):
            network = prefix.network
            if network.version != cidr.version or not network.overlaps(cidr):
                continue
            if prefix.service not in GENERAL:
                return prefix
            overlap = cidr if cidr.subnet_of(network) else network  # type: ignore[arg-type]
            if not covered(overlap, ec2):
                return prefix
        return None


def covered(network: Network, by: list[Network]) -> bool:
    """Whether every address of ``network`` lies in one of ``by``."""
    remaining: list[Network] = [network]
    for cover in by:
        if not remaining:
            break
        if cover.version != network.version:
            continue
        left: list[Network] = []
        for piece in remaining:
            if not piece.overlaps(cover):
                left.append(piece)
            elif piece.subnet_of(cover):  # type: ignore[arg-type]
                continue
            else:  # the cover is inside the piece: keep what it does not cover
                left.extend(piece.address_exclude(cover))  # type: ignore[arg-type]
        remaining = left
    return not remaining


def parse(data: bytes, source: str) -> AwsRanges:
    """ip-ranges.json as AWS publishes it; anything else is refused."""
    try:
        document = json.loads(data)
        entries: list[tuple[str, dict[str, Any]]] = [("ip_prefix", item) for item in document["prefixes"]]
        entries += [("ipv6_prefix", item) for item in document.get("ipv6_prefixes", [])]
        prefixes = tuple(
            Prefix(
                ipaddress.ip_network(str(item[key]), strict=False),
                str(item.get("region", "")),
                str(item.get("service", "")),
                str(item.get("network_border_group", "")),
            )
            for key, item in entries
        )
    except (ValueError, KeyError, TypeError) as error:
        raise RangesUnavailable(
            f"AWS's IP ranges from {source} are not in ip-ranges.json's format: "
            f"{type(error).__name__}: {error}",
            f"point {ENV} at a copy of {URL}",
        ) from error
    if not any(prefix.service == AMAZON for prefix in prefixes):
        raise RangesUnavailable(
            f"AWS's IP ranges from {source} list no AMAZON prefix", f"point {ENV} at a copy of {URL}"
        )
    return AwsRanges(
        source, str(document.get("syncToken", "")), str(document.get("createDate", "")), prefixes
    )


_cache: dict[str, AwsRanges] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def load(opener: Opener | None = None, environ: Mapping[str, str] | None = None) -> AwsRanges:
    """The ranges from ``$EC2IR_AWS_IP_RANGES`` if set, else from AWS (``opener`` stands in for
    ``urllib.request.urlopen``); each source is read once per process. A failure is not kept, so
    the next call tries again."""
    environ = os.environ if environ is None else environ
    path = environ.get(ENV, "").strip()
    if path:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise RangesUnavailable(
                f"cannot read AWS's IP ranges from {ENV}={path}: {error.strerror or error}",
                f"point {ENV} at a copy of {URL}",
            ) from error
        key = f"file:{path}:{stat.st_mtime_ns}:{stat.st_size}"
        return _cached(key, lambda: _read_file(path))
    return _cached(f"url:{URL}", lambda: _fetch(opener))


def _cached(key: str, read: Callable[[], AwsRanges]) -> AwsRanges:
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    ranges = read()
    with _cache_lock:
        return _cache.setdefault(key, ranges)


def _read_file(path: str) -> AwsRanges:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise RangesUnavailable(
            f"cannot read AWS's IP ranges from {ENV}={path}: {error.strerror or error}",
            f"point {ENV} at a copy of {URL}",
        ) from error
    if len(data) > MAX_BYTES:
        raise RangesUnavailable(
            f"{path} is larger than any ip-ranges.json", f"point {ENV} at a copy of {URL}"
        )
    return parse(data, path)


def _fetch(opener: Opener | None) -> AwsRanges:
    if opener is None:
        import urllib.request

        opener = urllib.request.urlopen
    try:
        with opener(URL, timeout=TIMEOUT) as response:
            data = response.read(MAX_BYTES + 1)
    except Exception as error:  # any failure to fetch means the ranges are unknown
        raise RangesUnavailable(
            f"cannot fetch AWS's IP ranges from {URL}: {type(error).__name__}: {error}",
            f"without them no block can be shown to spare AWS's services; download the file where "
            f"you can and set {ENV} to its path",
        ) from error
    if len(data) > MAX_BYTES:
        raise RangesUnavailable(f"{URL} answered more than any ip-ranges.json", f"set {ENV} to a copy")
    return parse(data, URL)
