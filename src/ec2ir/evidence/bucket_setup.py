"""The evidence bucket made usable, once per run: created hardened when missing, finished when
ec2ir's own record says an interrupted run was creating it, else only checked (never changed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ec2ir.aws.session import Aws, translated
from ec2ir.core.errors import AwsError, EvidenceBucketUnusable
from ec2ir.evidence.s3 import s3_translated
from ec2ir.store.state import StateStore

DEFAULT_PREFIX = "ec2ir-evidence-"
# The state table's record of a bucket ec2ir creates: CREATING before CreateBucket, CREATED once
# hardened. Only a bucket whose record says CREATING and that lacks ec2ir's tag is ever finished.
BUCKET_RECORD, BUCKET_RECORD_SORT = "evidence-bucket#", "creation"
CREATING, CREATED = "creating", "created"
PUBLIC_ACCESS_BLOCKS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def tls_only_policy(bucket: str, partition: str = "aws") -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:{partition}:s3:::{bucket}", f"arn:{partition}:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


class SetUpBucket(Protocol):
    """What the setup reads of the bucket (ec2ir.evidence.bucket.EvidenceBucket), and the one
    thing it changes: the Object Lock days an interrupted run created it with."""

    aws: Aws
    name: str
    store: StateStore | None
    notes: list[str]
    object_lock_days: int

    @property
    def s3(self) -> Any: ...

    def owner(self) -> dict[str, str]: ...


class BucketSetup:
    """The first use of one evidence bucket (see EvidenceBucket for what ec2ir changes and what
    it leaves alone); its notes go to the bucket's."""

    def __init__(self, bucket: SetUpBucket) -> None:
        self.bucket = bucket
        self.name = bucket.name
        self.notes = bucket.notes  # the bucket's own list: what is said here, the run says

    def run(self) -> None:
        """Create the bucket if it is missing, finish it if ec2ir's own record says an interrupted
        run was creating it, else only check it."""
        try:
            with s3_translated("HeadBucket"):
                self.bucket.s3.head_bucket(Bucket=self.name, **self.bucket.owner())
            exists = True
        except AwsError as error:
            if error.code in ("403", "AccessDenied"):
                raise EvidenceBucketUnusable(
                    f"the evidence bucket {self.name} exists but is not this account's, or "
                    f"denies it ({error})",
                    "pass --evidence-bucket with a bucket of your own",
                ) from error
            if error.code not in ("404", "NoSuchBucket", "NotFound"):
                raise
            exists = False
        if not exists:
            self._record_creation(CREATING)
            self._create()
            self._harden()
            self._record_creation(CREATED)
            self.notes.append(f"created evidence bucket s3://{self.name} ({self._hardening()})")
            return
        record, recorded_days = self._creation_record()
        # A bucket named by the team (--evidence-bucket, or the stack's) is theirs, tag or not.
        tagged = self._tagged() if record == CREATING or self.name.startswith(DEFAULT_PREFIX) else True
        if record == CREATING and not tagged:
            # As the interrupted run meant it: Object Lock can be configured only on a bucket
            # created with it enabled.
            self.bucket.object_lock_days = recorded_days
            self._harden()
            self.notes.append(
                f"finished hardening evidence bucket s3://{self.name}, which an interrupted ec2ir run "
                f"had created ({self._hardening()})"
            )
        else:
            if not tagged:
                self.notes.append(
                    f"evidence bucket s3://{self.name} has ec2ir's default name but ec2ir did not create "
                    "it: it is used as it is, and its settings, policy and tags are left alone"
                )
            self._check_existing()
        if record == CREATING:
            self._record_creation(CREATED)

    # -- ec2ir's own record of the buckets it creates --------------------------------------------

    def _record_key(self) -> dict[str, Any]:
        return {"pk": {"S": f"{BUCKET_RECORD}{self.name}"}, "sk": {"S": BUCKET_RECORD_SORT}}

    def _creation_record(self) -> tuple[str, int]:
        """CREATING, CREATED or "" (no record, or no state table to keep one in), and the Object
        Lock days the bucket was created with."""
        if self.bucket.store is None:
            return "", 0
        try:
            with translated("dynamodb", "GetItem"):
                item = (
                    self.bucket.store.aws.dynamodb()
                    .get_item(TableName=self.bucket.store.table, Key=self._record_key(), ConsistentRead=True)
                    .get("Item")
                )
        except AwsError as error:
            self.notes.append(
                f"WARNING: cannot read whether ec2ir created s3://{self.name} ({error}); it is only checked"
            )
            return "", 0
        record = item or {}
        days = str(record.get("object_lock_days", {}).get("N", "0"))
        return str(record.get("status", {}).get("S", "")), int(days) if days.isdigit() else 0

    def _record_creation(self, status: str) -> None:
        """Written before CreateBucket (CREATING) and after the last setting (CREATED), so that only
        a bucket whose hardening ec2ir began and did not finish is ever changed by a later run. A
        record that cannot be written costs only that: the bucket is still made and used."""
        if self.bucket.store is None:
            return
        item = {
            **self._record_key(),
            "status": {"S": status},
            "at": {"S": datetime.now(UTC).isoformat(timespec="milliseconds")},
            "region": {"S": self.bucket.aws.region()},
            "object_lock_days": {"N": str(self.bucket.object_lock_days)},
        }
        try:
            with translated("dynamodb", "PutItem"):
                self.bucket.store.aws.dynamodb().put_item(TableName=self.bucket.store.table, Item=item)
        except AwsError as error:
            if status == CREATING:
                self.notes.append(
                    f"WARNING: could not record in the state table that ec2ir is creating s3://{self.name} "
                    f"({error}); if this run is interrupted, later runs will only check the bucket"
                )
            else:
                self.notes.append(
                    f"WARNING: could not record in the state table that s3://{self.name} is hardened "
                    f"({error})"
                )

    def _tagged(self) -> bool:
        """Whether the bucket carries the tag ec2ir sets last, once every hardening step is done."""
        try:
            with s3_translated("GetBucketTagging"):
                tags = self.bucket.s3.get_bucket_tagging(Bucket=self.name, **self.bucket.owner()).get(
                    "TagSet", []
                )
        except AwsError as error:
            if error.code != "NoSuchTagSet":
                raise
            tags = []
        return any(tag["Key"] == "ec2ir:role" and tag["Value"] == "evidence" for tag in tags)

    # -- creating and hardening ------------------------------------------------------------------

    def _create(self) -> None:
        arguments: dict[str, Any] = {"Bucket": self.name}
        region = self.bucket.aws.region()
        if region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if self.bucket.object_lock_days:
            arguments["ObjectLockEnabledForBucket"] = True
        try:
            with s3_translated("CreateBucket"):
                self.bucket.s3.create_bucket(**arguments)
        except AwsError as error:
            if error.code == "BucketAlreadyExists":
                raise EvidenceBucketUnusable(
                    f"the bucket name {self.name} is taken by another account",
                    "pass --evidence-bucket with a name of your own",
                ) from error
            # A racing run made it first, after writing its own record: both harden it alike.
            if error.code != "BucketAlreadyOwnedByYou":
                raise

    def _harden(self) -> None:
        s3 = self.bucket.s3
        owner = self.bucket.owner()
        with s3_translated("PutPublicAccessBlock"):
            s3.put_public_access_block(
                Bucket=self.name,
                PublicAccessBlockConfiguration=dict.fromkeys(PUBLIC_ACCESS_BLOCKS, True),
                **owner,
            )
        with s3_translated("PutBucketVersioning"):
            s3.put_bucket_versioning(Bucket=self.name, VersioningConfiguration={"Status": "Enabled"}, **owner)
        with s3_translated("PutBucketEncryption"):
            s3.put_bucket_encryption(
                Bucket=self.name,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"},
                            "BucketKeyEnabled": True,
                        }
                    ]
                },
                **owner,
            )
        with s3_translated("PutBucketPolicy"):
            policy = tls_only_policy(self.name, self.bucket.aws.partition())
            s3.put_bucket_policy(Bucket=self.name, Policy=json.dumps(policy), **owner)
        if self.bucket.object_lock_days:
            with s3_translated("PutObjectLockConfiguration"):
                s3.put_object_lock_configuration(
                    Bucket=self.name,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {
                            "DefaultRetention": {"Mode": "COMPLIANCE", "Days": self.bucket.object_lock_days}
                        },
                    },
                    **owner,
                )
        with s3_translated("PutBucketTagging"):  # last: it marks the hardening as complete
            s3.put_bucket_tagging(
                Bucket=self.name, Tagging={"TagSet": [{"Key": "ec2ir:role", "Value": "evidence"}]}, **owner
            )

    def _hardening(self) -> str:
        lock = (
            f", Object Lock COMPLIANCE {self.bucket.object_lock_days} day(s)"
            if self.bucket.object_lock_days
            else ""
        )
        return f"versioned, KMS-encrypted, public access blocked, TLS only{lock}"

    # -- a bucket ec2ir did not create -----------------------------------------------------------

    def _check_existing(self) -> None:
        """Read, never change: say what the bucket lacks. A setting that cannot be read (the
        caller may not read it) is said too, rather than taken as missing."""
        s3, owner, where = self.bucket.s3, self.bucket.owner(), f"evidence bucket s3://{self.name}"
        versioning = self._read(
            "GetBucketVersioning", lambda: s3.get_bucket_versioning(Bucket=self.name, **owner), ()
        )
        if versioning is not None and versioning.get("Status") != "Enabled":
            self.notes.append(
                f"WARNING: {where} does not keep versions, so an overwritten object is lost; enable "
                "versioning on it"
            )
        encryption = self._read(
            "GetBucketEncryption",
            lambda: s3.get_bucket_encryption(Bucket=self.name, **owner),
            ("ServerSideEncryptionConfigurationNotFoundError",),
        )
        if encryption is not None and not encryption.get("ServerSideEncryptionConfiguration", {}).get(
            "Rules"
        ):
            self.notes.append(f"WARNING: {where} has no default encryption; turn it on (SSE-KMS)")
        blocks = self._read(
            "GetPublicAccessBlock",
            lambda: s3.get_public_access_block(Bucket=self.name, **owner),
            ("NoSuchPublicAccessBlockConfiguration",),
        )
        if blocks is not None:
            settings = blocks.get("PublicAccessBlockConfiguration", {})
            open_ = [name for name in PUBLIC_ACCESS_BLOCKS if not settings.get(name)]
            if open_:
                self.notes.append(
                    f"WARNING: {where} does not block public access ({', '.join(open_)} off); its "
                    "policy or ACLs could make evidence public"
                )
        if self.bucket.object_lock_days:
            self.notes.append(
                f"--object-lock-days applies only when ec2ir creates the bucket; s3://{self.name} "
                "already exists and keeps its own Object Lock settings"
            )

    def _read(
        self, operation: str, call: Callable[[], dict[str, Any]], absent: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """The answer; {} when the setting is absent; None (and a note) when it cannot be read."""
        try:
            with s3_translated(operation):
                return dict(call())
        except AwsError as error:
            if error.code in absent:
                return {}
            self.notes.append(f"WARNING: cannot check s3://{self.name} ({error})")
            return None
