"""``ec2ir status --check``: what "isolated" means, compared with what AWS says right now.

The state table says what ec2ir did; only the live state says whether it still holds. Someone
may have moved an ENI back to its production group, widened the isolation group, attached a
profile again, or a run may have stopped between its two swaps and left an ENI in the allow-all
group. For every held instance this reads, in a few batched calls, each ENI's groups, the
instance's profile, and the rules of the isolation and forensic groups, and names each breach.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ec2ir.aws.session import Aws, discover
from ec2ir.containment.groups import FORENSIC, ISOLATION, describe, isolation_rules, rules_of, ssh_from
from ec2ir.core.models import GroupRecord, Hold, HoldStatus, InstanceFacts

GONE = frozenset({"terminated", "shutting-down"})


class BreachKind(StrEnum):
    ENI_NOT_ISOLATED = "eni-not-isolated"  # in some group other than the isolation group
    ENI_IN_ALLOW_ALL = "eni-in-allow-all"  # a run stopped between its two swaps
    UNRECORDED_ENI = "unrecorded-eni"  # attached since, and not in the hold's record
    PROFILE_ASSOCIATED = "profile-associated"  # credentials reachable from the instance again
    GROUP_RULES = "group-rules"  # the isolation or forensic group admits more than the safe set
    NO_GROUPS = "no-groups"  # no recorded isolation group for the ENI's VPC
    NACL_ENTRY_MISSING = "nacl-entry-missing"  # a deny entry of the case's is gone (ec2ir.containment.nacl)
    NACL_ENTRY_CHANGED = "nacl-entry-changed"  # someone changed it: no longer ec2ir's deny
    # a place (account, Region) holding instances of the case could not be read: unknown is not safe
    NOT_CHECKED = "not-checked"


@dataclass(frozen=True)
class Breach:
    kind: BreachKind
    subject: str  # the instance or group in breach
    case_id: str  # the case holding it ("" for a group several cases share)
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "case_id": self.case_id,
            "detail": self.detail,
        }


@dataclass
class CheckReport:
    """Every breach found; with ``--repair``, the breaches that were still there afterwards."""

    checked: list[str] = field(default_factory=list)  # the held instances read live
    breaches: list[Breach] = field(default_factory=list)  # as first found
    remaining: list[Breach] | None = None  # after a repair; None when none was asked for
    repaired: dict[str, list[str]] = field(default_factory=dict)  # case -> instances re-contained
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.breaches if self.remaining is None else self.remaining)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "breaches": [breach.as_dict() for breach in self.breaches],
            "remaining": None if self.remaining is None else [b.as_dict() for b in self.remaining],
            "repaired": self.repaired,
            "notes": self.notes,
        }


def find_breaches(
    aws: Aws, holds: list[Hold], records: dict[str, GroupRecord], account: str
) -> tuple[list[str], list[Breach], list[str]]:
    """The held instances checked, each breach, and notes (instances gone, holds mid-release)."""
    notes: list[str] = []
    active = []
    for hold in holds:
        if hold.status is HoldStatus.RELEASING:
            notes.append(f"{hold.instance_id}: being released (case {hold.case_id}); not checked")
        elif hold.status in (HoldStatus.ISOLATING, HoldStatus.ISOLATED):
            active.append(hold)
    ours = {vpc: record for vpc, record in records.items() if record.account == account}
    live = discover(aws, [hold.instance_id for hold in active]) if active else {}
    breaches: list[Breach] = []
    checked: list[str] = []
    vpcs: dict[str, str] = {}  # VPC -> a case holding an instance there
    for hold in active:
        facts = live.get(hold.instance_id)
        if facts is None or facts.state in GONE:
            state = facts.state if facts else "gone"
            notes.append(f"{hold.instance_id}: {state}; release it to close the hold (case {hold.case_id})")
            continue
        checked.append(hold.instance_id)
        breaches += _instance_breaches(hold, facts, ours)
        for eni in facts.enis:
            vpcs.setdefault(eni.vpc_id, hold.case_id)
    breaches += _group_breaches(aws, {vpc: ours[vpc] for vpc in vpcs if vpc in ours})
    return checked, breaches, notes


def _instance_breaches(hold: Hold, facts: InstanceFacts, records: dict[str, GroupRecord]) -> list[Breach]:
    found: list[Breach] = []
    iid, case = hold.instance_id, hold.case_id
    for eni in facts.enis:
        record = records.get(eni.vpc_id)
        isolation = record.roles.get(ISOLATION) if record else None
        if eni.eni_id not in hold.originals and eni.eni_id not in hold.unknown_originals:
            found.append(
                Breach(BreachKind.UNRECORDED_ENI, iid, case, f"{eni.eni_id} is not in the hold's record")
            )
        if record is None or not isolation:
            found.append(
                Breach(BreachKind.NO_GROUPS, iid, case, f"no isolation group recorded in {eni.vpc_id}")
            )
            continue
        if eni.group_ids == (isolation,):
            continue
        allow_all = {record.roles.get("allow-all", ""), *record.retired} - {""}
        if allow_all & set(eni.group_ids):
            found.append(
                Breach(
                    BreachKind.ENI_IN_ALLOW_ALL,
                    iid,
                    case,
                    f"{eni.eni_id} is in {', '.join(eni.group_ids)}, not {isolation}: a run stopped "
                    "between its two swaps, or the group was retired",
                )
            )
            continue
        found.append(
            Breach(
                BreachKind.ENI_NOT_ISOLATED,
                iid,
                case,
                f"{eni.eni_id} is in {', '.join(eni.group_ids) or 'no group'}, "
                f"not the isolation group {isolation}",
            )
        )
    if facts.profile_arn:
        found.append(
            Breach(
                BreachKind.PROFILE_ASSOCIATED,
                iid,
                case,
                f"instance profile {facts.profile_arn} is associated: the instance can fetch credentials",
            )
        )
    return found


def safe_sets(record: GroupRecord) -> dict[str, frozenset[object]]:
    """The rules each of the VPC's groups may have: the isolation group's always, the forensic
    group's ingress when it is ec2ir's own."""
    source = record.forensic_source or record.roles.get(FORENSIC, "")
    wanted: dict[str, frozenset[object]] = {}
    if record.roles.get(ISOLATION):
        wanted[record.roles[ISOLATION]] = frozenset(isolation_rules(source, record.forensic_source_owner))
    if not record.forensic_source and record.roles.get(FORENSIC):
        office = {ssh_from(record.office_cidr)} if record.office_cidr else set()
        wanted[record.roles[FORENSIC]] = frozenset(office)
    return wanted


def _group_breaches(aws: Aws, records: dict[str, GroupRecord]) -> list[Breach]:
    wanted: dict[str, frozenset[object]] = {}
    for record in records.values():
        wanted |= safe_sets(record)
    actual = rules_of(aws, sorted(wanted))
    found = []
    for group_id, safe in wanted.items():
        forensic = any(record.roles.get(FORENSIC) == group_id for record in records.values())
        rules = {rule for rule in actual.get(group_id, {}).values() if not (forensic and rule.egress)}
        extra = sorted(rule for rule in rules if rule not in safe)
        if extra:
            role = "forensic" if forensic else "isolation"
            found.append(
                Breach(
                    BreachKind.GROUP_RULES,
                    group_id,
                    "",
                    f"the {role} group admits more than its safe set: "
                    + ", ".join(describe(r) for r in extra),
                )
            )
    return found


def lines(report: CheckReport) -> list[str]:
    """The report as a terminal shows it: one line a breach, then what a repair left."""
    out = [f"checked {len(report.checked)} held instance(s) against the live state"]
    if not report.breaches:
        out.append("no breach: every held instance is isolated as recorded")
    for breach in report.breaches:
        case = f" (case {breach.case_id})" if breach.case_id else ""
        out.append(f"BREACH {breach.kind.value}: {breach.subject}{case}: {breach.detail}")
    for case, instances in report.repaired.items():
        out.append(f"repaired under case {case}: {', '.join(instances)}")
    if report.remaining is not None:
        out.append(
            "after the repair: no breach"
            if not report.remaining
            else f"after the repair, still {len(report.remaining)} breach(es):"
        )
        out += [f"STILL {b.kind.value}: {b.subject}: {b.detail}" for b in report.remaining]
    out += [f"note: {note}" for note in report.notes]
    return out
