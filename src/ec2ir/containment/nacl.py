"""The attacker's address cut at the subnet edge: network ACL deny entries, added and undone exactly.

Changing an ENI's security groups does not interrupt every connection EC2 already tracks; AWS
recommends a network ACL when traffic must stop at once. An ACL is stateless and sits at the edge
of every subnet it serves, so a deny entry for an address cuts every flow to and from it, tracked
or not, for every instance in those subnets (docs/design.md has the AWS facts relied on).

What ec2ir adds, per ACL and address, is two entries: all traffic (protocol ``-1``) denied from
the address (inbound) and to it (outbound), ahead of every entry that is not ec2ir's: at the
lowest free rule numbers below the first such entry of that direction (the default entry, 32767,
counts only when it is the only one). If one direction has no room, nothing is added for that
address in that ACL, and the run says so.

Every entry is recorded before it is added, in the state table, one item per entry keyed by the
ACL and the rule number (``pk = nacl#<acl>``, ``sk = entry#<ingress|egress>#<rule>``): the
conditional put that writes it is also the claim on that rule number, so two runs (or two cases)
never choose the same one. Each record names its case, VPC, direction, CIDR and the subnets it was
added for, and moves ``pending`` (recorded, maybe not added) -> ``applied`` -> ``removing``
(recorded, maybe not removed) -> ``removed``. The case's item ``pk = case#<case>``,
``sk = nacl-acls`` lists the ACLs it has records in, so that ``release`` of a case that never
blocked anything costs one read. The next run of the case reconciles an interrupted step with the
live ACL: an entry present exactly as recorded (deny, ``-1``, the CIDR, at that number and
direction) is the case's; one absent is added again (when blocking) or its record dropped (when
removing). An entry is only ever removed if the record says it is the case's and the live entry
still matches exactly: one changed by someone since is left as it is and reported.

Nothing here is worth losing a containment over: in ``isolate`` the blocks are added after every
instance is cut off, and what cannot be added is named in the notes and the results' warnings.

Here are the runs (isolate's blocks, block-ip, unblock-ip, status --check and its repair, the
dry run's plan). What may be blocked is ``nacl_screening``'s; the records and the live ACLs are
``nacl_entries``'; what a run did is ``nacl_report``'s; the entries added, removed and checked
are ``nacl_edge``'s (``nacl_blocking``, ``nacl_removing``, through ``nacl_ledger``).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ec2ir.aws.session import Aws, discover
from ec2ir.containment.check import Breach, BreachKind
from ec2ir.containment.nacl_edge import Edge
from ec2ir.containment.nacl_entries import (
    NOTE_PREFIX,
    PENDING,
    EntryRecord,
    Journal,
    Network,
    direction,
    subnets_of,
)
from ec2ir.containment.nacl_report import ChangeResult, NaclReport, Problem
from ec2ir.containment.nacl_screening import Safety, gather_safety, parse_blocks, screen
from ec2ir.containment.steplog import GONE_STATES
from ec2ir.core.errors import Ec2irError, UsageError
from ec2ir.core.models import ACTIVE_STATUSES, GroupRecord, Hold, InstanceFacts
from ec2ir.store.state import StateStore

# What the engine and the permissions use of the edge: the runs defined here, and the types and
# helpers their signatures and callers need, defined in the nacl_* modules below this one.
__all__ = [
    "BREACH_KINDS",
    "PERMISSIONS",
    "PURPOSE",
    "UNDO_PERMISSIONS",
    "Edge",
    "Journal",
    "NaclReport",
    "Problem",
    "RunBlocks",
    "Screening",
    "block_held",
    "every_containment_group",
    "find_breaches",
    "held_facts",
    "parse_blocks",
    "plan_blocks",
    "repair",
    "still_held_facts",
    "subnets_by_vpc",
    "subnets_of",
    "unblock_held",
]

# IAM, declared next to the code that calls it (ec2ir.permissions.policy gathers it).
PURPOSE = "network ACL blocks (--block-ip, block-ip, unblock-ip)"
PERMISSIONS = (
    "ec2:DescribeNetworkAcls",
    "ec2:DescribeVpcs",  # the VPC's own CIDRs, never blocked
    "ec2:DescribeNetworkInterfaces",  # the forensic workstations' addresses, never blocked
    "ec2:DescribeInstances",  # the subnets of the case's instances
    "ec2:CreateNetworkAclEntry",
    "ec2:DeleteNetworkAclEntry",
)
# Only undoing (release, unblock-ip) removes an entry: the isolate-only functions never may.
UNDO_PERMISSIONS = ("ec2:DeleteNetworkAclEntry",)

BREACH_KINDS = frozenset({BreachKind.NACL_ENTRY_MISSING, BreachKind.NACL_ENTRY_CHANGED})


# -- the runs ---------------------------------------------------------------------------------------------


def held_facts(aws: Aws, holds: Iterable[Hold], skip: Iterable[str] = ()) -> dict[str, InstanceFacts]:
    """The live facts of each instance the holds still hold (instances gone are absent)."""
    ids = sorted({h.instance_id for h in holds if h.status in ACTIVE_STATUSES} - set(skip))
    return discover(aws, ids) if ids else {}


def still_held_facts(aws: Aws, holds: Iterable[Hold], own_groups: frozenset[str]) -> dict[str, InstanceFacts]:
    """After a release: the live facts of each instance the case still holds, by its hold or by
    EC2. The table alone cannot say an instance is free: whoever can write it could mark a hold
    RELEASED, and the case's entries would then leave a subnet where EC2 still isolates the
    instance. So an instance of the case counts as held while one of its ENIs is in one of
    ``own_groups`` (ec2ir's containment groups), whatever its hold says, unless it is terminated
    or shutting down (EC2's word, and such an instance never comes back)."""
    holds = list(holds)
    active = {h.instance_id for h in holds if h.status in ACTIVE_STATUSES}
    ids = sorted({h.instance_id for h in holds} if own_groups else active)
    found = discover(aws, ids) if ids else {}
    return {
        instance_id: facts
        for instance_id, facts in found.items()
        if instance_id in active
        or (facts.state not in GONE_STATES and any(set(eni.group_ids) & own_groups for eni in facts.enis))
    }


def every_containment_group(records: Iterable[GroupRecord]) -> frozenset[str]:
    """Every isolation and allow-all group ec2ir recorded in the Region, current or retired, in any
    account: for keeping a block, a group too many only keeps it longer."""
    return frozenset(group for record in records for group in record.containment_ids)


def subnets_by_vpc(facts: Iterable[InstanceFacts]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for instance in facts:
        for nic in instance.description.get("NetworkInterfaces", []):
            if nic.get("SubnetId"):
                vpc = str(nic.get("VpcId") or instance.vpc_id)
                found.setdefault(vpc, set()).add(str(nic["SubnetId"]))
    return found


class Screening:
    """``isolate --block-ip``: the blocks parsed and refused at once, and what shows them safe read
    beside the run's first round trip, so that the cut waits for none of it."""

    def __init__(
        self, aws: Aws, store: StateStore, blocks: list[Network], notes: list[str], skip: bool
    ) -> None:
        self.aws, self.store, self.blocks, self.notes, self.skip = aws, store, blocks, notes, skip
        self.safety: Future[Safety] | None = None

    @classmethod
    def start(
        cls, aws: Aws, store: StateStore, forensic_group: str, raw: Iterable[str], skip: bool
    ) -> Screening:
        blocks, notes = parse_blocks(raw, skip)
        screening = cls(aws, store, blocks, notes, skip)
        if blocks:
            pool = ThreadPoolExecutor(max_workers=1)
            screening.safety = pool.submit(gather_safety, aws, store, forensic_group)
            pool.shutdown(wait=False)
        return screening

    def screen(
        self, live: list[InstanceFacts], office_cidr: str | None, case_id: str, actor: str, journal: Journal
    ) -> RunBlocks:
        """The blocks that spare the forensic side (or UsageError, before any change)."""
        report = NaclReport("isolate", case_id, actor, notes=list(self.notes))
        blocks = RunBlocks(self.aws, self.store, report, journal)
        blocks.office_cidr = office_cidr
        if self.skip and self.safety is not None:
            # GuardDuty leaves an unsafe block out rather than refusing the run, so nothing here
            # need wait: the reads (ip-ranges.json among them, a download at a cold start) are
            # awaited after the cut, and every VPC screened there.
            blocks.blocks, blocks.pending = self.blocks, self.safety
        elif self.safety is not None:
            blocks.vpcs = {vpc for facts in live for vpc in facts.vpc_ids}
            blocks.safety = self.safety.result()
            blocks.blocks, left_out = screen(self.blocks, blocks.safety, blocks.vpcs, office_cidr, self.skip)
            report.notes += left_out
        return blocks


class RunBlocks:
    """The blocks of one isolate run, added once every instance is cut off."""

    def __init__(self, aws: Aws, store: StateStore, report: NaclReport, journal: Journal) -> None:
        self.aws, self.store, self.report, self.journal = aws, store, report, journal
        self.blocks: list[Network] = []
        self.vpcs: set[str] = set()  # the VPCs the blocks were screened for
        self.safety = Safety()
        self.office_cidr: str | None = None
        self.instance_subnets: dict[str, set[str]] = {}
        self.pending: Future[Safety] | None = None  # the safety reads, awaited after the cut

    def apply(self, cut: list[InstanceFacts]) -> None:
        """Deny the blocks in the ACLs of the case's instances: this run's, and those it held before
        (in a VPC this run has no instance in, a block that VPC's checks refuse is left out)."""
        if not self.blocks:
            return
        try:
            if self.pending is not None:
                self.safety, self.pending = self.pending.result(), None
            facts = {instance.instance_id: instance for instance in cut}
            facts |= held_facts(self.aws, self.store.holds(self.report.case_id), skip=facts)
            self.instance_subnets = {instance_id: subnets_of(f) for instance_id, f in facts.items()}
            for vpc, subnets in sorted(subnets_by_vpc(facts.values()).items()):
                blocks = self.blocks
                if vpc not in self.vpcs:
                    blocks, left_out = screen(blocks, self.safety, [vpc], self.office_cidr, skip_unsafe=True)
                    self.report.notes += [f"{note} (in {vpc})" for note in left_out]
                if blocks:
                    Edge(self.aws, self.store, self.report, self.journal).block(blocks, subnets)
        except Ec2irError as error:  # the instances are contained: a block never undoes that
            self.report.problems.append(Problem("", f"the blocks could not be added: {error}", str(error)))
        except Exception as error:  # a bug here must not hide the run's results
            self.report.problems.append(
                Problem("", f"the blocks could not be added: internal error {type(error).__name__}: {error}")
            )


def block_held(aws: Aws, store: StateStore, report: NaclReport, raw: Iterable[str], journal: Journal) -> None:
    """``ec2ir block-ip``: deny the blocks in the ACLs of every instance the case holds."""
    blocks, _ = parse_blocks(raw, skip_unsafe=False)
    holds = [h for h in store.holds(report.case_id) if h.status in ACTIVE_STATUSES]
    if not holds:
        raise UsageError(
            f"case {report.case_id} holds no instance: there is no subnet to block the address at",
            f"`ec2ir status --case {report.case_id}` lists what the case holds; isolate first",
        )
    facts = discover(aws, [h.instance_id for h in holds])
    vpcs = {vpc for f in facts.values() for vpc in f.vpc_ids}
    safety = gather_safety(aws, store, "", sorted(vpcs))
    allowed, _ = screen(blocks, safety, vpcs, None, skip_unsafe=False)
    subnets = set().union(*(subnets_of(f) for f in facts.values()))
    Edge(aws, store, report, journal, dry_run=report.dry_run).block(allowed, subnets)


def unblock_held(
    aws: Aws, store: StateStore, report: NaclReport, raw: Iterable[str], journal: Journal
) -> None:
    """``ec2ir unblock-ip``: remove the case's entries for the blocks, wherever they are."""
    blocks, _ = parse_blocks(raw, skip_unsafe=False, check=False)  # removing is always safe
    Edge(aws, store, report, journal, dry_run=report.dry_run).unblock(blocks)


def find_breaches(aws: Aws, store: StateStore, holds: Iterable[Hold]) -> list[Breach]:
    """``status --check``: every active case's entries against the live ACLs."""
    cases = sorted({h.case_id for h in holds if h.status in ACTIVE_STATUSES})
    breaches: list[Breach] = []
    for case in cases:
        breaches += Edge(aws, store, NaclReport("status-check", case, ""), lambda entries: None).check()
    return breaches


def repair(aws: Aws, store: StateStore, cases: Iterable[str], actor: str, journal: Journal) -> list[str]:
    """``status --check --repair``: each case's missing entries added again; the notes."""
    notes: list[str] = []
    for case in sorted(set(cases)):
        report = NaclReport("status-check", case, actor)
        Edge(aws, store, report, journal).repair()
        notes += report.all_notes()
    return notes


def plan_blocks(
    aws: Aws,
    store: StateStore,
    case_id: str,
    actor: str,
    live: list[InstanceFacts],
    office_cidr: str | None,
    forensic_group: str,
    raw: Iterable[str],
    skip: bool,
) -> tuple[list[str], list[dict[str, Any]]]:
    """``isolate --dry-run``: the entries the run would add (set-up lines) and the CreateNetworkAclEntry
    calls to probe with DryRun; the safety checks refuse as the run would."""
    blocks, notes = parse_blocks(raw, skip)
    if not blocks or not live:
        return notes, []
    vpcs = {vpc for facts in live for vpc in facts.vpc_ids}
    allowed, left_out = screen(blocks, gather_safety(aws, store, forensic_group), vpcs, office_cidr, skip)
    report = NaclReport("isolate", case_id, actor, dry_run=True, notes=notes + left_out)
    subnets = set().union(*(subnets_of(facts) for facts in live))
    Edge(aws, store, report, lambda entries: None, dry_run=True).block(allowed, subnets)
    lines = list(report.notes)
    probes: list[dict[str, Any]] = []
    by_acl: dict[tuple[str, str, str], dict[bool, int]] = {}
    for change in report.changes:
        if change.result is ChangeResult.WOULD_ADD:
            by_acl.setdefault((change.acl_id, change.vpc_id, change.cidr), {})[change.egress] = (
                change.rule_number
            )
            record = EntryRecord(
                change.acl_id,
                change.egress,
                change.rule_number,
                change.cidr,
                case_id,
                "",
                (),
                PENDING,
                "",
                "",
            )
            probes.append(record.entry_arguments())
    for (acl_id, vpc_id, cidr), rules in by_acl.items():
        served = sorted(subnets & set(report.acl_subnets.get(acl_id, ())))
        others = sorted(set(report.acl_subnets.get(acl_id, ())) - subnets)
        where = " and ".join(
            f"{direction(egress)} at rule {rules[egress]}" for egress in (False, True) if egress in rules
        )
        line = f"{NOTE_PREFIX} {acl_id} ({vpc_id}): deny {cidr} {where}, for subnet(s) {', '.join(served)}"
        if others:
            line += f"; it also serves {', '.join(others)}: their instances lose that address too"
        lines.append(line)
    lines += [problem.note for problem in report.problems]
    return lines, probes
