"""The DynamoDB state store: write-ahead originals, conditional transitions, an audit trail.

One item per instance (``pk = instance#<id>``, ``sk = hold``) holds the current hold: the case,
the status and every ENI's original groups. The originals are written once, with a condition, and
never overwritten while the hold is active. When a released instance is isolated again, the
released hold is first archived under ``sk = hold#<recorded_at>`` in the same transaction, so the
audit trail keeps every episode.

The case journal lives in the same table, under ``pk = case#<case>``: one item per action, whose
key holds a digest of the whole entry, so that writing an entry again (a retry) changes nothing
and adds no second copy. Entries go 25 to a BatchWriteItem.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ec2ir.aws.session import PATIENT_ATTEMPTS, Aws, patiently, translated
from ec2ir.core.errors import AwsError, StaleRecord, StateTableError, Throttled
from ec2ir.core.models import (
    ACTIVE_STATUSES,
    EvidenceRef,
    GroupRecord,
    Hold,
    HoldStatus,
    InstanceFacts,
    JournalEntry,
)

DEFAULT_TABLE = "ec2ir-state"
KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
CURRENT = "hold"
CONDITION_FAILED = "ConditionalCheckFailedException"


JOURNAL = "journal#"
# the case's chain head, under its journal: where the next run's first entry links to
CHAIN_HEAD = "chain-head"
JOURNAL_BATCH = 25  # BatchWriteItem's most
# ec2ir's groups, one item per VPC under ``pk = groups#<region>``: keyed by Region alone so that
# they can be read in the run's first round trip, before the caller's account is known; each
# item names its account, and a record of another account is never used.
GROUPS = "groups#"
BATCH_GET = 100  # BatchGetItem's most


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def instance_key(instance_id: str, sk: str = CURRENT) -> dict[str, Any]:
    return {"pk": {"S": f"instance#{instance_id}"}, "sk": {"S": sk}}


def _serialize(value: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {key: serializer.serialize(item) for key, item in value.items()}


def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def case_key(case_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"case#{case_id}"}}


@dataclass(frozen=True)
class RecordEntry(JournalEntry):
    """A journal entry that also carries structured data: the hold's originals and step records
    (``isolate:record-originals``), so that ``release`` can check a hold against them."""

    record: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Link:
    """An entry's place in its run's chain: the run, its number in the run's write order, and the
    digest of the entry before it (for the run's first entry, the case's chain head then)."""

    run: str
    seq: int
    prev: str


@dataclass(frozen=True)
class StoredEntry:
    """A journal entry as read back: its key's digest, the digest its content gives now, its link."""

    entry: JournalEntry
    sort_key: str
    key_digest: str
    digest: str
    link: Link | None

    @property
    def intact(self) -> bool:
        """Whether the content still gives the digest its key holds (16 digits before chaining)."""
        return bool(self.key_digest) and self.digest[: len(self.key_digest)] == self.key_digest


def _entry_data(entry: JournalEntry, link: Link | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "at": entry.at,
        "case_id": entry.case_id,
        "actor": entry.actor,
        "target": entry.target,
        "action": entry.action,
        "result": entry.result,
        "request_ids": list(entry.request_ids),
        "evidence": [ref.as_dict() for ref in entry.evidence],
    }
    if isinstance(entry, RecordEntry):
        data["record"] = entry.record
    if link is not None:
        data |= {"run": link.run, "seq": link.seq, "prev": link.prev}
    return data


def entry_digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def journal_item(entry: JournalEntry, link: Link | None = None) -> dict[str, Any]:
    """The entry's item. The key holds a digest of the whole entry, its link included: a retried
    write of the same entry rewrites it unchanged, while two different entries of the same moment
    never collide. A chained entry's key holds the full SHA-256 (an unchained one, 16 digits)."""
    data = _entry_data(entry, link)
    digest = entry_digest(data)
    if link is None:
        digest = digest[:16]
    sort_key = f"{JOURNAL}{entry.at}#{entry.target}#{entry.action}#{digest}"
    return _serialize(data) | case_key(entry.case_id) | {"sk": {"S": sort_key}}


def entry_from_item(item: dict[str, Any]) -> JournalEntry:
    data = _plain(_deserialize(item))
    fields: dict[str, Any] = {
        "at": data["at"],
        "case_id": data["case_id"],
        "actor": data["actor"],
        "target": data["target"],
        "action": data["action"],
        "result": data["result"],
        "request_ids": tuple(data.get("request_ids", [])),
        "evidence": tuple(EvidenceRef.from_dict(ref) for ref in data.get("evidence", [])),
    }
    if isinstance(data.get("record"), dict):
        return RecordEntry(**fields, record=data["record"])
    return JournalEntry(**fields)


def stored_entry(item: dict[str, Any]) -> StoredEntry:
    """The entry with what proves it: the digest recomputed from the item's content as stored."""
    data = _plain(_deserialize(item))
    entry = entry_from_item(item)
    link = None
    if "run" in data:
        link = Link(str(data["run"]), int(data.get("seq", -1)), str(data.get("prev", "")))
    sort_key = str(data.get("sk", ""))
    fields = {key: data[key] for key in (*ENTRY_FIELDS, *LINK_FIELDS) if key in data}
    return StoredEntry(entry, sort_key, sort_key.rsplit("#", 1)[-1], entry_digest(fields), link)


ENTRY_FIELDS = ("at", "case_id", "actor", "target", "action", "result", "request_ids", "evidence", "record")
LINK_FIELDS = ("run", "seq", "prev")


@dataclass
class RunChain:
    """One run's entries of one case, chained in write order (see ``StateStore.append``)."""

    case_id: str
    run: str
    start: str  # the case's chain head when this run began ("" for the first run)
    last_bucket: str = ""  # the evidence bucket the case's last head went to
    actor: str = ""
    bucket: str = ""  # the evidence bucket this run's entries name
    links: dict[str, tuple[Link, str]] = field(default_factory=dict)  # content digest -> link, digest
    written: set[int] = field(default_factory=set)
    last: str = ""
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def count(self) -> int:
        return len(self.links)

    def head(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "run": self.run,
            "actor": self.actor,
            "entries": self.count,
            "last_seq": self.count - 1,
            "last_digest": self.last,
            "first_prev": self.start,
            "unwritten": sorted(set(range(self.count)) - self.written),
            "written_at": now(),
        }


def hold_from_item(item: dict[str, Any]) -> Hold:
    data = _deserialize(item)
    return Hold(
        instance_id=data["instance_id"],
        case_id=data["case_id"],
        status=HoldStatus(data["status"]),
        originals={eni: tuple(groups) for eni, groups in data.get("originals", {}).items()},
        eni_vpcs=dict(data.get("eni_vpcs", {})),
        recorded_at=data.get("recorded_at", ""),
        recorded_by=data.get("recorded_by", ""),
        isolated_at=data.get("isolated_at", ""),
        released_at=data.get("released_at", ""),
        released_by=data.get("released_by", ""),
        steps={name: _plain(record) for name, record in data.get("steps", {}).items()},
        unknown_originals=tuple(data.get("unknown_originals", [])),
    )


def groups_key(region: str, vpc_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{GROUPS}{region}"}, "sk": {"S": f"vpc#{vpc_id}"}}


GROUP_ROLES = ("forensic", "isolation", "allow-all")


def role_attribute(role: str) -> str:
    return f"group_{role}"


def group_record_from_item(item: dict[str, Any]) -> GroupRecord:
    data = _deserialize(item)
    return GroupRecord(
        vpc_id=str(data["vpc_id"]),
        account=str(data.get("account", "")),
        roles={
            role: str(data[role_attribute(role)]) for role in GROUP_ROLES if data.get(role_attribute(role))
        },
        retired=tuple(str(gid) for gid in data.get("retired", [])),
        office_cidr=str(data.get("office_cidr", "")),
        forensic_source=str(data.get("forensic_source", "")),
        forensic_source_owner=str(data.get("forensic_source_owner", "")),
    )


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; step records only ever hold whole numbers."""
    from decimal import Decimal

    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return int(value)
    return value


class StateStore:
    """The state table, reached through the caller's DynamoDB client."""

    def __init__(self, aws: Aws, table: str = DEFAULT_TABLE) -> None:
        self.aws = aws
        self.table = table
        # This writer's open run of each case (see ``append``); ``close_runs`` ends them.
        self._chains: dict[str, RunChain] = {}
        self._chains_lock = threading.Lock()

    @property
    def _ddb(self) -> Any:
        return self.aws.dynamodb()

    def exists(self) -> bool:
        """Whether the table is there, without creating it (for plans)."""
        try:
            with translated("dynamodb", "DescribeTable"):
                self._ddb.describe_table(TableName=self.table)
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return False
            raise StateTableError(f"cannot use state table {self.table!r}: {error}") from error
        return True

    def require(self) -> None:
        """Refuse, for a command that only reads, a table that does not exist: creating one would
        answer "nothing is isolated" from an empty table, and a responder would believe it."""
        if not self.exists():
            raise StateTableError(
                f"state table {self.table!r} does not exist in {self.aws.region()}: nothing was read",
                "check the table's name (--table, or EC2IR_TABLE; the stack names its table in its "
                "outputs) and the Region",
            )

    def ensure_table(self) -> None:
        """Create the table if it is missing (on-demand, encrypted) and wait until it is active."""
        try:
            with translated("dynamodb", "DescribeTable"):
                table = self._ddb.describe_table(TableName=self.table)["Table"]
        except AwsError as error:
            if error.code != "ResourceNotFoundException":
                raise StateTableError(f"cannot use state table {self.table!r}: {error}") from error
            table = self._create_table()
        if [dict(k) for k in table.get("KeySchema", [])] != KEY_SCHEMA:
            raise StateTableError(
                f"table {self.table!r} exists but is not an ec2ir state table (its key schema is not pk/sk)",
                "pass --table with another name, or let ec2ir create its own",
            )
        if table.get("TableStatus") != "ACTIVE":
            self._wait_active()

    def _create_table(self) -> dict[str, Any]:
        try:
            with translated("dynamodb", "CreateTable"):
                return dict(
                    self._ddb.create_table(
                        TableName=self.table,
                        KeySchema=KEY_SCHEMA,
                        AttributeDefinitions=[
                            {"AttributeName": "pk", "AttributeType": "S"},
                            {"AttributeName": "sk", "AttributeType": "S"},
                        ],
                        BillingMode="PAY_PER_REQUEST",
                        SSESpecification={"Enabled": True, "SSEType": "KMS"},
                        Tags=[{"Key": "ec2ir:role", "Value": "state"}],
                    )["TableDescription"]
                )
        except AwsError as error:
            if error.code == "ResourceInUseException":  # a racing run created it first
                with translated("dynamodb", "DescribeTable"):
                    return dict(self._ddb.describe_table(TableName=self.table)["Table"])
            raise StateTableError(f"cannot create state table {self.table!r}: {error}") from error

    def _wait_active(self) -> None:
        with translated("dynamodb", "DescribeTable"):
            self._ddb.get_waiter("table_exists").wait(
                TableName=self.table, WaiterConfig={"Delay": 2, "MaxAttempts": 60}
            )

    def get(self, instance_id: str) -> Hold | None:
        with translated("dynamodb", "GetItem"):
            item = self._ddb.get_item(
                TableName=self.table, Key=instance_key(instance_id), ConsistentRead=True
            ).get("Item")
        return hold_from_item(item) if item else None

    def holds(self, case_id: str | None = None) -> list[Hold]:
        """Every current hold (active or released), optionally for one case."""
        expression = "sk = :current" + (" AND case_id = :case" if case_id else "")
        values: dict[str, Any] = {":current": {"S": CURRENT}}
        if case_id:
            values[":case"] = {"S": case_id}
        holds: list[Hold] = []
        with translated("dynamodb", "Scan"):
            for page in self._ddb.get_paginator("scan").paginate(
                TableName=self.table,
                FilterExpression=expression,
                ExpressionAttributeValues=values,
                ConsistentRead=True,
            ):
                holds.extend(hold_from_item(item) for item in page.get("Items", []))
        return sorted(holds, key=lambda hold: (hold.case_id, hold.instance_id))

    def append(self, entries: list[JournalEntry]) -> None:
        """Add entries to their cases' journals, 25 to a call, each chained into this writer's run.

        Every run of a case is a chain: its entries in the order they were handed here (threads of
        one run share it), each naming the digest of the one before, its first naming the case's
        chain head when the run began. Concurrent runs each make their own chain, so nothing is
        ever read and rewritten. An entry handed again in the same run keeps its link, and its key
        holds a digest of all of it, so a retry rewrites it unchanged and adds no second copy. A
        transaction would cost twice the write capacity and gain nothing."""
        linked: list[tuple[dict[str, Any], RunChain, int]] = []
        for entry in entries:
            chain, link = self._link(entry)
            linked.append((journal_item(entry, link), chain, link.seq))
        items = {(item["pk"]["S"], item["sk"]["S"]): (item, chain, seq) for item, chain, seq in linked}
        unique = list(items.values())  # BatchWriteItem refuses a key twice in one call
        for start in range(0, len(unique), JOURNAL_BATCH):
            batch = unique[start : start + JOURNAL_BATCH]
            try:
                self._write_batch([item for item, _, _ in batch])
                self._mark_written(batch)
            except AwsError as error:
                if len(batch) == 1 or isinstance(error, Throttled):
                    raise
                self._write_one_by_one(batch)  # one refused entry must not cost the others

    @staticmethod
    def _mark_written(batch: list[tuple[dict[str, Any], RunChain, int]]) -> None:
        for _, chain, seq in batch:
            with chain.lock:
                chain.written.add(seq)

    def _link(self, entry: JournalEntry) -> tuple[RunChain, Link]:
        content = entry_digest(_entry_data(entry))
        bucket = next((r.location for r in entry.evidence if r.location.startswith("s3://")), "")
        while True:
            chain = self._chain(entry.case_id)
            with chain.lock:
                if chain.closed:  # ended by a seal meanwhile: the entry goes to the next run
                    continue
                if content not in chain.links:
                    link = Link(chain.run, len(chain.links), chain.last or chain.start)
                    chain.links[content] = (link, entry_digest(_entry_data(entry, link)))
                    chain.last = chain.links[content][1]
                chain.actor = chain.actor or entry.actor
                chain.bucket = chain.bucket or bucket.removeprefix("s3://").partition("/")[0]
                return chain, chain.links[content][0]

    def _chain(self, case_id: str) -> RunChain:
        with self._chains_lock:
            chain = self._chains.get(case_id)
            if chain is None or chain.closed:
                pointer = self.chain_pointer(case_id)
                chain = RunChain(
                    case_id,
                    uuid.uuid4().hex,
                    start=str(pointer.get("digest", "")),
                    last_bucket=str(pointer.get("bucket", "")),
                )
                self._chains[case_id] = chain
            return chain

    def chain_pointer(self, case_id: str) -> dict[str, Any]:
        """Where the case's chain ended last (run, digest, bucket): only a hint for the next run's
        first link; ``verify`` trusts the heads in the evidence bucket, never this item."""
        try:
            with translated("dynamodb", "GetItem"):
                item = self._ddb.get_item(
                    TableName=self.table,
                    Key=case_key(case_id) | {"sk": {"S": CHAIN_HEAD}},
                    ConsistentRead=True,
                ).get("Item")
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return {}
            raise
        return _deserialize(item) if item else {}

    def close_runs(self) -> list[RunChain]:
        """End this writer's runs: each case's chain head is recorded in the table (the next run
        links to it) and returned, for the evidence bucket."""
        with self._chains_lock:
            chains = list(self._chains.values())
            self._chains.clear()
        for chain in chains:
            with chain.lock:
                chain.closed = True
        ended = [chain for chain in chains if chain.links]
        for chain in ended:
            pointer = {"run": chain.run, "digest": chain.last, "bucket": chain.bucket or chain.last_bucket}
            with translated("dynamodb", "PutItem"):
                self._ddb.put_item(
                    TableName=self.table,
                    Item=_serialize(pointer) | case_key(chain.case_id) | {"sk": {"S": CHAIN_HEAD}},
                )
        return ended

    def _write_one_by_one(self, items: list[tuple[dict[str, Any], RunChain, int]]) -> None:
        refused: list[AwsError] = []
        for linked in items:
            try:
                self._write_batch([linked[0]])
                self._mark_written([linked])
            except AwsError as error:
                refused.append(error)
        if refused:
            raise refused[0]

    def _write_batch(self, items: list[dict[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": item}} for item in items]
        for attempt in range(PATIENT_ATTEMPTS):

            def write(pending: list[dict[str, Any]] = requests) -> dict[str, Any]:
                with translated("dynamodb", "BatchWriteItem"):
                    answer: dict[str, Any] = self._ddb.batch_write_item(RequestItems={self.table: pending})
                return answer

            # Throughput exceeded for some items: DynamoDB hands them back unwritten.
            requests = patiently(write).get("UnprocessedItems", {}).get(self.table, [])
            if not requests:
                return
            time.sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
        raise Throttled(
            "ProvisionedThroughputExceededException",
            f"{len(requests)} journal entr(ies) still unwritten after {PATIENT_ATTEMPTS} tries",
            "dynamodb:BatchWriteItem",
        )

    def journal(self, case_id: str) -> list[JournalEntry]:
        """The case's journal, oldest first."""
        return [stored.entry for stored in self.journal_records(case_id)]

    def journal_records(self, case_id: str) -> list[StoredEntry]:
        """The case's journal, oldest first, each entry with its key's and its content's digest."""
        entries: list[StoredEntry] = []
        with translated("dynamodb", "Query"):
            for page in self._ddb.get_paginator("query").paginate(
                TableName=self.table,
                KeyConditionExpression="pk = :case AND begins_with(sk, :journal)",
                ExpressionAttributeValues={":case": case_key(case_id)["pk"], ":journal": {"S": JOURNAL}},
                ConsistentRead=True,
            ):
                entries.extend(stored_entry(item) for item in page.get("Items", []))
        return entries

    def record_originals(
        self,
        facts: InstanceFacts,
        case_id: str,
        actor: str,
        steps: dict[str, dict[str, Any]] | None = None,
        unknown: frozenset[str] = frozenset(),
    ) -> tuple[Hold, bool]:
        """Write the instance's originals before anything changes, or return the hold that wins.

        The put only succeeds where no active hold exists, so the first originals are never
        replaced: a second isolate, or a racing one, gets the stored hold back instead. The flag
        says whether this call wrote the hold.
        """
        stamp = now()
        hold = Hold(
            instance_id=facts.instance_id,
            case_id=case_id,
            status=HoldStatus.ISOLATING,
            originals={eni.eni_id: eni.group_ids for eni in facts.enis if eni.eni_id not in unknown},
            eni_vpcs={eni.eni_id: eni.vpc_id for eni in facts.enis},
            recorded_at=stamp,
            recorded_by=actor,
            steps=dict(steps or {}),
            unknown_originals=tuple(sorted(unknown)),
        )
        item = self._item(hold)
        try:
            with translated("dynamodb", "PutItem"):
                self._ddb.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk)",
                )
            return hold, True
        except AwsError as error:
            if error.code != CONDITION_FAILED:
                raise
        existing = self.get(facts.instance_id)
        if existing is None:
            raise StaleRecord(f"the hold on {facts.instance_id} vanished while it was read")
        if existing.status in ACTIVE_STATUSES:
            return existing, False
        self._archive_and_replace(existing, item)
        return hold, True

    def _archive_and_replace(self, released: Hold, item: dict[str, Any]) -> None:
        archive = self._item(released) | instance_key(released.instance_id, f"hold#{released.recorded_at}")
        try:
            # IAM authorises each put of a transaction as dynamodb:PutItem.
            with translated("dynamodb", "PutItem"):
                self._ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": archive,
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": item,
                                "ConditionExpression": "#s = :released AND recorded_at = :at",
                                "ExpressionAttributeNames": {"#s": "status"},
                                "ExpressionAttributeValues": {
                                    ":released": {"S": HoldStatus.RELEASED.value},
                                    ":at": {"S": released.recorded_at},
                                },
                            }
                        },
                    ]
                )
        except AwsError as error:
            if error.code == "TransactionCanceledException":
                raise StaleRecord(
                    f"another run changed the hold on {released.instance_id} at the same moment"
                ) from error
            raise

    def add_eni_originals(self, hold: Hold, eni_id: str, group_ids: tuple[str, ...], vpc_id: str) -> bool:
        """Record an ENI attached after the hold began; False if it was already recorded."""
        return self._set_if_absent(
            hold,
            "originals.#eni = :groups, eni_vpcs.#eni = :vpc",
            absent="originals.#eni",
            names={"#eni": eni_id},
            values={":groups": list(group_ids), ":vpc": vpc_id},
        )

    def add_unknown_eni(self, hold: Hold, eni_id: str, vpc_id: str) -> bool:
        """Record an ENI whose original groups cannot be known; False if it was recorded already."""
        return self._set_if_absent(
            hold,
            "unknown_originals = list_append(if_not_exists(unknown_originals, :none), :eni), "
            "eni_vpcs.#eni = :vpc",
            absent="eni_vpcs.#eni",
            names={"#eni": eni_id},
            values={":none": [], ":eni": [eni_id], ":vpc": vpc_id},
        )

    def get_many(self, instance_ids: list[str]) -> dict[str, Hold]:
        """The current holds of many instances, 100 to a BatchGetItem; an instance never held is
        absent."""
        holds: dict[str, Hold] = {}
        unique = list(dict.fromkeys(instance_ids))
        for start in range(0, len(unique), BATCH_GET):
            keys = [instance_key(i) for i in unique[start : start + BATCH_GET]]
            for attempt in range(PATIENT_ATTEMPTS):
                with translated("dynamodb", "BatchGetItem"):
                    answer = self._ddb.batch_get_item(
                        RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                    )
                holds.update(
                    (hold.instance_id, hold)
                    for hold in map(hold_from_item, answer.get("Responses", {}).get(self.table, []))
                )
                keys = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not keys:
                    break
                time.sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
        return holds

    # -- ec2ir's groups ----------------------------------------------------------------------------

    def group_records(self, region: str) -> dict[str, GroupRecord]:
        """Every VPC's recorded groups in the Region; nothing when the table does not exist yet."""
        records: dict[str, GroupRecord] = {}
        try:
            with translated("dynamodb", "Query"):
                for page in self._ddb.get_paginator("query").paginate(
                    TableName=self.table,
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": f"{GROUPS}{region}"}},
                    ConsistentRead=True,
                ):
                    for item in page.get("Items", []):
                        record = group_record_from_item(item)
                        records[record.vpc_id] = record
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return {}
            raise
        return records

    def record_group(
        self, region: str, account: str, vpc_id: str, role: str, group_id: str, replacing: str = ""
    ) -> str:
        """Record ``group_id`` as the VPC's group for ``role``, unless another run recorded one
        first (or, with ``replacing``, replaced that one first); returns the id that stands.

        A replaced isolation or allow-all group is kept in ``retired``: an ENI still in it was put
        there by ec2ir, and its groups are never mistaken for its originals."""
        names = {"#role": role_attribute(role)}
        values: dict[str, Any] = {":id": group_id, ":vpc": vpc_id, ":account": account}
        sets = ["#role = :id", "vpc_id = :vpc", "account = :account"]
        if replacing:
            condition = "#role = :old"
            values[":old"] = replacing
            if role != "forensic":
                sets.append("retired = list_append(if_not_exists(retired, :none), :retire)")
                values |= {":none": [], ":retire": [replacing]}
        else:
            condition = "attribute_not_exists(#role)"
        try:
            with translated("dynamodb", "UpdateItem"):
                self._ddb.update_item(
                    TableName=self.table,
                    Key=groups_key(region, vpc_id),
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression=(
                        f"(attribute_not_exists(account) OR account = :account) AND {condition}"
                    ),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=_serialize(values),
                )
            return group_id
        except AwsError as error:
            if error.code != CONDITION_FAILED:
                raise
        current = self.group_records(region).get(vpc_id)
        standing = current.roles.get(role) if current is not None and current.account == account else None
        if not standing:
            raise StaleRecord(f"the record of ec2ir's {role} group in {vpc_id} belongs to another account")
        return standing

    def note_group_settings(
        self, region: str, vpc_id: str, office_cidr: str | None, forensic_source: str, owner: str
    ) -> None:
        """Remember what the forensic side was last set to, so that ``status --check`` knows the
        safe set without being told again."""
        sets = ["forensic_source = :source", "forensic_source_owner = :owner"]
        values = {":source": forensic_source, ":owner": owner}
        if office_cidr is not None:
            sets.append("office_cidr = :cidr")
            values[":cidr"] = office_cidr
        with translated("dynamodb", "UpdateItem"):
            self._ddb.update_item(
                TableName=self.table,
                Key=groups_key(region, vpc_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_serialize(values),
            )

    def add_step_record(self, hold: Hold, step: str, record: dict[str, Any]) -> bool:
        """Record a step's originals if this hold has none yet; False if one was already there."""
        return self._set_if_absent(
            hold,
            "steps.#step = :record",
            absent="steps.#step",
            names={"#step": step},
            values={":record": record},
        )

    def _set_if_absent(
        self, hold: Hold, assignments: str, absent: str, names: dict[str, str], values: dict[str, Any]
    ) -> bool:
        """Add to this very episode of an active hold what it lacks; False if it had it already.

        The first value written always stays: this is how originals are never overwritten."""
        try:
            with translated("dynamodb", "UpdateItem"):
                self._ddb.update_item(
                    TableName=self.table,
                    Key=instance_key(hold.instance_id),
                    UpdateExpression=f"SET {assignments}",
                    ConditionExpression=(
                        "case_id = :case AND recorded_at = :at AND #s IN (:isolating, :isolated) "
                        f"AND attribute_not_exists({absent})"
                    ),
                    ExpressionAttributeNames={"#s": "status", **names},
                    ExpressionAttributeValues=_serialize(
                        {
                            ":case": hold.case_id,
                            ":at": hold.recorded_at,
                            ":isolating": HoldStatus.ISOLATING.value,
                            ":isolated": HoldStatus.ISOLATED.value,
                            **values,
                        }
                    ),
                )
            return True
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                return False
            raise

    def transition(
        self,
        hold: Hold,
        allowed_from: tuple[HoldStatus, ...],
        to: HoldStatus,
        **stamps: str,
    ) -> Hold:
        """Move a hold to ``to`` only if it is still this episode, this case and an allowed status;
        returns the hold as the move left it, step records written meanwhile included."""
        names = {"#s": "status"}
        values: dict[str, Any] = {
            ":to": {"S": to.value},
            ":case": {"S": hold.case_id},
            ":at": {"S": hold.recorded_at},
        }
        allowed = []
        for index, status in enumerate(allowed_from):
            values[f":from{index}"] = {"S": status.value}
            allowed.append(f":from{index}")
        sets = ["#s = :to"]
        for index, (name, value) in enumerate(sorted(stamps.items())):
            names[f"#a{index}"] = name
            values[f":a{index}"] = {"S": value}
            sets.append(f"#a{index} = :a{index}")
        try:
            with translated("dynamodb", "UpdateItem"):
                answer = self._ddb.update_item(
                    TableName=self.table,
                    Key=instance_key(hold.instance_id),
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression=(
                        f"case_id = :case AND recorded_at = :at AND #s IN ({', '.join(allowed)})"
                    ),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                raise StaleRecord(
                    f"the hold on {hold.instance_id} changed under this run (another responder acted on it)",
                    "run `ec2ir status` and try again",
                ) from error
            raise
        return hold_from_item(answer["Attributes"])

    def _item(self, hold: Hold) -> dict[str, Any]:
        data: dict[str, Any] = {
            "instance_id": hold.instance_id,
            "case_id": hold.case_id,
            "status": hold.status.value,
            "originals": {eni: list(groups) for eni, groups in hold.originals.items()},
            "eni_vpcs": dict(hold.eni_vpcs),
            "recorded_at": hold.recorded_at,
            "recorded_by": hold.recorded_by,
            "steps": hold.steps,
        }
        if hold.unknown_originals:
            data["unknown_originals"] = list(hold.unknown_originals)
        for optional in ("isolated_at", "released_at", "released_by"):
            if getattr(hold, optional):
                data[optional] = getattr(hold, optional)
        return _serialize(data) | instance_key(hold.instance_id)
