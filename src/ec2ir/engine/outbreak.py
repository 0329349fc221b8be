"""One case across many accounts and Regions: each place (account, Region) gets an engine of its
own, and the places run side by side.

EC2 meters its API per account and Region (its token buckets), so the time to contain an outbreak
spread over several places is about that of its largest place, not their sum. Each place's engine
has its own session, credentials, retry state, rate limiters, swap lanes and groups, so one place
that is throttled, refused or unreachable never slows or stops another: its instances fail, named
with the place and why, and the others proceed. Within each place the cut-first rule holds as in a
one-place run, since each place's run is exactly that.

The state stays in one table, the one of the place the run starts from (its credentials and
``--region``): every place's holds and the case's journal are there, so ``status``, ``report`` and
``release`` see the whole case from that account. A hold elsewhere is keyed by its account and
Region (ec2ir.store.items.instance_key), and release finds an instance's place in its hold, never in
anything the instance's account could change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ec2ir.aws.session import Aws, discover
from ec2ir.aws.targets import check_partition, parse_arn, select
from ec2ir.containment import nacl, restore
from ec2ir.containment.check import Breach, BreachKind, CheckReport
from ec2ir.containment.steps import Options
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError, UsageError
from ec2ir.core.models import Hold, InstanceResult, Place
from ec2ir.core.text import printable
from ec2ir.engine.facade import Engine
from ec2ir.engine.results import PlanReport, Progress, RunReport, failure
from ec2ir.evidence.verify import Finding
from ec2ir.permissions.policy import ALLOWED

T = TypeVar("T")
# The holds of one place, or the instances named in it, by place; None is the table's own place.
ByPlace = dict[Place | None, list[str]]


@dataclass
class Places:
    """The clients of every place a run reaches, built on first use from the home session: the
    same account's other Regions with its own credentials, another account's through
    ``arn:<partition>:iam::<account>:role/<role_name>`` (and ``external_id``)."""

    home: Aws
    role_name: str = ""
    external_id: str | None = None
    _built: dict[Place, Aws] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def home_place(self) -> Place:
        return Place(self.home.account(), self.home.region())

    def aws_at(self, place: Place) -> Aws:
        if place == self.home_place():
            return self.home
        with self._lock:
            if place not in self._built:
                self._built[place] = self._build(place)
            return self._built[place]

    def role_arn(self, account: str) -> str:
        return f"arn:{self.home.partition()}:iam::{account}:role/{self.role_name}"

    def _build(self, place: Place) -> Aws:
        if place.account == self.home.account():
            return self.home.elsewhere(place.region)
        if not self.role_name:
            raise UsageError(
                f"instances in account {place.account}: ec2ir acts in {self.home.account()}",
                "pass --role-name NAME: ec2ir assumes arn:<partition>:iam::<account>:role/NAME in each "
                "other account (with --external-id if its trust policy asks for one)",
            )
        return self.home.elsewhere(place.region, self.role_arn(place.account), self.external_id)


class Outbreak(Engine):
    """The engine of a run that may span places. Instances are named by id (the run's own place)
    or by ARN (anywhere); a run whose instances are all in the run's own place is exactly the
    one-place engine's run. Commands that take no instances (verify, block-ip, the forensic
    workstation) stay in the run's own place."""

    def __init__(self, *args: object, places: Places | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.places = places or Places(self.aws)
        self._engines: dict[Place, Engine] = {}
        self._engines_lock = threading.Lock()
        # the Regions --regions named that could not be read (not enabled, no permission): the
        # adapter names them, and the run goes on in the others
        self.unreachable: dict[Place, Ec2irError] = {}

    # -- where each instance is --------------------------------------------------------------------

    def engine_at(self, place: Place | None) -> Engine:
        """The engine of one place: this one for the run's own, else one with the place's clients
        and the same table (its holds keyed by the place), knobs and Ctrl-C."""
        if place is None or place == self.places.home_place():
            return self
        with self._engines_lock:
            if place not in self._engines:
                aws = self.places.aws_at(place)
                self._engines[place] = Engine(
                    aws,
                    self.store.at(place),
                    concurrency=self.concurrency,
                    evidence_bucket=self.evidence_bucket if self._own_account(place) else "",
                    clock=self.clock,
                    sleep=self.sleep,
                    interrupt=self.interrupt,
                )
            return self._engines[place]

    def split(self, references: Iterable[str]) -> ByPlace:
        """The named instances by place, in the order named: an ARN's place (the run's own place
        is None), a bare id the run's own place."""
        by_place: ByPlace = {}
        for reference in references:
            if reference.startswith("arn:"):
                home = self.places.home_place()
                arn = parse_arn(reference)
                check_partition(arn, self.aws.partition())
                place: Place | None = Place(arn.account, arn.region)
                key, instance_id = (None if place == home else place), arn.instance_id
            else:
                key, instance_id = None, reference
            by_place.setdefault(key, []).append(instance_id)
        return by_place

    def held_places(self, references: Iterable[str], case_id: str) -> ByPlace:
        """For release and rejoin: a bare id's place is where the case's hold on it says; an ARN's
        must be where the hold is, or nothing of the case is held there."""
        named = list(references)
        validate.case_id(case_id)  # bad input is refused before the table is read
        bare_named = [r for r in named if not r.startswith("arn:")]
        if bare_named:
            validate.instance_ids(bare_named)
        by_place = self.split(named)
        bare = set(by_place.get(None, [])) - {parse_arn(r).instance_id for r in named if r.startswith("arn:")}
        if not bare:
            return by_place
        recorded = {h.instance_id: h.place for h in self.store.holds_everywhere(case_id)}
        moved: ByPlace = {}
        for instance_id in by_place.get(None, []):
            place = recorded.get(instance_id) if instance_id in bare else None
            moved.setdefault(place, []).append(instance_id)
        for place, ids in by_place.items():
            if place is not None:
                moved.setdefault(place, []).extend(ids)
        return moved

    def locate(self, instance_ids: Iterable[str], regions: Iterable[str]) -> dict[str, Place]:
        """``--regions``: where each bare id is among these Regions of the run's account, asked of
        every Region at once; an id found in none is absent (the run reports it not found). A
        Region that cannot be read is named in ``unreachable`` and the others still answer."""
        ids = list(dict.fromkeys(instance_ids))
        found: dict[str, Place] = {}
        for place, answer in self._in_regions(regions, lambda aws: list(discover(aws, ids))).items():
            for instance_id in answer:
                found.setdefault(instance_id, place)
        return found

    def select(self, filters: list[dict[str, object]], regions: Iterable[str]) -> list[str]:
        """``--filters`` with ``--regions``: the matching instances of every Region, each as the
        engine takes it (its id in the run's own Region, else its ARN)."""
        home = self.places.home_place()
        selected: list[str] = []
        for place, ids in self._in_regions(regions, lambda aws: select(aws, filters)).items():
            selected += [i if place == home else self._arn(place, i) for i in ids]
        return selected

    def place_ids(self, references: list[str], regions: Iterable[str]) -> list[str]:
        """Each bare id as the ARN of the Region it was found in (``locate``), unless that is the
        run's own Region; ARNs, and ids found nowhere, stay as they are."""
        home = self.places.home_place()
        found = self.locate([r for r in references if not r.startswith("arn:")], regions)
        return [self._arn(found[r], r) if r in found and found[r] != home else r for r in references]

    def arns_by_place(self, references: Iterable[str], case_id: str | None = None) -> dict[Place, list[str]]:
        """Every named instance as its ARN, by place (for the outbreak stack's shards): a bare id
        is the run's own place's, or, given the case (release), where the case's hold says."""
        by_place = self.held_places(references, case_id) if case_id else self.split(references)
        home = self.places.home_place()
        arns: dict[Place, list[str]] = {}
        for place, ids in by_place.items():
            arns.setdefault(place or home, []).extend(self._arn(place or home, i) for i in ids)
        return arns

    def _arn(self, place: Place, instance_id: str) -> str:
        return f"arn:{self.aws.partition()}:ec2:{place.region}:{place.account}:instance/{instance_id}"

    def _in_regions(self, regions: Iterable[str], read: Callable[[Aws], list[str]]) -> dict[Place, list[str]]:
        account = self.aws.account()
        places = [Place(account, region) for region in dict.fromkeys(regions)]
        answers = _each(places, lambda place: read(self.places.aws_at(place)))
        readable: dict[Place, list[str]] = {}
        for place, answer in answers.items():
            if isinstance(answer, Ec2irError):
                self.unreachable[place] = answer
            else:
                readable[place] = answer
        return readable

    def _own_account(self, place: Place) -> bool:
        return place.account == self.places.home_place().account

    def _options(self, engine: Engine, options: Options | None) -> Options | None:
        """A bucket named for the run (--evidence-bucket) is the run's own account's: every call
        names its expected owner, so another account's evidence goes to that account's own
        default bucket, next to its snapshots."""
        if engine is self or options is None or not options.evidence_bucket:
            return options
        if engine.aws.account() == self.aws.account():
            return options
        return replace(options, evidence_bucket="")

    # -- the commands that take instances ----------------------------------------------------------

    def isolate(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        office_cidr: str | None = None,
        allow_any_source: bool = False,
        options: Options | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        return self._run(
            "isolate",
            self.split(instance_ids),
            case_id,
            lambda engine, ids: Engine.isolate(
                engine, ids, case_id, office_cidr, allow_any_source, self._options(engine, options), progress
            ),
        )

    def collect(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        options: Options | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        return self._run(
            "collect",
            self.split(instance_ids),
            case_id,
            lambda engine, ids: Engine.collect(
                engine, ids, case_id, self._options(engine, options), progress
            ),
        )

    def release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        rejoin: bool = False,
        progress: Progress | None = None,
        replace_groups: Iterable[str] = (),
        skip_missing_groups: bool = False,
    ) -> RunReport:
        fixes = list(replace_groups)
        restore.GroupFixes.parse(fixes, skip_missing_groups)  # refused before any call, as ever
        return self._run(
            "release",
            self.held_places(instance_ids, case_id),
            case_id,
            lambda engine, ids: Engine.release(
                engine, ids, case_id, rejoin, progress, fixes, skip_missing_groups
            ),
        )

    def plan_release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        rejoin: bool = False,
        replace_groups: Iterable[str] = (),
        skip_missing_groups: bool = False,
    ) -> RunReport:
        fixes = list(replace_groups)
        restore.GroupFixes.parse(fixes, skip_missing_groups)  # refused before any call, as ever
        return self._run(
            "release",
            self.held_places(instance_ids, case_id),
            case_id,
            lambda engine, ids: Engine.plan_release(engine, ids, case_id, rejoin, fixes, skip_missing_groups),
        )

    def rejoin(
        self, instance_ids: Iterable[str], case_id: str, progress: Progress | None = None
    ) -> RunReport:
        return self._run(
            "rejoin",
            self.held_places(instance_ids, case_id),
            case_id,
            lambda engine, ids: Engine.rejoin(engine, ids, case_id, progress),
        )

    def plan(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        office_cidr: str | None = None,
        allow_any_source: bool = False,
        options: Options | None = None,
    ) -> PlanReport:
        return self._plan(
            self.split(instance_ids),
            lambda engine, ids: Engine.plan(
                engine, ids, case_id, office_cidr, allow_any_source, self._options(engine, options)
            ),
            case_id,
            "isolate",
        )

    def plan_collect(
        self, instance_ids: Iterable[str], case_id: str, options: Options | None = None
    ) -> PlanReport:
        return self._plan(
            self.split(instance_ids),
            lambda engine, ids: Engine.plan_collect(engine, ids, case_id, self._options(engine, options)),
            case_id,
            "collect",
        )

    # -- the commands that read the whole case -----------------------------------------------------

    def status(self, case_id: str | None = None, include_released: bool = False) -> list[Hold]:
        """Every place's holds: the table holds them all."""
        here = Engine.status(self, case_id, include_released)  # validates, and refuses a missing table
        elsewhere = [h for h in self.store.holds_everywhere(case_id) if h.place is not None]
        shown = [h for h in elsewhere if include_released or h.status.value != "released"]
        return here + shown

    def verify(self, case_id: str, reach: Callable[[str], Aws] | None = None) -> list[Finding]:
        """Each piece of evidence from the place that took it: a snapshot exists only in its
        account and Region, and another account's bucket is read through its role. An instance's
        place is its hold's (what ec2ir recorded); a place that cannot be reached makes its
        evidence UNREADABLE, never missing."""
        if reach is not None or not self.store.exists():  # the engine's own refusal of no table
            return Engine.verify(self, case_id, reach)
        held = {h.instance_id: h.place for h in self.store.holds_everywhere(validate.case_id(case_id))}
        return Engine.verify(self, case_id, lambda target: self.engine_at(held.get(target)).aws)

    def block_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """At the subnet edge of every instance the case holds, in each place, from there."""
        raw = list(cidrs)
        return self._edge(case_id, lambda engine: Engine.block_ip(engine, raw, case_id, dry_run))

    def unblock_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """The case's deny entries for these addresses removed, in each place, from there."""
        raw = list(cidrs)
        return self._edge(case_id, lambda engine: Engine.unblock_ip(engine, raw, case_id, dry_run))

    def _edge(self, case_id: str, act: Callable[[Engine], nacl.NaclReport]) -> nacl.NaclReport:
        here = act(self)  # validates, and refuses a missing table, before any other place
        places = sorted({h.place for h in self.store.holds_everywhere(case_id) if h.place is not None})
        for place, answer in _each(places, lambda place: act(self.engine_at(place))).items():
            if isinstance(answer, Ec2irError):
                here.problems.append(nacl.Problem("", printable(f"{place}: not reached: {answer}")))
                continue
            here.changes += answer.changes
            here.notes += [f"{place}: {note}" for note in answer.notes]
            here.problems += [replace(p, text=f"{place}: {p.text}") for p in answer.problems]
            here.acl_subnets |= answer.acl_subnets
        return here

    def names(self, holds: Iterable[Hold]) -> tuple[dict[str, str], dict[str, str]]:
        """Each place's names from that place (a place ec2ir cannot reach shows none)."""
        instances: dict[str, str] = {}
        groups: dict[str, str] = {}
        by_place: dict[Place | None, list[Hold]] = {}
        for hold in holds:
            by_place.setdefault(hold.place, []).append(hold)
        for answer in _each(list(by_place), lambda p: Engine.names(self.engine_at(p), by_place[p])).values():
            if not isinstance(answer, Ec2irError):
                instances |= answer[0]
                groups |= answer[1]
        return instances, groups

    def check(self, case_id: str | None = None, repair: bool = False) -> CheckReport:
        """``status --check`` in every place that holds an instance of the case, each from its own
        clients; a place that cannot be reached is a breach (not checked), which no repair mends."""
        report = Engine.check(self, case_id, repair)  # validates, and refuses a missing table, first
        places = sorted({h.place for h in self.store.holds_everywhere(case_id) if h.place is not None})
        answers = _each(places, lambda place: Engine.check(self.engine_at(place), case_id, repair))
        # after a repair, what is still in breach in every place (None: nothing needed one)
        remaining = report.remaining
        for place, answer in answers.items():
            if isinstance(answer, Ec2irError):
                report.notes.append(printable(f"{place}: NOT CHECKED: {answer}"))
                unchecked = _unchecked(place, answer)
                report.breaches.append(unchecked)
                remaining = [*(remaining or []), unchecked] if repair else remaining
                continue
            report.checked += answer.checked
            report.breaches += answer.breaches
            report.notes += [f"{place}: {note}" for note in answer.notes]
            report.repaired |= answer.repaired
            if answer.remaining is not None:
                remaining = [*(remaining or []), *answer.remaining]
        report.remaining = remaining
        return report

    # -- running each place --------------------------------------------------------------------------

    def _run(
        self,
        action: str,
        by_place: ByPlace,
        case_id: str,
        command: Callable[[Engine, list[str]], RunReport],
    ) -> RunReport:
        if set(by_place) <= {None}:
            return command(self, by_place.get(None, []))
        answers = _each(list(by_place), lambda place: command(self.engine_at(place), by_place[place]))
        home = self.places.home_place()
        reports: dict[Place, RunReport] = {}
        for place, answer in answers.items():
            if isinstance(answer, Ec2irError):  # the place could not run at all
                failed = [_refused(i, action, place, answer) for i in by_place[place]]
                answer = RunReport(action, case_id, "", failed)
            reports[place or home] = answer
        return _merged(reports, home, self.aws.caller_arn)

    def _plan(
        self,
        by_place: ByPlace,
        command: Callable[[Engine, list[str]], PlanReport],
        case_id: str,
        action: str,
    ) -> PlanReport:
        if set(by_place) <= {None}:
            return command(self, by_place.get(None, []))
        answers = _each(list(by_place), lambda place: command(self.engine_at(place), by_place[place]))
        home = self.places.home_place()
        plan = PlanReport(case_id, self.aws.caller_arn(), action=action)
        plans: dict[Place, PlanReport] = {}
        for place, answer in answers.items():
            if isinstance(answer, Ec2irError):
                plan.refused += [_refused(i, action, place or home, answer) for i in by_place[place]]
            else:
                plans[place or home] = answer
        plan.setup = _said_once({place: answer.setup for place, answer in plans.items()})
        for place, answer in plans.items():
            plan.instances |= answer.instances
            plan.evidence |= answer.evidence
            plan.eni_paths |= answer.eni_paths
            plan.names |= answer.names
            plan.refused += [replace(r, place=place) for r in answer.refused]
            plan.evidence_bucket = plan.evidence_bucket or answer.evidence_bucket
            plan.evidence_refusal = plan.evidence_refusal or answer.evidence_refusal
            for name, check in answer.checks.items():
                if name not in plan.checks or plan.checks[name].verdict == ALLOWED:
                    plan.checks[name] = check  # a place that may not do it decides
        return plan


P = TypeVar("P", Place, Place | None)


def _each(places: list[P], work: Callable[[P], T]) -> dict[P, T | Ec2irError]:
    """``work`` for every place at once, each on its own thread: a place's answer, or the error
    that stopped it, which never stops another place."""

    def guarded(place: P) -> T | Ec2irError:
        try:
            return work(place)
        except Ec2irError as error:
            return error
        except Exception as error:  # one place's defect must not hide the other places' results
            return Ec2irError(f"{type(error).__name__}: {error}")

    if not places:
        return {}
    with ThreadPoolExecutor(max_workers=len(places), thread_name_prefix="ec2ir-place") as pool:
        return dict(zip(places, pool.map(guarded, places), strict=True))


def _refused(instance_id: str, action: str, place: Place | None, error: Ec2irError) -> InstanceResult:
    return failure(instance_id, action, error, place=place)


def _merged(reports: dict[Place, RunReport], home: Place, caller: Callable[[], str]) -> RunReport:
    """One report of every place's: each result names its place; a note every place made is said
    once, any other with its place; the actor is the run's own (each place's is in its journal
    entries and holds)."""
    first = next(iter(reports.values()))
    merged = RunReport(first.action, first.case_id, "", [], blocks=first.blocks)
    merged.notes = _said_once({place: report.notes for place, report in reports.items()})
    for place, report in reports.items():
        merged.results += [replace(result, place=place) for result in report.results]
        merged.groups |= report.groups
        merged.group_names |= report.group_names
    home_report = reports.get(home)
    merged.actor = home_report.actor if home_report and home_report.actor else caller()
    return merged


def _said_once(lines: dict[Place, list[str]]) -> list[str]:
    """Every place's lines as one list: a line every place said (the state table's creation, the
    limits of isolation) once, any other after its place."""
    said = list(lines.values())
    everywhere = [line for line in said[0] if all(line in other for other in said[1:])] if said else []
    return everywhere + [
        f"{place}: {line}" for place, own in lines.items() for line in own if line not in everywhere
    ]


def _unchecked(place: Place, error: Ec2irError) -> Breach:
    return Breach(BreachKind.NOT_CHECKED, str(place), "", printable(f"cannot read {place}: {error}"))
