"""Sessions, clients, error translation and instance discovery.

No module creates a boto3 client at import time: boto3 is imported on first use, so that the CLI
starts fast and ``--help`` never pays for it.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ec2ir.core.errors import (
    AwsError,
    CredentialsError,
    Ec2irError,
    PermissionDenied,
    Throttled,
    UsageError,
)
from ec2ir.core.models import Eni, InstanceFacts, Volume

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elb import ElasticLoadBalancingClient
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

T = TypeVar("T")

PERMISSION_CODES = frozenset(
    {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation"}
)
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "RequestExpired",
        "UnrecognizedClientException",
    }
)
THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        # S3's answer when a prefix takes requests faster than it can (503): back off and retry
        "SlowDown",
    }
)
# EC2 answers FilterLimitExceeded beyond 200 values in one filter.
DISCOVERY_BATCH = 200
# botocore's retries share one quota per client, which a long throttled run can drain; the calls
# that contain an instance then wait this many more times rather than give up.
PATIENT_ATTEMPTS = 8


@dataclass(frozen=True)
class AwsSettings:
    """Where and as whom to call AWS: the standard credential chain plus the usual overrides."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    retry_mode: Literal["adaptive", "standard"] = "adaptive"
    max_attempts: int = 10
    max_pool_connections: int = 50
    role_arn: str | None = None  # act in another account through sts:AssumeRole
    external_id: str | None = None


_LOADER_LOCK = threading.Lock()
_loader: Any = None


def _botocore_session() -> Any:
    """A new botocore session that reads AWS's service models through the process's one loader.

    Each session otherwise parses every service model it uses again (about 0.3 s for EC2's alone):
    a Lambda container's warm invocations, and every ``Aws`` built in one process (the tests
    build hundreds), would pay it each time. The loader only caches read-only model data."""
    from botocore.session import get_session

    global _loader
    session = get_session()
    with _LOADER_LOCK:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


@dataclass
class _SharedSession:
    """One boto3 session for an Aws and all its siblings: building one costs about 0.35 s of CPU
    (it loads the service models), far too much to pay again for each set of clients."""

    session: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # boto3 sessions are not thread-safe
    caller: str = ""  # the STS caller ARN, once asked


@dataclass
class Aws:
    """Lazily built, thread-safe boto3 clients sharing one session."""

    settings: AwsSettings = field(default_factory=AwsSettings)
    _clients: dict[str, Any] = field(default_factory=dict)
    _shared: _SharedSession = field(default_factory=_SharedSession)
    # Every pause of ec2ir's own between calls (backoff, re-reads, polls) goes through this one
    # function, so that a test can run them all without waiting.
    sleep: Callable[[float], None] = time.sleep

    @property
    def _lock(self) -> threading.Lock:
        return self._shared.lock

    @property
    def _session(self) -> Any:
        return self._shared.session

    # The services with installed stubs get their typed client, so that mypy checks what we send;
    # the others stay Any.
    @overload
    def client(self, service: Literal["autoscaling"]) -> AutoScalingClient: ...
    @overload
    def client(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def client(self, service: Literal["ec2"]) -> EC2Client: ...
    @overload
    def client(self, service: Literal["elb"]) -> ElasticLoadBalancingClient: ...
    @overload
    def client(self, service: Literal["elbv2"]) -> ElasticLoadBalancingv2Client: ...
    @overload
    def client(self, service: Literal["iam"]) -> IAMClient: ...
    @overload
    def client(self, service: Literal["s3"]) -> S3Client: ...
    @overload
    def client(self, service: Literal["ssm"]) -> SSMClient: ...
    @overload
    def client(self, service: Literal["sts"]) -> STSClient: ...
    @overload
    def client(self, service: str) -> Any: ...
    def client(self, service: str) -> Any:
        # Worker threads ask for clients at once; boto3 sessions are not thread-safe, and one
        # client per service keeps one adaptive rate limiter per service.
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make_client(service)
            return self._clients[service]

    def _make_client(self, service: str) -> Any:
        from botocore.exceptions import BotoCoreError

        try:
            if self._shared.session is None:
                self._shared.session = self._make_session()
            client = self._shared.session.client(
                service, endpoint_url=self._endpoint(), config=self._config()
            )
        except BotoCoreError as exc:
            raise UsageError(f"cannot set up the AWS {service} client: {exc}") from exc
        client.meta.events.register("after-call", _note_request_id)
        return client

    def _endpoint(self) -> str | None:
        return self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None

    def _config(self) -> Any:
        from botocore.config import Config

        settings = self.settings
        return Config(
            retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
            max_pool_connections=settings.max_pool_connections,
            connect_timeout=5,
            read_timeout=30,
        )

    def _make_session(self) -> Any:
        import boto3

        settings = self.settings
        base = boto3.session.Session(
            botocore_session=_botocore_session(), profile_name=settings.profile, region_name=settings.region
        )
        if not base.region_name:
            raise UsageError(
                "no AWS region is configured",
                "pass --region, or set AWS_REGION / AWS_DEFAULT_REGION",
            )
        if not settings.role_arn:
            return base
        return self._assumed_role_session(base, settings.role_arn, settings.external_id)

    def _assumed_role_session(self, base: Any, role_arn: str, external_id: str | None) -> Any:
        """A session in the target account whose credentials renew themselves before they expire,
        so a long containment run never fails half-way on expired role credentials."""
        import boto3
        from botocore.credentials import RefreshableCredentials

        sts = base.client("sts", endpoint_url=self._endpoint(), config=self._config())
        arguments: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": "ec2ir"}
        if external_id:
            arguments["ExternalId"] = external_id

        def assume() -> dict[str, str]:
            with translated("sts", "AssumeRole"):
                credentials = sts.assume_role(**arguments)["Credentials"]
            return {
                "access_key": credentials["AccessKeyId"],
                "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"],
                "expiry_time": credentials["Expiration"].isoformat(),
            }

        refreshable = RefreshableCredentials.create_from_metadata(
            metadata=assume(), refresh_using=assume, method="sts-assume-role"
        )
        botocore_session = _botocore_session()
        botocore_session._credentials = refreshable  # no public setter
        botocore_session.set_config_variable("region", base.region_name)
        return boto3.session.Session(botocore_session=botocore_session)

    def presigning_s3_client(self, bucket: str) -> Any:
        """An S3 client that presigns with SigV4 on the Region's own endpoint. botocore's default
        would sign with SigV2, which newer Regions refuse, and name the global endpoint, which
        redirects for a new bucket, and curl does not follow a redirect with a PUT body."""
        from botocore.config import Config

        self.client("s3")  # makes the session: the credential chain, any assumed role included
        endpoint = self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        style: Literal["path", "virtual"] = "path" if endpoint or "." in bucket else "virtual"  # dots: TLS
        region = self.region()
        with self._lock:  # boto3 sessions are not thread-safe; client() holds this lock too
            return self._session.client(
                "s3",
                region_name=region,
                endpoint_url=endpoint,
                config=Config(signature_version="s3v4", s3={"addressing_style": style}),
            )

    def sibling(self, retries: bool = True) -> Aws:
        """The same session, account, Region and settings through clients of its own (each with
        its own adaptive rate limiter); without ``retries``, botocore sends each call once and
        leaves retrying (and its pacing) to the caller."""
        settings = self.settings if retries else replace(self.settings, max_attempts=1, retry_mode="standard")
        return Aws(settings, _shared=self._shared, sleep=self.sleep)

    def elsewhere(self, region: str, role_arn: str | None = None, external_id: str | None = None) -> Aws:
        """Clients for another Region, and through ``role_arn`` another account, with this one's
        settings: a session (and so credentials, retry state and rate limiters) of its own, so
        that one place's throttling never slows another's calls."""
        settings = replace(self.settings, region=region)
        if role_arn:
            settings = replace(settings, role_arn=role_arn, external_id=external_id)
        return Aws(settings, sleep=self.sleep)

    def ec2(self) -> EC2Client:
        return self.client("ec2")

    def dynamodb(self) -> DynamoDBClient:
        return self.client("dynamodb")

    def region(self) -> str:
        return str(self.client("sts").meta.region_name)

    def caller_arn(self) -> str:
        """The STS caller identity: who is acting, recorded with every change."""
        with translated("sts", "GetCallerIdentity"):
            arn = str(self.client("sts").get_caller_identity()["Arn"])
        self._shared.caller = arn
        return arn

    def _known_caller(self) -> str:
        return self._shared.caller or self.caller_arn()

    def account(self) -> str:
        """The caller's account (asked of STS once per session)."""
        return self._known_caller().split(":")[4]

    def partition(self) -> str:
        """The caller's partition: aws, aws-cn or aws-us-gov, for the ARNs ec2ir writes."""
        return self._known_caller().split(":")[1]


_recorder = threading.local()


def _note_request_id(parsed: dict[str, Any] | None = None, **_: Any) -> None:
    """botocore's after-call hook: keep the request id for the journal, if this thread asked."""
    ids: list[str] | None = getattr(_recorder, "ids", None)
    request_id = (parsed or {}).get("ResponseMetadata", {}).get("RequestId")
    if ids is not None and request_id:
        ids.append(str(request_id))


@contextmanager
def request_ids() -> Iterator[list[str]]:
    """Collect the AWS request id of every call this thread makes inside the block, failed calls
    included, so that the journal can name them."""
    outer: list[str] | None = getattr(_recorder, "ids", None)
    ids: list[str] = []
    _recorder.ids = ids
    try:
        yield ids
    finally:
        _recorder.ids = outer
        if outer is not None:
            outer.extend(ids)


def classify_client_error(service: str, exc: Any) -> Ec2irError:
    """Turn a botocore ClientError into the project's error, naming the IAM action it needed."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip() or str(exc)
    operation = getattr(exc, "operation_name", "") or "unknown"
    action = f"{service}:{operation}"
    request_id = str(exc.response.get("ResponseMetadata", {}).get("RequestId", ""))
    if code in PERMISSION_CODES:
        return PermissionDenied(code, message, action, request_id)
    if code in CREDENTIAL_CODES:
        return CredentialsError(
            f"AWS refused the credentials ({code}: {message})",
            "refresh or re-export your credentials and run the same command again",
        )
    if code in THROTTLE_CODES:
        return Throttled(code, message, action, request_id)
    return AwsError(code, message, action, request_id)


@contextmanager
def translated(service: str, operation: str) -> Iterator[None]:
    """Run AWS calls so that every botocore failure leaves as an ``Ec2irError``."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
    )

    try:
        yield
    except ClientError as exc:
        raise classify_client_error(service, exc) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise CredentialsError(
            "no AWS credentials found",
            "configure the standard credential chain, or pass --profile",
        ) from exc
    except NoRegionError as exc:
        raise UsageError("no AWS region is configured", "pass --region") from exc
    except EndpointConnectionError as exc:
        raise UsageError(
            f"cannot reach the AWS endpoint for {service}: {exc}",
            "check --endpoint-url / AWS_ENDPOINT_URL and the network",
        ) from exc
    except ParamValidationError as exc:
        raise UsageError(f"{service}:{operation} rejected the request: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsError(type(exc).__name__, str(exc), f"{service}:{operation}") from exc


def patiently(
    call: Callable[[], T],
    attempts: int = PATIENT_ATTEMPTS,
    base_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``, waiting out throttling with capped, jittered exponential backoff; a caller
    that holds an ``Aws`` passes its ``sleep``."""
    for attempt in range(attempts):
        try:
            return call()
        except Throttled:
            if attempt == attempts - 1:
                raise
            sleep(random.uniform(0, min(20.0, base_delay * 2**attempt)))
    raise AssertionError("unreachable")


def method_name(operation: str) -> str:
    """The client method of an API operation: ``ModifyInstanceAttribute`` -> ``modify_instance_attribute``."""
    from botocore import xform_name

    return str(xform_name(operation))


@functools.cache
def dns_suffix(partition: str) -> str | None:
    """The DNS suffix of an AWS partition (amazonaws.com, amazonaws.com.cn, ...), from botocore's
    own partition data; None for a partition botocore does not know."""
    from botocore.loaders import create_loader

    for known in create_loader().load_data("partitions").get("partitions", []):
        if known.get("id") == partition:
            suffix = known.get("outputs", {}).get("dnsSuffix")
            return str(suffix) if suffix else None
    return None


def to_dynamodb(value: Mapping[str, Any]) -> dict[str, Any]:
    """A plain mapping as DynamoDB's typed attribute values (``{"S": ...}``, ``{"N": ...}``)."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return {key: serializer.serialize(item) for key, item in value.items()}


def from_dynamodb(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB's typed attribute values back as plain Python values."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def facts_from_description(instance: Mapping[str, Any]) -> InstanceFacts:
    enis = tuple(
        sorted(
            (
                Eni(
                    eni_id=nic["NetworkInterfaceId"],
                    vpc_id=nic.get("VpcId") or instance.get("VpcId", ""),
                    group_ids=tuple(group["GroupId"] for group in nic.get("Groups", [])),
                    device_index=int(nic.get("Attachment", {}).get("DeviceIndex", 0)),
                )
                for nic in instance.get("NetworkInterfaces", [])
            ),
            key=lambda eni: eni.device_index,
        )
    )
    volumes = tuple(
        Volume(
            device_name=mapping["DeviceName"],
            volume_id=mapping["Ebs"].get("VolumeId", ""),
            delete_on_termination=bool(mapping["Ebs"].get("DeleteOnTermination", False)),
        )
        for mapping in instance.get("BlockDeviceMappings", [])
        if "Ebs" in mapping
    )
    return InstanceFacts(
        instance_id=instance["InstanceId"],
        state=instance.get("State", {}).get("Name", "unknown"),
        vpc_id=instance.get("VpcId", ""),
        enis=enis,
        volumes=volumes,
        tags={tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])},
        profile_arn=instance.get("IamInstanceProfile", {}).get("Arn", ""),
        description=instance,
    )


def discover(aws: Aws, instance_ids: list[str]) -> dict[str, InstanceFacts]:
    """Describe every named instance in as few paginated calls as EC2 allows.

    The ``instance-id`` filter is used rather than ``InstanceIds`` because EC2 fails the whole
    request when one id is unknown; with the filter, unknown ids are simply absent and the other
    instances can still be contained.
    """
    found: dict[str, InstanceFacts] = {}
    paginator = aws.ec2().get_paginator("describe_instances")
    with translated("ec2", "DescribeInstances"):
        for batch in chunks(instance_ids, DISCOVERY_BATCH):
            pages = paginator.paginate(
                Filters=[{"Name": "instance-id", "Values": batch}],
                PaginationConfig={"PageSize": 1000},
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        facts = facts_from_description(instance)
                        found[facts.instance_id] = facts
    return found
