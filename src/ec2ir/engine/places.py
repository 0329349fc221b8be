"""Where a run's instances are: the clients of every place (account, Region) a run reaches, and
each named instance's place, from its ARN, from where ``--regions`` finds it, or from the case's
hold on it (ec2ir.engine.outbreak runs each place)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from ec2ir.aws.session import Aws, discover
from ec2ir.aws.targets import check_partition, parse_arn, select
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError, UsageError
from ec2ir.core.models import Place
from ec2ir.store.state import StateStore

T = TypeVar("T")
P = TypeVar("P", Place, Place | None)
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
    # the Regions --regions named that could not be read (not enabled, no permission): the
    # adapter names them, and the run goes on in the others
    unreachable: dict[Place, Ec2irError] = field(default_factory=dict)
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

    def split(self, references: Iterable[str]) -> ByPlace:
        """The named instances by place, in the order named: an ARN's place (the run's own place
        is None), a bare id the run's own place."""
        by_place: ByPlace = {}
        for reference in references:
            if reference.startswith("arn:"):
                home = self.home_place()
                arn = parse_arn(reference)
                check_partition(arn, self.home.partition())
                place: Place | None = Place(arn.account, arn.region)
                key, instance_id = (None if place == home else place), arn.instance_id
            else:
                key, instance_id = None, reference
            by_place.setdefault(key, []).append(instance_id)
        return by_place

    def held_places(self, references: Iterable[str], case_id: str, store: StateStore) -> ByPlace:
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
        store.require()  # no table: nothing is held, said as the one-place run says it
        recorded = {h.instance_id: h.place for h in store.holds_everywhere(case_id)}
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
        home = self.home_place()
        selected: list[str] = []
        for place, ids in self._in_regions(regions, lambda aws: select(aws, filters)).items():
            selected += [i if place == home else self._arn(place, i) for i in ids]
        return selected

    def place_ids(self, references: list[str], regions: Iterable[str]) -> list[str]:
        """Each bare id as the ARN of the Region it was found in (``locate``), unless that is the
        run's own Region; ARNs, and ids found nowhere, stay as they are."""
        home = self.home_place()
        found = self.locate([r for r in references if not r.startswith("arn:")], regions)
        return [self._arn(found[r], r) if r in found and found[r] != home else r for r in references]

    def arns_by_place(
        self, references: Iterable[str], store: StateStore, case_id: str | None = None
    ) -> dict[Place, list[str]]:
        """Every named instance as its ARN, by place (for the outbreak stack's shards): a bare id
        is the run's own place's, or, given the case (release), where the case's hold says."""
        by_place = self.held_places(references, case_id, store) if case_id else self.split(references)
        home = self.home_place()
        arns: dict[Place, list[str]] = {}
        for place, ids in by_place.items():
            arns.setdefault(place or home, []).extend(self._arn(place or home, i) for i in ids)
        return arns

    def _arn(self, place: Place, instance_id: str) -> str:
        return f"arn:{self.home.partition()}:ec2:{place.region}:{place.account}:instance/{instance_id}"

    def _in_regions(self, regions: Iterable[str], read: Callable[[Aws], list[str]]) -> dict[Place, list[str]]:
        account = self.home.account()
        places = [Place(account, region) for region in dict.fromkeys(regions)]
        answers = each(places, lambda place: read(self.aws_at(place)))
        readable: dict[Place, list[str]] = {}
        for place, answer in answers.items():
            if isinstance(answer, Ec2irError):
                self.unreachable[place] = answer
            else:
                readable[place] = answer
        return readable


def each(places: list[P], work: Callable[[P], T]) -> dict[P, T | Ec2irError]:
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
