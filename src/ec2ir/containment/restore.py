"""What release puts back when the account moved on since isolation, and its plan (``--dry-run``).

An original security group deleted since isolation cannot be put back: EC2 refuses the whole swap
with ``InvalidGroup.NotFound``. Release never guesses in its place. It refuses that instance before
any change (it stays isolated, its hold active), and the responder says what to do:

* ``--replace-group OLD=NEW`` puts NEW where the deleted OLD was. OLD must really be gone, and NEW
  exist, be in the ENI's VPC and not be one of ec2ir's own groups: all read live before any change;
* ``--skip-missing-groups`` restores the other original groups. An ENI that would be left with no
  group at all is refused instead, never put in its VPC's default group: a default group admits
  every ENI in it, which is not what the ENI had.

The hold's originals are never rewritten (they are the audit record, checked against the journal
on every release); each substitution or omission is a journal entry of the release that made it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as with_fields

from ec2ir.aws.session import Aws
from ec2ir.containment import records
from ec2ir.containment.groups import describe_by_id
from ec2ir.containment.records import StoredRecord
from ec2ir.containment.steps import GROUP_GONE_HINT, NETWORK, STEPS
from ec2ir.core import validate
from ec2ir.core.errors import OriginalGroupMissing, UsageError
from ec2ir.core.models import Hold, InstanceResult
from ec2ir.core.text import eni_lines, named, printable

REPLACED, SKIPPED = "release:replace-group", "release:skip-group"
FLAG = "--replace-group"


@dataclass(frozen=True)
class GroupFixes:
    """What the responder allows release to do about deleted original groups."""

    replace: dict[str, str] = field(default_factory=dict)  # deleted original -> what takes its place
    skip_missing: bool = False
    vpcs: dict[str, str] = field(default_factory=dict)  # each NEW's VPC, read live

    @classmethod
    def parse(cls, pairs: Iterable[str], skip_missing: bool = False) -> GroupFixes:
        """``OLD=NEW`` pairs, refused before any AWS call if malformed."""
        replace: dict[str, str] = {}
        for pair in pairs:
            old, sep, new = (part.strip() for part in pair.partition("="))
            if not sep or not validate.GROUP_ID.match(old) or not validate.GROUP_ID.match(new):
                raise UsageError(
                    f"{FLAG} {pair!r}: expected OLD=NEW, two security group ids",
                    "e.g. --replace-group sg-0123456789abcdef0=sg-0fedcba9876543210",
                )
            if old == new or replace.get(old, new) != new:
                raise UsageError(
                    f"{FLAG} {pair!r}: {old} must be given once, with another group in its place"
                )
            replace[old] = new
        return cls(replace, skip_missing)

    def check_live(self, aws: Aws, own_groups: frozenset[str]) -> GroupFixes:
        """Every OLD gone and every NEW there, in one DescribeSecurityGroups; refused otherwise."""
        if not self.replace:
            return self
        seen = describe_by_id(aws, [*self.replace, *self.replace.values()])
        nothing = "nothing was changed"
        for old, new in self.replace.items():
            if old in seen:
                raise UsageError(
                    f"{FLAG} {old}={new}: {old} still exists; only a deleted original group is replaced",
                    f"{nothing}; release puts {old} back as it is",
                )
            if new not in seen:
                raise UsageError(f"{FLAG} {old}={new}: {new} does not exist", nothing)
            if new in own_groups:
                raise UsageError(f"{FLAG} {old}={new}: {new} is one of ec2ir's containment groups", nothing)
        return with_fields(self, vpcs={new: seen[new].vpc_id for new in self.replace.values()})


@dataclass(frozen=True)
class Restoration:
    """The groups release puts on each ENI, and each deleted original it replaced or left out."""

    originals: dict[str, tuple[str, ...]]
    changes: tuple[tuple[str, str], ...] = ()  # (journal action, what), one per deleted group

    @property
    def summary(self) -> str:
        return "; ".join(what for _, what in self.changes)


def restoration(
    aws: Aws,
    hold: Hold,
    existing: Mapping[str, str],
    fixes: GroupFixes,
    terminated: bool = False,
    strict: bool = True,
) -> Restoration:
    """What the network undo is to restore on ``hold``'s ENIs. ``existing`` holds the groups the run
    already found (``Provenance.group_vpcs``); any other group is looked up once more, live, so that
    only a group that is really gone is ever replaced or left out."""
    as_recorded = Restoration(dict(hold.originals))
    named = {group for groups in hold.originals.values() for group in groups}
    unseen = named - set(existing)
    if terminated or not unseen:
        return as_recorded
    gone = unseen - set(describe_by_id(aws, unseen))
    if not gone:
        return as_recorded
    originals: dict[str, tuple[str, ...]] = {}
    changes: list[tuple[str, str]] = []
    unresolved: list[str] = []
    for eni, groups in hold.originals.items():
        originals[eni] = _groups_of_eni(hold, eni, groups, gone, fixes, changes, unresolved)
    if unresolved and not strict:
        # A release without either flag restores every ENI it can, as it always has: the ENI whose
        # group is gone fails its swap (the hint names the flags) and stays isolated, the hold
        # stays releasing, and a rerun with a flag finishes it.
        return as_recorded
    if unresolved:
        raise OriginalGroupMissing(
            f"{hold.instance_id}: original group(s) deleted since isolation: {', '.join(unresolved)}",
            "nothing was changed; " + GROUP_GONE_HINT,
        )
    return Restoration(originals, tuple(changes))


def _groups_of_eni(
    hold: Hold,
    eni: str,
    groups: tuple[str, ...],
    gone: set[str],
    fixes: GroupFixes,
    changes: list[tuple[str, str]],
    unresolved: list[str],
) -> tuple[str, ...]:
    """The groups to restore on one ENI: each deleted one replaced or left out as the flags say,
    or added to ``unresolved``; what was done is added to ``changes``."""
    kept: list[str] = []
    vpc = hold.eni_vpcs.get(eni, "")
    for group in groups:
        new = fixes.replace.get(group)
        if group not in gone:
            kept.append(group)
        elif new:
            if vpc and fixes.vpcs.get(new, vpc) != vpc:
                raise UsageError(
                    f"{hold.instance_id}: {FLAG} {group}={new}: {new} is in {fixes.vpcs[new]}, "
                    f"{eni} in {vpc}",
                    "nothing was changed; name a group of the ENI's own VPC",
                )
            kept.append(new)
            changes.append((REPLACED, f"{eni}: {group} (deleted) replaced by {new}"))
        elif fixes.skip_missing:
            changes.append((SKIPPED, f"{eni}: {group} (deleted) left out"))
        else:
            unresolved.append(f"{group} of {eni}")
    if not kept and not unresolved:
        raise OriginalGroupMissing(
            f"{hold.instance_id}: every original group of {eni} was deleted ({', '.join(groups)}): "
            "--skip-missing-groups would leave it in no group",
            "nothing was changed and it stays isolated; name a group to put in their place with "
            "--replace-group OLD=NEW",
        )
    return tuple(dict.fromkeys(kept))


# -- release --dry-run ----------------------------------------------------------------------------


def _on_off(value: object) -> str:
    return "on" if value else "off"


def describe_undo(name: str, record: StoredRecord, rejoin: bool) -> str:
    """What one step's undo would do with its record, in words."""
    describe = _UNDO_DESCRIPTIONS.get(name)
    if describe is None:
        return "put back " + json.dumps(record, sort_keys=True, default=str)
    return describe(record, rejoin)


def _undo_protect(stored: StoredRecord, rejoin: bool) -> str:
    record = records.protect_record(stored)
    kept = sorted(device for device, delete in record["delete_on_termination"].items() if delete)
    return (
        f"termination protection {_on_off(record['disable_api_termination'])}, shutdown behaviour "
        f"{record['shutdown_behavior']}"
        + (f", DeleteOnTermination back on for {', '.join(kept)}" if kept else "")
    )


def _undo_autoscaling(stored: StoredRecord, rejoin: bool) -> str:
    record = records.autoscaling_record(stored)
    if rejoin:
        return f"attach to {record['group']} again (its desired capacity grows by one)"
    return f"leave out of {record['group']} (--rejoin, or `ec2ir rejoin` later, attaches it)"


def _undo_network(stored: StoredRecord, rejoin: bool) -> str:
    originals = records.network_record(stored)["originals"]
    return eni_lines({eni: tuple(groups) for eni, groups in originals.items()})


def _undo_load_balancers(stored: StoredRecord, rejoin: bool) -> str:
    record = records.load_balancers_record(stored)
    names = [g["arn"] for g in record["target_groups"]] + list(record["classic"])
    if rejoin:
        return "register again with " + ", ".join(names)
    return "leave out of " + ", ".join(names) + " (--rejoin, or `ec2ir rejoin` later, registers it)"


def _undo_credentials(stored: StoredRecord, rejoin: bool) -> str:
    profile_arn = records.profile_record(stored)["profile_arn"]
    return f"associate {profile_arn} again, unless a profile is associated by then"


def _undo_metadata(stored: StoredRecord, rejoin: bool) -> str:
    options = records.metadata_record(stored)["options"]
    return "metadata options back to " + ", ".join(f"{k}={v}" for k, v in options.items())


def _undo_revoke_sessions(stored: StoredRecord, rejoin: bool) -> str:
    record = records.revoke_record(stored)
    roles = [role["role"] for role in record["roles"] if not role["pre_existing"]]
    return f"remove the deny policy {record['policy']} from {', '.join(roles) or 'no role'}"


def _undo_tags(stored: StoredRecord, rejoin: bool) -> str:
    previous = records.tags_record(stored)["previous"]
    back = [f"{k}={v}" for k, v in previous.items() if v is not None]
    gone = [k for k, v in previous.items() if v is None]
    return "ec2ir:state=released" + "".join(
        f"; {label} {', '.join(keys)}" for label, keys in (("put back", back), ("remove", gone)) if keys
    )


# Each takes the step's record and whether the instance rejoins its groups (most ignore the latter).
_UNDO_DESCRIPTIONS: dict[str, Callable[[StoredRecord, bool], str]] = {
    "protect": _undo_protect,
    "autoscaling": _undo_autoscaling,
    NETWORK.name: _undo_network,
    "load-balancers": _undo_load_balancers,
    "credentials": _undo_credentials,
    "metadata": _undo_metadata,
    "revoke-sessions": _undo_revoke_sessions,
    "tags": _undo_tags,
}


def planned(
    instance_id: str,
    hold: Hold,
    restoring: Restoration,
    rejoin: bool,
    terminated: bool,
    warnings: tuple[str, ...],
) -> InstanceResult:
    """One instance's release plan, as a result: ``enis`` what each ENI would wear, ``steps`` what
    each step's undo would do, in the order release runs them."""
    stored: dict[str, StoredRecord] = dict(hold.steps)
    stored[NETWORK.name] = {"originals": restoring.originals}
    steps = {}
    for step in reversed(STEPS):
        record = stored.get(step.name)
        if record is None:
            continue
        if terminated and step.acts_on_instance:
            steps[step.name] = "nothing: the instance is terminated"
        else:
            steps[step.name] = describe_undo(step.name, record, rejoin)
    unknown = tuple(
        f"{eni}: its original groups were never known, so it would stay in the isolation group"
        for eni in hold.unknown_originals
    )
    summary = (
        "instance terminated: its hold would be closed"
        if terminated
        else f"{len(restoring.originals)} ENI(s) would be restored"
    )
    return InstanceResult(
        instance_id,
        "release",
        ok=True,
        detail="; ".join(filter(None, (summary, restoring.summary))),
        enis={} if terminated else dict(restoring.originals),
        steps=steps,
        warnings=warnings + unknown,
        planned=True,
    )


def render_plan(results: list[InstanceResult], case_id: str, notes: list[str]) -> str:
    lines = []
    for result in results:
        instance = named(result.instance_id, result.name)  # the Name tag cut short, for display
        if not result.ok:
            lines.append(f"{instance}: would be refused: {result.error_code}: {result.detail}")
            continue
        lines.append(f"{instance}: {result.detail}")
        lines += [f"  {step}: {what}" for step, what in result.steps.items()]
        lines += [f"  WARNING: {warning}" for warning in result.warnings]
    lines += [f"note: {note}" for note in notes]
    refused = sum(not result.ok for result in results)
    lines.append(
        f"case {case_id}: dry run, nothing changed: {len(results) - refused} would be released, "
        f"{refused} refused"
    )
    return "\n".join(printable(line) for line in lines)
