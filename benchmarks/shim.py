"""An AWS-like shim in front of the corrected moto emulator: latency, EC2 throttling and a call log.

moto answers in a few milliseconds and never throttles, so on its own it hides the two things that
set the time to contain a fleet on real AWS: round trips, and EC2's per-account token buckets
(see docs/design.md, "EC2's token buckets"). ``Shim`` is a WSGI middleware that adds both:

* every call takes ``latency_s / speedup``, half before it reaches the emulator and half after,
  so that concurrent calls overlap like real round trips and a change lands mid-trip;
* every EC2 call draws one token from its action's bucket; an empty bucket answers
  ``RequestLimitExceeded`` with HTTP 503 and EC2's XML error body. Buckets refill at
  ``refill x speedup`` and keep their published sizes. As in AWS, each place (account, Region)
  has buckets of its own: the Region is the one the call is signed for (SigV4's credential
  scope), the account the one the emulator maps the access key to. Other services (DynamoDB,
  STS, S3, IAM) only get the latency;
* every call is logged with its start, end, service, action, status and whether it was
  throttled (S3's path-style REST calls under botocore's operation names: PutObject,
  HeadBucket, ...); a ``ModifyNetworkInterfaceAttribute`` also logs its ENI and target groups,
  so the moment each ENI reached its isolation group can be read back.

Shaping (latency and throttling) can be switched off, to seed a fleet quickly. The shim is driven
in-process through ``Shim`` or, when it runs as a server of its own (``python -m benchmarks.shim``),
over HTTP through ``RemoteShim``: ``POST /_shim/configure``, ``POST /_shim/clear-log`` and
``GET /_shim/log``.

Times are ``time.monotonic()`` seconds, which on Linux is one clock for every process.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

# -- EC2's token buckets -------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketSpec:
    size: int
    refill_per_s: float


DESCRIBE = "describe"
UNFILTERED_DESCRIBE = "unfiltered-describe"
MODIFY_ENI = "ModifyNetworkInterfaceAttribute"
MODIFY_INSTANCE = "ModifyInstanceAttribute"  # with Groups, a single-ENI instance's swap
MODIFY_METADATA = "ModifyInstanceMetadataOptions"  # ec2ir's metadata step: the shared mutating bucket
CREATE_TAGS = "CreateTags"
MUTATING = "mutating"
SECURITY_GROUP_RULES = "security-group-rules"

# Actions that EC2 gives a bucket of their own, named after the action. The instance profile's
# calls are among them; ModifyInstanceMetadataOptions is not: like ModifyInstanceAttribute, it
# draws on the shared mutating bucket.
OWN_BUCKETS: dict[str, BucketSpec] = {
    MODIFY_ENI: BucketSpec(100, 5),
    "CreateSnapshot": BucketSpec(100, 5),
    "CreateSnapshots": BucketSpec(100, 5),
    "CreateVolume": BucketSpec(100, 5),
    "AssociateIamInstanceProfile": BucketSpec(100, 5),
    "DisassociateIamInstanceProfile": BucketSpec(100, 5),
    CREATE_TAGS: BucketSpec(100, 10),
    "RunInstances": BucketSpec(5, 2),
}
SECURITY_GROUP_RULE_ACTIONS = frozenset(
    {
        "AuthorizeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
        "RevokeSecurityGroupIngress",
        "RevokeSecurityGroupEgress",
    }
)
EC2_BUCKETS: dict[str, BucketSpec] = {
    DESCRIBE: BucketSpec(100, 20),
    UNFILTERED_DESCRIBE: BucketSpec(50, 10),
    MUTATING: BucketSpec(50, 5),
    SECURITY_GROUP_RULES: BucketSpec(50, 5),
    **OWN_BUCKETS,
}
# Parameters that are part of every query request and so do not make a describe "filtered".
PROTOCOL_PARAMS = frozenset({"Action", "Version", "DryRun"})


def ec2_bucket(action: str, params: Mapping[str, object]) -> str:
    """The bucket an EC2 call draws from, as docs/design.md lists them."""
    if action in OWN_BUCKETS:
        return action
    if action in SECURITY_GROUP_RULE_ACTIONS:
        return SECURITY_GROUP_RULES
    if action.startswith(("Describe", "Get", "List")):
        # Filters, ids or a page size all make a describe "filtered or paginated".
        return DESCRIBE if set(params) - PROTOCOL_PARAMS else UNFILTERED_DESCRIBE
    return MUTATING


class TokenBucket:
    """One token per call; refilled continuously. Not thread-safe: the shim holds a lock."""

    def __init__(self, spec: BucketSpec, speedup: float, now: float) -> None:
        self.capacity = float(spec.size)
        self.refill_per_s = spec.refill_per_s * speedup
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_s)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# -- the call log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    start: float  # when the request reached the shim
    end: float  # when its response left the shim, a full round trip later
    service: str
    action: str
    status: int
    throttled: bool
    bucket: str | None = None  # EC2 calls only
    eni_id: str | None = None  # ModifyNetworkInterfaceAttribute only
    group_ids: tuple[str, ...] = ()  # the groups a ModifyNetworkInterfaceAttribute or a
    # ModifyInstanceAttribute(Groups) sets
    # ModifyInstanceAttribute(Groups), ModifyInstanceMetadataOptions, and CreateTags of one instance
    instance_id: str | None = None
    region: str | None = None  # the Region the call was signed for
    account: str | None = None  # EC2 calls only: the account the emulator maps the access key to

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRecord:
        return cls(**{**data, "group_ids": tuple(data.get("group_ids", ()))})


# -- the middleware ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShimSettings:
    latency_s: float = 0.05
    speedup: float = 1.0
    latency: bool = True  # add the round-trip latency
    throttling: bool = True  # enforce EC2's buckets
    buckets: Mapping[str, BucketSpec] = field(default_factory=lambda: dict(EC2_BUCKETS))

    @property
    def round_trip_s(self) -> float:
        return self.latency_s / self.speedup


THROTTLE_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
    "<Message>Request limit exceeded.</Message></Error></Errors>"
    "<RequestID>{request_id}</RequestID></Response>"
)
CONTROL_PREFIX = "/_shim/"
REMOTE_SETTINGS = frozenset({"latency_s", "speedup", "latency", "throttling"})
CREDENTIAL_SCOPE = re.compile(
    r"Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request"
)
GROUP_PARAM = re.compile(r"SecurityGroupId\.(\d+)$")
INSTANCE_GROUP_PARAM = re.compile(r"GroupId\.(\d+)$")


@dataclass(frozen=True)
class Answer:
    status_line: str
    headers: list[tuple[str, str]]
    chunks: list[bytes]

    @property
    def status(self) -> int:
        return int(self.status_line.split()[0])


def throttle_answer() -> Answer:
    request_id = str(uuid.uuid4())
    payload = THROTTLE_BODY.format(request_id=request_id).encode()
    headers = [
        ("Content-Type", "text/xml;charset=UTF-8"),
        ("Content-Length", str(len(payload))),
        ("x-amzn-RequestId", request_id),
    ]
    return Answer("503 Service Unavailable", headers, [payload])


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]


def service_of(environ: Mapping[str, Any]) -> str:
    """The signing service from SigV4's credential scope: ec2, dynamodb, sts, ..."""
    match = CREDENTIAL_SCOPE.search(str(environ.get("HTTP_AUTHORIZATION", "")))
    return match.group("service") if match else "unsigned"


def region_of(environ: Mapping[str, Any]) -> str | None:
    """The Region a call is signed for (SigV4's credential scope): the Region whose endpoint, and
    so whose token buckets, it reaches on AWS."""
    match = CREDENTIAL_SCOPE.search(str(environ.get("HTTP_AUTHORIZATION", "")))
    return match.group("region") if match else None


def access_key_of(environ: Mapping[str, Any]) -> str | None:
    match = CREDENTIAL_SCOPE.search(str(environ.get("HTTP_AUTHORIZATION", "")))
    return match.group("key") if match else None


def emulator_account(environ: Mapping[str, Any]) -> str:
    """The account the emulator serves a call in, found as moto finds it: its account variable,
    then its ``x-moto-account-id`` header, then the account that issued the access key (an
    assumed role's keys belong to the role's account; any other key to the default account)."""
    forced = os.environ.get("MOTO_ACCOUNT_ID") or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    if forced:
        return str(forced)
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key_of(environ) or "")


def action_of(environ: Mapping[str, Any], params: Mapping[str, list[str]], service: str = "") -> str:
    if "Action" in params:  # the query protocol of EC2 and STS
        return params["Action"][0]
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))  # the JSON protocol of DynamoDB
    if target:
        return target.rsplit(".", 1)[-1]
    if service == "s3":
        return s3_operation(environ)
    return f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')}"


# S3's bucket subresources (path-style ``/bucket?versioning``) and the operation each one names,
# after the method's verb: PUT /bucket?versioning is PutBucketVersioning.
S3_BUCKET_SUBRESOURCES = {
    "versioning": "BucketVersioning",
    "policy": "BucketPolicy",
    "encryption": "BucketEncryption",
    "tagging": "BucketTagging",
    "publicAccessBlock": "PublicAccessBlock",
    "object-lock": "ObjectLockConfiguration",
    "acl": "BucketAcl",
    "location": "BucketLocation",
    "lifecycle": "BucketLifecycleConfiguration",
    "ownershipControls": "BucketOwnershipControls",
    "notification": "BucketNotificationConfiguration",
    "logging": "BucketLogging",
    "cors": "BucketCors",
    "policyStatus": "BucketPolicyStatus",
}
S3_OBJECT_SUBRESOURCES = {
    "tagging": "ObjectTagging",
    "acl": "ObjectAcl",
    "retention": "ObjectRetention",
    "legal-hold": "ObjectLegalHold",
    "attributes": "ObjectAttributes",
}
S3_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head", "POST": "Post"}


def s3_operation(environ: Mapping[str, Any]) -> str:
    """S3's REST call as the operation botocore calls it, from a path-style request
    (``/bucket`` or ``/bucket/key``): the log counts PutObject, not one name per key."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    bucket, _, key = str(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
    verb = S3_VERBS.get(method, method.title())
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{verb} /"
    if key:
        return _s3_object_operation(method, verb, query, environ)
    return _s3_bucket_operation(method, verb, query)


def _s3_object_operation(
    method: str, verb: str, query: Mapping[str, list[str]], environ: Mapping[str, Any]
) -> str:
    """The operation of a request to ``/bucket/key``."""
    if "uploadId" in query:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, f"{verb}MultipartUpload")
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    for name, operation in S3_OBJECT_SUBRESOURCES.items():
        if name in query:
            return verb + operation
    if method == "PUT" and environ.get("HTTP_X_AMZ_COPY_SOURCE"):
        return "CopyObject"
    return f"{verb}Object"


def _s3_bucket_operation(method: str, verb: str, query: Mapping[str, list[str]]) -> str:
    """The operation of a request to ``/bucket``."""
    for name, operation in S3_BUCKET_SUBRESOURCES.items():
        if name in query:
            return verb + operation
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "GET":
        if "versions" in query:
            return "ListObjectVersions"
        if "uploads" in query:
            return "ListMultipartUploads"
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
        method, f"{verb}Bucket"
    )


def numbered_groups(params: Mapping[str, list[str]], pattern: re.Pattern[str]) -> tuple[str, ...]:
    numbered = sorted(
        (int(match.group(1)), values[0]) for name, values in params.items() if (match := pattern.match(name))
    )
    return tuple(group for _, group in numbered)


def interface_change(params: Mapping[str, list[str]]) -> tuple[str | None, tuple[str, ...]]:
    """The ENI and target groups of a ModifyNetworkInterfaceAttribute body, in their given order."""
    eni_ids = params.get("NetworkInterfaceId")
    return (eni_ids[0] if eni_ids else None), numbered_groups(params, GROUP_PARAM)


def instance_groups_change(params: Mapping[str, list[str]]) -> tuple[str | None, tuple[str, ...]]:
    """The instance and target groups of a ModifyInstanceAttribute body; no groups for its other
    forms (termination protection, shutdown behaviour...)."""
    groups = numbered_groups(params, INSTANCE_GROUP_PARAM)
    instance_ids = params.get("InstanceId")
    return (instance_ids[0] if instance_ids and groups else None), groups


def instance_named(params: Mapping[str, list[str]]) -> str | None:
    """The one instance a ModifyInstanceMetadataOptions or a CreateTags names, else None."""
    named = params.get("InstanceId") or params.get("ResourceId.1") or []
    single = len(named) == 1 and "ResourceId.2" not in params
    return named[0] if single and named[0].startswith("i-") else None


class Shim:
    """WSGI middleware adding AWS-like latency and EC2 throttling to ``app``, and logging each call."""

    def __init__(
        self,
        app: WsgiApp,
        settings: ShimSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        account_of: Callable[[Mapping[str, Any]], str] = emulator_account,
    ) -> None:
        self.app = app
        self.clock = clock
        self.sleep = sleep
        self.account_of = account_of
        self._lock = threading.Lock()
        # Each place's (account, Region) buckets, made full on the place's first EC2 call.
        self._buckets: dict[tuple[str, str], dict[str, TokenBucket]] = {}
        self._log: list[CallRecord] = []
        self.configure(settings or ShimSettings())

    # -- control --

    def configure(self, settings: ShimSettings) -> None:
        """Use ``settings`` from now on, with every bucket of every place full: fresh accounts."""
        with self._lock:
            self.settings = settings
            self._buckets = {}

    def records(self) -> list[CallRecord]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- WSGI --

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith(CONTROL_PREFIX):
            return self._control(path, environ, start_response)
        if path.startswith("/moto-api/"):  # the emulator's own controls: not an AWS call
            return self.app(environ, start_response)

        start = self.clock()
        settings = self.settings
        body = self._read_body(environ)
        service = service_of(environ)
        # Only the query protocol (EC2, STS, IAM) is parsed; an S3 object's body never is.
        parse = service != "s3" and self._is_form(environ)
        params = parse_qs(body.decode("utf-8", "replace")) if parse else {}
        action = action_of(environ, params, service)
        bucket = ec2_bucket(action, params) if service == "ec2" else None
        region = region_of(environ)
        account = self.account_of(environ) if service == "ec2" else None
        eni_id = instance_id = None
        group_ids: tuple[str, ...] = ()
        if action == MODIFY_ENI:
            eni_id, group_ids = interface_change(params)
        elif action == MODIFY_INSTANCE:
            instance_id, group_ids = instance_groups_change(params)
        elif action in (MODIFY_METADATA, CREATE_TAGS):
            instance_id = instance_named(params)
        half_trip = settings.round_trip_s / 2 if settings.latency else 0.0

        self.sleep(half_trip)  # the request travelling to AWS
        throttled = (
            bucket is not None
            and settings.throttling
            and not self._take((account or "", region or ""), bucket)
        )
        answer = throttle_answer() if throttled else self._forward(environ)
        self.sleep(half_trip)  # the response travelling back

        record = CallRecord(
            start,
            self.clock(),
            service,
            action,
            answer.status,
            throttled,
            bucket,
            eni_id,
            group_ids,
            instance_id,
            region,
            account,
        )
        with self._lock:
            self._log.append(record)
        start_response(answer.status_line, answer.headers)
        return answer.chunks

    def _take(self, place: tuple[str, str], bucket: str) -> bool:
        """Take a token from ``place``'s (account, Region) ``bucket``: EC2 meters each place alone."""
        with self._lock:
            now = self.clock()
            buckets = self._buckets.get(place)
            if buckets is None:
                speedup = self.settings.speedup
                buckets = {
                    name: TokenBucket(spec, speedup, now) for name, spec in self.settings.buckets.items()
                }
                self._buckets[place] = buckets
            tokens = buckets.get(bucket)  # a bucket left out of the settings is unlimited
            return tokens is None or tokens.take(now)

    @staticmethod
    def _is_form(environ: Mapping[str, Any]) -> bool:
        return str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded")

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        """Read the whole body, then put it back so that the emulator still finds it.

        A body sent with ``Transfer-Encoding: chunked`` has no length; the server marks its
        input terminated, and it is read to its end. The emulator then gets it with a length."""
        stream = environ["wsgi.input"]
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body: bytes
        if length > 0:
            body = stream.read(length)
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["CONTENT_LENGTH"] = str(len(body))
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _forward(self, environ: dict[str, Any]) -> Answer:
        """Run the emulator and hold its whole answer, so the return half-trip can be slept first."""
        captured: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: object = None
        ) -> Callable[..., None]:
            captured.append((status, headers))
            return lambda _data: None

        body = self.app(environ, capture)
        try:
            chunks = list(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        status_line, headers = captured[-1]
        return Answer(status_line, list(headers), chunks)

    def _control(self, path: str, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        command = path[len(CONTROL_PREFIX) :]
        method = environ.get("REQUEST_METHOD", "GET")
        answer: object
        if command == "log" and method == "GET":
            answer = [record.as_dict() for record in self.records()]
        elif command == "clear-log" and method == "POST":
            self.clear_log()
            answer = {"ok": True}
        elif command == "configure" and method == "POST":
            changes = json.loads(self._read_body(environ) or b"{}")
            unknown = set(changes) - REMOTE_SETTINGS
            if unknown:
                start_response("400 Bad Request", [("Content-Type", "text/plain")])
                return [f"not settable remotely: {sorted(unknown)}".encode()]
            self.configure(replace(self.settings, **changes))
            answer = {"ok": True}
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": "unknown shim command"}']
        payload = json.dumps(answer).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]


# -- the server ----------------------------------------------------------------------------------


class ShimServer:
    """The corrected emulator behind the shim, served on loopback from a thread of this process."""

    def __init__(
        self,
        settings: ShimSettings | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or ShimSettings()
        self.clock = clock
        self.host = host
        self.port = port
        self.shim: Shim | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ShimServer:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        from ec2ir.emulator.fixes.apply import apply_fidelity_fixes

        apply_fidelity_fixes()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request buries the output
        self.shim = Shim(DomainDispatcherApplication(create_backend_app), self.settings, self.clock)
        self._server = make_server(
            self.host, self.port, self.shim, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="shim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ShimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RemoteShim:
    """Drives a shim served by another process (``python -m benchmarks.shim``) over its control paths."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.endpoint_url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def configure(self, **changes: object) -> None:
        """Change latency/throttling settings (``ShimSettings`` field names); refills every bucket."""
        self._call("POST", "/_shim/configure", changes)

    def clear_log(self) -> None:
        self._call("POST", "/_shim/clear-log", {})

    def records(self) -> list[CallRecord]:
        return [CallRecord.from_dict(item) for item in self._call("GET", "/_shim/log")]

    def reset_emulator(self) -> None:
        """Forget every AWS resource, as a fresh emulator would."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=60):
            pass


AMI_MODULE = "moto.ec2.models.amis"


def keep_only_amis(ami_ids: Iterable[str]) -> None:
    """Make the emulator of this process load only these AMIs from its catalogue.

    moto seeds one snapshot per catalogued AMI (about 1,300 in us-east-1), and its
    DescribeSnapshots filters them all in Python: some 0.2 s of CPU a call, on the one GIL that
    serves every other call. EC2 answers that call in one round trip whatever the account holds,
    so the benchmark's emulator keeps only the AMIs it launches. moto reads ``MOTO_AMIS_PATH``
    once, when its AMI module is imported, so this must run before that; the file is gone when
    this returns (the variable stays set: moto then skips its other catalogues too).
    """
    from moto.utilities.utils import load_resource

    wanted = set(ami_ids)
    catalogue = [ami for ami in load_resource("ec2/resources/amis.json") if ami["ami_id"] in wanted]
    missing = wanted - {ami["ami_id"] for ami in catalogue}
    if missing:
        raise SystemExit(f"not in the emulator's AMI catalogue: {', '.join(sorted(missing))}")
    if AMI_MODULE in sys.modules:
        raise RuntimeError("keep_only_amis must run before moto's EC2 models are imported")
    handle, path = tempfile.mkstemp(prefix="bench-amis-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(catalogue, file)
        os.environ["MOTO_AMIS_PATH"] = path
        importlib.import_module(AMI_MODULE)  # reads the catalogue, once
    finally:
        os.unlink(path)


def index_tag_lookups() -> None:
    """Give moto's EC2 resources their tags by id, not by a scan of every tag in the account.

    moto 5's ``TaggedEC2Resource.get_tags`` asks ``describe_tags`` for one resource id, which
    matches a regular expression against every tag of every resource: a ``DescribeSnapshots``
    filtered by three tags then costs snapshots x 3 x all tags, some 0.4 s of CPU with 300
    snapshots, 2 s with 700, on the GIL that serves every other call. The answer is the same
    (the id pattern is exact, the order is the tags' own), only without the scan. For the
    benchmark's server process: it changes moto for the whole process, so tests do not call it.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(resource: Any) -> list[dict[str, str]]:
        resource_id = resource.id
        tags = resource.ec2_backend.tags.get(resource_id) if resource_id else None
        if not tags:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": key, "value": value, "resource_type": kind}
            for key, value in list(tags.items())
        ]

    setattr(TaggedEC2Resource, "get_tags", get_tags)  # noqa: B010 (a patch, not an attribute)


def cache_dispatch_lookups() -> None:
    """Spare moto two lookups that it makes again for every request, with the same answer each
    time: the list of its service modules (a directory listing and a ``stat`` per entry, to tell
    whether the request's host names a service) and the method names of the service's response
    class (``inspect.getmembers``, to tell whether the action exists). Together about a tenth of
    the emulator's CPU per call under the benchmark's load (py-spy), a cost AWS does not have
    and that would queue with every other call on the emulator's one lock. For the benchmark's
    server process only: it changes moto for the whole process."""
    import functools

    from moto import backends
    from moto.core import responses

    modules = frozenset(backends.list_of_moto_modules())
    setattr(backends, "list_of_moto_modules", lambda: modules)  # noqa: B010 (a patch)
    method_names = getattr(responses, "method_names_from_class")  # noqa: B009 (not exported)
    names = functools.cache(lambda clazz: frozenset(method_names(clazz)))
    setattr(responses, "method_names_from_class", names)  # noqa: B010 (a patch)


def main(argv: list[str] | None = None) -> int:
    """Serve the shim until stdin closes, so that it never outlives the process that started it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shim", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free one)")
    parser.add_argument(
        "--only-amis",
        help="comma-separated AMI ids: the only ones the emulator loads, so that it seeds only their "
        "snapshots (default: moto's whole catalogue)",
    )
    parser.add_argument(
        "--index-tags",
        action="store_true",
        help="look each EC2 resource's tags up by id instead of scanning every tag (same answers)",
    )
    parser.add_argument(
        "--cache-dispatch",
        action="store_true",
        help="look moto's service modules and each response class's actions up once, not per request "
        "(same answers)",
    )
    args = parser.parse_args(argv)
    if args.cache_dispatch:
        cache_dispatch_lookups()
    if args.only_amis:
        keep_only_amis(args.only_amis.split(","))
    if args.index_tags:
        index_tag_lookups()
    with ShimServer(port=args.port) as server:
        print(server.endpoint_url, flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
