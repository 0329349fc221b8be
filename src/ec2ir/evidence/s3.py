"""S3 as the evidence uses it: every call named by the IAM action it needs, every call naming the
expected owner, and objects read back only when their SHA-256 is the journal's."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, TypedDict

from ec2ir.aws.session import Aws, translated
from ec2ir.core.errors import Ec2irError
from ec2ir.core.models import EvidenceRef

# The IAM action behind each S3 operation whose name differs from it.
S3_ACTIONS = {
    "HeadBucket": "ListBucket",
    "PutBucketEncryption": "PutEncryptionConfiguration",
    "GetBucketEncryption": "GetEncryptionConfiguration",
    "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
    "PutObjectLockConfiguration": "PutBucketObjectLockConfiguration",
    "ListObjectVersions": "ListBucketVersions",
    "HeadObject": "GetObject",
}


def s3_translated(operation: str) -> Any:
    return translated("s3", S3_ACTIONS.get(operation, operation))


def account_of(caller_arn: str) -> str:
    return caller_arn.split(":")[4] if caller_arn.count(":") >= 5 else ""


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def as_json(value: Any) -> bytes:
    """Canonical JSON, so the same facts always hash the same."""
    return json.dumps(value, sort_keys=True, indent=2, default=str).encode()


def compact_time(stamp: str) -> str:
    """An ISO 8601 time as a key part: 2026-11-28T06:20:00.000+00:00 -> 20261128T062000Z."""
    moment = datetime.fromisoformat(stamp).astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


def split_location(location: str) -> tuple[str, str]:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key


class ExpectedOwner(TypedDict, total=False):
    """The argument every S3 call of ec2ir adds, when the caller's account is known."""

    ExpectedBucketOwner: str


def expected_owner(aws: Aws) -> ExpectedOwner:
    """Every S3 call names the account the evidence belongs to (the caller's), so that a bucket of
    the same name someone else owns is never read from or written to."""
    account = aws.account()
    return {"ExpectedBucketOwner": account} if account.isdigit() else {}


def read_object(aws: Aws, ref: EvidenceRef, limit: int = 16 << 20) -> bytes:
    """The exact version the journal names, only if its SHA-256 is the journal's; AwsError if it
    is gone, Ec2irError if it differs or is larger than ``limit``."""
    bucket, key = split_location(ref.location)
    arguments: dict[str, Any] = {"Bucket": bucket, "Key": key, **expected_owner(aws)}
    if ref.version_id and ref.version_id != "null":
        arguments["VersionId"] = ref.version_id
    with s3_translated("GetObject"):
        body = bytes(aws.client("s3").get_object(**arguments)["Body"].read(limit + 1))
    if len(body) > limit or sha256(body) != ref.sha256:
        raise Ec2irError(
            f"{ref.location} (version {ref.version_id or '-'}) does not match its journaled SHA-256"
        )
    return body


def object_sha256(aws: Aws, ref: EvidenceRef) -> str:
    """The SHA-256 of the exact version the journal names, read in full; AwsError if it is gone."""
    bucket, key = split_location(ref.location)
    arguments: dict[str, Any] = {"Bucket": bucket, "Key": key, **expected_owner(aws)}
    if ref.version_id and ref.version_id != "null":
        arguments["VersionId"] = ref.version_id
    with s3_translated("GetObject"):
        body = aws.client("s3").get_object(**arguments)["Body"]
        digest = hashlib.sha256()
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
