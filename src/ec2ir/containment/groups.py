"""The per-VPC forensic, isolation and allow-all security groups: find, create, verify and repair.

A group is ec2ir's only if the state table records its id (``StateStore.record_group``): a tag
can be set by anyone with ec2:CreateTags, a stolen instance role included, so a tag never makes a
group ec2ir's, and a tagged group that is not recorded is left alone and named in a note.

The isolation group is the whole of containment, so its rules are checked on every run. Rules are
compared as normalised tuples; anything that is not the safe set is revoked by rule id, anything
missing is authorised, and the group is read back once more. If it still differs, the run refuses
to isolate into it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ec2ir.aws.session import Aws, translated
from ec2ir.core.errors import AwsError, Ec2irError, UnsafeIsolationGroup
from ec2ir.core.models import ACTIVE_STATUSES, GroupRecord, VpcGroups
from ec2ir.store.state import StateStore

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef, IpPermissionTypeDef, UserIdGroupPairTypeDef

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

    def permission(self) -> IpPermissionTypeDef:
        perm: IpPermissionTypeDef = {"IpProtocol": self.protocol}
        if self.protocol != "-1":
            perm["FromPort"] = self.from_port
            perm["ToPort"] = self.to_port
        if self.peer.startswith("sg-"):
            pair: UserIdGroupPairTypeDef = {"GroupId": self.peer}
            if self.peer_owner:
                pair["UserId"] = self.peer_owner
            perm["UserIdGroupPairs"] = [pair]
        elif ":" in self.peer:
            perm["Ipv6Ranges"] = [{"CidrIpv6": self.peer}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.peer}]
        return perm


def ssh_from(peer: str, peer_owner: str = "") -> Rule:
    return Rule(egress=False, protocol="tcp", from_port=22, to_port=22, peer=peer, peer_owner=peer_owner)


def rule_from_api(item: Mapping[str, Any]) -> Rule:
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


def listed_rules(group: Mapping[str, Any]) -> dict[str, Rule] | None:
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
# The pause before each round. The round right after ec2ir's own change re-reads at once: that
# confirming read is the common case and almost always matches, so it must not wait. Only a
# re-read that still differed (a racing run, or AWS's eventual consistency, such as a group
# created a moment ago) earns a pause before the next round, longer each time. Rounds 2 and 3
# keep the 0.2 s and 0.4 s that the racing case has always had to settle.
ENFORCE_PAUSES = (0.0, 0.0, 0.2, 0.4)


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
    for round_number, pause in enumerate(ENFORCE_PAUSES):
        if pause:
            aws.sleep(pause)  # the last re-read still differed: let a racing run's change settle
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


@dataclass(frozen=True)
class SeenGroup:
    """A security group as one DescribeSecurityGroups read found it. Its tag is only a hint for
    humans and IAM conditions: anyone with ec2:CreateTags can set it."""

    group_id: str
    vpc_id: str
    name: str
    role_tag: str
    rules: dict[str, Rule] | None  # as listed, or None when their shape needs a read of its own


def _seen(groups: Iterable[Mapping[str, Any]]) -> dict[str, SeenGroup]:
    seen: dict[str, SeenGroup] = {}
    for group in sorted(groups, key=lambda g: str(g["GroupId"])):
        tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
        seen[str(group["GroupId"])] = SeenGroup(
            group_id=str(group["GroupId"]),
            vpc_id=str(group.get("VpcId", "")),
            name=str(group.get("GroupName", "")),
            role_tag=str(tags.get(ROLE_TAG, "")),
            rules=listed_rules(group),
        )
    return seen


def _describe(aws: Aws, filters: list[FilterTypeDef]) -> dict[str, SeenGroup]:
    paginator = aws.ec2().get_paginator("describe_security_groups")
    with translated("ec2", "DescribeSecurityGroups"):
        pages = paginator.paginate(Filters=filters)
        return _seen(group for page in pages for group in page.get("SecurityGroups", []))


def describe_groups(aws: Aws) -> dict[str, SeenGroup]:
    """Every group tagged as one of ec2ir's, in every VPC, in one paginated read: ec2ir's own
    (created with the tag) are among them, and the rest are named in a note, never used."""
    return _describe(aws, [{"Name": f"tag:{ROLE_TAG}", "Values": list(GROUP_NAMES)}])


def describe_by_id(aws: Aws, group_ids: Iterable[str]) -> dict[str, SeenGroup]:
    """The named groups that still exist (a filter, so that one deleted id fails nothing)."""
    ids = sorted(set(group_ids))
    return _describe(aws, [{"Name": "group-id", "Values": ids}]) if ids else {}


def create_group(aws: Aws, vpc_id: str, role: str, case_id: str) -> str:
    """Create one ec2ir group under a name no one can have taken first: a group named like ec2ir's
    that someone else made is never adopted through a name clash."""
    name = f"{GROUP_NAMES[role]}-{secrets.token_hex(4)}"
    with translated("ec2", "CreateSecurityGroup"):
        response = aws.ec2().create_security_group(
            GroupName=name,
            Description=DESCRIPTIONS[role],
            VpcId=vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [
                        {"Key": ROLE_TAG, "Value": role},
                        {"Key": "ec2ir:created-for-case", "Value": case_id},
                        {"Key": "Name", "Value": name},
                    ],
                }
            ],
        )
    return str(response["GroupId"])


def _delete_quietly(aws: Aws, group_id: str) -> None:
    """A group that lost the race to be recorded is nobody's: remove it (never worn by any ENI)."""
    try:
        with translated("ec2", "DeleteSecurityGroup"):
            aws.ec2().delete_security_group(GroupId=group_id)
    except Ec2irError:
        pass  # left behind: unrecorded, so never used, and named in the next run's notes


def foreign_enis(aws: Aws, store: StateStore, group_id: str) -> list[str]:
    """The ENIs using the group that no active hold of ec2ir's holds: ec2ir never changes the
    rules of a group they wear, as that would change someone else's traffic."""
    paginator = aws.ec2().get_paginator("describe_network_interfaces")
    users: list[tuple[str, str]] = []
    with translated("ec2", "DescribeNetworkInterfaces"):
        for page in paginator.paginate(Filters=[{"Name": "group-id", "Values": [group_id]}]):
            for eni in page.get("NetworkInterfaces", []):
                instance_id = str(eni.get("Attachment", {}).get("InstanceId", ""))
                users.append((str(eni["NetworkInterfaceId"]), instance_id))
    if not users:
        return []
    holds = store.get_many([instance for _, instance in users if instance])
    foreign = []
    for eni_id, instance_id in users:
        hold = holds.get(instance_id)
        held = (
            hold is not None
            and hold.status in ACTIVE_STATUSES
            and (eni_id in hold.originals or eni_id in hold.unknown_originals)
        )
        if not held:
            foreign.append(eni_id)
    return foreign


def legacy_rules_match(role: str, rules: frozenset[Rule], isolation_safe: frozenset[Rule]) -> bool:
    """Whether a group an earlier version made (known by tag only) has exactly ec2ir's rules."""
    if role == ISOLATION:
        return rules == isolation_safe
    if role == ALLOW_ALL:
        return rules == allow_all_rules()
    ingress = [rule for rule in rules if not rule.egress]
    egress = {rule for rule in rules if rule.egress}
    default_egress = {Rule(egress=True, protocol="-1", from_port=-1, to_port=-1, peer="0.0.0.0/0")}
    ssh_from_a_cidr = all(
        rule == ssh_from(rule.peer) and not rule.peer.startswith(("sg-", "pl-")) for rule in ingress
    )
    return len(ingress) <= 1 and ssh_from_a_cidr and egress <= default_egress


@dataclass
class GroupSetup:
    """One run's view of ec2ir's groups: what is recorded, what was seen, and how to change them."""

    aws: Aws
    store: StateStore
    region: str
    account: str
    case_id: str
    office_cidr: str | None
    untrack: bool = True
    forensic: ForensicSource | None = None
    records: dict[str, GroupRecord] = field(default_factory=dict)
    seen: dict[str, SeenGroup] = field(default_factory=dict)
    # an isolation group the caller's own stack made, to record as ec2ir's in its VPC
    given_isolation: str = ""

    def roles(self) -> tuple[str, ...]:
        # forensic first: the isolation group's ingress refers to it
        return tuple(
            role
            for role in (FORENSIC, ISOLATION, ALLOW_ALL)
            if (role != ALLOW_ALL or self.untrack) and (role != FORENSIC or self.forensic is None)
        )

    def record_of(self, vpc_id: str) -> GroupRecord:
        record = self.records.get(vpc_id)
        if record is None or record.account != self.account:
            return GroupRecord(vpc_id, self.account)
        return record

    def recorded_ids(self) -> set[str]:
        return {gid for record in self.records.values() for gid in (*record.roles.values(), *record.retired)}


def ensure_vpc_groups(
    aws: Aws,
    store: StateStore,
    vpc_id: str,
    case_id: str,
    office_cidr: str | None,
    untrack: bool = True,
) -> VpcGroups:
    """``ensure_groups`` for one VPC; its error, if any, is raised."""
    account = aws.caller_arn().split(":")[4]
    setup = GroupSetup(aws, store, aws.region(), account, case_id, office_cidr, untrack)
    setup.records = store.group_records(setup.region)
    setup.seen = describe_groups(aws)
    groups, errors = ensure_groups(setup, [vpc_id])
    if vpc_id in errors:
        raise errors[vpc_id]
    return groups[vpc_id]


def ensure_groups(
    setup: GroupSetup, vpc_ids: list[str]
) -> tuple[dict[str, VpcGroups], dict[str, Ec2irError]]:
    """Find (by record, never by tag) or create each VPC's ec2ir groups and make their rules exact.

    In the steady state this costs no call beyond the run's first round trip, which read the
    records and the tagged groups with their listed rules. A VPC whose groups cannot be made safe
    is returned as an error, never as groups.
    """
    recorded = setup.recorded_ids()
    missing = {
        gid
        for vpc in vpc_ids
        for gid in setup.record_of(vpc).roles.values()
        if gid not in setup.seen  # its tag was removed, or the group deleted
    }
    if setup.given_isolation and setup.given_isolation not in setup.seen:
        missing.add(setup.given_isolation)
    if missing:
        setup.seen = setup.seen | describe_by_id(setup.aws, missing)
    result: dict[str, VpcGroups] = {}
    errors: dict[str, Ec2irError] = {}
    for vpc_id in vpc_ids:
        try:
            result[vpc_id] = _VpcWork(setup, vpc_id, recorded).ensure()
        except Ec2irError as error:
            errors[vpc_id] = error
    return result, errors


class _VpcWork:
    """Making one VPC's groups exact: choose each role's group, then enforce its rules."""

    def __init__(self, setup: GroupSetup, vpc_id: str, recorded: set[str]) -> None:
        self.setup = setup
        self.vpc_id = vpc_id
        self.recorded = recorded
        self.record = setup.record_of(vpc_id)
        self.chosen: dict[str, str] = {}
        self.created: list[str] = []
        self.notes: list[str] = []
        self.repaired: list[str] = []
        self.retired: set[str] = set(self.record.retired)

    def ensure(self) -> VpcGroups:
        setup = self.setup
        if setup.forensic is not None:  # the security team's own group, wherever it lives
            self.chosen[FORENSIC] = setup.forensic.group_id
        for role in setup.roles():
            self.chosen[role] = self._choose(role)
        self._note_untouched()
        known = self._known_rules()
        owner = setup.forensic.owner if setup.forensic else ""
        if setup.forensic is None and setup.office_cidr is not None:
            forensic_id = self.chosen[FORENSIC]
            keep_egress = {rule for rule in known.get(forensic_id, {}).values() if rule.egress}
            enforced = enforce_rules(
                setup.aws,
                forensic_id,
                frozenset({ssh_from(setup.office_cidr)} | keep_egress),
                known.get(forensic_id),
            )
            if FORENSIC not in self.created:
                self.repaired += [f"forensic group {forensic_id}: {change}" for change in enforced.changes]
        if ALLOW_ALL in self.chosen:
            self._enforce(ALLOW_ALL, allow_all_rules(), known)
        safe = isolation_rules(self.chosen[FORENSIC], owner)
        final = self._enforce(ISOLATION, safe, known)
        unexpected_rules = final - safe
        if unexpected_rules:
            unexpected = ", ".join(describe(rule) for rule in sorted(unexpected_rules))
            raise UnsafeIsolationGroup(
                f"isolation group {self.chosen[ISOLATION]} in {self.vpc_id} still has unsafe rules after "
                f"repair (unexpected: {unexpected}); refusing to isolate into it",
                "remove the extra rules by hand or check who keeps adding them",
            )
        self._remember_forensic_side()
        allow_all_id = self.chosen.get(ALLOW_ALL, "")
        containment = {self.chosen[ISOLATION], *self.retired} | ({allow_all_id} if allow_all_id else set())
        return VpcGroups(
            vpc_id=self.vpc_id,
            forensic_group_id=self.chosen[FORENSIC],
            isolation_group_id=self.chosen[ISOLATION],
            allow_all_group_id=allow_all_id,
            containment_group_ids=frozenset(containment),
            created=tuple(self.created),
            repaired=tuple(self.repaired),
            notes=tuple(self.notes),
        )

    def _choose(self, role: str) -> str:
        """The recorded group; else an earlier version's group, adopted once if it is provably
        ec2ir's; else a new one. Only a recorded id is ever used."""
        setup = self.setup
        recorded = self.record.roles.get(role, "")
        given = setup.seen.get(setup.given_isolation) if role == ISOLATION else None
        if given is not None and given.vpc_id == self.vpc_id and given.group_id != recorded:
            self.notes.append(f"recorded {given.group_id}, the stack's own isolation group, as ec2ir's")
            return self._record(role, given.group_id, recorded)
        if recorded and recorded in setup.seen:
            return recorded
        if recorded:
            self.notes.append(f"ec2ir's {role} group {recorded} no longer exists; replacing it")
        legacy = self._legacy(role)
        if legacy:
            standing = self._record(role, legacy, recorded)
            if standing == legacy:
                self.notes.append(
                    f"adopted {legacy} ({setup.seen[legacy].name}), the {role} group an earlier ec2ir "
                    "version made: its rules are exactly ec2ir's and no ENI outside ec2ir's holds uses it"
                )
            return standing
        return self._create(role, recorded)

    def _create(self, role: str, replacing: str = "") -> str:
        setup = self.setup
        new = create_group(setup.aws, self.vpc_id, role, setup.case_id)
        standing = self._record(role, new, replacing)
        if standing != new:  # a racing run recorded its own first: use that one
            _delete_quietly(setup.aws, new)
            return standing
        self.created.append(role)
        return new

    def _record(self, role: str, group_id: str, replacing: str) -> str:
        setup = self.setup
        standing = setup.store.record_group(
            setup.region, setup.account, self.vpc_id, role, group_id, replacing=replacing
        )
        if replacing and role != FORENSIC:
            self.retired.add(replacing)
        self.recorded.add(standing)
        return standing

    def _legacy(self, role: str) -> str:
        setup = self.setup
        candidates = [
            group
            for group in setup.seen.values()
            if group.vpc_id == self.vpc_id
            and group.role_tag == role
            and group.name == GROUP_NAMES[role]
            and group.group_id not in self.recorded
        ]
        if not candidates:
            return ""
        owner = setup.forensic.owner if setup.forensic else ""
        isolation_safe = isolation_rules(self.chosen.get(FORENSIC, ""), owner)
        for group in candidates:
            rules = group.rules if group.rules is not None else current_rules(setup.aws, group.group_id)
            if not legacy_rules_match(role, frozenset(rules.values()), isolation_safe):
                continue
            if foreign_enis(setup.aws, setup.store, group.group_id):
                continue
            return group.group_id
        return ""

    def _note_untouched(self) -> None:
        chosen = set(self.chosen.values())
        for group in self.setup.seen.values():
            if (
                group.vpc_id == self.vpc_id
                and group.role_tag
                and group.group_id not in chosen | self.recorded
            ):
                self.notes.append(
                    f"{group.group_id} is tagged {ROLE_TAG}={group.role_tag!r} but ec2ir never recorded "
                    "it: left untouched, and treated as any other group"
                )

    def _known_rules(self) -> dict[str, dict[str, Rule]]:
        ours = {gid for role, gid in self.chosen.items() if role != FORENSIC or self.setup.forensic is None}
        known = {
            gid: rules
            for gid in ours
            if (seen := self.setup.seen.get(gid)) is not None and (rules := seen.rules) is not None
        }
        return known | rules_of(self.setup.aws, sorted(ours - set(known)))

    def _enforce(
        self, role: str, desired: frozenset[Rule], known: dict[str, dict[str, Rule]]
    ) -> frozenset[Rule]:
        """Make a containment group's rules exact, never while an ENI outside ec2ir's holds wears
        it: then a fresh group replaces it, and the old one is retired."""
        setup = self.setup
        group_id = self.chosen[role]
        actual = known.get(group_id)
        if actual is None:
            actual = current_rules(setup.aws, group_id)
        if frozenset(actual.values()) != desired and role not in self.created:
            strangers = foreign_enis(setup.aws, setup.store, group_id)
            if strangers:
                self.notes.append(
                    f"ec2ir's {role} group {group_id} had drifted and is worn by ENIs ec2ir does not "
                    f"hold ({', '.join(strangers[:5])}): left as it is, and replaced by a new group"
                )
                group_id = self.chosen[role] = self._create(role, replacing=group_id)
                actual = current_rules(setup.aws, group_id)
        enforced = enforce_rules(setup.aws, group_id, desired, actual)
        if role not in self.created:
            label = "isolation" if role == ISOLATION else "allow-all"
            self.repaired += [
                f"{label} group {group_id} had drifted: {change}" for change in enforced.changes
            ]
        if enforced.settled is not None:
            return enforced.settled
        return frozenset(current_rules(setup.aws, group_id).values())

    def _remember_forensic_side(self) -> None:
        setup = self.setup
        source = setup.forensic.group_id if setup.forensic else ""
        owner = setup.forensic.owner if setup.forensic else ""
        cidr = setup.office_cidr if setup.forensic is None else None
        record = self.record
        unchanged = (
            record.forensic_source == source
            and record.forensic_source_owner == owner
            and (cidr is None or record.office_cidr == cidr)
        )
        if not unchanged:
            try:
                setup.store.note_group_settings(setup.region, self.vpc_id, cidr, source, owner)
            except Ec2irError as error:  # only ``status --check`` needs it; containment does not
                self.notes.append(f"could not record the forensic side's settings: {error}")
