"""Memory acquisition (``--memory``): RAM through SSM Run Command and AVML, before the cut.

Memory is the only evidence of fileless malware, injected code, live network state and the keys
and tokens a process holds; it is gone once the instance stops, and no snapshot has it. Taking it
means keeping the instance connected while the image is written and uploaded, because an
isolated instance can reach neither SSM nor S3. So ec2ir acquires memory only when asked
(``--memory``), before any isolation, and never for longer than ``--memory-timeout`` seconds:
when that time is up the command is cancelled and containment goes ahead, memory or not.
Containment never waits indefinitely for evidence. The default timeout favours containment
(an attacker keeps a live connection for at most that long); raise it for instances with a lot
of RAM, lower it when containment matters more than memory. An instance that SSM does not
manage (no agent, no instance profile allowing ``AmazonSSMManagedInstanceCore``, agent offline,
not Linux) loses nothing but its memory: it is recorded as "not collected: why" and contained as
usual.

How: ``DescribeInstanceInformation`` tells which instances SSM manages; each of those gets one
``SendCommand`` of ``AWS-RunShellScript`` that downloads AVML at a pinned release, checks its
pinned SHA-256 (and refuses to run a binary it cannot verify), runs ``avml acquire --compress``
into the local directory with the most free space, hashes the image with ``sha256sum`` and
``md5sum``, uploads it with ``curl`` to an S3 presigned PUT URL for
``<case>/<instance>/<time>/memory.lime`` in the evidence bucket (so the instance role needs no S3
permission) with the image's ``Content-MD5`` (see ``UPLOAD_CHECKSUM``), deletes the local copy and prints
one ``EC2IR-MEMORY sha256=<hex> size=<bytes> version=<id>`` line. ec2ir polls
``GetCommandInvocation`` until the command ends or the deadline passes, checks the object's size
with ``HeadObject`` and records the instance-reported hash; ``ec2ir verify`` re-reads the object
and compares.

Limits: the image is written to the instance's own disk before upload, which overwrites free
blocks that a later disk snapshot might have recovered deleted files from (a directory on
instance store, ``/mnt``, is preferred when it has the most room); a single presigned PUT carries
at most 5 GiB, so a larger (compressed) image is refused with that reason; the instance must reach
github.com (AVML) and S3; the image is AVML's snappy-compressed LiME, which ``avml convert``
turns into plain LiME for Volatility.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ec2ir.aws.session import Aws, chunks, request_ids, translated
from ec2ir.core.errors import AwsError, Ec2irError, Throttled
from ec2ir.core.models import EvidenceRef
from ec2ir.core.outcomes import Outcome
from ec2ir.evidence.bucket import EvidenceBucket
from ec2ir.evidence.s3 import compact_time, s3_translated

if TYPE_CHECKING:
    from mypy_boto3_ssm.type_defs import GetCommandInvocationResultTypeDef, InstanceInformationTypeDef

# Every IAM action acquire() uses. The presigned URL is signed by ec2ir's caller, so the upload
# from the instance is authorised as the caller's s3:PutObject.
MEMORY_PERMISSIONS: tuple[str, ...] = (
    "ssm:DescribeInstanceInformation",
    "ssm:SendCommand",  # on the document AWS-RunShellScript and on the instance
    "ssm:GetCommandInvocation",
    "ssm:CancelCommand",
    "s3:PutObject",  # exercised by the presigned PUT
    "s3:GetObject",  # HeadObject, to check the upload
)

AVML_VERSION = "v0.20.0"
AVML_RELEASES = "https://github.com/microsoft/avml/releases/download"
# Release asset per machine type (uname -m).
AVML_ASSETS: dict[str, str] = {"x86_64": "avml", "aarch64": "avml-aarch64"}
# The SHA-256 of each asset of AVML_VERSION. No published checksum could be confirmed while this
# was written, so none is pinned, and the script refuses to run an unverified binary. Pin them
# here, or per run with EC2IR_AVML_SHA256_X86_64 / EC2IR_AVML_SHA256_AARCH64 (the values of
# `sha256sum avml avml-aarch64` on the release's assets, checked by you).
AVML_SHA256: dict[str, str] = {"x86_64": "", "aarch64": ""}

MARKER = "EC2IR-MEMORY"
DOCUMENT = "AWS-RunShellScript"
IMAGE_NAME = "memory.lime"
S3_SINGLE_PUT_LIMIT = 5 * 1024**3
NOT_MANAGED = (
    "not managed by SSM (no agent, no instance profile with AmazonSSMManagedInstanceCore, or offline)"
)
TERMINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})
DESCRIBE_BATCH = 50  # InstanceIds values per DescribeInstanceInformation filter (AWS allows 100)
FIRST_POLL = 1.0  # seconds before the first GetCommandInvocation; doubles up to LAST_POLL
LAST_POLL = 5.0
GRACE = 5.0  # how long past the deadline acquire() waits for cancellations to be recorded
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The upload carries the image's MD5 as Content-MD5, for two reasons. A bucket with an Object Lock
# default retention refuses an upload without it: the PutObject API reference (Content-MD5) says
# "The Content-MD5 or x-amz-sdk-checksum-algorithm header is required for any request to upload an
# object with a retention period configured using Amazon S3 Object Lock", and
# x-amz-sdk-checksum-algorithm in turn needs an x-amz-checksum-<algorithm> header or a trailer. And
# S3 then checks the bytes it received against it (BadDigest), so a damaged upload is refused
# rather than kept as evidence. Content-MD5 is the one of those that a presigned URL can carry
# without signing it: S3 refuses any x-amz-* header the URL did not sign ("There were headers
# present in the request which were not signed"), and a signed header is signed with its value,
# which nobody knows when the URL is made, before the image exists. A trailing checksum does not
# help either: it needs x-amz-decoded-content-length, an x-amz-* header holding the size, unknown
# as well. The URL therefore signs only the host, and the request adds no x-amz-* header.
UPLOAD_CHECKSUM = "Content-MD5"
# S3 refuses the upload unless the bucket belongs to this account: a bucket of the same name that
# someone else took never receives the memory image. It is signed into the URL, so sent as signed.
OWNER_HEADER = "x-amz-expected-bucket-owner"
# POSIX awk, as the instance may have neither openssl nor xxd: a hex digest on stdin, in Base64.
HEX_TO_BASE64 = (
    "awk 'function byte(k) { return (index(HEX, substr(D, 2 * k + 1, 1)) - 1) * 16 "
    "+ index(HEX, substr(D, 2 * k + 2, 1)) - 1 } "
    'BEGIN { HEX = "0123456789abcdef"; '
    'B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" } '
    '{ D = tolower($1); N = length(D) / 2; OUT = ""; '
    "for (I = 0; I < N; I += 3) { "
    "V = byte(I) * 65536 + (I + 1 < N ? byte(I + 1) : 0) * 256 + (I + 2 < N ? byte(I + 2) : 0); "
    "OUT = OUT substr(B64, int(V / 262144) + 1, 1) substr(B64, int(V / 4096) % 64 + 1, 1); "
    'OUT = OUT (I + 1 < N ? substr(B64, int(V / 64) % 64 + 1, 1) : "="); '
    'OUT = OUT (I + 2 < N ? substr(B64, V % 64 + 1, 1) : "=") } '
    "print OUT }'"
)
_CASE_SAFE = re.compile(r"[^A-Za-z0-9._:-]")


@dataclass(frozen=True)
class MemoryOutcome:
    """What happened to one instance's memory: ``done: ...`` with its evidence, or
    ``not collected: <why>``; and the AWS request ids of the calls made for it."""

    result: Outcome
    ref: EvidenceRef | None = None
    request_ids: tuple[str, ...] = ()


def pinned_sha256() -> dict[str, str]:
    """The AVML digest per machine type: the environment's pin, else the module's, else empty."""
    pins: dict[str, str] = {}
    for machine, default in AVML_SHA256.items():
        value = os.environ.get(f"EC2IR_AVML_SHA256_{machine.upper()}", default).strip().lower()
        pins[machine] = value if _SHA256.match(value) else ""
    return pins


def script(case_id: str, url: str, pins: dict[str, str] | None = None, owner: str = "") -> list[str]:
    """The shell script (one command per line, POSIX sh) that acquires, hashes and uploads;
    ``owner``, the account the URL was signed to expect as the bucket's owner, is sent with it."""
    if "'" in url:
        raise ValueError("a presigned URL never contains a quote")
    if owner and not owner.isdigit():
        raise ValueError("an account id is 12 digits")
    expect = f'-H "{OWNER_HEADER}: {owner}" ' if owner else ""
    pins = pinned_sha256() if pins is None else pins
    case = _CASE_SAFE.sub("", case_id)
    return [*_checks(case, pins), *_fetched_avml(), *_acquired_and_uploaded(url, expect)]


def _checks(case: str, pins: dict[str, str]) -> list[str]:
    """The script's set-up, and every refusal that comes before anything is downloaded."""
    version = AVML_VERSION
    return [
        f"# ec2ir: memory of this instance for case {case}, with AVML {version}",
        "set -u",
        "umask 077",
        f'say() {{ echo "{MARKER} $*"; }}',
        'fail() { say "error=$*"; exit 1; }',
        'WORK=; BIN=; PID=; trap \'[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK" "$BIN"\' EXIT',
        "trap 'exit 143' INT TERM",
        '[ "$(id -u)" = 0 ] || fail "not running as root"',
        "for TOOL in curl sha256sum md5sum df awk mktemp; do",
        '  command -v "$TOOL" >/dev/null 2>&1 || fail "$TOOL is not installed"',
        "done",
        'case "$(uname -m)" in',
        f"  x86_64) ASSET={AVML_ASSETS['x86_64']}; PIN={pins.get('x86_64', '')} ;;",
        f"  aarch64|arm64) ASSET={AVML_ASSETS['aarch64']}; PIN={pins.get('aarch64', '')} ;;",
        '  *) fail "AVML publishes no build for $(uname -m)" ;;',
        "esac",
        f'[ -n "$PIN" ] || fail "no SHA-256 is pinned for AVML {version} $ASSET '
        "(set AVML_SHA256 in ec2ir.evidence.memory, or EC2IR_AVML_SHA256_X86_64 / _AARCH64); "
        'refusing to run an unverified binary"',
    ]


def _fetched_avml() -> list[str]:
    """AVML downloaded where there is most room, checked against its pin, and made runnable."""
    version = AVML_VERSION
    return [
        # The image goes where there is most room; instance store (/mnt) spares the EBS volumes.
        "DIR=; BEST=0",
        "for CANDIDATE in /mnt /var/tmp /tmp /root; do",
        '  [ -d "$CANDIDATE" ] && [ -w "$CANDIDATE" ] || continue',
        "  FREE=$(df -Pk \"$CANDIDATE\" 2>/dev/null | awk 'NR == 2 {print $4}')",
        '  if [ "${FREE:-0}" -gt "$BEST" ]; then BEST=$FREE; DIR=$CANDIDATE; fi',
        "done",
        '[ -n "$DIR" ] || fail "no writable local directory for the image"',
        'WORK=$(mktemp -d "$DIR/ec2ir-memory.XXXXXX") || fail "cannot create a directory in $DIR"',
        f'curl --fail --silent --show-error --location --retry 3 --max-time 300 -o "$WORK/avml.download" '
        f'"{AVML_RELEASES}/{version}/$ASSET" 2>"$WORK/curl.log" '
        '|| fail "cannot download AVML from github.com: $(tail -n 1 "$WORK/curl.log")"',
        "GOT=$(sha256sum \"$WORK/avml.download\" | awk '{print $1}')",
        '[ "$GOT" = "$PIN" ] || fail "the AVML download has SHA-256 $GOT, not the pinned $PIN; not run"',
        # Verified first, executable second; a noexec mount (CIS puts one on /tmp) is worked round.
        'for EXEC_DIR in "$WORK" /root /var/tmp /run; do',
        '  CANDIDATE="$EXEC_DIR/ec2ir-avml.$$"',
        '  if cp "$WORK/avml.download" "$CANDIDATE" 2>/dev/null && chmod 700 "$CANDIDATE" '
        '&& "$CANDIDATE" --version >/dev/null 2>&1; then BIN=$CANDIDATE; break; fi',
        '  rm -f "$CANDIDATE"',
        "done",
        '[ -n "$BIN" ] || fail "no local directory permits running AVML (noexec mounts)"',
    ]


def _acquired_and_uploaded(url: str, expect: str) -> list[str]:
    """The image acquired, hashed and uploaded with one PUT; its digest and version said last."""
    return [
        f'IMAGE="$WORK/{IMAGE_NAME}"',
        '"$BIN" acquire --compress --max-disk-usage-percentage 90 "$IMAGE" >"$WORK/avml.log" 2>&1 &',
        "PID=$!",
        'wait "$PID"; CODE=$?; PID=',
        '[ "$CODE" = 0 ] || fail "avml failed (exit $CODE): $(tail -n 1 "$WORK/avml.log")"',
        "SIZE=$(wc -c <\"$IMAGE\" | tr -d ' ')",
        f'[ "$SIZE" -le {S3_SINGLE_PUT_LIMIT} ] || fail "the image is $SIZE bytes, above the 5 GiB '
        'that one S3 PUT can carry"',
        "SUM=$(sha256sum \"$IMAGE\" | awk '{print $1}')",
        f"MD5=$(md5sum \"$IMAGE\" | awk '{{print $1}}' | {HEX_TO_BASE64})",
        '[ -n "$MD5" ] || fail "cannot compute the MD5 of the image"',
        f'curl --fail --silent --show-error --retry 3 -X PUT -T "$IMAGE" '
        f'-H "{UPLOAD_CHECKSUM}: $MD5" {expect}'
        f'-D "$WORK/headers" -o /dev/null \'{url}\' 2>"$WORK/curl.log" '
        '|| fail "the upload to S3 failed: $(tail -n 1 "$WORK/curl.log")"',
        'VERSION=$(tr -d \'\\r\' <"$WORK/headers" | awk \'tolower($1) == "x-amz-version-id:" {v = $2} '
        "END {print v}')",
        'say "sha256=$SUM size=$SIZE version=$VERSION"',
    ]


def parse_report(output: str) -> dict[str, str]:
    """The last ``EC2IR-MEMORY`` line of the command's output, as its fields (``error`` keeps the
    rest of the line); empty when there is none."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith(MARKER + " ")]
    if not lines:
        return {}
    body = lines[-1][len(MARKER) + 1 :].strip()
    if body.startswith("error="):
        return {"error": body[len("error=") :].strip()}
    fields: dict[str, str] = {}
    for token in body.split():
        name, _, value = token.partition("=")
        fields[name] = value
    return fields


@dataclass
class _Run:
    """One acquire(): the shared deadline, and each instance's outcome as it arrives."""

    aws: Aws
    bucket: EvidenceBucket
    case_id: str
    timeout: float
    deadline: float
    first_poll: float = FIRST_POLL
    outcomes: dict[str, MemoryOutcome] = field(default_factory=dict)
    requests: dict[str, list[str]] = field(default_factory=dict)
    shared_requests: list[str] = field(default_factory=list)
    presigner: Any = None
    # injected, so that a test can run the deadline on a clock of its own instead of waiting
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # waits on the condition for at most so many seconds (Condition.wait); injected with the clock
    wait_on: Callable[[threading.Condition, float], object] = threading.Condition.wait
    _done: threading.Condition = field(default_factory=threading.Condition)

    # -- bookkeeping ------------------------------------------------------------------------------

    def finish(self, instance_id: str, result: Outcome, ref: EvidenceRef | None = None) -> None:
        with self._done:
            if instance_id in self.outcomes:  # the deadline came first: that answer stands
                return
            ids = tuple(self.shared_requests + self.requests.get(instance_id, []))
            self.outcomes[instance_id] = MemoryOutcome(result, ref, ids)
            self._done.notify_all()

    def wait(self, instance_ids: list[str], until: float) -> dict[str, MemoryOutcome]:
        with self._done:
            while len(self.outcomes) < len(instance_ids):
                remaining = until - self.clock()
                if remaining <= 0:
                    break
                self.wait_on(self._done, remaining)
            for instance_id in instance_ids:
                if instance_id not in self.outcomes:
                    ids = tuple(self.shared_requests + self.requests.get(instance_id, []))
                    self.outcomes[instance_id] = MemoryOutcome(
                        Outcome.not_collected(f"{self.timed_out()} (an AWS call had not answered)"), None, ids
                    )
            return {instance_id: self.outcomes[instance_id] for instance_id in instance_ids}

    def timed_out(self) -> str:
        return f"timed out after {self.timeout:g} s; isolation went ahead"

    def remaining(self) -> float:
        return self.deadline - self.clock()

    # -- the work ---------------------------------------------------------------------------------

    def coordinate(self, instance_ids: list[str]) -> None:
        """Find the managed instances, make sure of the bucket, then one worker per instance."""
        with request_ids() as shared:
            self.shared_requests = shared
            try:
                reasons = self.managed(instance_ids)
            except Exception as error:  # evidence must never stop containment
                for instance_id in instance_ids:
                    self.finish(instance_id, Outcome.not_collected(describe(error)))
                return
            for instance_id, why in reasons.items():
                if why is not None:
                    self.finish(instance_id, Outcome.not_collected(why))
            managed = [i for i in instance_ids if reasons.get(i) is None]
            if not managed:
                return
            try:
                self.bucket.ensure()
                self.presigner = presigning_client(self.aws, self.bucket.name)
            except Exception as error:
                for instance_id in managed:
                    self.finish(instance_id, Outcome.not_collected(f"the evidence bucket: {describe(error)}"))
                return
        self.shared_requests = list(shared)
        for instance_id in managed:
            threading.Thread(
                target=self.one, args=(instance_id,), name=f"ec2ir-memory-{instance_id}", daemon=True
            ).start()

    def managed(self, instance_ids: list[str]) -> dict[str, str | None]:
        """None for each instance SSM can run a Linux command on, else why not."""
        found: dict[str, InstanceInformationTypeDef] = {}
        ssm = self.aws.client("ssm")
        for batch in chunks(instance_ids, DESCRIBE_BATCH):
            token: str | None = None
            while True:
                arguments: dict[str, Any] = {
                    "Filters": [{"Key": "InstanceIds", "Values": batch}],
                    "MaxResults": 50,
                }
                if token:
                    arguments["NextToken"] = token
                with translated("ssm", "DescribeInstanceInformation"):
                    page = ssm.describe_instance_information(**arguments)
                for item in page.get("InstanceInformationList", []):
                    found[item["InstanceId"]] = item
                token = page.get("NextToken")
                if not token:
                    break
        reasons: dict[str, str | None] = {}
        for instance_id in instance_ids:
            info = found.get(instance_id)
            if info is None:
                reasons[instance_id] = NOT_MANAGED
            elif info.get("PingStatus") != "Online":
                reasons[instance_id] = f"{NOT_MANAGED}: its SSM agent is {info.get('PingStatus', 'unknown')}"
            elif info.get("PlatformType") != "Linux":
                reasons[instance_id] = (
                    f"the instance runs {info.get('PlatformType', 'an unknown platform')}; "
                    "AVML acquires Linux memory only"
                )
            else:
                reasons[instance_id] = None
        return reasons

    def one(self, instance_id: str) -> None:
        with request_ids() as ids:
            with self._done:
                self.requests[instance_id] = ids
            try:
                result, ref = self.acquire_one(instance_id)
            except Exception as error:  # evidence must never stop containment
                result, ref = Outcome.not_collected(describe(error)), None
        self.finish(instance_id, result, ref)

    def acquire_one(self, instance_id: str) -> tuple[Outcome, EvidenceRef | None]:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        key = f"{self.case_id}/{instance_id}/{compact_time(stamp)}/{IMAGE_NAME}"
        owner = self.bucket.account if self.bucket.account.isdigit() else ""
        url = upload_url(self.presigner, self.bucket.name, key, max(60, int(self.timeout) + 120), owner)
        seconds = max(1, min(172800, math.ceil(self.timeout)))
        with translated("ssm", "SendCommand"):
            command = self.aws.client("ssm").send_command(
                InstanceIds=[instance_id],
                DocumentName=DOCUMENT,
                Comment=f"ec2ir case {self.case_id}: memory of {instance_id}"[:100],
                TimeoutSeconds=max(30, seconds),
                Parameters={
                    "commands": script(self.case_id, url, owner=owner),
                    "executionTimeout": [str(seconds)],
                },
            )["Command"]
        command_id = str(command["CommandId"])
        invocation = self.poll(command_id, instance_id)
        if invocation is None:
            return Outcome.not_collected(f"{self.timed_out()}; {self.cancel(command_id, instance_id)}"), None
        return self.conclude(command_id, key, invocation)

    def poll(self, command_id: str, instance_id: str) -> GetCommandInvocationResultTypeDef | None:
        """The finished invocation, or None when the deadline came first (the last look is taken
        at the deadline itself)."""
        ssm = self.aws.client("ssm")
        delay = self.first_poll
        while True:
            remaining = self.remaining()
            if remaining <= 0:
                return None
            self.sleep(min(delay, remaining))
            delay = min(delay * 2, LAST_POLL)
            try:
                with translated("ssm", "GetCommandInvocation"):
                    invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            except Throttled:
                continue
            except AwsError as error:
                if error.code == "InvocationDoesNotExist":  # for a moment after SendCommand
                    continue
                raise
            if invocation.get("Status") in TERMINAL:
                return invocation

    def cancel(self, command_id: str, instance_id: str) -> str:
        try:
            with translated("ssm", "CancelCommand"):
                self.aws.client("ssm").cancel_command(CommandId=command_id, InstanceIds=[instance_id])
        except Ec2irError as error:
            return f"the command could not be cancelled ({error})"
        return f"command {command_id} cancelled"

    def conclude(
        self, command_id: str, key: str, invocation: GetCommandInvocationResultTypeDef
    ) -> tuple[Outcome, EvidenceRef | None]:
        status = invocation.get("Status", "")
        report = parse_report(str(invocation.get("StandardOutputContent") or ""))
        if "error" in report:
            return Outcome.not_collected(f"on the instance: {report['error']}"), None
        if status != "Success":
            detail = str(invocation.get("StandardErrorContent") or "").strip().splitlines()
            why = f": {detail[-1]}" if detail else ""
            return (
                Outcome.not_collected(
                    f"the command {command_id} ended {status} "
                    f"(exit {invocation.get('ResponseCode', '?')}){why}"
                ),
                None,
            )
        digest, size = report.get("sha256", ""), report.get("size", "")
        if not _SHA256.match(digest) or not size.isdigit():
            return Outcome.not_collected(
                f"the command {command_id} reported no image (no {MARKER} line)"
            ), None
        location = f"s3://{self.bucket.name}/{key}"
        version = report.get("version", "")
        stored, version = self.stored_size(key, version)
        if stored != int(size):
            return (
                Outcome.not_collected(f"{location} holds {stored} bytes, but the instance reported {size}"),
                None,
            )
        ref = EvidenceRef(
            kind="memory",
            location=location,
            sha256=digest,
            size=int(size),
            version_id=version,
            details={
                "command_id": command_id,
                "hashed_on": "instance",
                "tool": f"AVML {AVML_VERSION}",
                "format": "AVML snappy-compressed LiME (avml convert gives plain LiME)",
            },
        )
        return Outcome.done(f"sha256 {digest} ({size} bytes, hashed on the instance) at {location}"), ref

    def stored_size(self, key: str, version: str) -> tuple[int, str]:
        """The uploaded object's size and version id, by HeadObject."""
        arguments: dict[str, Any] = {"Bucket": self.bucket.name, "Key": key}
        if version and version != "null":
            arguments["VersionId"] = version
        if self.bucket.account.isdigit():
            arguments["ExpectedBucketOwner"] = self.bucket.account
        with s3_translated("HeadObject"):
            head = self.aws.client("s3").head_object(**arguments)
        return int(head.get("ContentLength", -1)), str(head.get("VersionId") or version or "")


def describe(error: Exception) -> str:
    """One instance's failure, as its outcome says it."""
    if isinstance(error, AwsError) and error.code == "InvalidInstanceId":
        return f"{NOT_MANAGED} ({error})"
    if isinstance(error, Ec2irError):
        return str(error)
    return f"internal error {type(error).__name__}: {error}"  # a bug of ours


def upload_url(presigner: Any, bucket: str, key: str, expires_in: int, owner: str = "") -> str:
    """The presigned PUT the script uploads to. It signs the host and, with ``owner``, the
    expected bucket owner, whose value the script sends as it was signed (see UPLOAD_CHECKSUM for
    why the checksum is not signed)."""
    params = {"Bucket": bucket, "Key": key} | ({"ExpectedBucketOwner": owner} if owner else {})
    return str(presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=expires_in))


def presigning_client(aws: Aws, bucket: str) -> Any:
    """The S3 client that presigns the image's upload URL (``Aws.presigning_s3_client``)."""
    return aws.presigning_s3_client(bucket)


def acquire(
    aws: Aws,
    bucket: EvidenceBucket,
    case_id: str,
    instance_ids: list[str],
    timeout: float = 600.0,
    *,
    first_poll: float = FIRST_POLL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wait_on: Callable[[threading.Condition, float], object] = threading.Condition.wait,
) -> dict[str, MemoryOutcome]:
    """Acquire the memory of every instance at once, within ``timeout`` seconds overall (plus at
    most ``GRACE`` to record cancellations). Never raises for one instance's problem: every
    instance asked for gets an outcome, ``done: ...`` or ``not collected: <why>``."""
    ids = list(dict.fromkeys(instance_ids))
    if not ids:
        return {}
    if timeout <= 0:
        return {i: MemoryOutcome(Outcome.not_collected(f"--memory-timeout is {timeout:g} s")) for i in ids}
    run = _Run(
        aws,
        bucket,
        case_id,
        timeout,
        clock() + timeout,
        first_poll,
        clock=clock,
        sleep=sleep,
        wait_on=wait_on,
    )
    # Daemon threads: a call that hangs past the deadline must not hold the process open.
    threading.Thread(target=run.coordinate, args=(ids,), name="ec2ir-memory", daemon=True).start()
    return run.wait(ids, run.deadline + GRACE)
