"""The case's evidence bucket: its name (the default one per account and Region), the evidence
written to it and read from it, and what a run would do with it (for plans)."""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws.session import Aws, patiently
from ec2ir.core.errors import AwsError, Ec2irError, UsageError
from ec2ir.core.models import EvidenceRef
from ec2ir.evidence.bucket_setup import DEFAULT_PREFIX, BucketSetup
from ec2ir.evidence.s3 import (
    s3_translated,
    sha256,
)
from ec2ir.store.state import StateStore

BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_OBJECT_LOCK_DAYS = 36500  # S3's limit: 100 years


def default_bucket(account: str, region: str) -> str:
    """``ec2ir-evidence-<account>-<region>``: one bucket per account and Region."""
    return f"{DEFAULT_PREFIX}{account}-{region}"


def validate_object_lock_days(days: int) -> int:
    if not isinstance(days, int) or not 0 <= days <= MAX_OBJECT_LOCK_DAYS:
        raise UsageError(
            f"object lock days must be a whole number from 0 to {MAX_OBJECT_LOCK_DAYS}, not {days!r}"
        )
    return days


def bucket_name(name: str) -> str:
    if not BUCKET_NAME.match(name) or re.match(r"^\d+\.\d+\.\d+\.\d+$", name):
        raise UsageError(
            f"{name!r} is not a valid S3 bucket name",
            "use 3-63 lowercase letters, digits, dots and hyphens",
        )
    return name


@dataclass
class EvidenceBucket:
    """The case's evidence bucket: created hardened on first use, only checked when it exists.

    ec2ir changes the settings, policy and tags of a bucket it created itself and of no other: a
    bucket that exists already (the team's, or the default name taken by someone in the account)
    keeps its policy, with any deny statement of the organisation's own, and its tags, legal holds
    included; what it lacks of versioning, encryption and blocked public access is said in the
    notes. A run that is interrupted between CreateBucket and the last setting leaves a bucket only
    ec2ir can finish, recognised by the record it wrote to the state table before CreateBucket,
    never by a tag, which anyone allowed to tag the bucket could set. Without a state table (no
    ``store``) a bucket is changed only in the run that created it.

    Every call names the expected owner, so evidence never lands in a bucket of the same name
    that someone else took first."""

    aws: Aws
    name: str
    account: str
    object_lock_days: int = 0
    store: StateStore | None = None
    notes: list[str] = field(default_factory=list)
    _ready: bool = False
    _failure: Ec2irError | None = None  # once the bucket failed, every instance hears so at once
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def s3(self) -> Any:
        return self.aws.client("s3")

    def owner(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self.account} if self.account.isdigit() else {}

    def ensure(self) -> None:
        """Once per run: create the bucket if it is missing, finish it if ec2ir's own record says
        an interrupted run was creating it, else only check it."""
        with self._lock:
            if self._ready:
                return
            if self._failure is not None:
                raise self._failure
            try:
                BucketSetup(self).run()
            except Ec2irError as error:
                self._failure = error
                raise
            self._ready = True

    def stored(self, key: str, kind: str) -> EvidenceRef | None:
        """The object already under ``key``, as its own metadata describes it, or None."""
        self.ensure()
        try:
            with s3_translated("HeadObject"):
                head = self.s3.head_object(Bucket=self.name, Key=key, **self.owner())
        except AwsError as error:
            if error.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return EvidenceRef(
            kind=kind,
            location=f"s3://{self.name}/{key}",
            sha256=str(head.get("Metadata", {}).get("sha256", "")),
            size=int(head.get("ContentLength", 0)),
            version_id=str(head.get("VersionId") or ""),
        )

    def put(self, key: str, body: bytes, kind: str, content_type: str, tags: dict[str, str]) -> EvidenceRef:
        self.ensure()
        return self.put_version(key, body, kind, content_type, tags)

    def put_version(
        self, key: str, body: bytes, kind: str, content_type: str, tags: dict[str, str]
    ) -> EvidenceRef:
        """A new version of ``key``, in a bucket known to exist (the case's own): never created
        here. With Object Lock on the bucket, its default retention locks the version."""
        digest = sha256(body)
        metadata = {"sha256": digest, **{name.replace(":", "-"): value for name, value in tags.items()}}

        def upload() -> dict[str, Any]:
            with s3_translated("PutObject"):
                return dict(
                    self.s3.put_object(
                        Bucket=self.name,
                        Key=key,
                        Body=body,
                        ContentType=content_type,
                        Metadata=metadata,
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                        **self.owner(),
                    )
                )

        answer = patiently(upload, sleep=self.aws.sleep)
        return EvidenceRef(
            kind=kind,
            location=f"s3://{self.name}/{key}",
            sha256=digest,
            size=len(body),
            version_id=str(answer.get("VersionId") or ""),
        )


def planned_bucket(aws: Aws, name: str, account: str, object_lock_days: int = 0) -> tuple[str, str]:
    """What a run would do with the evidence bucket, found with one HeadBucket and nothing else:
    (what it would do, why evidence would not be collected), one of the two empty."""
    owner = {"ExpectedBucketOwner": account} if account.isdigit() else {}
    try:
        with s3_translated("HeadBucket"):
            aws.client("s3").head_bucket(Bucket=name, **owner)
    except AwsError as error:
        if error.code in ("403", "AccessDenied"):
            return "", f"the evidence bucket {name} exists but is not this account's, or denies it ({error})"
        if error.code not in ("404", "NoSuchBucket", "NotFound"):
            return "", f"the evidence bucket {name} cannot be read: {error}"
        lock = f", Object Lock COMPLIANCE {object_lock_days} day(s)" if object_lock_days else ""
        return (
            f"create the evidence bucket s3://{name} (versioned, KMS-encrypted, public access blocked, "
            f"TLS only{lock})",
            "",
        )
    return f"use the evidence bucket s3://{name} (it exists: checked, not changed)", ""
