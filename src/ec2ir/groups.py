"""The per-VPC forensic and isolation security groups: find, create, verify and repair.

The isolation group is the whole of containment, so its rules are checked on every run. Rules are
compared as normalised tuples; anything that is not the safe set is revoked by rule id, anything
missing is authorised, and the group is read back once more. If it still differs, the run refuses
to isolate into it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws import Aws, translated
from ec2ir.errors import AwsError, Ec2irError, UnsafeIsolationGroup
from ec2ir.models import VpcGroups

ROLE_TAG = "ec2ir:role"
FORENSIC = "forensic"
ISOLATION = "isolation"
ALLOW_ALL = "allow-all"
GROUP_NAMES = {FORENSIC: "ec2ir-forensic", ISOLATION: "ec2ir-isolation", ALLOW_ALL: "ec2ir-untrack"}
DESCRIPTIONS = {
    FORENSIC: "ec2ir forensic access: SSH from the office only",
    ISOLATION: "ec2ir isolation: SSH from the forensic group only, no egress",
    ALLOW_ALL: "ec2ir untrack: all traffic both ways, held for a moment so tracked flows drop",
}
LOOPBACK = "127.0.0.1/32"


@dataclass(frozen=True, order=True)
class Rule:
    """One security-group rule, normalised so that desired and actual rules compare equal."""

    egress: bool
    protocol: str
    from_port: int
    to_port: int
    peer: str  # a CIDR, or a security group id
    # The account that owns a peer group in another account; not part of a rule's identity.
    peer_owner: str = field(default="", compare=False)

    def permission(self) -> dict[str, Any]:
        perm: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.protocol != "-1":
            perm["FromPort"] = self.from_port
            perm["ToPort"] = self.to_port
        if self.peer.startswith("sg-"):
            pair = {"GroupId": self.peer} | ({"UserId": self.peer_owner} if self.peer_owner else {})
            perm["UserIdGroupPairs"] = [pair]
        elif ":" in self.peer:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.peer}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.peer}]
        return perm


def ssh_from(peer: str, peer_owner: str = "") -> Rule:
    return Rule(egress=False, protocol="tcp", from_port=22, to_port=22, peer=peer, peer_owner=peer_owner)


def rule_from_api(item: dict[str, Any]) -> Rule:
    protocol = str(item.get("IpProtocol", "-1"))
    whole_range = protocol == "-1"
    peer = (
        item.get("CidrIpv4")
        or item.get("CidrIpv6")
        or item.get("ReferencedGroupInfo", {}).get("GroupId")
        or item.get("PrefixListId")
        or "?"
    )
    return Rule(
        egress=bool(item.get("IsEgress")),
        protocol=protocol,
        from_port=-1 if whole_range else int(item.get("FromPort", -1)),
        to_port=-1 if whole_range else int(item.get("ToPort", -1)),
        peer=str(peer),
    )


@dataclass(frozen=True)
class ForensicSource:
    """A forensic group ec2ir does not manage (say, the security account's, over peering): the
    isolation group admits SSH from it, and ec2ir neither creates a forensic group nor changes it."""

    group_id: str
    owner: str = ""  # its account, when that is another account


def isolation_rules(forensic_group_id: str, forensic_owner: str = "") -> frozenset[Rule]:
    return frozenset(
        {
            ssh_from(forensic_group_id, forensic_owner),
            Rule(egress=True, protocol="-1", from_port=-1, to_port=-1, peer=LOOPBACK),
        }
    )


def allow_all_rules() -> frozenset[Rule]:
    """All traffic, both directions, IPv4 and IPv6: the only rule set under which EC2 stops
    tracking a flow, so that the next swap drops it."""
    return frozenset(
        Rule(egress=egress, protocol="-1", from_port=-1, to_port=-1, peer=peer)
        for egress in (False, True)
        for peer in ("0.0.0.0/0", "::/0")
    )


def rules_of(aws: Aws, group_ids: list[str]) -> dict[str, dict[str, Rule]]:
    """Every rule of each group, keyed by group id and then rule id, in one paginated read."""
    rules: dict[str, dict[str, Rule]] = {group_id: {} for group_id in group_ids}
    if not group_ids:
        return rules
    paginator = aws.ec2().get_paginator("describe_security_group_rules")
    with translated("ec2", "DescribeSecurityGroupRules"):
        for page in paginator.paginate(Filters=[{"Name": "group-id", "Values": group_ids}]):
            for item in page.get("SecurityGroupRules", []):
                rules.setdefault(item["GroupId"], {})[item["SecurityGroupRuleId"]] = rule_from_api(item)
    return rules


# Rules read from DescribeSecurityGroups carry no rule ids; they are keyed by this prefix, and a
# group whose listed rules differ from the desired set is read again with ids before any revoke.
LISTED = "listed:"
PEER_KEYS = {
    "IpRanges": "CidrIp",
    "Ipv6Ranges": "CidrIpv6",
    "UserIdGroupPairs": "GroupId",
    "PrefixListIds": "PrefixListId",
}


def listed_rules(group: dict[str, Any]) -> dict[str, Rule] | None:
    """A group's rules from its DescribeSecurityGroups item, or None if any permission has a
    shape this does not know (then the caller reads the rules themselves)."""
    rules: dict[str, Rule] = {}
    for egress, key in ((False, "IpPermissions"), (True, "IpPermissionsEgress")):
        for permission in group.get(key, []):
            protocol = str(permission.get("IpProtocol", "-1"))
            whole_range = protocol == "-1"
            from_port = -1 if whole_range else int(permission.get("FromPort", -1))
            to_port = -1 if whole_range else int(permission.get("ToPort", -1))
            peers = [
                str(peer[field_name])
                for list_key, field_name in PEER_KEYS.items()
                for peer in permission.get(list_key, [])
            ]
            unknown = set(permission) - set(PEER_KEYS) - {"IpProtocol", "FromPort", "ToPort"}
            if unknown or not peers:
                return None
            for peer in peers:
                rules[f"{LISTED}{len(rules)}"] = Rule(egress, protocol, from_port, to_port, peer)
    return rules


def current_rules(aws: Aws, group_id: str) -> dict[str, Rule]:
    """Every rule of one group, keyed by its rule id."""
    return rules_of(aws, [group_id])[group_id]


# A racing run may add or revoke the same rule a moment earlier; the next round re-reads the group.
RACE_CODES = frozenset(
    {
        "InvalidPermission.Duplicate",
        "InvalidPermission.NotFound",
        "InvalidSecurityGroupRuleId.NotFound",
        "InvalidGroup.NotFound",  # a group created a moment ago is not visible everywhere yet
    }
)
ENFORCE_ROUNDS = 3


@dataclass(frozen=True)
class Enforced:
    changes: tuple[str, ...]
    settled: frozenset[Rule] | None  # the rules last read, when they matched; None if unconfirmed


def enforce_rules(
    aws: Aws, group_id: str, desired: frozenset[Rule], known: dict[str, Rule] | None = None
) -> Enforced:
    """Make a group's rules exactly ``desired``; ``known`` saves the first read when the caller
    has just read the group."""
    changes: list[str] = []
    for round_number in range(ENFORCE_ROUNDS):
        if round_number:
            time.sleep(0.2 * round_number)  # let a racing run's change, or a new group, settle
        actual = known if known is not None and round_number == 0 else current_rules(aws, group_id)
        extra = {rid: rule for rid, rule in actual.items() if rule not in desired}
        missing = sorted(desired - set(actual.values()))
        if not extra and not missing:
            return Enforced(tuple(changes), frozenset(actual.values()))
        if any(rid.startswith(LISTED) for rid in extra):  # revoking needs the rules' own ids
            actual = current_rules(aws, group_id)
            extra = {rid: rule for rid, rule in actual.items() if rule not in desired}
            missing = sorted(desired - set(actual.values()))
            if not extra and not missing:
                return Enforced(tuple(changes), frozenset(actual.values()))
        for egress in (False, True):
            revoke_ids = [rid for rid, rule in extra.items() if rule.egress == egress]
            if revoke_ids and _tolerating_races(_revoke, aws, group_id, egress, revoke_ids):
                changes.extend(f"revoked {describe(extra[rid])}" for rid in revoke_ids)
            add = [rule for rule in missing if rule.egress == egress]
            if add and _tolerating_races(_authorize, aws, group_id, egress, add):
                changes.extend(f"added {describe(rule)}" for rule in add)
    return Enforced(tuple(changes), None)


def _tolerating_races(change: Callable[..., None], *args: Any) -> bool:
    """Apply one change; False if a racing run had already made it."""
    try:
        change(*args)
    except AwsError as error:
        if error.code in RACE_CODES:
            return False
        raise
    return True


def _revoke(aws: Aws, group_id: str, egress: bool, rule_ids: list[str]) -> None:
    ec2 = aws.ec2()
    operation = "RevokeSecurityGroupEgress" if egress else "RevokeSecurityGroupIngress"
    with translated("ec2", operation):
        revoke = ec2.revoke_security_group_egress if egress else ec2.revoke_security_group_ingress
        revoke(GroupId=group_id, SecurityGroupRuleIds=rule_ids)


def _authorize(aws: Aws, group_id: str, egress: bool, rules: list[Rule]) -> None:
    ec2 = aws.ec2()
    operation = "AuthorizeSecurityGroupEgress" if egress else "AuthorizeSecurityGroupIngress"
    with translated("ec2", operation):
        authorize = ec2.authorize_security_group_egress if egress else ec2.authorize_security_group_ingress
        authorize(GroupId=group_id, IpPermissions=[rule.permission() for rule in rules])


def describe(rule: Rule) -> str:
    direction = "egress" if rule.egress else "ingress"
    if rule.protocol == "-1":
        ports = "all traffic"
    elif rule.from_port == rule.to_port:
        ports = f"{rule.protocol}/{rule.from_port}"
    else:
        ports = f"{rule.protocol}/{rule.from_port}-{rule.to_port}"
    return f"{direction} {ports} {'to' if rule.egress else 'from'} {rule.peer}"


def find_groups(aws: Aws, vpc_id: str, by_name: bool = False) -> dict[str, list[str]]:
    """Every ec2ir group of a VPC by role, lowest id first: found by tag, or by name for a group
    whose tag is gone."""
    return find_groups_in(aws, [vpc_id], by_name).get(vpc_id, {})


def find_groups_in(
    aws: Aws, vpc_ids: list[str] | None, by_name: bool = False
) -> dict[str, dict[str, list[str]]]:
    """``find_groups`` for many VPCs (None: every VPC) in one paginated read: VPC -> role -> ids."""
    return describe_groups(aws, vpc_ids, by_name)[0]


def describe_groups(
    aws: Aws, vpc_ids: list[str] | None, by_name: bool = False
) -> tuple[dict[str, dict[str, list[str]]], dict[str, dict[str, Rule]]]:
    """``find_groups_in``, and the rules each group listed in the same read (group id -> rules),
    so that groups already safe cost no second read."""
    role_filter = (
        {"Name": "group-name", "Values": list(GROUP_NAMES.values())}
        if by_name
        else {"Name": f"tag:{ROLE_TAG}", "Values": list(GROUP_NAMES)}
    )
    role_by_name = {name: role for role, name in GROUP_NAMES.items()}
    found: dict[str, dict[str, list[str]]] = {vpc_id: {} for vpc_id in vpc_ids or []}
    filters = [role_filter] if vpc_ids is None else [{"Name": "vpc-id", "Values": vpc_ids}, role_filter]
    paginator = aws.ec2().get_paginator("describe_security_groups")
    with translated("ec2", "DescribeSecurityGroups"):
        pages = paginator.paginate(Filters=filters)
        groups = [group for page in pages for group in page.get("SecurityGroups", [])]
    rules: dict[str, dict[str, Rule]] = {}
    for group in sorted(groups, key=lambda g: str(g["GroupId"])):
        tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
        role = role_by_name.get(group["GroupName"]) if by_name else tags.get(ROLE_TAG)
        if role in GROUP_NAMES:
            found.setdefault(group["VpcId"], {}).setdefault(role, []).append(str(group["GroupId"]))
            listed = listed_rules(group)
            if listed is not None:
                rules[str(group["GroupId"])] = listed
    return found, rules


def create_group(aws: Aws, vpc_id: str, role: str, case_id: str) -> str:
    """Create one ec2ir group; if a racing run created it first, use that one."""
    try:
        with translated("ec2", "CreateSecurityGroup"):
            response = aws.ec2().create_security_group(
                GroupName=GROUP_NAMES[role],
                Description=DESCRIPTIONS[role],
                VpcId=vpc_id,
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": [
                            {"Key": ROLE_TAG, "Value": role},
                            {"Key": "ec2ir:created-for-case", "Value": case_id},
                            {"Key": "Name", "Value": GROUP_NAMES[role]},
                        ],
                    }
                ],
            )
        return str(response["GroupId"])
    except AwsError as error:
        if error.code != "InvalidGroup.Duplicate":
            raise
        existing = find_groups(aws, vpc_id, by_name=True).get(role)
        if not existing:
            raise AwsError(
                error.code,
                f"{GROUP_NAMES[role]} exists in {vpc_id} but cannot be read back yet; run again",
                error.action,
            ) from error
        return existing[0]


def ensure_vpc_groups(
    aws: Aws, vpc_id: str, case_id: str, office_cidr: str | None, untrack: bool = True
) -> VpcGroups:
    """``ensure_groups`` for one VPC; its error, if any, is raised."""
    groups, errors = ensure_groups(aws, [vpc_id], case_id, office_cidr, untrack)
    if vpc_id in errors:
        raise errors[vpc_id]
    return groups[vpc_id]


def ensure_groups(
    aws: Aws,
    vpc_ids: list[str],
    case_id: str,
    office_cidr: str | None,
    untrack: bool = True,
    found: dict[str, dict[str, list[str]]] | None = None,
    forensic: ForensicSource | None = None,
    listed: dict[str, dict[str, Rule]] | None = None,
) -> tuple[dict[str, VpcGroups], dict[str, Ec2irError]]:
    """Find or create each VPC's ec2ir groups and make their rules exact.

    In the steady state this costs two reads for all VPCs together: the groups by tag, then their
    rules. The forensic group's ingress is set to SSH from ``office_cidr`` when one is given;
    without one, a new forensic group has no ingress at all, and an existing one is left as it is.
    A VPC whose groups cannot be made safe is returned as an error, never as groups. ``found``
    (from ``find_groups_in``) saves the first read when the caller made it already, and
    ``listed`` (from ``describe_groups``) the second, for groups whose listed rules are safe.
    """
    roles = tuple(
        role
        for role in (FORENSIC, ISOLATION, ALLOW_ALL)
        if (role != ALLOW_ALL or untrack) and (role != FORENSIC or forensic is None)
    )
    if found is None:
        found = find_groups_in(aws, vpc_ids) if vpc_ids else {}
    chosen: dict[str, dict[str, str]] = {}
    created: dict[str, tuple[str, ...]] = {}
    errors: dict[str, Ec2irError] = {}
    for vpc_id in vpc_ids:
        chosen[vpc_id] = {role: ids[0] for role, ids in found.get(vpc_id, {}).items()}
        if forensic is not None:  # the security team's own group, wherever it lives
            chosen[vpc_id][FORENSIC] = forensic.group_id
        created[vpc_id] = tuple(role for role in roles if role not in chosen[vpc_id])
        try:
            for role in created[vpc_id]:  # forensic first: the isolation group's ingress refers to it
                chosen[vpc_id][role] = create_group(aws, vpc_id, role, case_id)
        except Ec2irError as error:
            errors[vpc_id] = error
    usable = [vpc_id for vpc_id in vpc_ids if vpc_id not in errors]
    ours = {
        gid for vpc in usable for role, gid in chosen[vpc].items() if role != FORENSIC or forensic is None
    }
    known = {gid: rules for gid, rules in (listed or {}).items() if gid in ours}
    known |= rules_of(aws, sorted(ours - set(known)))
    result: dict[str, VpcGroups] = {}
    for vpc_id in usable:
        try:
            result[vpc_id] = _make_safe(
                aws,
                vpc_id,
                chosen[vpc_id],
                found.get(vpc_id, {}),
                created[vpc_id],
                known,
                None if forensic else office_cidr,  # an outside forensic group is not ours to change
                untrack,
                forensic.owner if forensic else "",
            )
        except Ec2irError as error:
            errors[vpc_id] = error
    return result, errors


def _make_safe(
    aws: Aws,
    vpc_id: str,
    groups: dict[str, str],
    found: dict[str, list[str]],
    created: tuple[str, ...],
    known: dict[str, dict[str, Rule]],
    office_cidr: str | None,
    untrack: bool,
    forensic_owner: str = "",
) -> VpcGroups:
    forensic_id, isolation_id = groups[FORENSIC], groups[ISOLATION]
    allow_all_id = groups.get(ALLOW_ALL, "") if untrack else ""
    # Any group tagged for containment, including stray duplicates, can never be an original.
    containment = {isolation_id, *found.get(ISOLATION, []), *found.get(ALLOW_ALL, [])} | (
        {allow_all_id} if allow_all_id else set()
    )

    repaired: list[str] = []
    if office_cidr is not None:
        keep_egress = {rule for rule in known.get(forensic_id, {}).values() if rule.egress}
        enforced = enforce_rules(
            aws, forensic_id, frozenset({ssh_from(office_cidr)} | keep_egress), known.get(forensic_id)
        )
        if FORENSIC not in created:
            repaired += [f"forensic group {forensic_id}: {change}" for change in enforced.changes]

    if allow_all_id:
        enforced = enforce_rules(aws, allow_all_id, allow_all_rules(), known.get(allow_all_id))
        if ALLOW_ALL not in created:
            repaired += [
                f"allow-all group {allow_all_id} had drifted: {change}" for change in enforced.changes
            ]

    safe = isolation_rules(forensic_id, forensic_owner)
    enforced = enforce_rules(aws, isolation_id, safe, known.get(isolation_id))
    if ISOLATION not in created:
        repaired += [f"isolation group {isolation_id} had drifted: {change}" for change in enforced.changes]
    # A rule missing (say, not yet visible after creation) only makes the group stricter; any
    # rule beyond the safe set would let traffic through, and then the group is never used.
    final = (
        enforced.settled
        if enforced.settled is not None
        else frozenset(current_rules(aws, isolation_id).values())
    )
    unexpected_rules = final - safe
    if unexpected_rules:
        unexpected = ", ".join(describe(rule) for rule in sorted(unexpected_rules))
        raise UnsafeIsolationGroup(
            f"isolation group {isolation_id} in {vpc_id} still has unsafe rules after repair "
            f"(unexpected: {unexpected}); refusing to isolate into it",
            "remove the extra rules by hand or check who keeps adding them",
        )
    return VpcGroups(
        vpc_id=vpc_id,
        forensic_group_id=forensic_id,
        isolation_group_id=isolation_id,
        allow_all_group_id=allow_all_id,
        containment_group_ids=frozenset(containment),
        created=created,
        repaired=tuple(repaired),
    )
