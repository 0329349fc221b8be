"""The SSM fixes: which instances SSM manages, which a command targets, what a memory command
outputs, and CancelCommand."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch

MEMORY_MARKER = "EC2IR-MEMORY"  # the line ec2ir's memory script prints (see ec2ir.evidence.memory)
_PRESIGNED_URL = re.compile(r"https?://[^\s'\"]+[?&][^\s'\"]*Signature=[^\s'\"]+")
# DescribeInstanceInformation's filter names, and the field of an instance's information each reads.
_FILTERED_FIELDS = {"InstanceIds": "InstanceId", "PingStatus": "PingStatus", "PlatformTypes": "PlatformType"}


def emulated_memory_image(instance_id: str) -> bytes:
    """The deterministic stand-in for an AVML image of one instance."""
    header = f"ec2ir emulator: a stand-in memory image of {instance_id}; no AVML ran\n".encode()
    return header + bytes(range(256)) * 16


def _ec2_of(account_id: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region]


def _ssm_information(ec2: Any, instance: Any) -> dict[str, Any] | None:
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


def _wanted(response: Any) -> dict[str, set[str]]:
    """DescribeInstanceInformation's filters, from either of its two filter parameters."""
    wanted: dict[str, set[str]] = {}
    for item in response._get_param("Filters", []) or []:
        wanted.setdefault(item["Key"], set()).update(item.get("Values", []))
    for item in response._get_param("InstanceInformationFilterList", []) or []:
        key = {"InstanceIds": "InstanceIds", "PingStatus": "PingStatus", "PlatformTypes": "PlatformTypes"}
        wanted.setdefault(key.get(item["key"], item["key"]), set()).update(item.get("valueSet", []))
    return wanted


def _describe_instance_information(response: Any) -> Any:
    from moto.core.responses import ActionResult

    ec2 = _ec2_of(response.current_account, response.region)
    wanted = _wanted(response)
    found = []
    for instance in ec2.all_instances():
        info = _ssm_information(ec2, instance)
        if info is None:
            continue
        if all(info[field] in wanted[name] for name, field in _FILTERED_FIELDS.items() if name in wanted):
            found.append(info)
    start = int(response._get_param("NextToken") or 0)
    size = int(response._get_param("MaxResults") or 50)
    page = found[start : start + size]
    token = str(start + size) if start + size < len(found) else None
    return ActionResult({"InstanceInformationList": page, "NextToken": token})


def _refuse_unmanaged(response: Any) -> None:
    """SendCommand's refusal of any named instance that SSM does not see Online."""
    from moto.ssm.exceptions import SSMException

    ec2 = _ec2_of(response.current_account, response.region)
    refused = []
    for instance_id in response._get_param("InstanceIds", []) or []:
        instance = next((i for i in ec2.all_instances() if i.id == instance_id), None)
        info = _ssm_information(ec2, instance) if instance is not None else None
        if info is None or info["PingStatus"] != "Online":
            refused.append(instance_id)
    if refused:
        raise SSMException(
            "InvalidInstanceId",
            f"Instances [[{', '.join(refused)}]] not in a valid state for account {response.current_account}",
        )


def _ssm_managed_instances() -> tuple[Patch, ...]:
    from moto.ssm.responses import SimpleSystemManagerResponse

    original_send_command_response = SimpleSystemManagerResponse.send_command

    def send_command_to_managed(response: Any) -> Any:
        _refuse_unmanaged(response)
        return original_send_command_response(response)

    return (
        Patch(SimpleSystemManagerResponse, "describe_instance_information", _describe_instance_information),
        Patch(SimpleSystemManagerResponse, "send_command", send_command_to_managed),
    )


SSM_MANAGED_INSTANCES = Fix(
    name="ssm-managed-instances",
    moto="`DescribeInstanceInformation` not implemented; commands go to any instance",
    aws="an instance is SSM-managed exactly while it has an instance profile (Online while running)",
    why="moto has no ``DescribeInstanceInformation`` (HTTP 500) and sends a command to any "
    "instance. The rule here: an EC2 instance is managed by SSM exactly while an IAM instance "
    "profile is associated with it (its agent's way to reach SSM; the Default Host Management "
    "Configuration is not modelled). It is then listed as ``Online`` and ``Linux`` (or Windows for "
    "a Windows AMI) while running, ``ConnectionLost`` while stopped; an unmanaged instance is "
    "absent, as on AWS, and ``SendCommand`` to it fails with ``InvalidInstanceId``.",
    build=_ssm_managed_instances,
)


def _ssm_command_targets() -> tuple[Patch, ...]:
    from moto.ssm.models import Command

    original_targets = Command._get_instance_ids_from_targets

    def instance_ids_from_targets(command: Any) -> list[str]:
        return list(original_targets(command)) if command.targets else []

    return (Patch(Command, "_get_instance_ids_from_targets", instance_ids_from_targets),)


SSM_COMMAND_TARGETS = Fix(
    name="ssm-command-targets",
    moto="`SendCommand` with `InstanceIds` also targets every other instance of the Region",
    aws="only the named instances",
    why="moto adds every instance of the Region to a command sent with ``InstanceIds`` alone (it "
    'reads the absent ``Targets`` as "all instances").',
    build=_ssm_command_targets,
)


def _stand_in_for_memory(backend: Any, instance_id: str, script: str) -> str:
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


def _answer_memory_command(backend: Any, command: Any) -> None:
    """Each invocation of a memory command answered as the instance would have."""
    script = "\n".join((command.parameters or {}).get("commands", []))
    if command.document_name == "AWS-RunShellScript" and MEMORY_MARKER in script:
        for invocation in command.invocations:
            output = _stand_in_for_memory(backend, invocation["InstanceId"], script)
            invocation["StandardOutputContent"] = output
            failed = "error=" in output
            invocation["Status"] = invocation["StatusDetails"] = "Failed" if failed else "Success"
            invocation["ResponseCode"] = 1 if failed else 0


def _ssm_command_output() -> tuple[Patch, ...]:
    from moto.ssm.models import SimpleSystemManagerBackend

    original_send_command = SimpleSystemManagerBackend.send_command

    def send_command_standing_in(backend: Any, *args: Any, **kwargs: Any) -> Any:
        command = original_send_command(backend, *args, **kwargs)
        _answer_memory_command(backend, command)
        return command

    return (Patch(SimpleSystemManagerBackend, "send_command", send_command_standing_in),)


SSM_COMMAND_OUTPUT = Fix(
    name="ssm-command-output",
    moto="every command `Success` with empty output",
    aws="the memory script's command stores a small stand-in image at its pre-signed URL and "
    "reports its real hash",
    why="moto runs nothing and answers every invocation ``Success`` with empty output. The "
    "emulator cannot run AVML either, so for an ``AWS-RunShellScript`` whose script prints an "
    "``EC2IR-MEMORY`` line it stands in for the instance: it stores a deterministic fake memory "
    "image at the script's presigned S3 URL (in moto's S3, as the upload would) and answers "
    "``Success`` with ``EC2IR-MEMORY sha256=<of those bytes> size=<n> version=<id>``. A stand-in, "
    "not an emulation of AVML: the image says so in its first line.",
    build=_ssm_command_output,
)


def _cancel_command(response: Any) -> Any:
    from moto.core.responses import ActionResult

    command = response.ssm_backend.get_command_by_id(response._get_param("CommandId"))
    named = set(response._get_param("InstanceIds", []) or [])
    for invocation in command.invocations:
        pending = invocation["Status"] in ("Pending", "InProgress", "Delayed")
        if pending and (not named or invocation["InstanceId"] in named):
            invocation["Status"] = invocation["StatusDetails"] = "Cancelled"
            command.status = "Cancelled"
    return ActionResult({})


def _ssm_cancel_command() -> tuple[Patch, ...]:
    from moto.ssm.responses import SimpleSystemManagerResponse

    return (Patch(SimpleSystemManagerResponse, "cancel_command", _cancel_command),)


SSM_CANCEL_COMMAND = Fix(
    name="ssm-cancel-command",
    moto="`CancelCommand` not implemented (HTTP 500)",
    aws="answered as AWS does; invocations still pending become `Cancelled`",
    why="moto has no ``CancelCommand`` (HTTP 500). It is answered as AWS does; invocations still "
    "pending become ``Cancelled``.",
    build=_ssm_cancel_command,
)
