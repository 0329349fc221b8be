"""The DynamoDB state store: write-ahead originals, conditional transitions, an audit trail.

``StateStore`` is the one object the rest of ec2ir holds: it names the table and hands each call
to the part of the store that owns it. The parts share the table (``ec2ir.store.table``) and its
item vocabulary (``ec2ir.store.items``):

* the holds, one per instance, with the originals written once (``ec2ir.store.holds``);
* the case journal, each run's entries chained (``ec2ir.store.journal``, ``ec2ir.store.entries``);
* ec2ir's groups of each VPC (``ec2ir.store.groups``);
* the answers sent to CloudFormation's requests (``ec2ir.store.ledger``);
* the count each GuardDuty finding had when it contained an instance (``ec2ir.store.sightings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ec2ir.aws.session import Aws
from ec2ir.core.models import GroupRecord, Hold, HoldStatus, InstanceFacts, JournalEntry, Place
from ec2ir.store.entries import StoredEntry
from ec2ir.store.groups import GroupRecords
from ec2ir.store.holds import Holds
from ec2ir.store.journal import CaseJournal, RunChain
from ec2ir.store.ledger import AnsweredRequest, RequestLedger
from ec2ir.store.sightings import Seen, Sightings
from ec2ir.store.table import DEFAULT_TABLE, Table


class StateStore:
    """The state table, reached through the caller's DynamoDB client. Its holds are those of one
    place: the table's own account and Region (``place`` None), or, for a run that spans places
    (ec2ir.engine.outbreak), the place given; the rest of the table is shared."""

    def __init__(self, aws: Aws, table: str = DEFAULT_TABLE, place: Place | None = None) -> None:
        self.aws = aws
        self.table = table
        self.place = place
        self._table = Table(aws, table)
        self._holds = Holds(self._table, place)
        self._journal = CaseJournal(self._table)
        self._groups = GroupRecords(self._table, place)
        self._ledger = RequestLedger(self._table)
        self._sightings = Sightings(self._table)

    def at(self, place: Place | None) -> StateStore:
        """The same table, for the holds of instances in ``place`` (None: the table's own)."""
        return StateStore(self.aws, self.table, place)

    # -- the table ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the table is there, without creating it (for plans)."""
        return self._table.exists()

    def require(self) -> None:
        """Refuse, for a command that only reads, a table that does not exist."""
        self._table.require()

    def ensure_table(self) -> None:
        """Create the table if it is missing (on-demand, encrypted) and wait until it is active."""
        self._table.ensure()

    # -- the holds ---------------------------------------------------------------------------------

    def get(self, instance_id: str) -> Hold | None:
        return self._holds.get(instance_id)

    def holds(self, case_id: str | None = None) -> list[Hold]:
        """Every current hold (active or released) of this store's place, optionally for one case."""
        return self._holds.all(case_id)

    def holds_everywhere(self, case_id: str | None = None) -> list[Hold]:
        """Every current hold of every place, optionally for one case: what status and the report show."""
        return self._holds.everywhere(case_id)

    def get_many(self, instance_ids: list[str]) -> dict[str, Hold]:
        """The current holds of many instances; an instance never held is absent."""
        return self._holds.get_many(instance_ids)

    def record_originals(
        self,
        facts: InstanceFacts,
        case_id: str,
        actor: str,
        steps: Mapping[str, Mapping[str, object]] | None = None,
        unknown: frozenset[str] = frozenset(),
    ) -> tuple[Hold, bool]:
        """Write the instance's originals before anything changes, or return the hold that wins;
        the flag says whether this call wrote the hold."""
        return self._holds.record_originals(facts, case_id, actor, steps, unknown)

    def add_eni_originals(self, hold: Hold, eni_id: str, group_ids: tuple[str, ...], vpc_id: str) -> bool:
        """Record an ENI attached after the hold began; False if it was already recorded."""
        return self._holds.add_eni_originals(hold, eni_id, group_ids, vpc_id)

    def add_unknown_eni(self, hold: Hold, eni_id: str, vpc_id: str) -> bool:
        """Record an ENI whose original groups cannot be known; False if it was recorded already."""
        return self._holds.add_unknown_eni(hold, eni_id, vpc_id)

    def add_step_record(self, hold: Hold, step: str, record: Mapping[str, object]) -> bool:
        """Record a step's originals if this hold has none yet; False if one was already there."""
        return self._holds.add_step_record(hold, step, record)

    def transition(
        self,
        hold: Hold,
        allowed_from: tuple[HoldStatus, ...],
        to: HoldStatus,
        **stamps: str,
    ) -> Hold:
        """Move a hold to ``to`` only if it is still this episode, this case and an allowed status;
        returns the hold as the move left it."""
        return self._holds.transition(hold, allowed_from, to, **stamps)

    # -- the case journal --------------------------------------------------------------------------

    def append(self, entries: list[JournalEntry]) -> None:
        """Add entries to their cases' journals, each chained into this writer's run."""
        self._journal.append(entries)

    def chain_pointer(self, case_id: str) -> dict[str, Any]:
        """Where the case's chain ended last (run, digest, bucket): only a hint for the next run."""
        return self._journal.chain_pointer(case_id)

    def close_runs(self) -> list[RunChain]:
        """End this writer's runs, recording and returning each case's chain head."""
        return self._journal.close_runs()

    def journal(self, case_id: str) -> list[JournalEntry]:
        """The case's journal, oldest first."""
        return self._journal.entries(case_id)

    def journal_records(self, case_id: str) -> list[StoredEntry]:
        """The case's journal, oldest first, each entry with its key's and its content's digest."""
        return self._journal.records(case_id)

    # -- ec2ir's groups ----------------------------------------------------------------------------

    def group_records(self, region: str) -> dict[str, GroupRecord]:
        """Every VPC's recorded groups in the Region; nothing when the table does not exist yet."""
        return self._groups.in_region(region)

    def record_group(
        self, region: str, account: str, vpc_id: str, role: str, group_id: str, replacing: str = ""
    ) -> str:
        """Record ``group_id`` as the VPC's group for ``role`` unless another run recorded (or
        replaced) one first; returns the id that stands."""
        return self._groups.record(region, account, vpc_id, role, group_id, replacing)

    def note_group_settings(
        self, region: str, vpc_id: str, office_cidr: str | None, forensic_source: str, owner: str
    ) -> None:
        """Remember what the forensic side was last set to."""
        self._groups.note_settings(region, vpc_id, office_cidr, forensic_source, owner)

    # -- CloudFormation's requests -----------------------------------------------------------------

    def answered_request(self, request_id: str) -> AnsweredRequest | None:
        """The answer a CloudFormation request was sent before, if it was."""
        return self._ledger.find(request_id)

    def keep_answer(self, answered: AnsweredRequest) -> None:
        """Record the answer sent to a CloudFormation request; the first one recorded stands."""
        self._ledger.keep(answered)

    # -- GuardDuty's findings ----------------------------------------------------------------------

    def finding_sighting(self, case_id: str, instance_id: str) -> Seen | None:
        """What the finding of ``case_id`` had counted when it contained the instance, if it did."""
        return self._sightings.get(case_id, instance_id)

    def keep_finding_sighting(
        self,
        case_id: str,
        instance_id: str,
        finding_id: str,
        updated_at: str,
        count: int | None,
        replace: bool,
    ) -> None:
        """Record a finding's count at this containment; only a new episode (``replace``) replaces
        a record."""
        self._sightings.keep(case_id, instance_id, finding_id, updated_at, count, replace)
