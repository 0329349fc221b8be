"""The remote addresses a GuardDuty finding names: the attacker's side, to deny at the subnet edge.

Where GuardDuty puts one (the ``RemoteIpDetails`` shape of GuardDuty's API model, as botocore
ships it in ``guardduty/*/service-2.json``; GuardDuty API Reference, "RemoteIpDetails"): under the
finding's ``service.action``, in

* ``networkConnectionAction.remoteIpDetails`` (inbound: the peer that connected, e.g.
  ``UnauthorizedAccess:EC2/SSHBruteForce``; outbound: the server the instance reached, e.g.
  ``Backdoor:EC2/C&CActivity.B``),
* ``portProbeAction.portProbeDetails[].remoteIpDetails`` (each prober,
  ``Recon:EC2/PortProbeUnprotectedPort``),
* ``awsApiCallAction.remoteIpDetails``, ``kubernetesApiCallAction.remoteIpDetails`` and
  ``rdsLoginAttemptAction.remoteIpDetails`` (the caller),

each with ``ipAddressV4`` and/or ``ipAddressV6`` and an ``organization`` (``asn``, ``asnOrg``,
``isp``, ``org``). These are all the places the model has. Left out on purpose: ``localIpDetails``
(the instance's own side), ``kubernetesApiCallAction.sourceIps`` (the caller *and every proxy or
load balancer in between*, which may be innocent), and an attack sequence's
``service.detection.sequence.endpoints[].ip`` (every endpoint seen, the victim's included).

An EventBridge event carries the finding in ``detail`` with these lowerCamelCase names (the API's
wire names); boto3's ``GetFindings`` answers with UpperCamelCase ones. Both are read.

Everything in a finding is hostile input: an attacker chooses the address they connect from, and
what reaches GuardDuty's analysis is not ours to trust. So an address counts only if it is a
string that ``ipaddress`` reads as exactly one address of the field's version, and a global one
(private, loopback, link-local, multicast, unspecified, reserved, documentation and shared
ranges are left out), deduplicated, and at most ``MAX_ADDRESSES`` of them. Everything left out
is named in a note, escaped (``ec2ir.core.text.printable``) and shortened.

Not filtered here: an Amazon network. Attackers rent EC2 instances all the time, and their
address then belongs to Amazon's AS 16509 or 14618, so an ASN says nothing about whether an
address is an AWS *service's*. That is the engine's call (``ec2ir.aws.ranges``: AWS's published
service prefixes are refused, EC2 customer prefixes may be blocked), as are the VPC's own ranges
and the forensic side. The organization is only carried along, for the notification.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ec2ir.core.text import printable

# Each address takes one inbound and one outbound entry in every network ACL it is blocked in,
# and a network ACL holds 20 rules a direction by default (the VPC quota "Rules per network ACL",
# adjustable to 40), which its own allow rules and other cases' blocks share. A port-probe
# finding can name dozens of scanners; the first ten are blocked and the rest named in a note.
MAX_ADDRESSES = 10
MAX_NOTES = 12  # notes about what was left out; the rest are counted
SHOWN = 64  # characters of a left-out value shown in a note
# the longest textual form of one IPv6 address (an IPv4-mapped one written out in full)
LONGEST_ADDRESS = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
AMAZON_ASNS = frozenset({"16509", "14618", "8987"})

_ACTIONS = (
    "networkConnectionAction",
    "awsApiCallAction",
    "kubernetesApiCallAction",
    "rdsLoginAttemptAction",
)


@dataclass(frozen=True)
class RemoteAddress:
    """One remote address of a finding, and where the finding names it."""

    address: str  # compressed, as ipaddress writes it
    where: str  # e.g. "networkConnectionAction (INBOUND)"
    organization: str = ""  # "AS64496 EXAMPLE-AS, Example ISP", escaped; "" when not given

    @property
    def cidr(self) -> str:
        """The address as a one-address block: ``/32`` or ``/128``."""
        return str(ipaddress.ip_network(self.address))

    @property
    def amazon(self) -> bool:
        return any(f"AS{asn} " in f"{self.organization} " for asn in AMAZON_ASNS)

    def describe(self) -> str:
        said = f"{self.cidr}: {self.where}"
        if self.organization:
            said += f", {self.organization}"
        if self.amazon:
            said += " (an Amazon network: an EC2 customer's address is blocked, AWS's services never)"
        return said


@dataclass(frozen=True)
class FindingAddresses:
    """The remote addresses of a finding that may be blocked, and what was left out and why."""

    addresses: tuple[RemoteAddress, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def cidrs(self) -> tuple[str, ...]:
        return tuple(address.cidr for address in self.addresses)


def remote_addresses(finding: Any) -> list[str]:
    """Every remote IPv4/IPv6 address ``finding`` names that may be blocked, in the order the
    finding names them (see the module's docstring)."""
    return [address.address for address in finding_addresses(finding).addresses]


def _get(mapping: Any, key: str) -> Any:
    """``mapping[key]`` under its lowerCamelCase (EventBridge, the API's wire names) or
    UpperCamelCase (boto3) name; None when absent or when ``mapping`` is not a mapping."""
    if not isinstance(mapping, Mapping):
        return None
    value = mapping.get(key)
    return value if value is not None else mapping.get(key[:1].upper() + key[1:])


def _shown(value: Any) -> str:
    """A left-out value as a note shows it: escaped and shortened; only the type of a non-string."""
    if not isinstance(value, str):
        return f"({type(value).__name__})"
    shown = printable(value[:SHOWN])
    return f'"{shown}"' if len(value) <= SHOWN else f'"{shown}..." ({len(value)} characters)'


def _places(finding: Any) -> Iterator[tuple[str, str, Any]]:
    """(where, the finding's path to it, remoteIpDetails) for every place that may hold one."""
    action = _get(_get(finding, "service"), "action")
    if not isinstance(action, Mapping):
        return
    for name in _ACTIONS:
        details = _get(_get(action, name), "remoteIpDetails")
        if details is not None:
            direction = _get(_get(action, name), "connectionDirection")
            where = f"{name} ({printable(direction)[:16]})" if isinstance(direction, str) else name
            yield where, f"service.action.{name}.remoteIpDetails", details
    probes = _get(_get(action, "portProbeAction"), "portProbeDetails")
    if probes is None:
        return
    if not isinstance(probes, list):
        yield "portProbeAction", "service.action.portProbeAction.portProbeDetails", probes
        return
    for index, probe in enumerate(probes):
        path = f"service.action.portProbeAction.portProbeDetails[{index}].remoteIpDetails"
        yield "portProbeAction", path, _get(probe, "remoteIpDetails")


def _organization(details: Mapping[str, Any]) -> str:
    organization = _get(details, "organization")
    if not isinstance(organization, Mapping):
        return ""
    parts = []
    asn, asn_org = _get(organization, "asn"), _get(organization, "asnOrg")
    if isinstance(asn, str | int) and not isinstance(asn, bool) and str(asn).isdigit():
        parts.append(f"AS{asn}" + (f" {printable(asn_org[:SHOWN])}" if isinstance(asn_org, str) else ""))
    for key in ("org", "isp"):
        name = _get(organization, key)
        if isinstance(name, str) and name and printable(name[:SHOWN]) not in parts:
            parts.append(printable(name[:SHOWN]))
    return ", ".join(parts)


def _parse(value: Any, version: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, str]:
    """The one global address ``value`` is, or None and why not."""
    if not isinstance(value, str):
        return None, "not a string"
    if len(value) > LONGEST_ADDRESS:
        return None, "too long to be an IP address"
    try:
        address = ipaddress.ip_address(value)  # one address: no prefix, no spaces, no leading zeros
    except ValueError:
        return None, "not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None, "not a single address (scoped)"
    if address.version != version:
        return None, f"an IPv{address.version} address in the IPv{version} field"
    for kind in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return None, f"not a global address ({kind.replace('_', '-')})"
    if not address.is_global:
        return None, "not a global address"
    return address, ""


def _own_addresses(finding: Any) -> set[str]:
    """The addresses the finding gives the instance itself (its ENIs' public and IPv6 ones)."""
    own: set[str] = set()
    interfaces = _get(_get(_get(finding, "resource"), "instanceDetails"), "networkInterfaces")
    for interface in interfaces if isinstance(interfaces, list) else []:
        public = _get(interface, "publicIp")
        ipv6 = _get(interface, "ipv6Addresses")
        for value in [public, *(ipv6 if isinstance(ipv6, list) else [])]:
            address, _ = _parse(value, 6 if isinstance(value, str) and ":" in value else 4)
            if address is not None:
                own.add(address.compressed)
    return own


def finding_addresses(finding: Any) -> FindingAddresses:
    """The remote addresses of ``finding`` (an EventBridge event's ``detail``, or the event itself)
    that may be blocked, and a note for everything left out. Never raises."""
    if isinstance(finding, Mapping) and "detail" in finding and "detail-type" in finding:
        finding = finding["detail"]
    own = _own_addresses(finding)
    unique: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, RemoteAddress] = {}
    notes: list[str] = []
    for where, path, details in _places(finding):
        addresses, left_out = _read_place(path, details, own)
        notes.extend(left_out)
        for address in addresses:
            if address not in unique:
                unique[address] = RemoteAddress(address.compressed, where, _organization(details))
    found = list(unique.values())
    over = max(0, len(found) - MAX_ADDRESSES)
    return FindingAddresses(tuple(found[:MAX_ADDRESSES]), tuple(_left_out(notes, over)))


def _read_place(
    path: str, details: Any, own: set[str]
) -> tuple[list[ipaddress.IPv4Address | ipaddress.IPv6Address], list[str]]:
    """The addresses one ``remoteIpDetails`` names that may be blocked, and a note for each value
    left out (the instance's own addresses included)."""
    if not isinstance(details, Mapping):
        return [], [f"{path} {_shown(details)}: not an object"]
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    notes: list[str] = []
    for field, version in (("ipAddressV4", 4), ("ipAddressV6", 6)):
        value = _get(details, field)
        if value is None:
            continue
        address, why = _parse(value, version)
        if address is not None and address.compressed in own:
            address, why = None, "the instance's own address"
        if address is None:
            notes.append(f"{path}.{field} {_shown(value)}: {why}")
        else:
            addresses.append(address)
    return addresses, notes


def _left_out(notes: list[str], over: int) -> list[str]:
    """The notes to show, at most MAX_NOTES of them, and a count of what is beyond each limit."""
    left_out = [f"left out {note}" for note in notes[:MAX_NOTES]]
    if len(notes) > MAX_NOTES:
        left_out.append(f"and {len(notes) - MAX_NOTES} more values left out")
    if over:
        left_out.append(
            f"{over} more remote address(es) left out: at most {MAX_ADDRESSES} are blocked a finding"
        )
    return left_out
