"""Plain, immutable facts that flow between the engine, the store and the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ec2ir.core.outcomes import Outcome


class HoldStatus(StrEnum):
    """Where an instance is in its isolation lifecycle, as the state table records it."""

    ISOLATING = "isolating"  # originals recorded, ENIs may be partly swapped
    ISOLATED = "isolated"  # every recorded ENI is in the isolation group
    RELEASING = "releasing"  # originals are being put back
    RELEASED = "released"  # originals put back; kept as the audit trail


ACTIVE_STATUSES = (HoldStatus.ISOLATING, HoldStatus.ISOLATED, HoldStatus.RELEASING)


class Phase(StrEnum):
    """The phases a run reports each instance in as it reaches them (ec2ir.engine.results.Progress).
    Only isolate has two: CONTAINED as soon as the instance's cut has ended (every ENI in the
    isolation group, or the cut failed), long before its evidence; then DONE once all its work has
    ended."""

    CONTAINED = "contained"
    DONE = "done"


@dataclass(frozen=True, order=True)
class Place:
    """Where an instance lives: an account and a Region. EC2's token buckets, ec2ir's groups and an
    instance's clients are all per place; the state table is in the place a run starts from."""

    account: str
    region: str

    def __str__(self) -> str:
        return f"{self.account}/{self.region}"


@dataclass(frozen=True)
class Eni:
    eni_id: str
    vpc_id: str
    group_ids: tuple[str, ...]
    device_index: int = 0


@dataclass(frozen=True)
class Volume:
    device_name: str
    volume_id: str
    delete_on_termination: bool


@dataclass(frozen=True)
class InstanceFacts:
    instance_id: str
    state: str
    vpc_id: str
    enis: tuple[Eni, ...]
    volumes: tuple[Volume, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    profile_arn: str = ""
    # DescribeInstances' own item, read before any change: the first piece of evidence
    description: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def vpc_ids(self) -> frozenset[str]:
        return frozenset(eni.vpc_id for eni in self.enis)


@dataclass(frozen=True)
class VpcGroups:
    """ec2ir's groups in one VPC, as this run uses them."""

    vpc_id: str
    forensic_group_id: str
    isolation_group_id: str
    allow_all_group_id: str = ""  # empty when the run does not untrack
    # every recorded isolation and allow-all group of the VPC, past ones too: never an "original"
    containment_group_ids: frozenset[str] = frozenset()
    created: tuple[str, ...] = ()  # roles created by this run
    repaired: tuple[str, ...] = ()  # changes made to bring existing groups back to their rules
    notes: tuple[str, ...] = ()  # groups adopted, replaced or left alone, and why


@dataclass(frozen=True)
class GroupRecord:
    """The groups ec2ir created (or adopted) in one VPC, as the state table records them.

    Only a recorded id makes a group ec2ir's: a tag can be set by anyone with ec2:CreateTags,
    including a stolen instance role, so ec2ir never trusts one."""

    vpc_id: str
    account: str
    roles: dict[str, str] = field(default_factory=dict)  # role -> group id
    # isolation and allow-all groups ec2ir used before (replaced since): still containment groups,
    # so that an ENI found in one is never taken to be in its original groups
    retired: tuple[str, ...] = ()
    office_cidr: str = ""  # the SSH source last set on the forensic group
    forensic_source: str = ""  # the outside forensic group the isolation group last admitted
    forensic_source_owner: str = ""

    @property
    def containment_ids(self) -> frozenset[str]:
        current = {self.roles[role] for role in ("isolation", "allow-all") if role in self.roles}
        return frozenset(current | set(self.retired))


@dataclass(frozen=True)
class Hold:
    """One instance's record in the state table: the originals and who holds the instance."""

    instance_id: str
    case_id: str
    status: HoldStatus
    originals: dict[str, tuple[str, ...]]
    recorded_at: str
    recorded_by: str
    isolated_at: str = ""
    released_at: str = ""
    released_by: str = ""
    eni_vpcs: dict[str, str] = field(default_factory=dict)
    steps: dict[str, dict[str, object]] = field(default_factory=dict)  # step name -> its originals
    # ENIs isolated although their original groups could not be known (they already sat in one
    # of ec2ir's containment groups): release leaves them isolated and says so.
    unknown_originals: tuple[str, ...] = ()
    # Where the instance lives, when that is not where the state table is (ec2ir.engine.outbreak);
    # None for the table's own account and Region, as every hold before outbreaks were.
    place: Place | None = None
    # "account/Region" of a hold of the table's own place, as it was when recorded (holds since
    # outbreaks): a run that reaches the table from elsewhere (a table ARN, other credentials) must
    # not act on the instance in its own place instead
    recorded_in: str = ""


@dataclass(frozen=True)
class InstanceResult:
    """What happened to one instance in one run; ``error_code`` is empty on success."""

    instance_id: str
    action: str
    ok: bool
    detail: str = ""
    error_code: str = ""
    enis: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # step name -> its Outcome's text (ec2ir.core.outcomes), as --output json gives it
    steps: dict[str, str] = field(default_factory=dict)
    evidence: tuple[EvidenceRef, ...] = ()
    evidence_failed: tuple[str, ...] = ()  # what evidence could not be collected, and why
    # what the run could not do although the instance is as safe as it can be (exit 1 all the same)
    warnings: tuple[str, ...] = ()
    # the instance's Name tag, for display only: anyone able to tag the instance sets it
    name: str = field(default="", compare=False)
    planned: bool = False  # a dry run's result: ``steps`` say what each step would do
    # Where the instance lives, when a run spans several places (ec2ir.engine.outbreak)
    place: Place | None = None

    def step_outcomes(self) -> list[dict[str, str]]:
        """``steps`` as structured outcomes, in order: each step, its status and its detail."""
        outcomes = []
        for step, text in self.steps.items():
            outcome = Outcome.parse(text, planned=self.planned)
            outcomes.append({"step": step, "status": outcome.status.value, "detail": outcome.detail})
        return outcomes

    @property
    def interrupted(self) -> bool:
        """Whether the run was interrupted (Ctrl-C) before all of this instance's work began: its
        ``enis`` (isolate) are still true, and the next run of the same command finishes it."""
        from ec2ir.core.errors import Interrupted

        return self.error_code == Interrupted.code

    @property
    def snapshot_ids(self) -> list[str]:
        return [ref.location for ref in self.evidence if ref.kind == "snapshot"]

    def as_dict(self) -> dict[str, object]:
        return {
            "instance_id": self.instance_id,
            "action": self.action,
            "ok": self.ok,
            "detail": self.detail,
            "error_code": self.error_code,
            "enis": {eni: list(groups) for eni, groups in self.enis.items()},
            "steps": self.steps,
            "step_outcomes": self.step_outcomes(),
            "evidence": [ref.as_dict() for ref in self.evidence],
            "evidence_failed": list(self.evidence_failed),
            "warnings": list(self.warnings),
            "name": self.name,
        } | ({"account": self.place.account, "region": self.place.region} if self.place else {})


@dataclass(frozen=True)
class EvidenceRef:
    """Where one piece of evidence is and how to prove it unchanged.

    ``location`` is ``s3://bucket/key`` for objects and the snapshot id for snapshots; snapshots
    have no hash of their own, so ``sha256`` is empty for them and ``verify`` checks they exist."""

    kind: str  # metadata:<item>, snapshot, memory
    location: str
    sha256: str = ""
    size: int = 0
    version_id: str = ""
    details: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "location": self.location,
            "sha256": self.sha256,
            "size": self.size,
            "version_id": self.version_id,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvidenceRef:
        return cls(
            kind=str(data["kind"]),
            location=str(data["location"]),
            sha256=str(data.get("sha256", "")),
            size=int(data.get("size", 0)),
            version_id=str(data.get("version_id", "")),
            details={str(k): str(v) for k, v in dict(data.get("details", {})).items()},
        )


@dataclass(frozen=True)
class JournalEntry:
    """One action of a case, as the append-only journal keeps it: never updated, never deleted."""

    at: str  # when the action finished, ISO 8601 UTC
    case_id: str
    actor: str  # the STS caller ARN
    target: str  # an instance, VPC, bucket or snapshot id
    action: str  # e.g. isolate:network, release:network, evidence:snapshots
    # an Outcome's text (ec2ir.core.outcomes): "done: ...", "FAILED: ...", "skipped: ...", ...;
    # text, as the journal's items have always held it
    result: str
    request_ids: tuple[str, ...] = ()
    evidence: tuple[EvidenceRef, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def outcome(self) -> Outcome:
        return Outcome.parse(self.result)
