"""The EC2 fixes about instances: DescribeInstances by id in one page, metadata options kept,
and a console screenshot."""

from __future__ import annotations

import base64
from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch


def _describe_pagination() -> tuple[Patch, ...]:
    from moto.core.responses import ActionResult
    from moto.ec2.responses.instances import InstanceResponse

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

    return (Patch(InstanceResponse, "describe_instances", describe_instances),)


DESCRIBE_PAGINATION = Fix(
    name="describe-pagination",
    moto="`DescribeInstances(InstanceIds=...)` truncated at 100 reservations with a `NextToken`",
    aws="every named instance in one response",
    why="with ``InstanceIds``, EC2 returns every named instance in one response; moto truncates at "
    "100 reservations and hands back a ``NextToken``.",
    build=_describe_pagination,
)


def _modify_instance_metadata_options(response: Any) -> Any:
    from moto.core.responses import ActionResult

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


def _metadata_options_kept() -> tuple[Patch, ...]:
    from moto.ec2.responses.instances import InstanceResponse

    return (Patch(InstanceResponse, "modify_instance_metadata_options", _modify_instance_metadata_options),)


METADATA_OPTIONS_KEPT = Fix(
    name="metadata-options-kept",
    moto="`ModifyInstanceMetadataOptions` resets the fields not given, and ignores `DryRun`",
    aws="the other fields are kept; `DryRun` answers `DryRunOperation`",
    why="moto's ``ModifyInstanceMetadataOptions`` rebuilds the options from the request alone, so a "
    "field not given is lost (``HttpEndpoint`` reads back null), and it ignores ``DryRun``, "
    "changing the instance. EC2 keeps every field the request does not give, and a DryRun changes "
    "nothing (``DryRunOperation``).",
    build=_metadata_options_kept,
)


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


def _get_console_screenshot(response: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError

    instance = response.ec2_backend.get_instance(response._get_param("InstanceId"))
    response.error_on_dryrun()
    if instance._state.name != "running":
        raise EC2ClientError(
            "IncorrectInstanceState",
            f"The instance '{instance.id}' is not in a state from which a screenshot can be taken",
        )
    image = base64.b64encode(SCREENSHOT_JPEG).decode()
    return ActionResult({"InstanceId": instance.id, "ImageData": image})


def _console_screenshot() -> tuple[Patch, ...]:
    from moto.ec2.responses import EC2Response

    return (Patch(EC2Response, "get_console_screenshot", _get_console_screenshot),)


CONSOLE_SCREENSHOT = Fix(
    name="console-screenshot",
    moto="`GetConsoleScreenshot` not implemented (HTTP 500)",
    aws="a small valid JPEG for a running instance; `IncorrectInstanceState` otherwise",
    why="moto has no ``GetConsoleScreenshot`` (HTTP 500). A running instance answers with a small "
    "valid JPEG (``ImageData``, base64) and its ``InstanceId``; any other state is refused with "
    "``IncorrectInstanceState``.",
    build=_console_screenshot,
)
