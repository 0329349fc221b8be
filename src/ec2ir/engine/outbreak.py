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
from dataclasses import replace

from ec2ir.aws.session import Aws
from ec2ir.containment import nacl, restore
from ec2ir.containment.check import Breach, BreachKind, CheckReport
from ec2ir.containment.steps import Options
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError
from ec2ir.core.models import ACTIVE_STATUSES, Hold, InstanceResult, Place
from ec2ir.core.text import printable
from ec2ir.engine.facade import Engine
from ec2ir.engine.places import ByPlace, Places, each
from ec2ir.engine.results import PlanReport, Progress, RunReport, failure
from ec2ir.evidence.verify import Finding
from ec2ir.permissions.policy import ALLOWED


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
            self.places.split(instance_ids),
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
            self.places.split(instance_ids),
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
        return self._release(
            instance_ids,
            case_id,
            fixes,
            skip_missing_groups,
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
        return self._release(
            instance_ids,
            case_id,
            fixes,
            skip_missing_groups,
            lambda engine, ids: Engine.plan_release(engine, ids, case_id, rejoin, fixes, skip_missing_groups),
        )

    def _release(
        self,
        instance_ids: Iterable[str],
        case_id: str,
        fixes: list[str],
        skip_missing_groups: bool,
        command: Callable[[Engine, list[str]], RunReport],
    ) -> RunReport:
        """Release (or its plan) in each place the case's holds name."""
        restore.GroupFixes.parse(fixes, skip_missing_groups)  # refused before any call, as ever
        return self._run(
            "release", self.places.held_places(instance_ids, case_id, self.store), case_id, command
        )

    def rejoin(
        self, instance_ids: Iterable[str], case_id: str, progress: Progress | None = None
    ) -> RunReport:
        return self._run(
            "rejoin",
            self.places.held_places(instance_ids, case_id, self.store),
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
            self.places.split(instance_ids),
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
            self.places.split(instance_ids),
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
        return self._edge(
            "block-ip", raw, case_id, dry_run, lambda e: Engine.block_ip(e, raw, case_id, dry_run)
        )

    def unblock_ip(self, cidrs: Iterable[str], case_id: str, dry_run: bool = False) -> nacl.NaclReport:
        """The case's deny entries for these addresses removed, in each place, from there."""
        raw = list(cidrs)
        return self._edge(
            "unblock-ip", raw, case_id, dry_run, lambda e: Engine.unblock_ip(e, raw, case_id, dry_run)
        )

    def _edge(
        self,
        action: str,
        raw: list[str],
        case_id: str,
        dry_run: bool,
        act: Callable[[Engine], nacl.NaclReport],
    ) -> nacl.NaclReport:
        """Each place the case holds an instance in (active ones, to block; any, to unblock: its
        entries outlive a release), and the run's own place whenever it holds one, or when no
        place does, which then refuses as a one-place run would."""
        case = validate.case_id(case_id)
        nacl.parse_blocks(raw, skip_unsafe=False, check=action == "block-ip")  # bad input: exit 2 at once
        self.store.require()
        blocking = action == "block-ip"
        held = [h for h in self.store.holds_everywhere(case) if h.status in ACTIVE_STATUSES or not blocking]
        places = sorted({h.place for h in held if h.place is not None})
        if any(h.place is None for h in held) or not places:
            here = act(self)
        else:
            here = nacl.NaclReport(action, case, self.aws.caller_arn(), dry_run=dry_run)
        for place, answer in each(places, lambda place: act(self.engine_at(place))).items():
            _add_edge(here, place, answer)
        return here

    def names(self, holds: Iterable[Hold]) -> tuple[dict[str, str], dict[str, str]]:
        """Each place's names from that place (a place ec2ir cannot reach shows none)."""
        instances: dict[str, str] = {}
        groups: dict[str, str] = {}
        by_place: dict[Place | None, list[Hold]] = {}
        for hold in holds:
            by_place.setdefault(hold.place, []).append(hold)
        for answer in each(list(by_place), lambda p: Engine.names(self.engine_at(p), by_place[p])).values():
            if not isinstance(answer, Ec2irError):
                instances |= answer[0]
                groups |= answer[1]
        return instances, groups

    def check(self, case_id: str | None = None, repair: bool = False) -> CheckReport:
        """``status --check`` in every place that holds an instance of the case, each from its own
        clients; a place that cannot be reached is a breach (not checked), which no repair mends."""
        report = Engine.check(self, case_id, repair)  # validates, and refuses a missing table, first
        places = sorted({h.place for h in self.store.holds_everywhere(case_id) if h.place is not None})
        answers = each(places, lambda place: Engine.check(self.engine_at(place), case_id, repair))
        for place, answer in answers.items():
            _add_check(report, place, answer, repair)
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
        answers = each(list(by_place), lambda place: command(self.engine_at(place), by_place[place]))
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
        answers = each(list(by_place), lambda place: command(self.engine_at(place), by_place[place]))
        home = self.places.home_place()
        plan = PlanReport(case_id, self.aws.caller_arn(), action=action)
        plans: dict[Place, PlanReport] = {}
        for place, answer in answers.items():
            if isinstance(answer, Ec2irError):
                plan.refused += [_refused(i, action, place or home, answer) for i in by_place[place]]
            else:
                plans[place or home] = answer
        return _merged_plan(plan, plans)


def _merged_plan(plan: PlanReport, plans: dict[Place, PlanReport]) -> PlanReport:
    """Every place's plan in ``plan``: a line every place said once, the others after their place;
    of one permission's checks, a place that may not do it decides."""
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
                plan.checks[name] = check
    return plan


def _add_edge(here: nacl.NaclReport, place: Place, answer: nacl.NaclReport | Ec2irError) -> None:
    """One place's network ACL work in the run's report, each note and problem named by place."""
    if isinstance(answer, Ec2irError):
        here.problems.append(nacl.Problem("", printable(f"{place}: not reached: {answer}")))
        return
    here.changes += answer.changes
    here.notes += [f"{place}: {note}" for note in answer.notes]
    here.problems += [replace(p, text=f"{place}: {p.text}") for p in answer.problems]
    here.acl_subnets |= answer.acl_subnets


def _add_check(report: CheckReport, place: Place, answer: CheckReport | Ec2irError, repair: bool) -> None:
    """One place's check in the run's: a place that cannot be read is a breach (not checked),
    still there after any repair; ``remaining`` gathers what every repair left (None: nothing
    needed one)."""
    if isinstance(answer, Ec2irError):
        report.notes.append(printable(f"{place}: NOT CHECKED: {answer}"))
        unchecked = _unchecked(place, answer)
        report.breaches.append(unchecked)
        if repair:
            report.remaining = [*(report.remaining or []), unchecked]
        return
    report.checked += answer.checked
    report.breaches += answer.breaches
    report.notes += [f"{place}: {note}" for note in answer.notes]
    report.repaired |= answer.repaired
    if answer.remaining is not None:
        report.remaining = [*(report.remaining or []), *answer.remaining]


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
