"""``verify``: every object the journal names read again and its SHA-256 compared, every snapshot
checked to exist, and whatever sits under the case's prefix without a journal entry listed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ec2ir.aws.session import Aws, translated
from ec2ir.core.errors import AwsError
from ec2ir.core.models import EvidenceRef
from ec2ir.evidence.s3 import (
    expected_owner,
    object_sha256,
    s3_translated,
    split_location,
)


class Verdict(StrEnum):
    """What ``verify`` found of one piece of evidence (or of the journal itself). The values are
    what ``verify`` prints and ``--output json`` gives as ``findings[].status``: never respelled."""

    INTACT = "intact"
    MODIFIED = "MODIFIED"  # its SHA-256 is not the one the journal recorded
    MISSING = "MISSING"
    DELETED = "DELETED"  # a delete marker hides the journaled version, which can be restored
    UNJOURNALED = "UNJOURNALED"  # under the case's prefix with no journal entry
    UNREADABLE = "UNREADABLE"
    TAMPERED = "TAMPERED"  # a journal entry rewritten, replaced or reordered
    UNCHAINED = "unchained"  # entries written before the chain: checked against their key only
    NOT_PROVABLE = "not provable"  # a run with no head, whose last entries' deletion cannot be seen

    @property
    def ok(self) -> bool:
        return self in OK_VERDICTS


# what verify reports without failing: entries written before the chain, and what it cannot prove
OK_VERDICTS = frozenset({Verdict.INTACT, Verdict.UNCHAINED, Verdict.NOT_PROVABLE})


@dataclass(frozen=True)
class Finding:
    """One piece of evidence as ``verify`` found it; ``ok`` only when it matches the journal."""

    ref: EvidenceRef
    status: Verdict
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status.ok

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "detail": self.detail, **self.ref.as_dict()}


JOURNAL_HEAD = "journal-head.json"  # <case>/journal-head.json: one version per run


def journal_head_key(case_id: str) -> str:
    return f"{case_id}/{JOURNAL_HEAD}"


MISSING_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404", "InvalidSnapshot.NotFound"})


def verify_refs(aws: Aws, refs: list[EvidenceRef], case_id: str) -> list[Finding]:
    """Re-read every object the journal names and compare its SHA-256; check every snapshot still
    exists; and list what sits under the case's prefix without a journal entry."""
    findings = [
        _verify_snapshot(aws, ref) if ref.kind == "snapshot" else _verify_object(aws, ref) for ref in refs
    ]
    journaled = {(ref.location, ref.version_id) for ref in refs}
    buckets = sorted({split_location(ref.location)[0] for ref in refs if ref.location.startswith("s3://")})
    for bucket in buckets:
        findings.extend(_unjournaled(aws, bucket, case_id, journaled))
    return findings


def _verify_object(aws: Aws, ref: EvidenceRef) -> Finding:
    try:
        actual = object_sha256(aws, ref)
    except AwsError as error:
        status = Verdict.MISSING if error.code in MISSING_CODES else Verdict.UNREADABLE
        return Finding(ref, status, str(error))
    if actual != ref.sha256:
        return Finding(ref, Verdict.MODIFIED, f"sha256 is {actual}, the journal recorded {ref.sha256}")
    return Finding(ref, Verdict.INTACT, f"sha256 {actual}")


def _verify_snapshot(aws: Aws, ref: EvidenceRef) -> Finding:
    try:
        with translated("ec2", "DescribeSnapshots"):
            found = aws.ec2().describe_snapshots(SnapshotIds=[ref.location]).get("Snapshots", [])
    except AwsError as error:
        status = Verdict.MISSING if error.code in MISSING_CODES else Verdict.UNREADABLE
        return Finding(ref, status, str(error))
    if not found:
        return Finding(ref, Verdict.MISSING, "no such snapshot")
    state = found[0].get("State", "")
    if state == "error":
        return Finding(ref, Verdict.UNREADABLE, "the snapshot failed (state error)")
    return Finding(ref, Verdict.INTACT, f"snapshot {state}")


def _unjournaled(aws: Aws, bucket: str, case_id: str, journaled: set[tuple[str, str]]) -> list[Finding]:
    """Every object version under ``<case>/`` that no journal entry names (evidence whose journal
    line was lost, or something written over it), and every journaled object whose latest
    version is a delete marker: deleted, though its versions can still be restored."""
    found: list[Finding] = []
    try:
        with s3_translated("ListObjectVersions"):
            for page in (
                aws.client("s3")
                .get_paginator("list_object_versions")
                .paginate(Bucket=bucket, Prefix=f"{case_id}/", **expected_owner(aws))
            ):
                for marker in page.get("DeleteMarkers", []):
                    location = f"s3://{bucket}/{marker['Key']}"
                    if marker.get("IsLatest") and any(loc == location for loc, _ in journaled):
                        ref = EvidenceRef("deleted", location, version_id=str(marker.get("VersionId") or ""))
                        found.append(
                            Finding(ref, Verdict.DELETED, "deleted; its journaled version can be restored")
                        )
                for version in page.get("Versions", []):
                    if version["Key"] == journal_head_key(case_id):
                        continue  # the journal's own chain heads, checked with the journal
                    location = f"s3://{bucket}/{version['Key']}"
                    version_id = str(version.get("VersionId") or "")
                    if (location, version_id) not in journaled and (location, "") not in journaled:
                        ref = EvidenceRef(
                            "unknown", location, size=int(version.get("Size", 0)), version_id=version_id
                        )
                        found.append(
                            Finding(ref, Verdict.UNJOURNALED, "in the bucket but not in the case journal")
                        )
    except AwsError as error:
        ref = EvidenceRef("bucket", f"s3://{bucket}/{case_id}/")
        found.append(Finding(ref, Verdict.UNREADABLE, f"cannot list the case's objects: {error}"))
    return found
