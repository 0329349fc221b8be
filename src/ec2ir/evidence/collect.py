"""Evidence: the hardened evidence bucket, captured metadata and crash-consistent snapshots.

Everything here only reads the instance or copies it; nothing is ever undone by ``release``.
What ec2ir is about to change (the instance, its ENIs, volumes, Auto Scaling and load-balancer
membership, instance profile) is captured from the reads of the run's first round trip, before any
change. What ec2ir never changes (the rules of the instance's own groups, the console output and
screenshot) is read after the cut, so that evidence never delays containment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ec2ir.aws.session import Aws, chunks, patiently, translated
from ec2ir.core.errors import AwsError, Ec2irError, EvidenceBucketUnusable, UsageError
from ec2ir.core.models import EvidenceRef, InstanceFacts
from ec2ir.store.state import StateStore

BUCKET_CREATION = "evidence bucket, once, to create it"
EVIDENCE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "evidence bucket": (
        "s3:ListBucket",  # HeadBucket
        "s3:ListBucketVersions",
        "s3:GetBucketVersioning",
        "s3:GetBucketTagging",
        "s3:GetEncryptionConfiguration",  # checking a bucket ec2ir did not create
        "s3:GetBucketPublicAccessBlock",
        "s3:PutObject",
        "s3:GetObject",
        "s3:GetObjectVersion",
    ),
    BUCKET_CREATION: (
        "s3:CreateBucket",
        "s3:PutBucketVersioning",
        "s3:PutEncryptionConfiguration",
        "s3:PutBucketPublicAccessBlock",
        "s3:PutBucketPolicy",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketTagging",
    ),
    "captured metadata": (
        "ec2:DescribeVolumes",
        "ec2:DescribeSecurityGroups",
        "ec2:GetConsoleOutput",
        "ec2:GetConsoleScreenshot",
        "iam:GetInstanceProfile",
        "iam:ListAttachedRolePolicies",
        "iam:ListRolePolicies",
    ),
    "snapshots": ("ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DescribeSnapshots"),
}

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

TAG_CASE, TAG_INSTANCE, TAG_EPISODE = "ec2ir:case", "ec2ir:instance", "ec2ir:episode"
TAG_VOLUME, TAG_DEVICE, TAG_TAKEN_AT = "ec2ir:volume", "ec2ir:device", "ec2ir:taken-at"
BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SCREENSHOT_UNSUPPORTED = frozenset(
    {"UnsupportedOperation", "InvalidParameterValue", "UnsupportedInstanceType"}
)


def s3_translated(operation: str) -> Any:
    return translated("s3", S3_ACTIONS.get(operation, operation))


MAX_OBJECT_LOCK_DAYS = 36500  # S3's limit: 100 years


def account_of(caller_arn: str) -> str:
    return caller_arn.split(":")[4] if caller_arn.count(":") >= 5 else ""


DEFAULT_PREFIX = "ec2ir-evidence-"
# The state table's record of a bucket ec2ir creates: CREATING before CreateBucket, CREATED once
# hardened. Only a bucket whose record says CREATING and that lacks ec2ir's tag is ever finished.
BUCKET_RECORD, BUCKET_RECORD_SORT = "evidence-bucket#", "creation"
CREATING, CREATED = "creating", "created"
PUBLIC_ACCESS_BLOCKS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


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


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def as_json(value: Any) -> bytes:
    """Canonical JSON, so the same facts always hash the same."""
    return json.dumps(value, sort_keys=True, indent=2, default=str).encode()


def compact_time(stamp: str) -> str:
    """An ISO 8601 time as a key part: 2026-11-28T06:20:00.000+00:00 -> 20261128T062000Z."""
    moment = datetime.fromisoformat(stamp).astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


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
    def _s3(self) -> Any:
        return self.aws.client("s3")

    def _owner(self) -> dict[str, str]:
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
                self._ensure()
            except Ec2irError as error:
                self._failure = error
                raise
            self._ready = True

    def _ensure(self) -> None:
        try:
            with s3_translated("HeadBucket"):
                self._s3.head_bucket(Bucket=self.name, **self._owner())
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
            self.object_lock_days = recorded_days
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
        if self.store is None:
            return "", 0
        try:
            with translated("dynamodb", "GetItem"):
                item = (
                    self.store.aws.dynamodb()
                    .get_item(TableName=self.store.table, Key=self._record_key(), ConsistentRead=True)
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
        if self.store is None:
            return
        item = {
            **self._record_key(),
            "status": {"S": status},
            "at": {"S": datetime.now(UTC).isoformat(timespec="milliseconds")},
            "region": {"S": self.aws.region()},
            "object_lock_days": {"N": str(self.object_lock_days)},
        }
        try:
            with translated("dynamodb", "PutItem"):
                self.store.aws.dynamodb().put_item(TableName=self.store.table, Item=item)
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
                tags = self._s3.get_bucket_tagging(Bucket=self.name, **self._owner()).get("TagSet", [])
        except AwsError as error:
            if error.code != "NoSuchTagSet":
                raise
            tags = []
        return any(tag["Key"] == "ec2ir:role" and tag["Value"] == "evidence" for tag in tags)

    # -- creating and hardening ------------------------------------------------------------------

    def _create(self) -> None:
        arguments: dict[str, Any] = {"Bucket": self.name}
        region = self.aws.region()
        if region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if self.object_lock_days:
            arguments["ObjectLockEnabledForBucket"] = True
        try:
            with s3_translated("CreateBucket"):
                self._s3.create_bucket(**arguments)
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
        s3 = self._s3
        owner = self._owner()
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
            policy = tls_only_policy(self.name, self.aws.partition())
            s3.put_bucket_policy(Bucket=self.name, Policy=json.dumps(policy), **owner)
        if self.object_lock_days:
            with s3_translated("PutObjectLockConfiguration"):
                s3.put_object_lock_configuration(
                    Bucket=self.name,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": self.object_lock_days}},
                    },
                    **owner,
                )
        with s3_translated("PutBucketTagging"):  # last: it marks the hardening as complete
            s3.put_bucket_tagging(
                Bucket=self.name, Tagging={"TagSet": [{"Key": "ec2ir:role", "Value": "evidence"}]}, **owner
            )

    def _hardening(self) -> str:
        lock = f", Object Lock COMPLIANCE {self.object_lock_days} day(s)" if self.object_lock_days else ""
        return f"versioned, KMS-encrypted, public access blocked, TLS only{lock}"

    # -- a bucket ec2ir did not create -----------------------------------------------------------

    def _check_existing(self) -> None:
        """Read, never change: say what the bucket lacks. A setting that cannot be read (the
        caller may not read it) is said too, rather than taken as missing."""
        s3, owner, where = self._s3, self._owner(), f"evidence bucket s3://{self.name}"
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
        if self.object_lock_days:
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

    def stored(self, key: str, kind: str) -> EvidenceRef | None:
        """The object already under ``key``, as its own metadata describes it, or None."""
        self.ensure()
        try:
            with s3_translated("HeadObject"):
                head = self._s3.head_object(Bucket=self.name, Key=key, **self._owner())
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
                    self._s3.put_object(
                        Bucket=self.name,
                        Key=key,
                        Body=body,
                        ContentType=content_type,
                        Metadata=metadata,
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                        **self._owner(),
                    )
                )

        answer = patiently(upload)
        return EvidenceRef(
            kind=kind,
            location=f"s3://{self.name}/{key}",
            sha256=digest,
            size=len(body),
            version_id=str(answer.get("VersionId") or ""),
        )


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


def split_location(location: str) -> tuple[str, str]:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bucket, key


def expected_owner(aws: Aws) -> dict[str, str]:
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


def volumes_of(aws: Aws, instance_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every volume attached to the named instances, by instance: one batched read."""
    found: dict[str, list[dict[str, Any]]] = {}
    paginator = aws.ec2().get_paginator("describe_volumes")
    with translated("ec2", "DescribeVolumes"):
        for batch in chunks(instance_ids, 200):
            for page in paginator.paginate(Filters=[{"Name": "attachment.instance-id", "Values": batch}]):
                for volume in page.get("Volumes", []):
                    for attachment in volume.get("Attachments", []):
                        if attachment.get("InstanceId") in batch:
                            found.setdefault(attachment["InstanceId"], []).append(volume)
    return found


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


# -- metadata -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One piece of captured metadata: its bytes, or why it could not be collected."""

    name: str
    body: bytes = b""
    content_type: str = "application/json"
    extension: str = "json"
    why_not: str = ""


# The object each metadata item is stored as, in metadata_items' order (for plans).
METADATA_FILES = (
    "describe-instances.json",
    "network.json",
    "volumes.json",
    "iam.json",
    "memberships.json",
    "console-output.json",
    "console-screenshot.jpg",
)


def metadata_items(aws: Aws, facts: InstanceFacts, lookups: dict[str, Any], volumes: Item) -> list[Item]:
    """Every metadata item of one instance, in a fixed order; a read that fails becomes an item
    that says why, and the other items are still collected."""
    memberships = {
        "auto_scaling_group": lookups.get("autoscaling"),
        "load_balancers": lookups.get("load-balancers") or {"target_groups": [], "classic": []},
    }
    readers: list[tuple[str, Callable[[], Item]]] = [
        ("describe-instances", lambda: Item("describe-instances", as_json(facts.description))),
        ("network", lambda: _network(aws, facts)),
        ("volumes", lambda: volumes),
        ("iam", lambda: _iam(aws, lookups.get("credentials"))),
        ("memberships", lambda: Item("memberships", as_json(memberships))),
        ("console-output", lambda: _console_output(aws, facts.instance_id)),
        ("console-screenshot", lambda: _console_screenshot(aws, facts.instance_id)),
    ]
    items: list[Item] = []
    for name, read in readers:
        try:
            items.append(read())
        except Ec2irError as error:
            items.append(Item(name, why_not=str(error)))
        except Exception as error:  # an unreadable answer loses this item, never the others
            items.append(Item(name, why_not=f"{type(error).__name__}: {error}"))
    return items


def _network(aws: Aws, facts: InstanceFacts) -> Item:
    group_ids = sorted({group for eni in facts.enis for group in eni.group_ids})
    groups: list[dict[str, Any]] = []
    if group_ids:
        with translated("ec2", "DescribeSecurityGroups"):
            for page in aws.ec2().get_paginator("describe_security_groups").paginate(GroupIds=group_ids):
                groups.extend(page.get("SecurityGroups", []))
    return Item(
        "network",
        as_json(
            {
                "network_interfaces": facts.description.get("NetworkInterfaces", []),
                "security_groups": groups,
            }
        ),
    )


def _iam(aws: Aws, association: dict[str, Any] | None) -> Item:
    if not association:
        return Item("iam", as_json({"association": None}))
    profile_name = association["profile_arn"].rsplit("/", 1)[-1]
    iam = aws.client("iam")
    with translated("iam", "GetInstanceProfile"):
        profile = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    roles: dict[str, Any] = {}
    for role in profile.get("Roles", []):
        name = role["RoleName"]
        with translated("iam", "ListAttachedRolePolicies"):
            attached = iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", [])
        with translated("iam", "ListRolePolicies"):
            inline = iam.list_role_policies(RoleName=name).get("PolicyNames", [])
        roles[name] = {"attached_policies": attached, "inline_policy_names": inline}
    return Item("iam", as_json({"association": association, "instance_profile": profile, "roles": roles}))


def _console_output(aws: Aws, instance_id: str) -> Item:
    ec2 = aws.ec2()
    try:
        with translated("ec2", "GetConsoleOutput"):
            answer = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    except AwsError as error:
        if error.code not in SCREENSHOT_UNSUPPORTED:
            raise
        # Latest=true exists only on Nitro instances; others give the last boot's buffer.
        with translated("ec2", "GetConsoleOutput"):
            answer = ec2.get_console_output(InstanceId=instance_id)
    encoded = answer.get("Output") or ""
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8", "replace")
    except ValueError:  # kept as given rather than lost
        text = encoded
    return Item(
        "console-output",
        as_json({"instance_id": instance_id, "timestamp": answer.get("Timestamp"), "output": text}),
    )


def _console_screenshot(aws: Aws, instance_id: str) -> Item:
    try:
        with translated("ec2", "GetConsoleScreenshot"):
            answer = aws.ec2().get_console_screenshot(InstanceId=instance_id, WakeUp=True)
    except AwsError as error:
        return Item("console-screenshot", why_not=f"the instance gives no screenshot ({error.code}: {error})")
    return Item(
        "console-screenshot",
        base64.b64decode(answer["ImageData"]),
        content_type="image/jpeg",
        extension="jpg",
    )


# -- snapshots ------------------------------------------------------------------------------------


def existing_snapshots(aws: Aws, case_id: str, instance_id: str, episode: str) -> list[dict[str, Any]]:
    """Snapshots this episode already took of the instance (a rerun after a crash finds them)."""
    filters = [
        {"Name": f"tag:{TAG_CASE}", "Values": [case_id]},
        {"Name": f"tag:{TAG_INSTANCE}", "Values": [instance_id]},
        {"Name": f"tag:{TAG_EPISODE}", "Values": [episode]},
    ]
    with translated("ec2", "DescribeSnapshots"):
        return [
            snapshot
            for page in aws.ec2()
            .get_paginator("describe_snapshots")
            .paginate(OwnerIds=["self"], Filters=filters)
            for snapshot in page.get("Snapshots", [])
        ]


def take_snapshots(
    aws: Aws, case_id: str, facts: InstanceFacts, episode: str, refs: list[EvidenceRef]
) -> list[EvidenceRef]:
    """One crash-consistent CreateSnapshots of every attached volume, boot included, tagged with
    the case, instance, episode and time, then each with its own volume and device.

    Each snapshot joins ``refs`` as soon as it exists, so that a failure while tagging it never
    hides it from the journal."""
    found = existing_snapshots(aws, case_id, facts.instance_id, episode)
    if not found:
        taken_at = datetime.now(UTC).isoformat(timespec="seconds")
        tags = {
            TAG_CASE: case_id,
            TAG_INSTANCE: facts.instance_id,
            TAG_EPISODE: episode,
            TAG_TAKEN_AT: taken_at,
        }

        def create() -> list[dict[str, Any]]:
            with translated("ec2", "CreateSnapshots"):
                return list(
                    aws.ec2().create_snapshots(
                        InstanceSpecification={"InstanceId": facts.instance_id, "ExcludeBootVolume": False},
                        Description=f"ec2ir case {case_id}: {facts.instance_id}",
                        TagSpecifications=[
                            {
                                "ResourceType": "snapshot",
                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                            }
                        ],
                        CopyTagsFromSource="volume",
                    )["Snapshots"]
                )

        found = patiently(create)
        for snapshot in found:
            snapshot.setdefault("Tags", [{"Key": k, "Value": v} for k, v in tags.items()])
    devices = {volume.volume_id: volume.device_name for volume in facts.volumes}
    for snapshot in sorted(found, key=lambda s: devices.get(s.get("VolumeId", ""), "")):
        tags = {tag["Key"]: tag["Value"] for tag in snapshot.get("Tags", [])}
        volume_id = snapshot.get("VolumeId", "")
        device = devices.get(volume_id, "")
        refs.append(
            EvidenceRef(
                kind="snapshot",
                location=snapshot["SnapshotId"],
                details={
                    "volume_id": volume_id,
                    "device": device,
                    "taken_at": tags.get(TAG_TAKEN_AT, ""),
                    "instance_id": facts.instance_id,
                },
            )
        )
    for snapshot in found:
        volume_id = snapshot.get("VolumeId", "")
        if {tag["Key"]: tag["Value"] for tag in snapshot.get("Tags", [])}.get(TAG_VOLUME) != volume_id:
            _tag(aws, snapshot["SnapshotId"], {TAG_VOLUME: volume_id, TAG_DEVICE: devices.get(volume_id, "")})
    return refs


def _tag(aws: Aws, resource: str, tags: dict[str, str]) -> None:
    def create() -> None:
        with translated("ec2", "CreateTags"):
            aws.ec2().create_tags(
                Resources=[resource], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )

    patiently(create)


def wait_for_snapshots(
    aws: Aws, snapshot_ids: list[str], progress: Callable[[int, int], None] | None = None, delay: float = 5.0
) -> dict[str, str]:
    """Poll until every snapshot is completed or failed; returns each one's final state."""
    import time

    states: dict[str, str] = {}
    while True:
        pending = [
            snapshot for snapshot in snapshot_ids if states.get(snapshot) not in ("completed", "error")
        ]
        for batch in chunks(pending, 200):
            with translated("ec2", "DescribeSnapshots"):
                for page in aws.ec2().get_paginator("describe_snapshots").paginate(SnapshotIds=batch):
                    for snapshot in page.get("Snapshots", []):
                        states[snapshot["SnapshotId"]] = snapshot.get("State", "pending")
        done = sum(states.get(s) in ("completed", "error") for s in snapshot_ids)
        if progress:
            progress(done, len(snapshot_ids))
        if done == len(snapshot_ids):
            return states
        time.sleep(delay)


# -- verify ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One piece of evidence as ``verify`` found it; ``ok`` only when it matches the journal."""

    ref: EvidenceRef
    status: str  # intact, MODIFIED, MISSING, UNJOURNALED, UNREADABLE
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, **self.ref.as_dict()}


# what verify reports without failing: entries written before the chain, and what it cannot prove
OK_STATUSES = frozenset({"intact", "unchained", "not provable"})
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
        status = "MISSING" if error.code in MISSING_CODES else "UNREADABLE"
        return Finding(ref, status, str(error))
    if actual != ref.sha256:
        return Finding(ref, "MODIFIED", f"sha256 is {actual}, the journal recorded {ref.sha256}")
    return Finding(ref, "intact", f"sha256 {actual}")


def _verify_snapshot(aws: Aws, ref: EvidenceRef) -> Finding:
    try:
        with translated("ec2", "DescribeSnapshots"):
            found = aws.ec2().describe_snapshots(SnapshotIds=[ref.location]).get("Snapshots", [])
    except AwsError as error:
        status = "MISSING" if error.code in MISSING_CODES else "UNREADABLE"
        return Finding(ref, status, str(error))
    if not found:
        return Finding(ref, "MISSING", "no such snapshot")
    state = found[0].get("State", "")
    if state == "error":
        return Finding(ref, "UNREADABLE", "the snapshot failed (state error)")
    return Finding(ref, "intact", f"snapshot {state}")


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
                            Finding(ref, "DELETED", "deleted; its journaled version can be restored")
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
                        found.append(Finding(ref, "UNJOURNALED", "in the bucket but not in the case journal"))
    except AwsError as error:
        ref = EvidenceRef("bucket", f"s3://{bucket}/{case_id}/")
        found.append(Finding(ref, "UNREADABLE", f"cannot list the case's objects: {error}"))
    return found
