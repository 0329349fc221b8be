"""The embedded emulator: moto's server on loopback, corrected where moto differs from EC2.

Tests that pass on plain moto prove nothing where moto is wrong, so every gap that ec2ir relies on
is corrected here, in one reversible patch set (see docs/design.md, "The emulator"):

* ``eni-groups``: moto reports an ENI's groups as the union of the ENI's own list and the
  instance's list, so a swapped ENI still shows its old group. EC2 keeps groups per ENI; the
  instance-level list is derived from its ENIs.
* ``multi-eni-modify-instance``: EC2 rejects ``ModifyInstanceAttribute(Groups)`` on an instance
  with several ENIs; moto accepts it.
* ``modify-instance-fallthrough``: moto sends any ModifyInstanceAttribute form it does not know
  (``InstanceInitiatedShutdownBehavior`` among them) to its security-group handler with an empty
  list, silently wiping the instance's groups. The shutdown behaviour is applied instead, and any
  other unknown form is refused.
* ``unknown-group``: moto accepts an unknown group id in ModifyNetworkInterfaceAttribute and puts
  ``None`` on the ENI; EC2 refuses with ``InvalidGroup.NotFound``.
* ``simulate-principal-policy``: moto has no IAM policy simulator (it answers HTTP 500). moto
  authorises every call, so the corrected emulator answers "allowed" for every action, which is
  exactly what its callers will then experience.
* ``atomic-requests``: moto's threaded server runs requests side by side with no atomicity, so
  two racing requests can both pass a check that AWS applies atomically (a DynamoDB condition,
  a security-group name that must be unique in its VPC). Requests are applied one at a time.
* ``bucket-policy-conditions``: moto ignores a bucket policy's ``Condition``, so the evidence
  bucket's TLS-only Deny (``aws:SecureTransport`` false) refuses every request. AWS's endpoints are
  all TLS, so the emulator evaluates that condition as a TLS request would; a statement with any
  other condition, which it cannot evaluate, is left out rather than applied unconditionally.
* ``describe-pagination``: with ``InstanceIds``, EC2 returns every named instance in one response;
  moto truncates at 100 reservations and hands back a ``NextToken``.
* ``ssm-managed-instances``: moto has no ``DescribeInstanceInformation`` (HTTP 500) and sends a
  command to any instance. The rule here: an EC2 instance is managed by SSM exactly while an IAM
  instance profile is associated with it (its agent's way to reach SSM; the Default Host
  Management Configuration is not modelled). It is then listed as ``Online`` and ``Linux`` (or
  Windows for a Windows AMI) while running, ``ConnectionLost`` while stopped; an unmanaged
  instance is absent, as on AWS, and ``SendCommand`` to it fails with ``InvalidInstanceId``.
* ``ssm-command-targets``: moto adds every instance of the Region to a command sent with
  ``InstanceIds`` alone (it reads the absent ``Targets`` as "all instances").
* ``ssm-command-output``: moto runs nothing and answers every invocation ``Success`` with empty
  output. The emulator cannot run AVML either, so for an ``AWS-RunShellScript`` whose script
  prints an ``EC2IR-MEMORY`` line it stands in for the instance: it stores a deterministic fake
  memory image at the script's presigned S3 URL (in moto's S3, as the upload would) and answers
  ``Success`` with ``EC2IR-MEMORY sha256=<of those bytes> size=<n> version=<id>``. A stand-in,
  not an emulation of AVML: the image says so in its first line.
* ``ssm-cancel-command``: moto has no ``CancelCommand`` (HTTP 500). It is answered as AWS does;
  invocations still pending become ``Cancelled``.
* ``metadata-options-kept``: moto's ``ModifyInstanceMetadataOptions`` rebuilds the options from
  the request alone, so a field not given is lost (``HttpEndpoint`` reads back null), and it
  ignores ``DryRun``, changing the instance. EC2 keeps every field the request does not give, and
  a DryRun changes nothing (``DryRunOperation``).
* ``console-screenshot``: moto has no ``GetConsoleScreenshot`` (HTTP 500). A running instance
  answers with a small valid JPEG (``ImageData``, base64) and its ``InstanceId``; any other state
  is refused with ``IncorrectInstanceState``.
* ``nacl-entries``: moto ignores ``DryRun`` on ``CreateNetworkAclEntry``,
  ``ReplaceNetworkAclEntry`` and ``DeleteNetworkAclEntry`` (the change is made); EC2 answers
  ``DryRunOperation`` and changes nothing. moto fails with HTTP 500 on deleting or replacing an
  entry that does not exist; EC2 answers ``InvalidNetworkAclEntry.NotFound``. moto accepts any
  rule number; EC2 takes 1 to 32766 (32767 and up are its own, the default ``*`` rule among them)
  and refuses the rest with ``InvalidParameterValue``. ``DescribeNetworkAcls`` of an ACL id that
  does not exist answers ``InvalidRouteTableID.NotFound`` in moto, ``InvalidNetworkAclID.NotFound``
  in EC2. (A rule number already taken in the same direction is refused with
  ``NetworkAclEntryAlreadyExists`` by both.)

moto is imported only here, and only by ``ec2ir demo`` and ``ec2ir emulator``: it is an optional
extra (``pip install 'ec2ir[emulator]'``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ec2ir.core.errors import UsageError

DEMO_REGION = "us-east-1"
_lock = threading.Lock()
_applied: list[tuple[object, str, Any]] = []
_ABSENT = object()
_request_lock = threading.Lock()  # the attribute was an instance attribute, not on the class
MEMORY_MARKER = "EC2IR-MEMORY"  # the line ec2ir's memory script prints (see ec2ir.evidence.memory)
_PRESIGNED_URL = re.compile(r"https?://[^\s'\"]+[?&][^\s'\"]*Signature=[^\s'\"]+")


def _tiny_jpeg() -> bytes:
    """An 8x8 mid-grey baseline JPEG: one quantisation table, a one-code Huffman table each for DC
    (category 0) and AC (end of block), and a single block coded as those two one-bit codes."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + bytes([1] * 64))
        + segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
        + segment(0xC4, b"\x00" + one_code)
        + segment(0xC4, b"\x10" + one_code)
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x3f"  # DC "0", EOB "0", padded with ones
        + b"\xff\xd9"
    )


SCREENSHOT_JPEG = _tiny_jpeg()


def emulated_memory_image(instance_id: str) -> bytes:
    """The deterministic stand-in for an AVML image of one instance."""
    header = f"ec2ir emulator: a stand-in memory image of {instance_id}; no AVML ran\n".encode()
    return header + bytes(range(256)) * 16


def require_moto() -> None:
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "the embedded emulator needs moto, which is not installed",
            "pip install 'ec2ir[emulator]'",
        ) from exc


def _patches() -> list[tuple[str, object, str, Any]]:
    """Every correction as (name, owner, attribute, replacement)."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance
    from moto.ec2.models.network_acls import NetworkAclBackend
    from moto.ec2.responses import EC2Response
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.responses.network_acls import NetworkACLs
    from moto.iam.responses import IamResponse
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.ssm.exceptions import SSMException
    from moto.ssm.models import Command, SimpleSystemManagerBackend
    from moto.ssm.responses import SimpleSystemManagerResponse

    def eni_group_set(eni: Any) -> list[Any]:
        return list(eni._group_set)

    def instance_groups_get(instance: Any) -> list[Any]:
        nics = getattr(instance, "nics", None)
        if not nics:
            return list(getattr(instance, "_ec2ir_launch_groups", []))
        groups: list[Any] = []
        for index in sorted(nics):
            groups.extend(g for g in nics[index]._group_set if g not in groups)
        return groups

    def instance_groups_set(instance: Any, groups: list[Any]) -> None:
        nics = getattr(instance, "nics", None)
        if nics and 0 in nics:
            nics[0]._group_set = list(groups)
        instance._ec2ir_launch_groups = list(groups)

    def modify_instance_security_groups(backend: Any, instance_id: str, group_ids: list[str]) -> Any:
        instance = backend.get_instance(instance_id)
        if len(instance.nics) > 1:
            raise EC2ClientError(
                "InvalidInstanceID",
                f"There are multiple interfaces attached to instance '{instance_id}'. "
                "Please specify an interface ID for the operation instead.",
            )
        instance.security_groups = [backend.get_security_group_from_id(g) for g in group_ids]
        return instance

    def simulate_principal_policy(response: Any) -> Any:
        actions = response._get_param("ActionNames", [])
        return ActionResult(
            {
                "EvaluationResults": [
                    {"EvalActionName": action, "EvalResourceName": "*", "EvalDecision": "allowed"}
                    for action in actions
                ],
                "IsTruncated": False,
            }
        )

    original_dispatch = DomainDispatcherApplication.__call__

    def atomic_dispatch(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
        with _request_lock:
            # Flask builds the whole response inside the call, so the lock covers the change.
            return list(original_dispatch(app, environ, start_response))

    original_modify_eni = EC2Backend.modify_network_interface_attribute

    def modify_network_interface_attribute(
        backend: Any, eni_id: str, group_ids: list[str], *args: Any, **kw: Any
    ) -> Any:
        for group_id in group_ids or []:
            if backend.get_security_group_from_id(group_id) is None:
                raise EC2ClientError(
                    "InvalidGroup.NotFound", f"The security group '{group_id}' does not exist"
                )
        return original_modify_eni(backend, eni_id, group_ids, *args, **kw)

    original_dot_handler = InstanceResponse._dot_value_instance_attribute_handler

    def dot_value_handler(response: Any) -> bool:
        value = response._get_param("InstanceInitiatedShutdownBehavior.Value")
        if value is None:
            return bool(original_dot_handler(response))
        response.error_on_dryrun()
        response.ec2_backend.modify_instance_attribute(
            response._get_param("InstanceId"), "instance_initiated_shutdown_behavior", value
        )
        return True

    def groups_handler(response: Any) -> bool:
        if not response._get_param("Groups", []):
            raise EC2ClientError(
                "InvalidParameterCombination",
                "ec2ir emulator: this ModifyInstanceAttribute form is not emulated",
            )
        response.error_on_dryrun()
        response.ec2_backend.modify_instance_security_groups(
            response._get_param("InstanceId"), response._get_param("Groups", [])
        )
        return True

    from moto.s3.models import FakeBucket

    original_get_permission = FakeBucket.get_permission

    def get_permission(bucket: Any, action: str, resource: str) -> Any:
        import json

        if bucket.policy is None:
            return original_get_permission(bucket, action, resource)
        policy = json.loads(bucket.policy)
        statements = policy.get("Statement", [])
        kept = [
            statement
            for statement in (statements if isinstance(statements, list) else [statements])
            if "Condition" not in statement
            or statement["Condition"] == {"Bool": {"aws:SecureTransport": "true"}}
        ]
        original_policy = bucket.policy
        bucket.policy = json.dumps({**policy, "Statement": kept}).encode() if kept else None
        try:
            return original_get_permission(bucket, action, resource)
        finally:
            bucket.policy = original_policy

    original_describe = InstanceResponse.describe_instances

    def describe_instances(response: Any) -> Any:
        instance_ids = response._get_param("InstanceIds", [])
        if not instance_ids or response._get_param("MaxResults") is not None:
            return original_describe(response)
        response.error_on_dryrun()
        # EC2 answers a request that names instances with all of them in one page.
        reservations = response.ec2_backend.get_reservations_by_instance_ids(
            instance_ids, filters=response._filters_from_querystring()
        )
        return ActionResult({"Reservations": reservations, "NextToken": None})

    def modify_instance_metadata_options(response: Any) -> Any:
        response.error_on_dryrun()
        instance_id = response._get_param("InstanceId")
        kept = response.ec2_backend.get_instance(instance_id).metadata_options
        hop_limit = response._get_int_param("HttpPutResponseHopLimit")
        options = response.ec2_backend.modify_instance_metadata_options(
            instance_id=instance_id,
            http_tokens=response._get_param("HttpTokens") or kept.http_tokens,
            hop_limit=kept.http_put_response_hop_limit if hop_limit is None else hop_limit,
            http_endpoint=response._get_param("HttpEndpoint") or kept.http_endpoint,
            http_protocol=response._get_param("HttpProtocolIpv6") or kept.http_protocol_ipv6,
            metadata_tags=response._get_param("InstanceMetadataTags") or kept.instance_metadata_tags,
        )
        return ActionResult({"InstanceId": instance_id, "InstanceMetadataOptions": options})

    def ec2_of(account_id: str, region: str) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[account_id][region]

    def ssm_information(ec2: Any, instance: Any) -> dict[str, Any] | None:
        """What SSM reports of one instance, or None when it does not manage it."""
        from moto.core.utils import utcnow

        association = ec2.iam_instance_profile_associations.get(instance.id)
        state = instance._state.name
        if association is None or state in ("pending", "shutting-down", "terminated"):
            return None
        windows = (getattr(instance, "platform", None) or "").lower() == "windows"
        address = instance.private_ip or "10.0.0.1"
        return {
            "InstanceId": instance.id,
            "PingStatus": "Online" if state == "running" else "ConnectionLost",
            "LastPingDateTime": utcnow(),
            "AgentVersion": "3.3.1142.0",
            "IsLatestVersion": True,
            "PlatformType": "Windows" if windows else "Linux",
            "PlatformName": "Microsoft Windows Server 2022 Datacenter" if windows else "Amazon Linux",
            "PlatformVersion": "10.0.20348" if windows else "2023",
            "ResourceType": "EC2Instance",
            "IPAddress": address,
            "ComputerName": f"ip-{address.replace('.', '-')}.ec2.internal",
            "SourceId": instance.id,
            "SourceType": "AWS::EC2::Instance",
        }

    def describe_instance_information(response: Any) -> Any:
        ec2 = ec2_of(response.current_account, response.region)
        wanted: dict[str, set[str]] = {}
        for item in response._get_param("Filters", []) or []:
            wanted.setdefault(item["Key"], set()).update(item.get("Values", []))
        for item in response._get_param("InstanceInformationFilterList", []) or []:
            key = {"InstanceIds": "InstanceIds", "PingStatus": "PingStatus", "PlatformTypes": "PlatformTypes"}
            wanted.setdefault(key.get(item["key"], item["key"]), set()).update(item.get("valueSet", []))
        found = []
        for instance in ec2.all_instances():
            info = ssm_information(ec2, instance)
            if info is None:
                continue
            checks = {
                "InstanceIds": "InstanceId",
                "PingStatus": "PingStatus",
                "PlatformTypes": "PlatformType",
            }
            if all(info[field] in wanted[name] for name, field in checks.items() if name in wanted):
                found.append(info)
        start = int(response._get_param("NextToken") or 0)
        size = int(response._get_param("MaxResults") or 50)
        page = found[start : start + size]
        token = str(start + size) if start + size < len(found) else None
        return ActionResult({"InstanceInformationList": page, "NextToken": token})

    original_send_command_response = SimpleSystemManagerResponse.send_command

    def send_command_to_managed(response: Any) -> Any:
        ec2 = ec2_of(response.current_account, response.region)
        refused = []
        for instance_id in response._get_param("InstanceIds", []) or []:
            instance = next((i for i in ec2.all_instances() if i.id == instance_id), None)
            info = ssm_information(ec2, instance) if instance is not None else None
            if info is None or info["PingStatus"] != "Online":
                refused.append(instance_id)
        if refused:
            raise SSMException(
                "InvalidInstanceId",
                f"Instances [[{', '.join(refused)}]] not in a valid state for account "
                f"{response.current_account}",
            )
        return original_send_command_response(response)

    original_targets = Command._get_instance_ids_from_targets

    def instance_ids_from_targets(command: Any) -> list[str]:
        return list(original_targets(command)) if command.targets else []

    original_send_command = SimpleSystemManagerBackend.send_command

    def send_command_standing_in(backend: Any, *args: Any, **kwargs: Any) -> Any:
        command = original_send_command(backend, *args, **kwargs)
        script = "\n".join((command.parameters or {}).get("commands", []))
        if command.document_name == "AWS-RunShellScript" and MEMORY_MARKER in script:
            for invocation in command.invocations:
                output = stand_in_for_memory(backend, invocation["InstanceId"], script)
                invocation["StandardOutputContent"] = output
                failed = "error=" in output
                invocation["Status"] = invocation["StatusDetails"] = "Failed" if failed else "Success"
                invocation["ResponseCode"] = 1 if failed else 0
        return command

    def stand_in_for_memory(backend: Any, instance_id: str, script: str) -> str:
        """Do what the memory script would: put an image at the presigned URL, print the line."""
        from urllib.parse import unquote, urlsplit

        from moto.s3.models import s3_backends
        from moto.utilities.utils import get_partition

        found = _PRESIGNED_URL.search(script)
        if found is None:
            return f"{MEMORY_MARKER} error=ec2ir emulator: no presigned S3 URL in the script"
        url = urlsplit(found.group(0))
        s3 = s3_backends[backend.account_id][get_partition(backend.region_name)]
        path = unquote(url.path).lstrip("/")
        bucket, _, key = path.partition("/")
        if bucket not in s3.buckets:  # virtual-hosted style: the bucket is the host's first label
            bucket, key = (url.hostname or "").split(".")[0], path
        if bucket not in s3.buckets:
            return f"{MEMORY_MARKER} error=the upload to S3 failed: NoSuchBucket {bucket}"
        image = emulated_memory_image(instance_id)
        stored = s3.put_object(bucket, key, image)
        version = stored.version_id if stored.version_id != "null" else ""
        digest = hashlib.sha256(image).hexdigest()
        return f"{MEMORY_MARKER} sha256={digest} size={len(image)} version={version}\n"

    def cancel_command(response: Any) -> Any:
        command = response.ssm_backend.get_command_by_id(response._get_param("CommandId"))
        named = set(response._get_param("InstanceIds", []) or [])
        for invocation in command.invocations:
            pending = invocation["Status"] in ("Pending", "InProgress", "Delayed")
            if pending and (not named or invocation["InstanceId"] in named):
                invocation["Status"] = invocation["StatusDetails"] = "Cancelled"
                command.status = "Cancelled"
        return ActionResult({})

    def get_console_screenshot(response: Any) -> Any:
        instance = response.ec2_backend.get_instance(response._get_param("InstanceId"))
        response.error_on_dryrun()
        if instance._state.name != "running":
            raise EC2ClientError(
                "IncorrectInstanceState",
                f"The instance '{instance.id}' is not in a state from which a screenshot can be taken",
            )
        image = base64.b64encode(SCREENSHOT_JPEG).decode()
        return ActionResult({"InstanceId": instance.id, "ImageData": image})

    def nacl_entry_call(action: str) -> Any:
        """Create/Replace/DeleteNetworkAclEntry as EC2 takes them: DryRun honoured, and a rule
        number from 1 to 32766 only."""
        original = getattr(NetworkACLs, action)

        def call(response: Any) -> Any:
            response.error_on_dryrun()
            number = response._get_param("RuleNumber")
            if not str(number).isdigit() or not 1 <= int(number) <= 32766:
                raise EC2ClientError(
                    "InvalidParameterValue",
                    f"Value ({number}) for parameter ruleNumber is invalid. "
                    "Rulenumber must be in range 1..32766",
                )
            return original(response)

        return call

    def delete_network_acl_entry(backend: Any, network_acl_id: str, rule_number: int, egress: bool) -> Any:
        network_acl = backend.get_network_acl(network_acl_id)
        entry = next(
            (
                entry
                for entry in network_acl.network_acl_entries
                if bool(entry.egress) == bool(egress) and int(entry.rule_number) == int(rule_number)
            ),
            None,
        )
        if entry is None:
            raise EC2ClientError(
                "InvalidNetworkAclEntry.NotFound",
                f"no {'egress' if egress else 'ingress'} entry with number {rule_number} "
                f"in network ACL {network_acl_id}",
            )
        network_acl.network_acl_entries.remove(entry)
        return entry

    original_describe_acls = NetworkAclBackend.describe_network_acls

    def describe_network_acls(backend: Any, network_acl_ids: Any = None, filters: Any = None) -> Any:
        for network_acl_id in network_acl_ids or []:
            backend.get_network_acl(network_acl_id)  # InvalidNetworkAclID.NotFound
        return original_describe_acls(backend, network_acl_ids, filters)

    return [
        ("simulate-principal-policy", IamResponse, "simulate_principal_policy", simulate_principal_policy),
        ("atomic-requests", DomainDispatcherApplication, "__call__", atomic_dispatch),
        ("eni-groups", NetworkInterface, "group_set", property(eni_group_set)),
        (
            "unknown-group",
            EC2Backend,
            "modify_network_interface_attribute",
            modify_network_interface_attribute,
        ),
        (
            "eni-groups",
            Instance,
            "security_groups",
            property(instance_groups_get, instance_groups_set),
        ),
        (
            "multi-eni-modify-instance",
            EC2Backend,
            "modify_instance_security_groups",
            modify_instance_security_groups,
        ),
        (
            "modify-instance-fallthrough",
            InstanceResponse,
            "_dot_value_instance_attribute_handler",
            dot_value_handler,
        ),
        (
            "modify-instance-fallthrough",
            InstanceResponse,
            "_security_grp_instance_attribute_handler",
            groups_handler,
        ),
        ("describe-pagination", InstanceResponse, "describe_instances", describe_instances),
        (
            "metadata-options-kept",
            InstanceResponse,
            "modify_instance_metadata_options",
            modify_instance_metadata_options,
        ),
        ("bucket-policy-conditions", FakeBucket, "get_permission", get_permission),
        (
            "ssm-managed-instances",
            SimpleSystemManagerResponse,
            "describe_instance_information",
            describe_instance_information,
        ),
        ("ssm-managed-instances", SimpleSystemManagerResponse, "send_command", send_command_to_managed),
        ("ssm-command-targets", Command, "_get_instance_ids_from_targets", instance_ids_from_targets),
        ("ssm-command-output", SimpleSystemManagerBackend, "send_command", send_command_standing_in),
        ("ssm-cancel-command", SimpleSystemManagerResponse, "cancel_command", cancel_command),
        ("console-screenshot", EC2Response, "get_console_screenshot", get_console_screenshot),
        *(
            ("nacl-entries", NetworkACLs, action, nacl_entry_call(action))
            for action in (
                "create_network_acl_entry",
                "replace_network_acl_entry",
                "delete_network_acl_entry",
            )
        ),
        ("nacl-entries", NetworkAclBackend, "delete_network_acl_entry", delete_network_acl_entry),
        ("nacl-entries", NetworkAclBackend, "describe_network_acls", describe_network_acls),
    ]


FIXES = (
    "eni-groups",
    "multi-eni-modify-instance",
    "modify-instance-fallthrough",
    "describe-pagination",
    "unknown-group",
    "simulate-principal-policy",
    "atomic-requests",
    "bucket-policy-conditions",
    "ssm-managed-instances",
    "ssm-command-targets",
    "ssm-command-output",
    "ssm-cancel-command",
    "console-screenshot",
    "metadata-options-kept",
    "nacl-entries",
)


def apply_fidelity_fixes(only: tuple[str, ...] = FIXES) -> None:
    """Correct moto in this process (idempotent). ``only`` picks fixes, for the fidelity tests."""
    require_moto()
    with _lock:
        if _applied:
            return
        for name, owner, attribute, replacement in _patches():
            if name in only:
                _applied.append((owner, attribute, vars(owner).get(attribute, _ABSENT)))
                setattr(owner, attribute, replacement)


def revert_fidelity_fixes() -> None:
    with _lock:
        while _applied:
            owner, attribute, original = _applied.pop()
            if original is _ABSENT:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


@contextmanager
def fidelity(enabled: bool = True) -> Iterator[None]:
    """Plain moto (``enabled=False``) or corrected moto for the block; the prior state returns after."""
    was_applied = bool(_applied)
    revert_fidelity_fixes()
    if enabled:
        apply_fidelity_fixes()
    try:
        yield
    finally:
        revert_fidelity_fixes()
        if was_applied:
            apply_fidelity_fixes()


RESET_TIMEOUT = 300.0  # seconds: local, so only a wedged emulator takes this long


@dataclass
class Emulator:
    """A corrected moto server on loopback, in this process."""

    port: int = 0
    host: str = "127.0.0.1"
    _server: Any = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        require_moto()
        from moto.server import ThreadedMotoServer

        apply_fidelity_fixes()
        # One log line per request would bury the demo's output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        try:
            self._server.start()
        except OSError as exc:
            raise UsageError(f"cannot serve the emulator on {self.host}:{self.port}: {exc}") from exc
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Forget every resource, as a fresh emulator would."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        # The reset waits behind every request in flight (the emulator applies them one at a time,
        # see "atomic-requests"); on a loaded machine that can take far longer than a call would,
        # and a test that fails for it fails at random.
        with urllib.request.urlopen(request, timeout=RESET_TIMEOUT):
            pass

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_emulator_credentials(setdefault: Callable[[str, str], object] = os.environ.setdefault) -> None:
    """The emulator accepts any credentials; make sure boto3 finds some and a region."""
    setdefault("AWS_ACCESS_KEY_ID", "ec2ir-emulator")
    setdefault("AWS_SECRET_ACCESS_KEY", "ec2ir-emulator")
    setdefault("AWS_DEFAULT_REGION", DEMO_REGION)
