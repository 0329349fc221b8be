"""The network-ACL fix: entries changed as EC2 changes them (DryRun, rule numbers, missing
entries and ACLs refused with EC2's codes)."""

from __future__ import annotations

from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch

_ENTRY_CALLS = ("create_network_acl_entry", "replace_network_acl_entry", "delete_network_acl_entry")


def _refuse_rule_number(number: Any) -> None:
    from moto.ec2.exceptions import EC2ClientError

    if not str(number).isdigit() or not 1 <= int(number) <= 32766:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Value ({number}) for parameter ruleNumber is invalid. Rulenumber must be in range 1..32766",
        )


def _entry_call(original: Any) -> Any:
    """Create/Replace/DeleteNetworkAclEntry as EC2 takes them: DryRun honoured, and a rule
    number from 1 to 32766 only."""

    def call(response: Any) -> Any:
        response.error_on_dryrun()
        _refuse_rule_number(response._get_param("RuleNumber"))
        return original(response)

    return call


def _delete_network_acl_entry(backend: Any, network_acl_id: str, rule_number: int, egress: bool) -> Any:
    from moto.ec2.exceptions import EC2ClientError

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


def _nacl_entries() -> tuple[Patch, ...]:
    from moto.ec2.models.network_acls import NetworkAclBackend
    from moto.ec2.responses.network_acls import NetworkACLs

    original_describe_acls = NetworkAclBackend.describe_network_acls

    def describe_network_acls(backend: Any, network_acl_ids: Any = None, filters: Any = None) -> Any:
        for network_acl_id in network_acl_ids or []:
            backend.get_network_acl(network_acl_id)  # InvalidNetworkAclID.NotFound
        return original_describe_acls(backend, network_acl_ids, filters)

    return (
        *(Patch(NetworkACLs, action, _entry_call(getattr(NetworkACLs, action))) for action in _ENTRY_CALLS),
        Patch(NetworkAclBackend, "delete_network_acl_entry", _delete_network_acl_entry),
        Patch(NetworkAclBackend, "describe_network_acls", describe_network_acls),
    )


NACL_ENTRIES = Fix(
    name="nacl-entries",
    moto="`Create/Replace/DeleteNetworkAclEntry` ignore `DryRun`; deleting or replacing a missing "
    "entry is an HTTP 500; any rule number is taken; `DescribeNetworkAcls` of a missing ACL "
    "answers `InvalidRouteTableID.NotFound`",
    aws="`DryRun` answers `DryRunOperation` and changes nothing; `InvalidNetworkAclEntry.NotFound`; "
    "rule numbers 1 to 32766 only (`InvalidParameterValue`); `InvalidNetworkAclID.NotFound`",
    why="moto ignores ``DryRun`` on ``CreateNetworkAclEntry``, ``ReplaceNetworkAclEntry`` and "
    "``DeleteNetworkAclEntry`` (the change is made); EC2 answers ``DryRunOperation`` and changes "
    "nothing. moto fails with HTTP 500 on deleting or replacing an entry that does not exist; EC2 "
    "answers ``InvalidNetworkAclEntry.NotFound``. moto accepts any rule number; EC2 takes 1 to "
    "32766 (32767 and up are its own, the default ``*`` rule among them) and refuses the rest with "
    "``InvalidParameterValue``. ``DescribeNetworkAcls`` of an ACL id that does not exist answers "
    "``InvalidRouteTableID.NotFound`` in moto, ``InvalidNetworkAclID.NotFound`` in EC2. (A rule "
    "number already taken in the same direction is refused with ``NetworkAclEntryAlreadyExists`` "
    "by both.)",
    build=_nacl_entries,
)
