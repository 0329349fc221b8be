"""Adding a case's deny entries to one network ACL: the records reconciled with the live ACL, the
rule numbers chosen, each pair of entries (in and out) recorded, then added, both or neither."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from ec2ir.aws.session import translated
from ec2ir.containment.nacl_entries import (
    ACTIVE,
    ALREADY_EXISTS,
    APPLIED,
    CHANGED,
    FOUND,
    LIMIT_EXCEEDED,
    NOTE_PREFIX,
    PENDING,
    REMOVED,
    REMOVING,
    Acl,
    EntryRecord,
    Network,
    acls_by_id,
    acls_of_subnets,
    describe_live,
    direction,
    first_foreign,
    free_numbers,
    matches,
    same_entry,
)
from ec2ir.containment.nacl_ledger import EdgeLedger
from ec2ir.containment.nacl_report import Change, ChangeResult, Problem
from ec2ir.core.errors import AwsError
from ec2ir.store.items import now

ATTEMPTS = 3  # choosing rule numbers again after another run took them
Slot = tuple[str, bool]  # a CIDR and a direction (egress): one entry of a block


@dataclass
class _Wanted:
    """One entry a CIDR lacks in one ACL: where it goes, and the record it re-adds (if any)."""

    cidr: str
    egress: bool
    rule_number: int
    record: EntryRecord | None  # a record whose entry is missing: added again at its own number


class EntryPlacing(EdgeLedger):
    """One recorded entry added, and its record settled with what other runs did meanwhile."""

    def _create(self, acl: Acl, record: EntryRecord) -> str:
        """Add the recorded entry: "" when added, else the code of a refusal handled here."""
        try:
            with translated("ec2", "CreateNetworkAclEntry"):
                self.aws.ec2().create_network_acl_entry(**record.entry_arguments())
        except AwsError as error:
            if error.code == ALREADY_EXISTS:  # someone took the number since the ACL was read
                fresh = acls_by_id(self.aws, [acl.acl_id]).get(acl.acl_id)
                live = fresh.entries.get((record.egress, record.rule_number)) if fresh is not None else None
                if matches(live, record.cidr):  # another run of the case added it first: in place
                    moved = self._move(record, APPLIED) if record.status == PENDING else record
                    current = moved or self._current(record)
                    if current is not None and current.status == APPLIED and same_entry(current, record):
                        self._change(acl, record, ChangeResult.ALREADY_THERE, "added by another run")
                        return FOUND
                    return ALREADY_EXISTS  # its record went elsewhere: read everything again
                self._move(record, REMOVED, "its rule number was taken by another entry first")
                return ALREADY_EXISTS
            if error.code == LIMIT_EXCEEDED:
                self._move(record, REMOVED, "the ACL's quota of entries is reached")
                self.report.problems.append(
                    Problem(
                        acl.acl_id,
                        f"NOT blocked {record.cidr} {record.direction}: the ACL's quota of entries is "
                        "reached (20 a direction by default, at most 40): free some, or raise the quota",
                        f"{record.cidr} is not blocked at the subnet edge ({acl.acl_id}): the ACL is full",
                    )
                )
                return LIMIT_EXCEEDED
            raise  # the record stays pending: the next run finds out whether it was added
        return ""

    def _settle_added(self, acl: Acl, record: EntryRecord, readded: bool) -> Change | None:
        """Record the entry just added as applied. If its record moved meanwhile (another run of the
        case, or a removal), act on where it is now: still the case's and applied, the entry stays;
        anything else, the entry just added is unrecorded, so it is taken out again (None)."""
        result = ChangeResult.READDED if readded else ChangeResult.ADDED
        if record.status != PENDING or self._move(record, APPLIED) is not None:
            return self._change(acl, record, result, journal=True)
        current = self._current(record)
        if current is not None and current.status == APPLIED and same_entry(current, record):
            return self._change(acl, record, result, "recorded by another run of the case", journal=True)
        if current is None or current.status == REMOVED:
            self._delete_entry(record)
        # else: another record (another run) now holds the number and answers for its entry
        return None

    def _fail_pair(
        self,
        acl: Acl,
        failed: EntryRecord,
        placed: list[tuple[EntryRecord, Change | None]],
        error: str,
        added: list[Change],
    ) -> None:
        """One direction of a CIDR could not be added: take out the other if this run just added
        it (both or neither), and say that the CIDR is not blocked in this ACL."""
        undone: list[str] = []
        for record, change in placed:
            if change is None:
                continue  # already there before this run: not this run's to take out
            current = replace(record, status=APPLIED)
            moved = self._move(current, REMOVING, "the other direction could not be added")
            if moved is None:
                continue
            self._delete_entry(moved)
            self._move(moved, REMOVED, "the other direction could not be added")
            if change in added:
                added.remove(change)
            self._change(
                acl, moved, ChangeResult.REMOVED, "taken out again: the other direction failed", journal=True
            )
            undone.append(f"{moved.direction} rule {moved.rule_number}")
        if not error:  # _create said why (the quota), or the record went elsewhere
            if not any(failed.cidr in p.text and p.acl_id == acl.acl_id for p in self.report.problems):
                self.report.problems.append(
                    Problem(
                        acl.acl_id,
                        f"NOT blocked {failed.cidr}: its {failed.direction} record was changed by another "
                        "run while it was being added",
                        f"{failed.cidr} is not blocked at the subnet edge ({acl.acl_id})",
                    )
                )
        else:
            self.report.problems.append(
                Problem(
                    acl.acl_id,
                    f"NOT blocked {failed.cidr}: adding {failed.direction} rule {failed.rule_number} failed: "
                    f"{error}",
                    f"{failed.cidr} is not blocked at the subnet edge ({acl.acl_id}): {error}",
                )
            )
        if undone:
            self.report.notes.append(
                f"{NOTE_PREFIX} {acl.acl_id}: took {failed.cidr}'s {', '.join(undone)} out again: an address "
                "is denied both ways or not at all"
            )

    def _planned(self, acl: Acl, want: _Wanted, case_subnets: set[str]) -> EntryRecord:
        return EntryRecord(
            acl_id=acl.acl_id,
            egress=want.egress,
            rule_number=want.rule_number,
            cidr=want.cidr,
            case_id=self.case,
            vpc_id=acl.vpc_id,
            subnets=tuple(sorted(case_subnets & set(acl.subnets))),
            status=PENDING,
            recorded_at=now(),
            recorded_by=self.report.actor,
        )

    def _place_pair(
        self,
        acl: Acl,
        pair: list[_Wanted],
        case_subnets: set[str],
        changed: dict[Slot, EntryRecord],
        added: list[Change],
    ) -> bool:
        """Record and add both directions of one CIDR (or neither). False when another run took a
        number first (nothing more is tried in this pass)."""
        placed: list[tuple[EntryRecord, Change | None]] = []
        for want in pair:
            record = want.record or self._planned(acl, want, case_subnets)
            if want.record is None and not self.records.claim(record):
                return False
            try:
                outcome = self._create(acl, record)
            except AwsError as error:  # the record stays pending: the next run finds out
                self._fail_pair(acl, record, placed, str(error), added)
                return True
            if outcome == ALREADY_EXISTS:
                return False
            if outcome == LIMIT_EXCEEDED:
                self._fail_pair(acl, record, placed, "", added)
                return True
            if outcome == FOUND:  # another run of the case added it at this number first
                placed.append((record, None))
                continue
            change = self._settle_added(acl, record, want.record is not None)
            if change is None:  # its record went elsewhere meanwhile: the entry was taken out
                self._fail_pair(acl, record, placed, "", added)
                return True
            added.append(change)
            placed.append((record, change))
            superseded = changed.pop((record.cidr, record.egress), None)
            if superseded is not None:
                self._move(superseded, REMOVED, f"{CHANGED}; replaced by rule {record.rule_number}")
        return True


class Blocking(EntryPlacing):
    """The case's blocks denied in the ACLs of its subnets."""

    def block(self, blocks: list[Network], subnets: set[str]) -> None:
        """Deny each block in the ACL of every subnet named (the subnets of the case's instances)."""
        acls = acls_of_subnets(self.aws, subnets)
        for acl in acls.values():
            self.report.acl_subnets[acl.acl_id] = acl.subnets
        if not acls:
            self.report.problems.append(
                Problem("", f"no network ACL serves the subnets {', '.join(sorted(subnets))}")
            )
            return
        if not self.dry_run:
            self.records.add_to_index(self.case, acls)  # before any claim: release finds them from here
        for acl_id in sorted(acls):
            self._guarded(acl_id, functools.partial(self._block_acl, acls[acl_id], blocks, subnets))

    def _block_acl(self, acl: Acl, blocks: list[Network], case_subnets: set[str]) -> None:
        added: list[Change] = []
        for _ in range(ATTEMPTS):
            said = len(self.report.changes), len(self.report.problems)
            done = self._try_block(acl, blocks, case_subnets, added)
            if done:
                break
            # said again by the next pass: only what this one changed stays
            self.report.changes[said[0] :] = [c for c in self.report.changes[said[0] :] if c in added]
            del self.report.problems[said[1] :]
            fresh = acls_by_id(self.aws, [acl.acl_id]).get(acl.acl_id)
            if fresh is None:
                self.report.problems.append(Problem(acl.acl_id, "the network ACL no longer exists"))
                return
            acl = fresh
        else:
            self.report.problems.append(
                Problem(
                    acl.acl_id, "other runs kept taking the rule numbers chosen; run the same command again"
                )
            )
        self._note_block(acl, added, case_subnets)
        there = {
            c.cidr
            for c in self.report.changes
            if c.acl_id == acl.acl_id and c.result is ChangeResult.ALREADY_THERE
        }
        if there and not added:
            self.report.notes.append(
                f"{NOTE_PREFIX} {acl.acl_id} ({acl.vpc_id}): already denies {len(there)} address(es) of case "
                f"{self.case}: nothing changed"
            )

    def _try_block(
        self, acl: Acl, blocks: list[Network], case_subnets: set[str], added: list[Change]
    ) -> bool:
        """One pass: reconcile the case's records with the live ACL, choose numbers, record, add.
        False when another run took a number first (the caller reads the ACL again)."""
        records = self.records.of_acl(acl.acl_id)
        mine = [r for r in records if r.case_id == self.case and r.status in ACTIVE]
        asked = [str(block) for block in blocks]
        wanted = list(dict.fromkeys([*asked, *(r.cidr for r in mine if r.status in (PENDING, APPLIED))]))
        in_force, missing, changed = self._reconcile(acl, mine, asked)
        plan = self._choose(acl, records, wanted, in_force, missing)
        if self.dry_run:
            for want in plan:
                self._change(acl, self._planned(acl, want, case_subnets), ChangeResult.WOULD_ADD)
                changed.pop((want.cidr, want.egress), None)
            self._report_changed(acl, changed)
            return True
        by_cidr: dict[str, list[_Wanted]] = {}
        for want in plan:
            by_cidr.setdefault(want.cidr, []).append(want)
        for pair in by_cidr.values():  # both directions of a CIDR, or neither
            if not self._place_pair(acl, pair, case_subnets, changed, added):
                return False  # another run claimed a number: read the ACL again
        self._report_changed(acl, changed)
        return True

    def _reconcile(
        self, acl: Acl, mine: list[EntryRecord], asked: list[str]
    ) -> tuple[set[Slot], dict[Slot, EntryRecord], dict[Slot, EntryRecord]]:
        """Each of the case's records against the live ACL: the (CIDR, direction) slots denied
        already, the records whose entry is missing, and those whose entry someone changed."""
        in_force: set[Slot] = set()
        missing: dict[Slot, EntryRecord] = {}
        changed: dict[Slot, EntryRecord] = {}
        for record in mine:
            live = acl.entries.get((record.egress, record.rule_number))
            exact = matches(live, record.cidr)
            key = (record.cidr, record.egress)
            if record.status == REMOVING:  # a removal was interrupted
                if exact and record.cidr in asked:
                    self._move(record, APPLIED)  # blocked again: it stays
                    in_force.add(key)
                elif not exact:
                    self._move(record, REMOVED, "already gone" if live is None else CHANGED)
                continue
            if exact:
                in_force.add(key)
                if record.status == PENDING:  # added by a run that died before saying so
                    self._move(record, APPLIED)
                    self._change(
                        acl, record, ChangeResult.RECORDED, "found added by an interrupted run", journal=True
                    )
                elif record.cidr in asked:
                    self._change(acl, record, ChangeResult.ALREADY_THERE)
            elif live is None:
                missing[key] = record
            elif record.status == PENDING:  # its number was taken before its entry was added
                self._move(record, REMOVED, "its rule number was taken by another entry first")
            else:
                changed[key] = record
        return in_force, missing, changed

    def _report_changed(self, acl: Acl, changed: dict[tuple[str, bool], EntryRecord]) -> None:
        """The case's entries someone changed, that no new entry replaced: the address is not denied
        there, and ec2ir never touches someone else's entry."""
        for record in changed.values():
            live = acl.entries.get((record.egress, record.rule_number)) or {}
            self.report.problems.append(
                Problem(
                    acl.acl_id,
                    f"{record.direction} rule {record.rule_number} ({record.cidr}): {CHANGED} "
                    f"(now {describe_live(live)})",
                    f"{acl.acl_id}: {record.direction} rule {record.rule_number} ({record.cidr}) {CHANGED}",
                )
            )

    def _choose(
        self,
        acl: Acl,
        records: list[EntryRecord],
        wanted: list[str],
        in_force: set[tuple[str, bool]],
        missing: dict[tuple[str, bool], EntryRecord],
    ) -> list[_Wanted]:
        """Where each lacking entry goes: its recorded number if its entry went missing, else the
        lowest free number ahead of the first entry that is not ec2ir's. Per CIDR, both directions
        or neither."""
        claimed = {
            egress: {
                r.rule_number
                for r in records
                if r.status in ACTIVE
                and r.egress == egress
                and ((live := acl.entries.get((r.egress, r.rule_number))) is None or matches(live, r.cidr))
            }
            for egress in (False, True)
        }
        plan: list[_Wanted] = []
        for cidr in wanted:
            chosen: list[_Wanted] = []
            for egress in (False, True):
                if (cidr, egress) in in_force:
                    continue
                record = missing.get((cidr, egress))
                if record is not None:
                    chosen.append(_Wanted(cidr, egress, record.rule_number, record))
                    continue
                taken = claimed[egress] | {w.rule_number for w in plan + chosen if w.egress == egress}
                numbers = free_numbers(acl.numbers(egress), taken, 1)
                if numbers is None:
                    first = first_foreign(acl.numbers(egress), claimed[egress])
                    why = (
                        f"no free rule number below {first} {direction(egress)} (the first entry that is "
                        "not ec2ir's), so nothing was added for it in this ACL"
                    )
                    self.report.problems.append(
                        Problem(
                            acl.acl_id,
                            f"NOT blocked {cidr}: {why}; free a number ahead of that entry, or deny it "
                            "there by hand",
                            f"{cidr} is not blocked at the subnet edge ({acl.acl_id}): {why}",
                        )
                    )
                    chosen = []
                    break
                chosen.append(_Wanted(cidr, egress, numbers[0], None))
            plan += chosen
        return plan

    def _note_block(self, acl: Acl, added: list[Change], case_subnets: set[str]) -> None:
        """The ACL changed, the subnets it was changed for, and every other subnet it serves. A note
        names an address only when that address is NOT denied (left out, no room, changed): what
        was denied is in the changes and the journal."""
        if not added:
            return
        count = len({c.cidr for c in added})
        numbers = {
            egress: [str(c.rule_number) for c in added if c.egress == egress] for egress in (False, True)
        }
        rules = "; ".join(
            f"{direction(egress)} rule(s) {', '.join(numbers[egress])}"
            for egress in (False, True)
            if numbers[egress]
        )
        served = sorted(case_subnets & set(acl.subnets))
        others = sorted(set(acl.subnets) - case_subnets)
        note = (
            f"{NOTE_PREFIX} {acl.acl_id} ({acl.vpc_id}): denied {count} address(es) of case {self.case} "
            f"in and out ({rules}), for subnet(s) {', '.join(served) or 'none of the case'}"
        )
        if others:
            lost = "that address" if count == 1 else "those addresses"
            note += (
                f"; it also serves {', '.join(others)}, where case {self.case} holds no instance: their "
                f"instances lose {lost} too"
            )
        self.report.notes.append(note)
