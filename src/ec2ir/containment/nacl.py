"""The attacker's address cut at the subnet edge: network ACL deny entries, added and undone exactly.

Changing an ENI's security groups does not interrupt every connection EC2 already tracks; AWS
recommends a network ACL when traffic must stop at once. An ACL is stateless and sits at the edge
of every subnet it serves, so a deny entry for an address cuts every flow to and from it, tracked
or not, for every instance in those subnets (docs/design.md has the AWS facts relied on).

What ec2ir adds, per ACL and address, is two entries: all traffic (protocol ``-1``) denied from
the address (inbound) and to it (outbound), ahead of every entry that is not ec2ir's: at the
lowest free rule numbers below the first such entry of that direction (the default entry, 32767,
counts only when it is the only one). If one direction has no room, nothing is added for that
address in that ACL, and the run says so.

Every entry is recorded before it is added, in the state table, one item per entry keyed by the
ACL and the rule number (``pk = nacl#<acl>``, ``sk = entry#<ingress|egress>#<rule>``): the
conditional put that writes it is also the claim on that rule number, so two runs (or two cases)
never choose the same one. Each record names its case, VPC, direction, CIDR and the subnets it was
added for, and moves ``pending`` (recorded, maybe not added) -> ``applied`` -> ``removing``
(recorded, maybe not removed) -> ``removed``. The case's item ``pk = case#<case>``,
``sk = nacl-acls`` lists the ACLs it has records in, so that ``release`` of a case that never
blocked anything costs one read. The next run of the case reconciles an interrupted step with the
live ACL: an entry present exactly as recorded (deny, ``-1``, the CIDR, at that number and
direction) is the case's; one absent is added again (when blocking) or its record dropped (when
removing). An entry is only ever removed if the record says it is the case's and the live entry
still matches exactly: one changed by someone since is left as it is and reported.

Nothing here is worth losing a containment over: in ``isolate`` the blocks are added after every
instance is cut off, and what cannot be added is named in the notes and the results' warnings.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ec2ir.aws import ranges as aws_ranges
from ec2ir.aws.session import Aws, chunks, discover, translated
from ec2ir.containment.check import Breach, BreachKind
from ec2ir.core.errors import AwsError, Ec2irError, UsageError
from ec2ir.core.models import ACTIVE_STATUSES, Hold, InstanceFacts, JournalEntry
from ec2ir.render.terminal import printable, table
from ec2ir.store.state import CONDITION_FAILED, StateStore, _deserialize, _serialize, case_key, now

if TYPE_CHECKING:
    from ec2ir.engine.facade import RunReport

# IAM, declared next to the code that calls it (ec2ir.permissions.policy gathers it).
PURPOSE = "network ACL blocks (--block-ip, block-ip, unblock-ip)"
PERMISSIONS = (
    "ec2:DescribeNetworkAcls",
    "ec2:DescribeVpcs",  # the VPC's own CIDRs, never blocked
    "ec2:DescribeNetworkInterfaces",  # the forensic workstations' addresses, never blocked
    "ec2:DescribeInstances",  # the subnets of the case's instances
    "ec2:CreateNetworkAclEntry",
    "ec2:DeleteNetworkAclEntry",
)
# Only undoing (release, unblock-ip) removes an entry: the isolate-only functions never may.
UNDO_PERMISSIONS = ("ec2:DeleteNetworkAclEntry",)

NOTE_PREFIX = "network ACL"  # every note about blocks starts so (GuardDuty's handler copies them)
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
DEFAULT_RULE = 32767  # the "*" entries: 32767 (IPv4) and 32768 (IPv6); never a first entry
PENDING, APPLIED, REMOVING, REMOVED = "pending", "applied", "removing", "removed"
ACTIVE = (PENDING, APPLIED, REMOVING)
ATTEMPTS = 3  # choosing rule numbers again after another run took them
BREACH_KINDS = frozenset({BreachKind.NACL_ENTRY_MISSING, BreachKind.NACL_ENTRY_CHANGED})
ALREADY_EXISTS = "NetworkAclEntryAlreadyExists"
LIMIT_EXCEEDED = "NetworkAclEntryLimitExceeded"
ENTRY_NOT_FOUND = "InvalidNetworkAclEntry.NotFound"
FOUND = "found"  # the entry is in place already, added by another run of the case
CHANGED = "changed since ec2ir added it: left as it is"
INDEX = "nacl-acls"
SAFE_HINT = (
    "nothing was changed; block only the attacker's own addresses (see the README, Blocking the "
    "attacker's address at the subnet edge)"
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Journal = Callable[[list[JournalEntry]], None]


def direction(egress: bool) -> str:
    return "outbound" if egress else "inbound"


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


def eni_addresses(eni: dict[str, Any]) -> list[str]:
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


def free_numbers(live: Iterable[int], claimed: Iterable[int], count: int) -> list[int] | None:
    """The ``count`` lowest rule numbers free ahead of the first live entry that is not ec2ir's,
    or None if there are not that many. ``live``: the direction's non-default live entries;
    ``claimed``: the numbers ec2ir's records hold (each live entry there is ec2ir's own)."""
    live, claimed = set(live), set(claimed)
    first = min((live - claimed) | {DEFAULT_RULE})
    free = [n for n in range(1, first) if n not in live and n not in claimed][:count]
    return free if len(free) == count else None


def first_foreign(live: Iterable[int], claimed: Iterable[int]) -> int:
    return min((set(live) - set(claimed)) | {DEFAULT_RULE})


# -- the records ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryRecord:
    """One deny entry a case added (or is about to add, or to remove), as the state table keeps it."""

    acl_id: str
    egress: bool
    rule_number: int
    cidr: str
    case_id: str
    vpc_id: str
    subnets: tuple[str, ...]
    status: str
    recorded_at: str
    recorded_by: str
    changed_at: str = ""
    why: str = ""  # why it was removed, when ec2ir did not remove it itself

    @property
    def direction(self) -> str:
        return direction(self.egress)

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.cidr)

    def entry_arguments(self) -> dict[str, Any]:
        cidr = {"Ipv6CidrBlock" if self.network.version == 6 else "CidrBlock": self.cidr}
        return {
            "NetworkAclId": self.acl_id,
            "RuleNumber": self.rule_number,
            "Protocol": "-1",
            "RuleAction": "deny",
            "Egress": self.egress,
            **cidr,
        }

    def describe(self) -> str:
        return f"deny {self.cidr} {self.direction} at rule {self.rule_number}"


def record_key(acl_id: str, egress: bool, rule_number: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"nacl#{acl_id}"},
        "sk": {"S": f"entry#{'egress' if egress else 'ingress'}#{rule_number:05d}"},
    }


class RecordStore:
    """The deny entries' records in the state table (see the module's docstring)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @property
    def _ddb(self) -> Any:
        return self.store.aws.dynamodb()

    @property
    def _table(self) -> str:
        return self.store.table

    def of_acl(self, acl_id: str) -> list[EntryRecord]:
        """Every record of the ACL, of every case and status; none while there is no table."""
        found: list[EntryRecord] = []
        try:
            with translated("dynamodb", "Query"):
                for page in self._ddb.get_paginator("query").paginate(
                    TableName=self._table,
                    KeyConditionExpression="pk = :acl",
                    ExpressionAttributeValues={":acl": {"S": f"nacl#{acl_id}"}},
                    ConsistentRead=True,
                ):
                    found += [self._record(item) for item in page.get("Items", [])]
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return []
            raise
        return found

    @staticmethod
    def _record(item: dict[str, Any]) -> EntryRecord:
        data = _deserialize(item)
        return EntryRecord(
            acl_id=str(data["acl_id"]),
            egress=bool(data["egress"]),
            rule_number=int(data["rule_number"]),
            cidr=str(data["cidr"]),
            case_id=str(data["case_id"]),
            vpc_id=str(data.get("vpc_id", "")),
            subnets=tuple(str(s) for s in data.get("subnets", [])),
            status=str(data["status"]),
            recorded_at=str(data.get("recorded_at", "")),
            recorded_by=str(data.get("recorded_by", "")),
            changed_at=str(data.get("changed_at", "")),
            why=str(data.get("why", "")),
        )

    def claim(self, record: EntryRecord) -> bool:
        """Write the record before its entry is added; False if another record holds the number."""
        data = {
            "acl_id": record.acl_id,
            "egress": record.egress,
            "rule_number": record.rule_number,
            "cidr": record.cidr,
            "case_id": record.case_id,
            "vpc_id": record.vpc_id,
            "subnets": list(record.subnets),
            "status": record.status,
            "recorded_at": record.recorded_at,
            "recorded_by": record.recorded_by,
        }
        try:
            with translated("dynamodb", "PutItem"):
                self._ddb.put_item(
                    TableName=self._table,
                    Item=_serialize(data) | record_key(record.acl_id, record.egress, record.rule_number),
                    ConditionExpression="attribute_not_exists(pk) OR #s = :removed",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":removed": {"S": REMOVED}},
                )
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                return False
            raise
        return True

    def move(self, record: EntryRecord, to: str, why: str = "") -> EntryRecord | None:
        """The record in its new status, if it was still this one in its old; else None."""
        stamp = now()
        values: dict[str, Any] = {
            ":to": to,
            ":from": record.status,
            ":case": record.case_id,
            ":at": record.recorded_at,
            ":stamp": stamp,
            ":why": why,
        }
        try:
            with translated("dynamodb", "UpdateItem"):
                self._ddb.update_item(
                    TableName=self._table,
                    Key=record_key(record.acl_id, record.egress, record.rule_number),
                    UpdateExpression="SET #s = :to, changed_at = :stamp, why = :why",
                    ConditionExpression="#s = :from AND case_id = :case AND recorded_at = :at",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues=_serialize(values),
                )
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                return None
            raise
        return replace(record, status=to, changed_at=stamp, why=why)

    def index(self, case_id: str) -> list[str]:
        """The ACLs the case has records in."""
        try:
            with translated("dynamodb", "GetItem"):
                item = self._ddb.get_item(
                    TableName=self._table, Key=case_key(case_id) | {"sk": {"S": INDEX}}, ConsistentRead=True
                ).get("Item")
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return []
            raise
        return sorted(item.get("acls", {}).get("SS", [])) if item else []

    def add_to_index(self, case_id: str, acl_ids: Iterable[str]) -> None:
        acls = sorted(set(acl_ids))
        if not acls:
            return
        with translated("dynamodb", "UpdateItem"):
            self._ddb.update_item(
                TableName=self._table,
                Key=case_key(case_id) | {"sk": {"S": INDEX}},
                UpdateExpression="ADD acls :acls",
                ExpressionAttributeValues={":acls": {"SS": acls}},
            )


# -- the live ACLs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acl:
    acl_id: str
    vpc_id: str
    subnets: tuple[str, ...]
    entries: dict[tuple[bool, int], dict[str, Any]]  # (egress, rule number) -> the live entry

    def numbers(self, egress: bool) -> set[int]:
        return {n for e, n in self.entries if e == egress and n < DEFAULT_RULE}


def _acl(described: dict[str, Any]) -> Acl:
    return Acl(
        acl_id=str(described["NetworkAclId"]),
        vpc_id=str(described.get("VpcId", "")),
        subnets=tuple(
            sorted(str(a["SubnetId"]) for a in described.get("Associations", []) if a.get("SubnetId"))
        ),
        entries={(bool(e["Egress"]), int(e["RuleNumber"])): e for e in described.get("Entries", [])},
    )


def acls_of_subnets(aws: Aws, subnets: Iterable[str]) -> dict[str, Acl]:
    """The ACL that serves each subnet (every subnet has exactly one), with its entries."""
    found: dict[str, Acl] = {}
    with translated("ec2", "DescribeNetworkAcls"):
        for batch in chunks(sorted(set(subnets)), 200):
            pages = (
                aws.ec2()
                .get_paginator("describe_network_acls")
                .paginate(Filters=[{"Name": "association.subnet-id", "Values": batch}])
            )
            for page in pages:
                found.update((acl.acl_id, acl) for acl in map(_acl, page.get("NetworkAcls", [])))
    return found


def acls_by_id(aws: Aws, acl_ids: Iterable[str]) -> dict[str, Acl]:
    """The named ACLs that still exist. EC2 fails a request naming one that does not, so then each
    is asked for alone."""
    ids = sorted(set(acl_ids))
    if not ids:
        return {}
    try:
        return _describe_ids(aws, ids)
    except AwsError as error:
        if not error.code.endswith(".NotFound"):
            raise
    found: dict[str, Acl] = {}
    for acl_id in ids:
        try:
            found |= _describe_ids(aws, [acl_id])
        except AwsError as error:
            if not error.code.endswith(".NotFound"):
                raise
    return found


def _describe_ids(aws: Aws, ids: list[str]) -> dict[str, Acl]:
    with translated("ec2", "DescribeNetworkAcls"):
        described = aws.ec2().describe_network_acls(NetworkAclIds=ids)["NetworkAcls"]
    return {acl.acl_id: acl for acl in map(_acl, described)}


def matches(live: dict[str, Any] | None, cidr: str) -> bool:
    """Whether a live entry is exactly an ec2ir deny of ``cidr``: all traffic, denied."""
    if live is None or live.get("RuleAction") != "deny" or str(live.get("Protocol")) != "-1":
        return False
    if live.get("PortRange") or live.get("IcmpTypeCode"):
        return False
    theirs = live.get("CidrBlock") or live.get("Ipv6CidrBlock")
    try:
        return bool(theirs) and ipaddress.ip_network(str(theirs), strict=False) == ipaddress.ip_network(cidr)
    except ValueError:
        return False


def _same(one: EntryRecord, other: EntryRecord) -> bool:
    """Whether two reads are of the same record: its case, its CIDR, its claim."""
    return (one.case_id, one.cidr, one.recorded_at) == (other.case_id, other.cidr, other.recorded_at)


def describe_live(live: dict[str, Any]) -> str:
    ports = live.get("PortRange")
    port = f" ports {ports.get('From')}-{ports.get('To')}" if ports else ""
    return (
        f"{live.get('RuleAction')} protocol {live.get('Protocol')}{port} "
        f"{live.get('CidrBlock') or live.get('Ipv6CidrBlock')}"
    )


def subnets_of(facts: InstanceFacts) -> set[str]:
    return {
        str(nic["SubnetId"]) for nic in facts.description.get("NetworkInterfaces", []) if nic.get("SubnetId")
    }


# -- what one run did -----------------------------------------------------------------------------------


class ChangeResult(StrEnum):
    """What became of one deny entry in one run (its value is what output and JSON show)."""

    ADDED = "added"
    READDED = "re-added"  # recorded by an interrupted run, missing, added again
    RECORDED = "recorded"  # added by an interrupted run, found in place, now recorded as added
    ALREADY_THERE = "already there"
    WOULD_ADD = "would add"
    REMOVED = "removed"
    WOULD_REMOVE = "would remove"
    DROPPED = "dropped"  # recorded, never added: the record goes
    GONE = "gone"  # removed by someone else, or its ACL is gone
    LEFT = "left"  # changed by someone since ec2ir added it: left as it is


# The results of a run that put an entry in place.
ADDING = frozenset({ChangeResult.ADDED, ChangeResult.READDED, ChangeResult.RECORDED})
# The results after which the entry denies its CIDR in its ACL.
IN_PLACE = frozenset(
    {ChangeResult.ADDED, ChangeResult.READDED, ChangeResult.RECORDED, ChangeResult.ALREADY_THERE}
)


@dataclass(frozen=True)
class Change:
    acl_id: str
    vpc_id: str
    egress: bool
    rule_number: int
    cidr: str
    result: ChangeResult
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "acl_id": self.acl_id,
            "vpc_id": self.vpc_id,
            "direction": direction(self.egress),
            "rule_number": self.rule_number,
            "cidr": self.cidr,
            "result": self.result,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Problem:
    """What could not be done: said in the run's notes, and as a warning on the results of the
    instances whose subnets the ACL serves (``acl_id`` empty: every instance of the run)."""

    acl_id: str
    text: str
    warning: str = ""

    @property
    def note(self) -> str:
        return f"{NOTE_PREFIX} {self.acl_id}: {self.text}" if self.acl_id else f"{NOTE_PREFIX}: {self.text}"


@dataclass
class NaclReport:
    """The outcome of one block-ip or unblock-ip run (and of the blocks within isolate, release and
    status --check)."""

    action: str  # the verb journaled: isolate, block-ip, unblock-ip, release, status-check
    case_id: str
    actor: str
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    acl_subnets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # each ACL seen -> its subnets

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "case_id": self.case_id,
            "actor": self.actor,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "changes": [change.as_dict() for change in self.changes],
            "notes": self.notes,
            "problems": [problem.note for problem in self.problems],
        }

    def all_notes(self) -> list[str]:
        return self.notes + [problem.note for problem in self.problems]

    def changed(self) -> bool:
        """Whether this run added an entry, or failed to do what it was asked."""
        return bool(self.problems) or any(change.result in ADDING for change in self.changes)

    def denied(self) -> dict[str, set[str]]:
        """Each CIDR denied both ways after this run -> the ACLs it is denied in."""
        directions: dict[tuple[str, str], set[bool]] = {}
        for change in self.changes:
            if change.result in IN_PLACE:
                directions.setdefault((change.cidr, change.acl_id), set()).add(change.egress)
        denied: dict[str, set[str]] = {}
        for (cidr, acl_id), egress in directions.items():
            if egress == {True, False}:
                denied.setdefault(cidr, set()).add(acl_id)
        return denied


def render(report: NaclReport) -> str:
    rows = [
        [c.acl_id, c.vpc_id, direction(c.egress), str(c.rule_number), c.cidr, c.result, c.detail]
        for c in report.changes
    ]
    parts = [table(["ACL", "VPC", "DIRECTION", "RULE", "CIDR", "RESULT", "DETAIL"], rows)] if rows else []
    parts += ["\n".join(f"note: {printable(note)}" for note in report.notes)] if report.notes else []
    if report.problems:
        parts.append("\n".join(f"PROBLEM: {printable(problem.note)}" for problem in report.problems))
    added = sum(c.result is ChangeResult.ADDED for c in report.changes)
    removed = sum(c.result is ChangeResult.REMOVED for c in report.changes)
    verb = "would change" if report.dry_run else "changed"
    parts.append(
        f"case {printable(report.case_id)}: {report.action} {verb} {len(report.changes)} entr(ies) "
        f"({added} added, {removed} removed), {len(report.problems)} problem(s) "
        f"(acting as {printable(report.actor)})"
    )
    return "\n\n".join(parts)


# -- adding, removing, checking -----------------------------------------------------------------------------


@dataclass
class _Wanted:
    """One entry a CIDR lacks in one ACL: where it goes, and the record it re-adds (if any)."""

    cidr: str
    egress: bool
    rule_number: int
    record: EntryRecord | None  # a record whose entry is missing: added again at its own number


class Edge:
    """The deny entries of one case: added, removed, checked, each change recorded first and
    journaled after."""

    def __init__(
        self, aws: Aws, store: StateStore, report: NaclReport, journal: Journal, dry_run: bool = False
    ) -> None:
        self.aws = aws
        self.records = RecordStore(store)
        self.report = report
        self.journal = journal
        self.dry_run = dry_run
        self.case = report.case_id

    # -- adding

    def block(self, blocks: list[Network], subnets: set[str]) -> None:
        """Deny each block in the ACL of every subnet named (the subnets of the case's instances)."""
        acls = acls_of_subnets(self.aws, subnets)
        for acl in acls.values():
            self.report.acl_subnets[acl.acl_id] = acl.subnets
        if not acls:
            self.report.problems.append(
                Problem("", f"no network ACL serves the subnets {', '.join(sorted(subnets))}")
            )
            return
        if not self.dry_run:
            self.records.add_to_index(self.case, acls)  # before any claim: release finds them from here
        for acl_id in sorted(acls):
            self._guarded(acl_id, functools.partial(self._block_acl, acls[acl_id], blocks, subnets))

    def _guarded(self, acl_id: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Ec2irError as error:  # one ACL's failure must never stop the others
            self.report.problems.append(Problem(acl_id, str(error), f"{acl_id}: {error}"))

    def _block_acl(self, acl: Acl, blocks: list[Network], case_subnets: set[str]) -> None:
        added: list[Change] = []
        for _ in range(ATTEMPTS):
            said = len(self.report.changes), len(self.report.problems)
            done = self._try_block(acl, blocks, case_subnets, added)
            if done:
                break
            # said again by the next pass: only what this one changed stays
            self.report.changes[said[0] :] = [c for c in self.report.changes[said[0] :] if c in added]
            del self.report.problems[said[1] :]
            fresh = acls_by_id(self.aws, [acl.acl_id]).get(acl.acl_id)
            if fresh is None:
                self.report.problems.append(Problem(acl.acl_id, "the network ACL no longer exists"))
                return
            acl = fresh
        else:
            self.report.problems.append(
                Problem(
                    acl.acl_id, "other runs kept taking the rule numbers chosen; run the same command again"
                )
            )
        self._note_block(acl, added, case_subnets)
        there = {
            c.cidr
            for c in self.report.changes
            if c.acl_id == acl.acl_id and c.result is ChangeResult.ALREADY_THERE
        }
        if there and not added:
            self.report.notes.append(
                f"{NOTE_PREFIX} {acl.acl_id} ({acl.vpc_id}): already denies {len(there)} address(es) of case "
                f"{self.case}: nothing changed"
            )

    def _try_block(
        self, acl: Acl, blocks: list[Network], case_subnets: set[str], added: list[Change]
    ) -> bool:
        """One pass: reconcile the case's records with the live ACL, choose numbers, record, add.
        False when another run took a number first (the caller reads the ACL again)."""
        records = self.records.of_acl(acl.acl_id)
        mine = [r for r in records if r.case_id == self.case and r.status in ACTIVE]
        asked = [str(block) for block in blocks]
        wanted = list(dict.fromkeys([*asked, *(r.cidr for r in mine if r.status in (PENDING, APPLIED))]))
        in_force: set[tuple[str, bool]] = set()
        missing: dict[tuple[str, bool], EntryRecord] = {}
        changed: dict[tuple[str, bool], EntryRecord] = {}
        for record in mine:
            live = acl.entries.get((record.egress, record.rule_number))
            exact = matches(live, record.cidr)
            key = (record.cidr, record.egress)
            if record.status == REMOVING:  # a removal was interrupted
                if exact and record.cidr in asked:
                    self._move(record, APPLIED)  # blocked again: it stays
                    in_force.add(key)
                elif not exact:
                    self._move(record, REMOVED, "already gone" if live is None else CHANGED)
                continue
            if exact:
                in_force.add(key)
                if record.status == PENDING:  # added by a run that died before saying so
                    self._move(record, APPLIED)
                    self._change(
                        acl, record, ChangeResult.RECORDED, "found added by an interrupted run", journal=True
                    )
                elif record.cidr in asked:
                    self._change(acl, record, ChangeResult.ALREADY_THERE)
            elif live is None:
                missing[key] = record
            elif record.status == PENDING:  # its number was taken before its entry was added
                self._move(record, REMOVED, "its rule number was taken by another entry first")
            else:
                changed[key] = record
        plan = self._choose(acl, records, wanted, in_force, missing)
        if self.dry_run:
            for want in plan:
                self._change(acl, self._planned(acl, want, case_subnets), ChangeResult.WOULD_ADD)
                changed.pop((want.cidr, want.egress), None)
            self._report_changed(acl, changed)
            return True
        by_cidr: dict[str, list[_Wanted]] = {}
        for want in plan:
            by_cidr.setdefault(want.cidr, []).append(want)
        for pair in by_cidr.values():  # both directions of a CIDR, or neither
            placed: list[tuple[EntryRecord, Change | None]] = []
            for want in pair:
                record = want.record or self._planned(acl, want, case_subnets)
                if want.record is None and not self.records.claim(record):
                    return False  # another run claimed the number: read the ACL again
                try:
                    outcome = self._create(acl, record)
                except AwsError as error:  # the record stays pending: the next run finds out
                    self._fail_pair(acl, record, placed, str(error), added)
                    break
                if outcome == ALREADY_EXISTS:
                    return False
                if outcome == LIMIT_EXCEEDED:
                    self._fail_pair(acl, record, placed, "", added)
                    break
                if outcome == FOUND:  # another run of the case added it at this number first
                    placed.append((record, None))
                    continue
                change = self._settle_added(acl, record, want.record is not None)
                if change is None:  # its record went elsewhere meanwhile: the entry was taken out
                    self._fail_pair(acl, record, placed, "", added)
                    break
                added.append(change)
                placed.append((record, change))
                superseded = changed.pop((record.cidr, record.egress), None)
                if superseded is not None:
                    self._move(superseded, REMOVED, f"{CHANGED}; replaced by rule {record.rule_number}")
        self._report_changed(acl, changed)
        return True

    def _settle_added(self, acl: Acl, record: EntryRecord, readded: bool) -> Change | None:
        """Record the entry just added as applied. If its record moved meanwhile (another run of the
        case, or a removal), act on where it is now: still the case's and applied, the entry stays;
        anything else, the entry just added is unrecorded, so it is taken out again (None)."""
        result = ChangeResult.READDED if readded else ChangeResult.ADDED
        if record.status != PENDING or self._move(record, APPLIED) is not None:
            return self._change(acl, record, result, journal=True)
        current = self._current(record)
        if current is not None and current.status == APPLIED and _same(current, record):
            return self._change(acl, record, result, "recorded by another run of the case", journal=True)
        if current is None or current.status == REMOVED:
            self._delete_entry(record)
        # else: another record (another run) now holds the number and answers for its entry
        return None

    def _fail_pair(
        self,
        acl: Acl,
        failed: EntryRecord,
        placed: list[tuple[EntryRecord, Change | None]],
        error: str,
        added: list[Change],
    ) -> None:
        """One direction of a CIDR could not be added: take out the other if this run just added
        it (both or neither), and say that the CIDR is not blocked in this ACL."""
        undone: list[str] = []
        for record, change in placed:
            if change is None:
                continue  # already there before this run: not this run's to take out
            current = replace(record, status=APPLIED)
            moved = self._move(current, REMOVING, "the other direction could not be added")
            if moved is None:
                continue
            self._delete_entry(moved)
            self._move(moved, REMOVED, "the other direction could not be added")
            if change in added:
                added.remove(change)
            self._change(
                acl, moved, ChangeResult.REMOVED, "taken out again: the other direction failed", journal=True
            )
            undone.append(f"{moved.direction} rule {moved.rule_number}")
        if not error:  # _create said why (the quota), or the record went elsewhere
            if not any(failed.cidr in p.text and p.acl_id == acl.acl_id for p in self.report.problems):
                self.report.problems.append(
                    Problem(
                        acl.acl_id,
                        f"NOT blocked {failed.cidr}: its {failed.direction} record was changed by another "
                        "run while it was being added",
                        f"{failed.cidr} is not blocked at the subnet edge ({acl.acl_id})",
                    )
                )
        else:
            self.report.problems.append(
                Problem(
                    acl.acl_id,
                    f"NOT blocked {failed.cidr}: adding {failed.direction} rule {failed.rule_number} failed: "
                    f"{error}",
                    f"{failed.cidr} is not blocked at the subnet edge ({acl.acl_id}): {error}",
                )
            )
        if undone:
            self.report.notes.append(
                f"{NOTE_PREFIX} {acl.acl_id}: took {failed.cidr}'s {', '.join(undone)} out again: an address "
                "is denied both ways or not at all"
            )

    def _current(self, record: EntryRecord) -> EntryRecord | None:
        for found in self.records.of_acl(record.acl_id):
            if (found.egress, found.rule_number) == (record.egress, record.rule_number):
                return found
        return None

    def _delete_entry(self, record: EntryRecord) -> None:
        """Take out the entry at the record's number, if it is still exactly the record's deny."""
        live = acls_by_id(self.aws, [record.acl_id]).get(record.acl_id)
        entry = live.entries.get((record.egress, record.rule_number)) if live is not None else None
        if not matches(entry, record.cidr):
            return
        try:
            with translated("ec2", "DeleteNetworkAclEntry"):
                self.aws.ec2().delete_network_acl_entry(
                    NetworkAclId=record.acl_id, RuleNumber=record.rule_number, Egress=record.egress
                )
        except AwsError as error:
            if error.code != ENTRY_NOT_FOUND:
                raise

    def _report_changed(self, acl: Acl, changed: dict[tuple[str, bool], EntryRecord]) -> None:
        """The case's entries someone changed, that no new entry replaced: the address is not denied
        there, and ec2ir never touches someone else's entry."""
        for record in changed.values():
            live = acl.entries.get((record.egress, record.rule_number)) or {}
            self.report.problems.append(
                Problem(
                    acl.acl_id,
                    f"{record.direction} rule {record.rule_number} ({record.cidr}): {CHANGED} "
                    f"(now {describe_live(live)})",
                    f"{acl.acl_id}: {record.direction} rule {record.rule_number} ({record.cidr}) {CHANGED}",
                )
            )

    def _choose(
        self,
        acl: Acl,
        records: list[EntryRecord],
        wanted: list[str],
        in_force: set[tuple[str, bool]],
        missing: dict[tuple[str, bool], EntryRecord],
    ) -> list[_Wanted]:
        """Where each lacking entry goes: its recorded number if its entry went missing, else the
        lowest free number ahead of the first entry that is not ec2ir's. Per CIDR, both directions
        or neither."""
        claimed = {
            egress: {
                r.rule_number
                for r in records
                if r.status in ACTIVE
                and r.egress == egress
                and ((live := acl.entries.get((r.egress, r.rule_number))) is None or matches(live, r.cidr))
            }
            for egress in (False, True)
        }
        plan: list[_Wanted] = []
        for cidr in wanted:
            chosen: list[_Wanted] = []
            for egress in (False, True):
                if (cidr, egress) in in_force:
                    continue
                record = missing.get((cidr, egress))
                if record is not None:
                    chosen.append(_Wanted(cidr, egress, record.rule_number, record))
                    continue
                taken = claimed[egress] | {w.rule_number for w in plan + chosen if w.egress == egress}
                numbers = free_numbers(acl.numbers(egress), taken, 1)
                if numbers is None:
                    first = first_foreign(acl.numbers(egress), claimed[egress])
                    why = (
                        f"no free rule number below {first} {direction(egress)} (the first entry that is "
                        "not ec2ir's), so nothing was added for it in this ACL"
                    )
                    self.report.problems.append(
                        Problem(
                            acl.acl_id,
                            f"NOT blocked {cidr}: {why}; free a number ahead of that entry, or deny it "
                            "there by hand",
                            f"{cidr} is not blocked at the subnet edge ({acl.acl_id}): {why}",
                        )
                    )
                    chosen = []
                    break
                chosen.append(_Wanted(cidr, egress, numbers[0], None))
            plan += chosen
        return plan

    def _planned(self, acl: Acl, want: _Wanted, case_subnets: set[str]) -> EntryRecord:
        return EntryRecord(
            acl_id=acl.acl_id,
            egress=want.egress,
            rule_number=want.rule_number,
            cidr=want.cidr,
            case_id=self.case,
            vpc_id=acl.vpc_id,
            subnets=tuple(sorted(case_subnets & set(acl.subnets))),
            status=PENDING,
            recorded_at=now(),
            recorded_by=self.report.actor,
        )

    def _create(self, acl: Acl, record: EntryRecord) -> str:
        """Add the recorded entry: "" when added, else the code of a refusal handled here."""
        try:
            with translated("ec2", "CreateNetworkAclEntry"):
                self.aws.ec2().create_network_acl_entry(**record.entry_arguments())
        except AwsError as error:
            if error.code == ALREADY_EXISTS:  # someone took the number since the ACL was read
                fresh = acls_by_id(self.aws, [acl.acl_id]).get(acl.acl_id)
                live = fresh.entries.get((record.egress, record.rule_number)) if fresh is not None else None
                if matches(live, record.cidr):  # another run of the case added it first: in place
                    moved = self._move(record, APPLIED) if record.status == PENDING else record
                    current = moved or self._current(record)
                    if current is not None and current.status == APPLIED and _same(current, record):
                        self._change(acl, record, ChangeResult.ALREADY_THERE, "added by another run")
                        return FOUND
                    return ALREADY_EXISTS  # its record went elsewhere: read everything again
                self._move(record, REMOVED, "its rule number was taken by another entry first")
                return ALREADY_EXISTS
            if error.code == LIMIT_EXCEEDED:
                self._move(record, REMOVED, "the ACL's quota of entries is reached")
                self.report.problems.append(
                    Problem(
                        acl.acl_id,
                        f"NOT blocked {record.cidr} {record.direction}: the ACL's quota of entries is "
                        "reached (20 a direction by default, at most 40): free some, or raise the quota",
                        f"{record.cidr} is not blocked at the subnet edge ({acl.acl_id}): the ACL is full",
                    )
                )
                return LIMIT_EXCEEDED
            raise  # the record stays pending: the next run finds out whether it was added
        return ""

    def _note_block(self, acl: Acl, added: list[Change], case_subnets: set[str]) -> None:
        """The ACL changed, the subnets it was changed for, and every other subnet it serves. A note
        names an address only when that address is NOT denied (left out, no room, changed): what
        was denied is in the changes and the journal."""
        if not added:
            return
        count = len({c.cidr for c in added})
        numbers = {
            egress: [str(c.rule_number) for c in added if c.egress == egress] for egress in (False, True)
        }
        rules = "; ".join(
            f"{direction(egress)} rule(s) {', '.join(numbers[egress])}"
            for egress in (False, True)
            if numbers[egress]
        )
        served = sorted(case_subnets & set(acl.subnets))
        others = sorted(set(acl.subnets) - case_subnets)
        note = (
            f"{NOTE_PREFIX} {acl.acl_id} ({acl.vpc_id}): denied {count} address(es) of case {self.case} "
            f"in and out ({rules}), for subnet(s) {', '.join(served) or 'none of the case'}"
        )
        if others:
            lost = "that address" if count == 1 else "those addresses"
            note += (
                f"; it also serves {', '.join(others)}, where case {self.case} holds no instance: their "
                f"instances lose {lost} too"
            )
        self.report.notes.append(note)

    # -- removing

    def unblock(self, blocks: list[Network]) -> None:
        """Remove the case's entries for these blocks from every ACL it has them in."""
        asked = {str(block) for block in blocks}
        found: set[str] = set()
        acl_ids = self.records.index(self.case)
        acls = acls_by_id(self.aws, acl_ids)
        for acl_id in acl_ids:
            mine = [
                r
                for r in self.records.of_acl(acl_id)
                if r.case_id == self.case and r.status in ACTIVE and r.cidr in asked
            ]
            found |= {r.cidr for r in mine}
            if mine:
                self._guarded(acl_id, functools.partial(self._remove, acl_id, acls.get(acl_id), mine))
        self.report.notes += [
            f"{NOTE_PREFIX}: no entry of case {self.case} denies {cidr}" for cidr in sorted(asked - found)
        ]

    def release(self, held_subnets: set[str]) -> None:
        """Remove the case's entries from every ACL that no longer serves a subnet where the case
        still holds an instance."""
        acl_ids = self.records.index(self.case)
        if not acl_ids:
            return
        mine_by_acl = {
            acl_id: [r for r in self.records.of_acl(acl_id) if r.case_id == self.case and r.status in ACTIVE]
            for acl_id in acl_ids
        }
        mine_by_acl = {acl_id: mine for acl_id, mine in mine_by_acl.items() if mine}
        acls = acls_by_id(self.aws, mine_by_acl)
        for acl_id, mine in mine_by_acl.items():
            acl = acls.get(acl_id)
            still = sorted(held_subnets & set(acl.subnets)) if acl is not None else []
            if still:
                self.report.notes.append(
                    f"{NOTE_PREFIX} {acl_id}: kept case {self.case}'s {len(mine)} entr(ies): the case still "
                    f"holds instances in {', '.join(still)}"
                )
                continue
            self._guarded(acl_id, functools.partial(self._remove, acl_id, acl, mine))

    def _remove(self, acl_id: str, acl: Acl | None, mine: list[EntryRecord]) -> None:
        removed: list[Change] = []
        for record in mine:
            live = acl.entries.get((record.egress, record.rule_number)) if acl is not None else None
            exact = matches(live, record.cidr)
            vpc = acl.vpc_id if acl is not None else record.vpc_id
            if record.status == REMOVING and live is None:  # removed by a run that died before saying so
                if not self.dry_run:
                    self._move(record, REMOVED)
                detail = "removed by an interrupted run"
                removed.append(
                    self._change(None, record, ChangeResult.REMOVED, detail, journal=True, vpc=vpc)
                )
                continue
            if not exact:
                if record.status == PENDING:
                    why = "never added" if live is None else "never added: its rule number was taken"
                    result = ChangeResult.DROPPED
                elif live is None:
                    why = "already gone" if acl is not None else "the network ACL no longer exists"
                    result = ChangeResult.GONE
                else:
                    why, result = f"{CHANGED} (now {describe_live(live)})", ChangeResult.LEFT
                if not self.dry_run:
                    self._move(record, REMOVED, why)
                    if result is ChangeResult.LEFT:
                        self._journal_line(record, "nacl-remove", f"skipped: {record.describe()}: {why}")
                self.report.changes.append(
                    Change(acl_id, vpc, record.egress, record.rule_number, record.cidr, result, why)
                )
                if result is ChangeResult.LEFT:
                    self.report.problems.append(
                        Problem(
                            acl_id,
                            f"{record.direction} rule {record.rule_number} ({record.cidr}): {why}",
                            f"{acl_id}: {record.direction} rule {record.rule_number} ({record.cidr}) "
                            + CHANGED,
                        )
                    )
                continue
            if self.dry_run:
                self.report.changes.append(
                    Change(
                        acl_id, vpc, record.egress, record.rule_number, record.cidr, ChangeResult.WOULD_REMOVE
                    )
                )
                continue
            if record.status != REMOVING:
                moved = self._move(record, REMOVING)
                if moved is None:
                    continue  # another run acted on it first
                record = moved
            try:
                with translated("ec2", "DeleteNetworkAclEntry"):
                    self.aws.ec2().delete_network_acl_entry(
                        NetworkAclId=acl_id, RuleNumber=record.rule_number, Egress=record.egress
                    )
            except AwsError as error:
                if error.code != ENTRY_NOT_FOUND:  # gone since it was read: removed all the same
                    raise
            self._move(record, REMOVED)
            removed.append(self._change(None, record, ChangeResult.REMOVED, journal=True, vpc=vpc))
        if removed:
            self.report.notes.append(
                f"{NOTE_PREFIX} {acl_id} ({removed[0].vpc_id}): removed case {self.case}'s "
                f"{len(removed)} deny entr(ies)"
            )

    # -- checking

    def check(self) -> list[Breach]:
        """Each of the case's entries against the live ACL: missing, or changed by someone."""
        breaches: list[Breach] = []
        acl_ids = self.records.index(self.case)
        mine_by_acl = {
            acl_id: [
                r
                for r in self.records.of_acl(acl_id)
                if r.case_id == self.case and r.status in (PENDING, APPLIED)
            ]
            for acl_id in acl_ids
        }
        acls = acls_by_id(self.aws, [acl_id for acl_id, mine in mine_by_acl.items() if mine])
        for acl_id, mine in mine_by_acl.items():
            acl = acls.get(acl_id)
            for record in mine:
                live = acl.entries.get((record.egress, record.rule_number)) if acl is not None else None
                if matches(live, record.cidr):
                    continue
                if live is None:
                    gone = "" if acl is not None else " (the network ACL no longer exists)"
                    breaches.append(
                        Breach(
                            BreachKind.NACL_ENTRY_MISSING,
                            acl_id,
                            self.case,
                            f"{record.describe()} is gone{gone}",
                        )
                    )
                else:
                    breaches.append(
                        Breach(
                            BreachKind.NACL_ENTRY_CHANGED,
                            acl_id,
                            self.case,
                            f"{record.describe()} is now {describe_live(live)}: {CHANGED}",
                        )
                    )
        return breaches

    def repair(self) -> None:
        """Add again what the case's records say is missing, in each ACL where they are."""
        for acl_id in self.records.index(self.case):
            mine = [
                r
                for r in self.records.of_acl(acl_id)
                if r.case_id == self.case and r.status in (PENDING, APPLIED)
            ]
            if not mine:
                continue
            acl = acls_by_id(self.aws, [acl_id]).get(acl_id)
            if acl is None:
                self.report.problems.append(Problem(acl_id, "the network ACL no longer exists"))
                continue
            subnets = {s for r in mine for s in r.subnets}
            self._guarded(acl_id, functools.partial(self._block_acl, acl, [], subnets))

    # -- bookkeeping

    def _move(self, record: EntryRecord, to: str, why: str = "") -> EntryRecord | None:
        return None if self.dry_run else self.records.move(record, to, why)

    def _change(
        self,
        acl: Acl | None,
        record: EntryRecord,
        result: ChangeResult,
        detail: str = "",
        journal: bool = False,
        vpc: str = "",
    ) -> Change:
        change = Change(
            record.acl_id,
            acl.vpc_id if acl is not None else (vpc or record.vpc_id),
            record.egress,
            record.rule_number,
            record.cidr,
            result,
            detail,
        )
        self.report.changes.append(change)
        if journal and not self.dry_run:
            action = "nacl-remove" if result is ChangeResult.REMOVED else "nacl-add"
            subnets = (
                f" for subnet(s) {', '.join(record.subnets)}"
                if record.subnets and action == "nacl-add"
                else ""
            )
            self._journal_line(
                record,
                action,
                f"done: {result} {record.describe()} ({change.vpc_id}){subnets}"
                + (f"; {detail}" if detail else ""),
            )
        return change

    def _journal_line(self, record: EntryRecord, action: str, result: str) -> None:
        self.journal(
            [
                JournalEntry(
                    now(),
                    self.case,
                    self.report.actor,
                    record.acl_id,
                    f"{self.report.action}:{action}",
                    result,
                )
            ]
        )


# -- the runs ---------------------------------------------------------------------------------------------


def held_facts(aws: Aws, holds: Iterable[Hold], skip: Iterable[str] = ()) -> dict[str, InstanceFacts]:
    """The live facts of each instance the holds still hold (instances gone are absent)."""
    ids = sorted({h.instance_id for h in holds if h.status in ACTIVE_STATUSES} - set(skip))
    return discover(aws, ids) if ids else {}


def subnets_by_vpc(facts: Iterable[InstanceFacts]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for instance in facts:
        for nic in instance.description.get("NetworkInterfaces", []):
            if nic.get("SubnetId"):
                vpc = str(nic.get("VpcId") or instance.vpc_id)
                found.setdefault(vpc, set()).add(str(nic["SubnetId"]))
    return found


class Screening:
    """``isolate --block-ip``: the blocks parsed and refused at once, and what shows them safe read
    beside the run's first round trip, so that the cut waits for none of it."""

    def __init__(
        self, aws: Aws, store: StateStore, blocks: list[Network], notes: list[str], skip: bool
    ) -> None:
        self.aws, self.store, self.blocks, self.notes, self.skip = aws, store, blocks, notes, skip
        self.safety: Future[Safety] | None = None

    @classmethod
    def start(
        cls, aws: Aws, store: StateStore, forensic_group: str, raw: Iterable[str], skip: bool
    ) -> Screening:
        blocks, notes = parse_blocks(raw, skip)
        screening = cls(aws, store, blocks, notes, skip)
        if blocks:
            pool = ThreadPoolExecutor(max_workers=1)
            screening.safety = pool.submit(gather_safety, aws, store, forensic_group)
            pool.shutdown(wait=False)
        return screening

    def screen(
        self, live: list[InstanceFacts], office_cidr: str | None, case_id: str, actor: str, journal: Journal
    ) -> RunBlocks:
        """The blocks that spare the forensic side (or UsageError, before any change)."""
        report = NaclReport("isolate", case_id, actor, notes=list(self.notes))
        blocks = RunBlocks(self.aws, self.store, report, journal)
        blocks.office_cidr = office_cidr
        if self.skip and self.safety is not None:
            # GuardDuty leaves an unsafe block out rather than refusing the run, so nothing here
            # need wait: the reads (ip-ranges.json among them, a download at a cold start) are
            # awaited after the cut, and every VPC screened there.
            blocks.blocks, blocks.pending = self.blocks, self.safety
        elif self.safety is not None:
            blocks.vpcs = {vpc for facts in live for vpc in facts.vpc_ids}
            blocks.safety = self.safety.result()
            blocks.blocks, left_out = screen(self.blocks, blocks.safety, blocks.vpcs, office_cidr, self.skip)
            report.notes += left_out
        return blocks


class RunBlocks:
    """The blocks of one isolate run, added once every instance is cut off."""

    def __init__(self, aws: Aws, store: StateStore, report: NaclReport, journal: Journal) -> None:
        self.aws, self.store, self.report, self.journal = aws, store, report, journal
        self.blocks: list[Network] = []
        self.vpcs: set[str] = set()  # the VPCs the blocks were screened for
        self.safety = Safety()
        self.office_cidr: str | None = None
        self.instance_subnets: dict[str, set[str]] = {}
        self.pending: Future[Safety] | None = None  # the safety reads, awaited after the cut

    def apply(self, cut: list[InstanceFacts]) -> None:
        """Deny the blocks in the ACLs of the case's instances: this run's, and those it held before
        (in a VPC this run has no instance in, a block that VPC's checks refuse is left out)."""
        if not self.blocks:
            return
        try:
            if self.pending is not None:
                self.safety, self.pending = self.pending.result(), None
            facts = {instance.instance_id: instance for instance in cut}
            facts |= held_facts(self.aws, self.store.holds(self.report.case_id), skip=facts)
            self.instance_subnets = {instance_id: subnets_of(f) for instance_id, f in facts.items()}
            for vpc, subnets in sorted(subnets_by_vpc(facts.values()).items()):
                blocks = self.blocks
                if vpc not in self.vpcs:
                    blocks, left_out = screen(blocks, self.safety, [vpc], self.office_cidr, skip_unsafe=True)
                    self.report.notes += [f"{note} (in {vpc})" for note in left_out]
                if blocks:
                    Edge(self.aws, self.store, self.report, self.journal).block(blocks, subnets)
        except Ec2irError as error:  # the instances are contained: a block never undoes that
            self.report.problems.append(Problem("", f"the blocks could not be added: {error}", str(error)))
        except Exception as error:  # a bug here must not hide the run's results
            self.report.problems.append(
                Problem("", f"the blocks could not be added: internal error {type(error).__name__}: {error}")
            )

    def finish(self, run: RunReport) -> None:
        run.blocks = self.report
        run.notes += self.report.all_notes()
        attach_warnings(run, self.report, self.instance_subnets)


def attach_warnings(run: RunReport, report: NaclReport, instance_subnets: dict[str, set[str]] | None) -> None:
    """Each problem, as a warning on the results of the instances its ACL serves (or all of them)."""
    if not report.problems:
        return
    results = []
    for result in run.results:
        subnets = (instance_subnets or {}).get(result.instance_id)
        warnings = [
            problem.warning or problem.note
            for problem in report.problems
            if instance_subnets is None
            or not problem.acl_id
            or subnets is None
            or subnets & set(report.acl_subnets.get(problem.acl_id, ()))
        ]
        results.append(
            replace(result, warnings=result.warnings + tuple(warnings)) if result.ok and warnings else result
        )
    run.results = results


def after_release(aws: Aws, store: StateStore, run: RunReport, journal: Journal) -> None:
    """After ``release``: the case's entries go from every ACL that serves no subnet where the
    case still holds an instance. Reading the case's ACLs costs one read when it has none."""
    report = NaclReport("release", run.case_id, run.actor)
    edge = Edge(aws, store, report, journal)
    try:
        if not edge.records.index(run.case_id):
            return
        still = held_facts(aws, store.holds(run.case_id))
        edge.release(set().union(*(subnets_of(facts) for facts in still.values())))
    except Ec2irError as error:  # the instances are released; the entries wait for the next run
        report.problems.append(Problem("", f"the case's entries could not be removed: {error}", str(error)))
    run.notes += report.all_notes()
    attach_warnings(run, report, None)


def block_held(aws: Aws, store: StateStore, report: NaclReport, raw: Iterable[str], journal: Journal) -> None:
    """``ec2ir block-ip``: deny the blocks in the ACLs of every instance the case holds."""
    blocks, _ = parse_blocks(raw, skip_unsafe=False)
    holds = [h for h in store.holds(report.case_id) if h.status in ACTIVE_STATUSES]
    if not holds:
        raise UsageError(
            f"case {report.case_id} holds no instance: there is no subnet to block the address at",
            f"`ec2ir status --case {report.case_id}` lists what the case holds; isolate first",
        )
    facts = discover(aws, [h.instance_id for h in holds])
    vpcs = {vpc for f in facts.values() for vpc in f.vpc_ids}
    safety = gather_safety(aws, store, "", sorted(vpcs))
    allowed, _ = screen(blocks, safety, vpcs, None, skip_unsafe=False)
    subnets = set().union(*(subnets_of(f) for f in facts.values()))
    Edge(aws, store, report, journal, dry_run=report.dry_run).block(allowed, subnets)


def unblock_held(
    aws: Aws, store: StateStore, report: NaclReport, raw: Iterable[str], journal: Journal
) -> None:
    """``ec2ir unblock-ip``: remove the case's entries for the blocks, wherever they are."""
    blocks, _ = parse_blocks(raw, skip_unsafe=False, check=False)  # removing is always safe
    Edge(aws, store, report, journal, dry_run=report.dry_run).unblock(blocks)


def find_breaches(aws: Aws, store: StateStore, holds: Iterable[Hold]) -> list[Breach]:
    """``status --check``: every active case's entries against the live ACLs."""
    cases = sorted({h.case_id for h in holds if h.status in ACTIVE_STATUSES})
    breaches: list[Breach] = []
    for case in cases:
        breaches += Edge(aws, store, NaclReport("status-check", case, ""), lambda entries: None).check()
    return breaches


def repair(aws: Aws, store: StateStore, cases: Iterable[str], actor: str, journal: Journal) -> list[str]:
    """``status --check --repair``: each case's missing entries added again; the notes."""
    notes: list[str] = []
    for case in sorted(set(cases)):
        report = NaclReport("status-check", case, actor)
        Edge(aws, store, report, journal).repair()
        notes += report.all_notes()
    return notes


def plan_blocks(
    aws: Aws,
    store: StateStore,
    case_id: str,
    actor: str,
    live: list[InstanceFacts],
    office_cidr: str | None,
    forensic_group: str,
    raw: Iterable[str],
    skip: bool,
) -> tuple[list[str], list[dict[str, Any]]]:
    """``isolate --dry-run``: the entries the run would add (set-up lines) and the CreateNetworkAclEntry
    calls to probe with DryRun; the safety checks refuse as the run would."""
    blocks, notes = parse_blocks(raw, skip)
    if not blocks or not live:
        return notes, []
    vpcs = {vpc for facts in live for vpc in facts.vpc_ids}
    allowed, left_out = screen(blocks, gather_safety(aws, store, forensic_group), vpcs, office_cidr, skip)
    report = NaclReport("isolate", case_id, actor, dry_run=True, notes=notes + left_out)
    subnets = set().union(*(subnets_of(facts) for facts in live))
    Edge(aws, store, report, lambda entries: None, dry_run=True).block(allowed, subnets)
    lines = list(report.notes)
    probes: list[dict[str, Any]] = []
    by_acl: dict[tuple[str, str, str], dict[bool, int]] = {}
    for change in report.changes:
        if change.result is ChangeResult.WOULD_ADD:
            by_acl.setdefault((change.acl_id, change.vpc_id, change.cidr), {})[change.egress] = (
                change.rule_number
            )
            record = EntryRecord(
                change.acl_id,
                change.egress,
                change.rule_number,
                change.cidr,
                case_id,
                "",
                (),
                PENDING,
                "",
                "",
            )
            probes.append(record.entry_arguments())
    for (acl_id, vpc_id, cidr), rules in by_acl.items():
        served = sorted(subnets & set(report.acl_subnets.get(acl_id, ())))
        others = sorted(set(report.acl_subnets.get(acl_id, ())) - subnets)
        where = " and ".join(
            f"{direction(egress)} at rule {rules[egress]}" for egress in (False, True) if egress in rules
        )
        line = f"{NOTE_PREFIX} {acl_id} ({vpc_id}): deny {cidr} {where}, for subnet(s) {', '.join(served)}"
        if others:
            line += f"; it also serves {', '.join(others)}: their instances lose that address too"
        lines.append(line)
    lines += [problem.note for problem in report.problems]
    return lines, probes
