"""Removing a case's deny entries: only those its records say are its own and that the live ACL
still holds exactly as recorded; one changed by someone since is left as it is and reported."""

from __future__ import annotations

import functools
from typing import Any

from ec2ir.aws.session import translated
from ec2ir.containment.nacl_entries import (
    ACTIVE,
    CHANGED,
    ENTRY_NOT_FOUND,
    NOTE_PREFIX,
    PENDING,
    REMOVED,
    REMOVING,
    Acl,
    EntryRecord,
    Network,
    acls_by_id,
    describe_live,
    matches,
)
from ec2ir.containment.nacl_ledger import EdgeLedger
from ec2ir.containment.nacl_report import Change, ChangeResult, Problem
from ec2ir.core.errors import AwsError
from ec2ir.core.outcomes import Outcome


class Removing(EdgeLedger):
    """The case's entries taken out for ``unblock-ip`` and after ``release``."""

    def unblock(self, blocks: list[Network]) -> None:
        """Remove the case's entries for these blocks from every ACL it has them in."""
        asked = {str(block) for block in blocks}
        found: set[str] = set()
        acl_ids = self.records.index(self.case)
        acls = acls_by_id(self.aws, acl_ids)
        for acl_id in acl_ids:
            mine = [
                r
                for r in self.records.of_acl(acl_id)
                if r.case_id == self.case and r.status in ACTIVE and r.cidr in asked
            ]
            found |= {r.cidr for r in mine}
            if mine:
                self._guarded(acl_id, functools.partial(self._remove, acl_id, acls.get(acl_id), mine))
        self.report.notes += [
            f"{NOTE_PREFIX}: no entry of case {self.case} denies {cidr}" for cidr in sorted(asked - found)
        ]

    def release(self, held_subnets: set[str]) -> None:
        """Remove the case's entries from every ACL that no longer serves a subnet where the case
        still holds an instance."""
        acl_ids = self.records.index(self.case)
        if not acl_ids:
            return
        mine_by_acl = {
            acl_id: [r for r in self.records.of_acl(acl_id) if r.case_id == self.case and r.status in ACTIVE]
            for acl_id in acl_ids
        }
        mine_by_acl = {acl_id: mine for acl_id, mine in mine_by_acl.items() if mine}
        acls = acls_by_id(self.aws, mine_by_acl)
        for acl_id, mine in mine_by_acl.items():
            acl = acls.get(acl_id)
            still = sorted(held_subnets & set(acl.subnets)) if acl is not None else []
            if still:
                self.report.notes.append(
                    f"{NOTE_PREFIX} {acl_id}: kept case {self.case}'s {len(mine)} entr(ies): the case still "
                    f"holds instances in {', '.join(still)} (by their holds, or EC2 still has an ENI of "
                    "theirs in ec2ir's groups); the release of the last removes them, or `ec2ir unblock-ip`"
                )
                continue
            self._guarded(acl_id, functools.partial(self._remove, acl_id, acl, mine))

    def _remove(self, acl_id: str, acl: Acl | None, mine: list[EntryRecord]) -> None:
        removed: list[Change] = []
        for record in mine:
            change = self._remove_one(acl_id, acl, record)
            if change is not None:
                removed.append(change)
        if removed:
            self.report.notes.append(
                f"{NOTE_PREFIX} {acl_id} ({removed[0].vpc_id}): removed case {self.case}'s "
                f"{len(removed)} deny entr(ies)"
            )

    def _remove_one(self, acl_id: str, acl: Acl | None, record: EntryRecord) -> Change | None:
        """Remove one of the case's entries if the live one is still exactly the record's; the
        change when it was removed (now or by an interrupted run)."""
        live = acl.entries.get((record.egress, record.rule_number)) if acl is not None else None
        vpc = acl.vpc_id if acl is not None else record.vpc_id
        if record.status == REMOVING and live is None:  # removed by a run that died before saying so
            if not self.dry_run:
                self._move(record, REMOVED)
            detail = "removed by an interrupted run"
            return self._change(None, record, ChangeResult.REMOVED, detail, journal=True, vpc=vpc)
        if not matches(live, record.cidr):
            self._settle_unmatched(acl_id, acl, vpc, record, live)
            return None
        if self.dry_run:
            self.report.changes.append(
                Change(acl_id, vpc, record.egress, record.rule_number, record.cidr, ChangeResult.WOULD_REMOVE)
            )
            return None
        if record.status != REMOVING:
            moved = self._move(record, REMOVING)
            if moved is None:
                return None  # another run acted on it first
            record = moved
        try:
            with translated("ec2", "DeleteNetworkAclEntry"):
                self.aws.ec2().delete_network_acl_entry(
                    NetworkAclId=acl_id, RuleNumber=record.rule_number, Egress=record.egress
                )
        except AwsError as error:
            if error.code != ENTRY_NOT_FOUND:  # gone since it was read: removed all the same
                raise
        self._move(record, REMOVED)
        return self._change(None, record, ChangeResult.REMOVED, journal=True, vpc=vpc)

    def _settle_unmatched(
        self, acl_id: str, acl: Acl | None, vpc: str, record: EntryRecord, live: dict[str, Any] | None
    ) -> None:
        """A record whose entry is not (or no longer) the case's deny: the record goes, and an entry
        someone changed is left as it is and reported."""
        if record.status == PENDING:
            why = "never added" if live is None else "never added: its rule number was taken"
            result = ChangeResult.DROPPED
        elif live is None:
            why = "already gone" if acl is not None else "the network ACL no longer exists"
            result = ChangeResult.GONE
        else:
            why, result = f"{CHANGED} (now {describe_live(live)})", ChangeResult.LEFT
        if not self.dry_run:
            self._move(record, REMOVED, why)
            if result is ChangeResult.LEFT:
                self._journal_line(record, "nacl-remove", Outcome.skipped(f"{record.describe()}: {why}"))
        self.report.changes.append(
            Change(acl_id, vpc, record.egress, record.rule_number, record.cidr, result, why)
        )
        if result is ChangeResult.LEFT:
            self.report.problems.append(
                Problem(
                    acl_id,
                    f"{record.direction} rule {record.rule_number} ({record.cidr}): {why}",
                    f"{acl_id}: {record.direction} rule {record.rule_number} ({record.cidr}) " + CHANGED,
                )
            )
