"""The case journal: one item per action under ``pk = case#<case>``, each chained into its run.

Every run of a case is a chain: its entries in the order they were handed to ``append`` (threads
of one run share it), each naming the digest of the one before, its first naming the case's chain
head when the run began. When a writer's runs end (``close_runs``), each case's chain head is
recorded under the case's journal, for the next run's first link. Entries go 25 to a
BatchWriteItem.
"""

from __future__ import annotations

import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws.session import PATIENT_ATTEMPTS, patiently, translated
from ec2ir.core.errors import AwsError, Throttled
from ec2ir.core.models import JournalEntry
from ec2ir.store.entries import (
    JOURNAL,
    Link,
    StoredEntry,
    entry_data,
    entry_digest,
    journal_item,
    stored_entry,
)
from ec2ir.store.items import case_key, deserialize, now, serialize
from ec2ir.store.table import Table

# the case's chain head, under its journal: where the next run's first entry links to
CHAIN_HEAD = "chain-head"
JOURNAL_BATCH = 25  # BatchWriteItem's most


@dataclass
class RunChain:
    """One run's entries of one case, chained in write order (see ``CaseJournal.append``)."""

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


# An entry's item, the run it is chained into, and its number in that run.
Linked = tuple[dict[str, Any], RunChain, int]


class CaseJournal:
    """The journals of every case, and this writer's open run of each."""

    def __init__(self, table: Table) -> None:
        self.table = table
        # This writer's open run of each case (see ``append``); ``close_runs`` ends them.
        self._chains: dict[str, RunChain] = {}
        self._chains_lock = threading.Lock()
        self._turns: dict[str, threading.Lock] = {}  # each case's writing turn (see ``append``)

    def append(self, entries: list[JournalEntry]) -> None:
        """Add entries to their cases' journals, 25 to a call, each chained into this writer's run.

        Every run of a case is a chain: its entries in the order they were handed here (threads of
        one run share it), each naming the digest of the one before, its first naming the case's
        chain head when the run began. Concurrent runs each make their own chain, so nothing is
        ever read and rewritten. An entry handed again in the same run keeps its link, and its key
        holds a digest of all of it, so a retry rewrites it unchanged and adds no second copy. A
        transaction would cost twice the write capacity and gain nothing.

        Threads of one run take turns on each case: its entries are linked and written under the
        case's lock, so they reach the table in the order of their places in the chain. A crash
        can then lose only a run's last entries, never leave a hole before a written entry, which
        ``verify`` could not tell from a deletion."""
        by_case: dict[str, list[JournalEntry]] = {}
        for entry in entries:
            by_case.setdefault(entry.case_id, []).append(entry)
        for case_id, of_case in by_case.items():
            with self._turn(case_id):
                self._append_in_order(of_case)

    def _turn(self, case_id: str) -> threading.Lock:
        with self._chains_lock:
            return self._turns.setdefault(case_id, threading.Lock())

    def _append_in_order(self, entries: list[JournalEntry]) -> None:
        linked: list[Linked] = []
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
    def _mark_written(batch: list[Linked]) -> None:
        for _, chain, seq in batch:
            with chain.lock:
                chain.written.add(seq)

    def _link(self, entry: JournalEntry) -> tuple[RunChain, Link]:
        content = entry_digest(entry_data(entry))
        bucket = next((r.location for r in entry.evidence if r.location.startswith("s3://")), "")
        while True:
            chain = self._chain(entry.case_id)
            with chain.lock:
                if chain.closed:  # ended by a seal meanwhile: the entry goes to the next run
                    continue
                if content not in chain.links:
                    link = Link(chain.run, len(chain.links), chain.last or chain.start)
                    chain.links[content] = (link, entry_digest(entry_data(entry, link)))
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
                item = self.table.ddb.get_item(
                    TableName=self.table.name,
                    Key=case_key(case_id) | {"sk": {"S": CHAIN_HEAD}},
                    ConsistentRead=True,
                ).get("Item")
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return {}
            raise
        return deserialize(item) if item else {}

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
                self.table.ddb.put_item(
                    TableName=self.table.name,
                    Item=serialize(pointer) | case_key(chain.case_id) | {"sk": {"S": CHAIN_HEAD}},
                )
        return ended

    def _write_one_by_one(self, items: list[Linked]) -> None:
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
        sleep = self.table.aws.sleep
        for attempt in range(PATIENT_ATTEMPTS):

            def write(pending: list[dict[str, Any]] = requests) -> dict[str, Any]:
                with translated("dynamodb", "BatchWriteItem"):
                    answer: dict[str, Any] = self.table.ddb.batch_write_item(
                        RequestItems={self.table.name: pending}
                    )
                return answer

            # Throughput exceeded for some items: DynamoDB hands them back unwritten.
            requests = patiently(write, sleep=sleep).get("UnprocessedItems", {}).get(self.table.name, [])
            if not requests:
                return
            sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
        raise Throttled(
            "ProvisionedThroughputExceededException",
            f"{len(requests)} journal entr(ies) still unwritten after {PATIENT_ATTEMPTS} tries",
            "dynamodb:BatchWriteItem",
        )

    def entries(self, case_id: str) -> list[JournalEntry]:
        """The case's journal, oldest first."""
        return [stored.entry for stored in self.records(case_id)]

    def records(self, case_id: str) -> list[StoredEntry]:
        """The case's journal, oldest first, each entry with its key's and its content's digest."""
        entries: list[StoredEntry] = []
        with translated("dynamodb", "Query"):
            for page in self.table.ddb.get_paginator("query").paginate(
                TableName=self.table.name,
                KeyConditionExpression="pk = :case AND begins_with(sk, :journal)",
                ExpressionAttributeValues={":case": case_key(case_id)["pk"], ":journal": {"S": JOURNAL}},
                ConsistentRead=True,
            ):
                entries.extend(stored_entry(item) for item in page.get("Items", []))
        return entries
