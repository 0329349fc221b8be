"""What may be blocked at the subnet edge: the addresses asked for, parsed, and each screened against
what the forensic side needs (the VPCs' own CIDRs, the office, the forensic workstations, link-local
services and AWS's published ranges), so that a block never cuts the responders off."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws import ranges as aws_ranges
from ec2ir.aws.session import Aws, chunks, translated
from ec2ir.containment.nacl_entries import NOTE_PREFIX, Network
from ec2ir.core.errors import Ec2irError, UsageError
from ec2ir.store.state import StateStore

WIDEST = {4: 16, 6: 48}
# Link-local: the instance metadata service (169.254.169.254, fd00:ec2::254), the Route 53 Resolver
# (169.254.169.253, fd00:ec2::253) and Amazon Time Sync (169.254.169.123, fd00:ec2::123).
LINK_LOCAL = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::/32"))
# IPv6 that stands for IPv4: NAT64 (64:ff9b::/96, 64:ff9b:1::/48), IPv4-mapped (::ffff:0:0/96) and
# 6to4 (2002::/16). In an IPv6-only subnet with DNS64 every IPv4 destination (S3, SSM, STS) is
# reached through the first, so a block there cuts far more than an attacker's address.
EMBEDS_IPV4 = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0/96", "2002::/16")
)
SAFE_HINT = (
    "nothing was changed; block only the attacker's own addresses (see the README, Blocking the "
    "attacker's address at the subnet edge)"
)


# -- what may be blocked ------------------------------------------------------------------------------


def parse_blocks(
    raw: Iterable[str], skip_unsafe: bool, check: bool = True
) -> tuple[list[Network], list[str]]:
    """The addresses to block, normalised (a bare address is that host), without repeats, and the
    notes on what was left out. What is malformed, too wide or link-local is refused before any
    change, or (``skip_unsafe``, for GuardDuty) left out with a note; ``check=False`` (removal,
    always safe) only refuses what is malformed."""
    blocks: dict[str, Network] = {}
    refused: list[tuple[str, str]] = []
    for text in raw:
        if "%" in str(text):
            refused.append(
                (
                    repr(str(text)),
                    f"scoped address to block {str(text)!r}: a scope id (%zone) names no network",
                )
            )
            continue
        try:
            network = ipaddress.ip_network(str(text).strip(), strict=True)
        except ValueError as error:
            refused.append((repr(str(text)), f"malformed address to block {str(text)!r} ({error})"))
            continue
        reason = static_reason(network) if check else ""
        if reason:
            refused.append((str(network), f"refusing to block {network}: {reason}"))
        else:
            blocks.setdefault(str(network), network)
    notes = [f"{NOTE_PREFIX}: left out {what}: {why}" for what, why in refused]
    if refused and not skip_unsafe:
        raise UsageError(
            "; ".join(why for _, why in refused),
            "give an address such as 203.0.113.7, or a network such as 203.0.113.0/24 no wider than "
            "/16 (IPv4) or /48 (IPv6); " + SAFE_HINT,
        )
    return list(blocks.values()), notes


def static_reason(network: Network) -> str:
    widest = WIDEST[network.version]
    if network.prefixlen < widest:
        return f"it is wider than /{widest}: a block that wide cuts far more than an attacker's address"
    for link_local in LINK_LOCAL:
        if link_local.version == network.version and link_local.overlaps(network):
            return (
                f"it overlaps the link-local {link_local}, where the instance metadata service, the "
                "Route 53 Resolver and Amazon Time Sync answer"
            )
    for embeds in EMBEDS_IPV4:
        if embeds.version == network.version and embeds.overlaps(network):
            return (
                f"it overlaps {embeds}, which embeds IPv4 (NAT64, IPv4-mapped or 6to4): in an IPv6-only "
                "subnet with DNS64 a block there cuts every IPv4 destination, S3 and SSM among them"
            )
    return ""


@dataclass
class Safety:
    """What a block must never cut, as read for one run; an error leaves its part unknown, and an
    unknown part makes every block unsafe."""

    region: str = ""
    vpc_cidrs: dict[str, list[Network]] = field(default_factory=dict)
    vpc_error: str = ""
    offices: list[tuple[Network, str]] = field(default_factory=list)  # (CIDR, where it is recorded)
    workstations: list[tuple[Network, str]] = field(default_factory=list)  # (address, whose)
    side_error: str = ""
    ranges: aws_ranges.AwsRanges | None = None
    ranges_error: str = ""


def gather_safety(
    aws: Aws, store: StateStore, forensic_group: str = "", vpc_ids: Sequence[str] | None = None
) -> Safety:
    """The VPCs' CIDRs, the forensic side's addresses and AWS's ranges, read side by side."""
    safety = Safety(region=aws.region())
    with ThreadPoolExecutor(max_workers=3) as pool:
        vpcs = pool.submit(vpc_cidrs, aws, vpc_ids)
        side = pool.submit(forensic_side, aws, store, safety.region, forensic_group)
        ranges = pool.submit(aws_ranges.load)
        try:
            safety.vpc_cidrs = vpcs.result()
        except Ec2irError as error:
            safety.vpc_error = str(error)
        try:
            safety.offices, safety.workstations = side.result()
        except Ec2irError as error:
            safety.side_error = str(error)
        try:
            safety.ranges = ranges.result()
        except Ec2irError as error:
            safety.ranges_error = str(error)
    return safety


def vpc_cidrs(aws: Aws, vpc_ids: Sequence[str] | None = None) -> dict[str, list[Network]]:
    """Every CIDR block associated with each VPC, IPv4 and IPv6."""
    found: dict[str, list[Network]] = {}
    arguments: dict[str, Any] = {"VpcIds": list(vpc_ids)} if vpc_ids else {}
    with translated("ec2", "DescribeVpcs"):
        for page in aws.ec2().get_paginator("describe_vpcs").paginate(**arguments):
            for vpc in page.get("Vpcs", []):
                blocks = [a.get("CidrBlock") for a in vpc.get("CidrBlockAssociationSet", [])]
                blocks += [a.get("Ipv6CidrBlock") for a in vpc.get("Ipv6CidrBlockAssociationSet", [])]
                blocks.append(vpc.get("CidrBlock"))
                found[vpc["VpcId"]] = list(
                    dict.fromkeys(ipaddress.ip_network(b, strict=False) for b in blocks if b)
                )
    return found


def forensic_side(
    aws: Aws, store: StateStore, region: str, forensic_group: str = ""
) -> tuple[list[tuple[Network, str]], list[tuple[Network, str]]]:
    """The office CIDRs recorded for every VPC, and every address of every ENI in a forensic group
    ec2ir knows of (its own, the outside ones recorded, and the run's)."""
    records = store.group_records(region)
    offices = [
        (ipaddress.ip_network(r.office_cidr, strict=False), f"recorded for {r.vpc_id}")
        for r in records.values()
        if r.office_cidr
    ]
    groups = {forensic_group} | {r.roles.get("forensic", "") for r in records.values()}
    groups |= {r.forensic_source for r in records.values()}
    groups.discard("")
    workstations: list[tuple[Network, str]] = []
    with translated("ec2", "DescribeNetworkInterfaces"):
        for batch in chunks(sorted(groups), 200):
            pages = (
                aws.ec2()
                .get_paginator("describe_network_interfaces")
                .paginate(Filters=[{"Name": "group-id", "Values": batch}])
            )
            for page in pages:
                for eni in page.get("NetworkInterfaces", []):
                    wearing = ", ".join(g["GroupId"] for g in eni.get("Groups", []))
                    whose = f"{eni['NetworkInterfaceId']} in {wearing}"
                    workstations += [(ipaddress.ip_network(a), whose) for a in eni_addresses(eni)]
    return offices, workstations


def eni_addresses(eni: Mapping[str, Any]) -> list[str]:
    addresses = [eni.get("PrivateIpAddress"), eni.get("Association", {}).get("PublicIp")]
    for private in eni.get("PrivateIpAddresses", []):
        addresses += [private.get("PrivateIpAddress"), private.get("Association", {}).get("PublicIp")]
    addresses += [v6.get("Ipv6Address") for v6 in eni.get("Ipv6Addresses", [])]
    return list(dict.fromkeys(a for a in addresses if a))


def screen(
    blocks: list[Network],
    safety: Safety,
    vpcs: Iterable[str],
    office_cidr: str | None,
    skip_unsafe: bool,
) -> tuple[list[Network], list[str]]:
    """The blocks that spare the forensic side: not the VPC's own CIDRs, the office, a forensic
    workstation, or AWS's own ranges the forensic side needs. The rest refuses the run before any
    change (CLI), or is left out with a note (GuardDuty)."""
    allowed: list[Network] = []
    refused: list[tuple[Network, list[str]]] = []
    for block in blocks:
        reasons = unsafe_reasons(block, safety, vpcs, office_cidr)
        if reasons:
            refused.append((block, reasons))
        else:
            allowed.append(block)
    if refused and not skip_unsafe:
        raise UsageError(
            "; ".join(f"refusing to block {block}: {', and '.join(reasons)}" for block, reasons in refused),
            SAFE_HINT,
        )
    notes = [f"{NOTE_PREFIX}: left out {block}: {'; '.join(reasons)}" for block, reasons in refused]
    return allowed, notes


def unsafe_reasons(block: Network, safety: Safety, vpcs: Iterable[str], office_cidr: str | None) -> list[str]:
    def overlaps(other: Network) -> bool:
        return other.version == block.version and other.overlaps(block)

    reasons: list[str] = []
    if safety.vpc_error:
        reasons.append(f"the VPC's own CIDRs could not be read ({safety.vpc_error})")
    for vpc in sorted(set(vpcs)):
        reasons += [
            f"it overlaps the VPC's own CIDR {cidr} ({vpc})"
            for cidr in safety.vpc_cidrs.get(vpc, [])
            if overlaps(cidr)
        ]
    offices = [(ipaddress.ip_network(office_cidr), "")] if office_cidr else []
    for office, where in offices + safety.offices:
        if overlaps(office):
            reasons.append(f"it overlaps the office CIDR {office}" + (f" {where}" if where else ""))
    if safety.side_error:
        reasons.append(f"the forensic side's addresses could not be read ({safety.side_error})")
    reasons += [
        f"it overlaps the forensic workstation's address {address} ({whose})"
        for address, whose in safety.workstations
        if overlaps(address)
    ]
    if safety.ranges is None:
        reasons.append(
            f"AWS's published IP ranges are not available ({safety.ranges_error or 'not read'}), so it "
            f"cannot be shown to spare the AWS services the forensic side needs; set {aws_ranges.ENV} "
            "to a copy of ip-ranges.json"
        )
    else:
        conflict = safety.ranges.conflict(block, safety.region)
        if conflict is not None:
            reasons.append(
                f"it overlaps AWS's own {safety.ranges.name(conflict)}, which the forensic side needs "
                "(S3, DynamoDB, SSM and the other service endpoints)"
            )
    return list(dict.fromkeys(reasons))
