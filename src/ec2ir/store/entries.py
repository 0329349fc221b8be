"""Journal entries as items of the state table, and the digests that prove them.

An entry's item lives under ``pk = case#<case>``; its sort key holds a digest of the whole entry,
so that writing an entry again (a retry) changes nothing and adds no second copy. A chained
entry (see ``ec2ir.store.journal``) also carries its ``Link``, which the digest covers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ec2ir.core.models import EvidenceRef, JournalEntry
from ec2ir.store.items import case_key, deserialize, plain, serialize

JOURNAL = "journal#"
ENTRY_FIELDS = ("at", "case_id", "actor", "target", "action", "result", "request_ids", "evidence", "record")
LINK_FIELDS = ("run", "seq", "prev")


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


def entry_data(entry: JournalEntry, link: Link | None = None) -> dict[str, Any]:
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
    data = entry_data(entry, link)
    digest = entry_digest(data)
    if link is None:
        digest = digest[:16]
    sort_key = f"{JOURNAL}{entry.at}#{entry.target}#{entry.action}#{digest}"
    return serialize(data) | case_key(entry.case_id) | {"sk": {"S": sort_key}}


def entry_from_item(item: dict[str, Any]) -> JournalEntry:
    data = plain(deserialize(item))
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
    data = plain(deserialize(item))
    entry = entry_from_item(item)
    link = None
    if "run" in data:
        link = Link(str(data["run"]), int(data.get("seq", -1)), str(data.get("prev", "")))
    sort_key = str(data.get("sk", ""))
    fields = {key: data[key] for key in (*ENTRY_FIELDS, *LINK_FIELDS) if key in data}
    return StoredEntry(entry, sort_key, sort_key.rsplit("#", 1)[-1], entry_digest(fields), link)
