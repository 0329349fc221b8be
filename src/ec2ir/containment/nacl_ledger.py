"""What every change to a case's deny entries goes through: its record moved first, the change
said in the run's report, and journaled after."""

from __future__ import annotations

from collections.abc import Callable

from ec2ir.aws.session import Aws, translated
from ec2ir.containment.nacl_entries import (
    ENTRY_NOT_FOUND,
    Acl,
    EntryRecord,
    Journal,
    RecordStore,
    acls_by_id,
    matches,
)
from ec2ir.containment.nacl_report import Change, ChangeResult, NaclReport, Problem
from ec2ir.core.errors import AwsError, Ec2irError
from ec2ir.core.models import JournalEntry
from ec2ir.core.outcomes import Outcome
from ec2ir.store.items import now
from ec2ir.store.state import StateStore


class EdgeLedger:
    """One case's records, report and journal, shared by adding, removing and checking."""

    def __init__(
        self, aws: Aws, store: StateStore, report: NaclReport, journal: Journal, dry_run: bool = False
    ) -> None:
        self.aws = aws
        self.records = RecordStore(store)
        self.report = report
        self.journal = journal
        self.dry_run = dry_run
        self.case = report.case_id

    def _guarded(self, acl_id: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Ec2irError as error:  # one ACL's failure must never stop the others
            self.report.problems.append(Problem(acl_id, str(error), f"{acl_id}: {error}"))

    def _current(self, record: EntryRecord) -> EntryRecord | None:
        for found in self.records.of_acl(record.acl_id):
            if (found.egress, found.rule_number) == (record.egress, record.rule_number):
                return found
        return None

    def _delete_entry(self, record: EntryRecord) -> None:
        """Take out the entry at the record's number, if it is still exactly the record's deny."""
        live = acls_by_id(self.aws, [record.acl_id]).get(record.acl_id)
        entry = live.entries.get((record.egress, record.rule_number)) if live is not None else None
        if not matches(entry, record.cidr):
            return
        try:
            with translated("ec2", "DeleteNetworkAclEntry"):
                self.aws.ec2().delete_network_acl_entry(
                    NetworkAclId=record.acl_id, RuleNumber=record.rule_number, Egress=record.egress
                )
        except AwsError as error:
            if error.code != ENTRY_NOT_FOUND:
                raise

    def _move(self, record: EntryRecord, to: str, why: str = "") -> EntryRecord | None:
        return None if self.dry_run else self.records.move(record, to, why)

    def _change(
        self,
        acl: Acl | None,
        record: EntryRecord,
        result: ChangeResult,
        detail: str = "",
        journal: bool = False,
        vpc: str = "",
    ) -> Change:
        change = Change(
            record.acl_id,
            acl.vpc_id if acl is not None else (vpc or record.vpc_id),
            record.egress,
            record.rule_number,
            record.cidr,
            result,
            detail,
        )
        self.report.changes.append(change)
        if journal and not self.dry_run:
            action = "nacl-remove" if result is ChangeResult.REMOVED else "nacl-add"
            subnets = (
                f" for subnet(s) {', '.join(record.subnets)}"
                if record.subnets and action == "nacl-add"
                else ""
            )
            self._journal_line(
                record,
                action,
                Outcome.done(
                    f"{result} {record.describe()} ({change.vpc_id}){subnets}"
                    + (f"; {detail}" if detail else "")
                ),
            )
        return change

    def _journal_line(self, record: EntryRecord, action: str, result: Outcome) -> None:
        self.journal(
            [
                JournalEntry(
                    now(),
                    self.case,
                    self.report.actor,
                    record.acl_id,
                    f"{self.report.action}:{action}",
                    result.text,
                )
            ]
        )
