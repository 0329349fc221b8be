"""Each containment step's record, typed, and its check where it is read back from the state table.

A step's record is written to the hold before the step applies, and read back to apply it again (a
rerun), to undo it (release, rejoin) or to plan it. Whoever holds the instance's credentials may
have rewritten the hold: a record read back is hostile input. ``parse`` checks its shape, and that
it names only what ec2ir ever records, before any change; a record that fails is refused, naming
what is wrong. The TypedDicts describe the stored shape, they do not convert it: the item in the
table stays exactly as it always was, and the journal and evidence checks
(ec2ir.evidence.provenance) compare it as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NotRequired, TypedDict, TypeVar

from ec2ir.core.errors import OriginalsTampered

StoredRecord = Mapping[str, object]  # a record as the hold has it: not checked yet

TAG_CASE, TAG_STATE, TAG_ISOLATED_AT = "ec2ir:case", "ec2ir:state", "ec2ir:isolated-at"
# The tags whose values before isolation the tags step records (and puts back, or removes).
RECORDED_TAGS = (TAG_CASE, TAG_ISOLATED_AT)
# The metadata options the metadata step records, every one sent back on release.
METADATA_FIELDS = (
    "HttpEndpoint",
    "HttpTokens",
    "HttpPutResponseHopLimit",
    "InstanceMetadataTags",
    "HttpProtocolIpv6",
)
METADATA_NUMBERS = frozenset({"HttpPutResponseHopLimit"})
# The start of every revoke-sessions deny policy's name: undo deletes no other policy.
REVOKE_POLICY_PREFIX = "ec2ir-revoke-sessions-"


class ProtectRecord(TypedDict):
    disable_api_termination: bool
    shutdown_behavior: str
    delete_on_termination: dict[str, bool]  # device name -> DeleteOnTermination


class AutoScalingRecord(TypedDict):
    group: str


class NetworkRecord(TypedDict):
    originals: Mapping[str, Sequence[str]]  # ENI -> its original groups
    eni_vpcs: NotRequired[Mapping[str, str]]  # what capture adds; the hold keeps it on its own


class TargetGroupRecord(TypedDict):
    arn: str
    port: int


class LoadBalancersRecord(TypedDict):
    target_groups: list[TargetGroupRecord]
    classic: list[str]  # Classic ELB names


class ProfileRecord(TypedDict):
    association_id: str
    profile_arn: str


class MetadataRecord(TypedDict):
    options: dict[str, str | int]  # some of METADATA_FIELDS -> their values


class RoleRecord(TypedDict):
    role: str
    pre_existing: bool  # the deny policy was there before ec2ir: undo leaves it


class RevokeRecord(TypedDict):
    policy: str
    issued_before: str
    roles: list[RoleRecord]


class TagsRecord(TypedDict):
    previous: dict[str, str | None]  # some of RECORDED_TAGS -> their value, None where absent
    isolated_at: NotRequired[str]  # absent from holds recorded before it was recorded


MALFORMED_HINT = (
    "nothing was changed; someone rewrote the hold in the state table: restore it from the case "
    "journal (`ec2ir report`) and the evidence, and find out who wrote it"
)

T = TypeVar("T")


def malformed(step: str, why: str) -> OriginalsTampered:
    """A step record read back from the state table that is not what ec2ir ever writes: refused
    as release refuses any rewritten hold."""
    return OriginalsTampered(f"its {step} record is malformed: {why}", MALFORMED_HINT)


_KINDS = {bool: "true or false", int: "a whole number", str: "a string"}


def _checked(step: str, where: str, value: object, kind: type[T]) -> T:
    # bool is an int to Python, never to a record
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    shown = "missing" if value is None else f"a {type(value).__name__}"
    raise malformed(step, f"{where} is {shown}, not {_KINDS[kind]}")


def _record(step: str, stored: object) -> Mapping[str, object]:
    if not isinstance(stored, Mapping):
        raise malformed(step, "not a map")
    return stored


def _map(step: str, stored: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = stored.get(key)
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise malformed(step, f"{key} is not a map")
    return value


def _list(step: str, stored: Mapping[str, object], key: str) -> Sequence[object]:
    value = stored.get(key)
    if not isinstance(value, list | tuple):
        raise malformed(step, f"{key} is not a list")
    return value


def _only(step: str, where: str, names: object, allowed: Sequence[str]) -> None:
    """Refuse names ec2ir never records: undo would act on them (other tags, other options)."""
    if not isinstance(names, Mapping) or set(names) - set(allowed):
        raise malformed(step, f"{where} may name only {', '.join(allowed)}")


def protect_record(stored: object) -> ProtectRecord:
    step = "protect"
    record = _record(step, stored)
    devices = _map(step, record, "delete_on_termination")
    return {
        "disable_api_termination": _checked(
            step, "disable_api_termination", record.get("disable_api_termination"), bool
        ),
        "shutdown_behavior": _checked(step, "shutdown_behavior", record.get("shutdown_behavior"), str),
        "delete_on_termination": {
            device: _checked(step, "delete_on_termination", delete, bool)
            for device, delete in devices.items()
        },
    }


def autoscaling_record(stored: object) -> AutoScalingRecord:
    step = "autoscaling"
    return {"group": _checked(step, "group", _record(step, stored).get("group"), str)}


def network_record(stored: object) -> NetworkRecord:
    step = "network"
    originals = _map(step, _record(step, stored), "originals")
    return {
        "originals": {
            eni: [_checked(step, "originals", group, str) for group in _list(step, originals, eni)]
            for eni in originals
        }
    }


def load_balancers_record(stored: object) -> LoadBalancersRecord:
    step = "load-balancers"
    record = _record(step, stored)
    groups = [_record(step, group) for group in _list(step, record, "target_groups")]
    return {
        "target_groups": [
            {
                "arn": _checked(step, "target_groups' arn", group.get("arn"), str),
                "port": _checked(step, "target_groups' port", group.get("port"), int),
            }
            for group in groups
        ],
        "classic": [_checked(step, "classic", name, str) for name in _list(step, record, "classic")],
    }


def profile_record(stored: object) -> ProfileRecord:
    step = "credentials"
    record = _record(step, stored)
    return {
        "association_id": _checked(step, "association_id", record.get("association_id"), str),
        "profile_arn": _checked(step, "profile_arn", record.get("profile_arn"), str),
    }


def metadata_record(stored: object) -> MetadataRecord:
    step = "metadata"
    options = _map(step, _record(step, stored), "options")
    _only(step, "options", options, METADATA_FIELDS)
    return {"options": {name: _option(step, name, value) for name, value in options.items()}}


def _option(step: str, name: str, value: object) -> str | int:
    return _checked(step, name, value, int) if name in METADATA_NUMBERS else _checked(step, name, value, str)


def revoke_record(stored: object) -> RevokeRecord:
    step = "revoke-sessions"
    record = _record(step, stored)
    policy = _checked(step, "policy", record.get("policy"), str)
    if not policy.startswith(REVOKE_POLICY_PREFIX):
        raise malformed(step, f"its policy is not one of ec2ir's ({REVOKE_POLICY_PREFIX}...)")
    roles = [_record(step, role) for role in _list(step, record, "roles")]
    return {
        "policy": policy,
        "issued_before": _checked(step, "issued_before", record.get("issued_before"), str),
        "roles": [
            {
                "role": _checked(step, "roles' role", role.get("role"), str),
                "pre_existing": _checked(step, "roles' pre_existing", role.get("pre_existing"), bool),
            }
            for role in roles
        ],
    }


def tags_record(stored: object) -> TagsRecord:
    step = "tags"
    record = _record(step, stored)
    previous = _map(step, record, "previous")
    _only(step, "previous", previous, RECORDED_TAGS)
    parsed: TagsRecord = {
        "previous": {
            key: None if value is None else _checked(step, "previous", value, str)
            for key, value in previous.items()
        }
    }
    if "isolated_at" in record:
        parsed["isolated_at"] = _checked(step, "isolated_at", record["isolated_at"], str)
    return parsed


# Each step's check, by the step's name (ec2ir.containment.steps names its steps so).
PARSERS: dict[str, Callable[[object], Mapping[str, object]]] = {
    "protect": protect_record,
    "autoscaling": autoscaling_record,
    "network": network_record,
    "load-balancers": load_balancers_record,
    "credentials": profile_record,
    "metadata": metadata_record,
    "revoke-sessions": revoke_record,
    "tags": tags_record,
}
