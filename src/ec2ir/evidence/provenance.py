"""What the case journal and the evidence prove: the journal's own integrity, and a hold's
originals before ``release`` restores them.

Anyone who can write the state table can rewrite a hold, and a journal entry; anyone who can
write the evidence bucket can add object versions. So:

* every journal entry's key holds the SHA-256 of its content, and each run's entries form a chain
  (each names its predecessor's digest), whose head goes to the evidence bucket as a new version
  of ``<case>/journal-head.json`` after the run. An entry rewritten in place no longer gives its
  key's digest; one rewritten with a new key breaks the chain; entries deleted leave a gap, or fall
  short of a head the bucket keeps. This holds while the bucket's object versions are intact.
* ``release`` compares every original it is about to restore with the hold's first journal entry
  (``isolate:record-originals``, which carries the originals as data) and with the evidence the
  journal names, re-read by exact version and re-hashed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ec2ir.aws.session import Aws, chunks, translated
from ec2ir.core.errors import AwsError, Ec2irError
from ec2ir.core.models import EvidenceRef, GroupRecord, Hold, JournalEntry
from ec2ir.evidence.s3 import (
    account_of,
    compact_time,
    expected_owner,
    read_object,
    s3_translated,
    split_location,
)
from ec2ir.evidence.verify import Finding, Verdict, journal_head_key
from ec2ir.store.entries import RecordEntry, StoredEntry

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectVersionTypeDef

RECORD_ACTION = "isolate:record-originals"
CHAIN_SINCE = "written before the journal was chained"


def hold_record(hold: Hold, complete: bool = False) -> dict[str, Any]:
    """The hold's originals and step records, as the journal keeps them."""
    record: dict[str, Any] = {
        "recorded_at": hold.recorded_at,
        "originals": {eni: list(groups) for eni, groups in sorted(hold.originals.items())},
        "eni_vpcs": dict(sorted(hold.eni_vpcs.items())),
        "steps": {name: hold.steps[name] for name in sorted(hold.steps)},
        "unknown_originals": list(hold.unknown_originals),
    }
    if complete:
        record["complete"] = True
    return record


# -- the journal's integrity --------------------------------------------------------------------


def _finding(stored: StoredEntry, status: Verdict, detail: str) -> Finding:
    return Finding(EvidenceRef("journal", f"journal:{stored.sort_key}"), status, detail)


def check_chain(entries: list[StoredEntry]) -> list[Finding]:
    """Each entry against its key, and each run's chain; nothing is read."""
    findings: list[Finding] = []
    digests = {stored.digest for stored in entries if stored.link is not None}
    runs: dict[str, list[StoredEntry]] = {}
    unchained = [stored for stored in entries if stored.link is None]
    for stored in entries:
        if not stored.intact:
            findings.append(
                _finding(
                    stored,
                    Verdict.TAMPERED,
                    f"{stored.entry.target} {stored.entry.action}: its content no longer gives the digest "
                    "its key holds (rewritten in place)",
                )
            )
        if stored.link is not None:
            runs.setdefault(stored.link.run, []).append(stored)
    for run, chained in sorted(runs.items()):
        findings += _check_run(run, chained, digests)
    if unchained:
        findings.append(
            Finding(
                EvidenceRef("journal", f"journal:{len(unchained)} entries"),
                Verdict.UNCHAINED,
                f"{len(unchained)} entr(ies) {CHAIN_SINCE}: each checked against its key's digest only",
            )
        )
    return findings


def _check_run(run: str, chained: list[StoredEntry], digests: set[str]) -> list[Finding]:
    """One run's chain: each place held once, none missing, each entry naming the one before."""
    findings: list[Finding] = []
    by_seq: dict[int, StoredEntry] = {}
    for stored in chained:
        assert stored.link is not None
        if stored.link.seq in by_seq:
            findings.append(
                _finding(stored, Verdict.TAMPERED, f"run {run}: two entries claim place {stored.link.seq}")
            )
        by_seq[stored.link.seq] = stored
    missing = sorted(set(range(max(by_seq) + 1)) - set(by_seq))
    if missing:
        findings.append(
            Finding(
                EvidenceRef("journal", f"journal-run:{run}"),
                Verdict.MISSING,
                f"run {run}: entr(ies) {', '.join(map(str, missing[:20]))} of its chain are gone (deleted)",
            )
        )
    for seq, stored in sorted(by_seq.items()):
        assert stored.link is not None
        before = by_seq.get(seq - 1)
        if seq > 0 and before is not None and stored.link.prev != before.digest:
            findings.append(
                _finding(
                    stored,
                    Verdict.TAMPERED,
                    f"run {run}, entry {seq}: names a predecessor that is not entry {seq - 1} "
                    "(entries rewritten, replaced or reordered)",
                )
            )
        if seq == 0 and stored.link.prev and stored.link.prev not in digests:
            findings.append(
                _finding(
                    stored,
                    Verdict.MISSING,
                    f"run {run} begins after an entry that is no longer in the journal",
                )
            )
    return findings


def check_heads(
    aws: Aws,
    buckets: Iterable[str],
    case_id: str,
    entries: list[StoredEntry],
    reach: Mapping[str, Aws] | None = None,
) -> list[Finding]:
    """Every version of the case's journal head in each bucket against the journal; each chained
    run no head proves is said, as what cannot be proven. A bucket of another place is read
    through its clients in ``reach``."""
    by_run: dict[str, dict[int, StoredEntry]] = {}
    for stored in entries:
        if stored.link is not None:
            by_run.setdefault(stored.link.run, {})[stored.link.seq] = stored
    findings: list[Finding] = []
    proven: set[str] = set()
    key = journal_head_key(case_id)
    for bucket in sorted(set(buckets)):
        location = f"s3://{bucket}/{key}"
        try:
            heads = _heads((reach or {}).get(bucket, aws), bucket, key)
        except (AwsError, ValueError) as error:
            findings.append(Finding(EvidenceRef("journal-head", location), Verdict.UNREADABLE, str(error)))
            continue
        for version_id, head in heads:
            ref = EvidenceRef("journal-head", location, version_id=str(version_id))
            run = str(head.get("run", ""))
            proven.add(run)
            findings.append(_check_head(ref, run, head, by_run.get(run, {})))
    for run in sorted(set(by_run) - proven):
        chain = by_run[run]
        first = chain[min(chain)].entry
        findings.append(
            Finding(
                EvidenceRef("journal", f"journal-run:{run}"),
                Verdict.NOT_PROVABLE,
                f"run {run} ({len(chain)} entr(ies) from {first.at}, {first.action}): no head in an evidence "
                "bucket (run without evidence), so deleting its last entries, or all of it, cannot be "
                "detected",
            )
        )
    return findings


def _heads(aws: Aws, bucket: str, key: str) -> list[tuple[Any, dict[str, Any]]]:
    """Every version of the journal head in the bucket: its version id and its content."""
    s3 = aws.client("s3")
    versions: list[ObjectVersionTypeDef] = []
    with s3_translated("ListObjectVersions"):
        pages = s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=key, **expected_owner(aws)
        )
        for page in pages:
            versions += [v for v in page.get("Versions", []) if v["Key"] == key]
    heads = []
    for version in versions:
        owner = expected_owner(aws)
        with s3_translated("GetObject"):
            stored = s3.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"], **owner)
            heads.append((version["VersionId"], json.loads(stored["Body"].read())))
    return heads


def _check_head(ref: EvidenceRef, run: str, head: dict[str, Any], chain: dict[int, StoredEntry]) -> Finding:
    """One head against its run's chain: entries deleted, the last one rewritten, or intact."""
    unwritten = {int(seq) for seq in head.get("unwritten", [])}
    last_seq, last = int(head.get("last_seq", -1)), str(head.get("last_digest", ""))
    gone = sorted(set(range(last_seq + 1)) - set(chain) - unwritten)
    if gone:
        return Finding(
            ref,
            Verdict.MISSING,
            f"run {run} wrote {last_seq + 1} entr(ies) by its head; "
            f"{', '.join(map(str, gone[:20]))} are no longer in the journal (deleted)",
        )
    if last_seq >= 0 and last_seq in chain and chain[last_seq].digest != last:
        return Finding(
            ref, Verdict.TAMPERED, f"run {run}: its last entry is not the one its head names (rewritten)"
        )
    return Finding(ref, Verdict.INTACT, f"run {run}: {last_seq + 1} entr(ies) as its head says")


def journal_buckets(entries: list[StoredEntry], *more: str) -> set[str]:
    named = {
        split_location(ref.location)[0]
        for stored in entries
        for ref in stored.entry.evidence
        if ref.location.startswith("s3://")
    }
    return named | {bucket for bucket in more if bucket}


# -- a hold's originals, before release -----------------------------------------------------------


@dataclass
class Proof:
    """What the journal and the evidence prove of one episode of one instance."""

    enis: dict[str, list[tuple[str, tuple[str, ...], str]]] = field(
        default_factory=dict
    )  # source, groups, vpc
    steps: dict[str, list[tuple[str, object]]] = field(default_factory=dict)  # source, record
    complete: bool = False  # the isolate that recorded the hold journaled all of it
    notes: list[str] = field(default_factory=list)


@dataclass
class Provenance:
    """Read once per release run: the case journal, the episodes' evidence, ec2ir's groups and
    the VPC of every group the holds would restore."""

    proofs: dict[tuple[str, str], Proof]
    own_groups: frozenset[str]
    group_vpcs: dict[str, str]

    @classmethod
    def gather(
        cls,
        aws: Aws,
        entries: list[StoredEntry],
        holds: list[Hold],
        records: dict[str, GroupRecord],
        concurrency: int = 16,
    ) -> Provenance:
        account = account_of(aws.caller_arn()) if records else ""
        own = frozenset(
            gid
            for record in records.values()
            if not account or not record.account or record.account == account
            for gid in record.containment_ids
        )
        episodes = {(hold.instance_id, hold.recorded_at) for hold in holds}
        proofs = {episode: Proof() for episode in episodes}
        fetches: list[_Fetch] = []
        for stored in entries:
            if not stored.intact:
                continue  # a rewritten entry proves nothing
            _prove_from_journal(proofs, stored.entry)
            fetches += _evidence_to_fetch(stored.entry, episodes)
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(fetches) or 1))) as pool:
            bodies = list(pool.map(lambda f: _read(aws, f[2]), fetches))
        for (episode, item, ref), (body, error) in zip(fetches, bodies, strict=True):
            proof = proofs[episode]
            if error:
                proof.notes.append(f"evidence {item} ({ref.location}) proves nothing: {error}")
                continue
            _from_evidence(proof, item, body, ref.location, own)
        group_ids = sorted({g for hold in holds for groups in hold.originals.values() for g in groups})
        return cls(proofs, own, _group_vpcs(aws, group_ids))

    def held_at_start(self, hold: Hold) -> bool:
        """Whether ``hold``'s episode was still held when this run read the table."""
        return (hold.instance_id, hold.recorded_at) in self.proofs

    def check(self, hold: Hold) -> tuple[list[str], list[str]]:
        """Each difference between the hold and what is proven, and warnings for what is not."""
        proof = self.proofs.get((hold.instance_id, hold.recorded_at)) or Proof()
        differences: list[str] = []
        unproven: list[str] = []
        for eni, groups in sorted(hold.originals.items()):
            vpc = hold.eni_vpcs.get(eni, "")
            differences += self._misplaced_groups(eni, groups, vpc)
            claims = proof.enis.get(eni, [])
            if not claims:
                unproven.append(f"{eni}'s groups")
            differences += _eni_differences(eni, groups, vpc, claims)
        for name, record in sorted(hold.steps.items()):
            step_claims = proof.steps.get(name, [])
            if not step_claims:
                unproven.append(f"the {name} record")
            differences += _step_differences(name, record, step_claims)
        warnings: list[str] = []
        if unproven:
            if proof.complete:
                differences += [f"{what}: not in the case journal or its evidence" for what in unproven]
            else:
                warnings.append(
                    "not proven yet (the isolate that recorded them has not finished its journal): "
                    + ", ".join(unproven)
                )
        return differences, warnings + proof.notes

    def _misplaced_groups(self, eni: str, groups: Iterable[str], vpc: str) -> list[str]:
        """The hold's groups of one ENI that are ec2ir's own, or live in another VPC than the ENI."""
        differences: list[str] = []
        for group in groups:
            if group in self.own_groups:
                differences.append(f"{eni}: {group} is one of ec2ir's own groups, never an original")
            elif self.group_vpcs.get(group, vpc) != vpc:
                differences.append(f"{eni}: {group} is in {self.group_vpcs[group]}, not in the ENI's {vpc}")
        return differences


def _eni_differences(
    eni: str, groups: Iterable[str], vpc: str, claims: list[tuple[str, tuple[str, ...], str]]
) -> list[str]:
    """Where the hold's groups and VPC of one ENI differ from what each source proves."""
    differences: list[str] = []
    for source, proven_groups, proven_vpc in claims:
        if tuple(sorted(groups)) != proven_groups:
            differences.append(
                f"{eni}: the hold restores {sorted(groups)}, the {source} has {list(proven_groups)}"
            )
        if proven_vpc and vpc != proven_vpc:
            differences.append(f"{eni}: the hold says VPC {vpc}, the {source} has {proven_vpc}")
    return differences


def _step_differences(name: str, record: object, claims: list[tuple[str, object]]) -> list[str]:
    """Where the hold's record of one step differs from what each source proves."""
    differences: list[str] = []
    for source, proven in claims:
        if not _same(name, record, proven):
            restores, has = _show(name, record), _show(name, proven)
            differences.append(f"{name}: the hold restores {restores}, the {source} has {has}")
    return differences


# An episode (instance, recorded_at), the evidence item (network, iam, memberships) and its object.
_Fetch = tuple[tuple[str, str], str, EvidenceRef]


def _prove_from_journal(proofs: dict[tuple[str, str], Proof], entry: JournalEntry) -> None:
    """Add what an episode's record-originals journal entry proves, if the entry is one."""
    if isinstance(entry, RecordEntry) and entry.action == RECORD_ACTION:
        episode = (entry.target, str(entry.record.get("recorded_at", "")))
        if episode in proofs:
            _from_record(proofs[episode], entry.record, f"journal entry of {entry.at}")


def _evidence_to_fetch(entry: JournalEntry, episodes: Iterable[tuple[str, str]]) -> list[_Fetch]:
    """The evidence objects the entry names that hold an episode's network, IAM or memberships."""
    fetches: list[_Fetch] = []
    for ref in entry.evidence:
        item = ref.kind.removeprefix("metadata:")
        for instance_id, recorded_at in episodes:
            if entry.target == instance_id and item in ("network", "iam", "memberships"):
                episode_prefix = f"/{instance_id}/{compact_time(recorded_at)}/" if recorded_at else "//"
                if episode_prefix in ref.location:
                    fetches.append(((instance_id, recorded_at), item, ref))
    return fetches


def _read(aws: Aws, ref: EvidenceRef) -> tuple[bytes, str]:
    try:
        return read_object(aws, ref), ""
    except Ec2irError as error:
        return b"", str(error)


def _from_record(proof: Proof, record: dict[str, Any], source: str) -> None:
    vpcs = record.get("eni_vpcs", {})
    for eni, groups in record.get("originals", {}).items():
        proof.enis.setdefault(eni, []).append((source, tuple(sorted(groups)), str(vpcs.get(eni, ""))))
    for name, step in record.get("steps", {}).items():
        proof.steps.setdefault(name, []).append((source, step))
    proof.complete |= bool(record.get("complete"))


def _from_evidence(proof: Proof, item: str, body: bytes, location: str, own: frozenset[str]) -> None:
    source = f"evidence {location}"
    try:
        data = json.loads(body)
    except ValueError:
        proof.notes.append(f"{source} is not JSON: it proves nothing")
        return
    if item == "network":
        enis = data.get("network_interfaces", [])
        groups = {
            e.get("NetworkInterfaceId", ""): tuple(sorted(g["GroupId"] for g in e.get("Groups", [])))
            for e in enis
        }
        if any(own & set(gs) for gs in groups.values()):
            return  # captured after the cut (a rerun finishing an interrupted one): no original
        for eni in enis:
            eni_id = eni.get("NetworkInterfaceId", "")
            proof.enis.setdefault(eni_id, []).append((source, groups[eni_id], str(eni.get("VpcId", ""))))
    elif item == "iam":
        association = data.get("association")
        if association:
            proof.steps.setdefault("credentials", []).append((source, association))
    elif item == "memberships":
        group = data.get("auto_scaling_group")
        if group:
            proof.steps.setdefault("autoscaling", []).append((source, {"group": group}))
        balancers = data.get("load_balancers") or {}
        if balancers.get("target_groups") or balancers.get("classic"):
            proof.steps.setdefault("load-balancers", []).append((source, balancers))


def _same(name: str, record: object, proven: object) -> bool:
    if name == "credentials":  # the association id changes with every association; the profile counts
        return bool(_profile_arn(record) == _profile_arn(proven))
    return json.dumps(record, sort_keys=True, default=str) == json.dumps(proven, sort_keys=True, default=str)


def _show(name: str, record: object) -> str:
    if name == "credentials":
        return f"profile {_profile_arn(record)}"
    return json.dumps(record, sort_keys=True, default=str)


def _profile_arn(association: object) -> object:
    """A credentials record's profile; None for what is no record at all (the evidence's JSON, say)."""
    return association.get("profile_arn") if isinstance(association, Mapping) else None


def _group_vpcs(aws: Aws, group_ids: list[str]) -> dict[str, str]:
    """Each existing group's VPC, 200 to a call; a deleted group is simply absent."""
    vpcs: dict[str, str] = {}
    paginator = aws.ec2().get_paginator("describe_security_groups")
    with translated("ec2", "DescribeSecurityGroups"):
        for batch in chunks(group_ids, 200):
            for page in paginator.paginate(Filters=[{"Name": "group-id", "Values": batch}]):
                vpcs.update((g["GroupId"], str(g.get("VpcId", ""))) for g in page.get("SecurityGroups", []))
    return vpcs
