"""The deny entries as ec2ir records them in the state table and as the live network ACLs hold them:
the records (claimed by a conditional put, moved pending -> applied -> removing -> removed), the
ACLs read from EC2, and the rule numbers free ahead of every entry that is not ec2ir's
(ec2ir.containment.nacl's docstring tells the whole story)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ec2ir.aws.session import Aws, chunks, translated
from ec2ir.core.errors import AwsError
from ec2ir.core.models import InstanceFacts, JournalEntry
from ec2ir.store.items import CONDITION_FAILED, case_key, deserialize, now, serialize
from ec2ir.store.state import StateStore

NOTE_PREFIX = "network ACL"  # every note about blocks starts so (GuardDuty's handler copies them)
DEFAULT_RULE = 32767  # the "*" entries: 32767 (IPv4) and 32768 (IPv6); never a first entry
PENDING, APPLIED, REMOVING, REMOVED = "pending", "applied", "removing", "removed"
ACTIVE = (PENDING, APPLIED, REMOVING)
ALREADY_EXISTS = "NetworkAclEntryAlreadyExists"
LIMIT_EXCEEDED = "NetworkAclEntryLimitExceeded"
ENTRY_NOT_FOUND = "InvalidNetworkAclEntry.NotFound"
FOUND = "found"  # the entry is in place already, added by another run of the case
CHANGED = "changed since ec2ir added it: left as it is"
INDEX = "nacl-acls"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Journal = Callable[[list[JournalEntry]], None]


def direction(egress: bool) -> str:
    return "outbound" if egress else "inbound"


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
        data = deserialize(item)
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
                    Item=serialize(data) | record_key(record.acl_id, record.egress, record.rule_number),
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
                    ExpressionAttributeValues=serialize(values),
                )
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                return None
            raise
        return replace(record, status=to, changed_at=stamp, why=why)

    @property
    def _index_key(self) -> dict[str, Any]:
        """The case's index of this store's place: an ACL of another account or Region can only be
        read and changed from there (ec2ir.engine.outbreak)."""
        place = self.store.place
        return {"sk": {"S": f"{INDEX}#{place.account}:{place.region}" if place else INDEX}}

    def index(self, case_id: str) -> list[str]:
        """The ACLs the case has records in, in this store's place."""
        try:
            with translated("dynamodb", "GetItem"):
                item = self._ddb.get_item(
                    TableName=self._table, Key=case_key(case_id) | self._index_key, ConsistentRead=True
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
                Key=case_key(case_id) | self._index_key,
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


def _acl(described: Mapping[str, Any]) -> Acl:
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


def same_entry(one: EntryRecord, other: EntryRecord) -> bool:
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
