"""The two swap lanes: a single-ENI instance's swap takes whichever lane is less busy, a multi-ENI
instance always goes per ENI, and a refused instance-lane call falls back to the ENI lane."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.containment.lanes import ENI_LANE, INSTANCE_LANE, SwapLanes
from ec2ir.engine.facade import Engine
from tests.support.fleets import Fleet


class HeldEniLane:
    """Holds the first ModifyNetworkInterfaceAttribute of a client in flight until released, so
    that the ENI lane is busy for as long as a test needs."""

    def __init__(self, aws: Aws) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self._first = True
        aws.ec2().meta.events.register("before-send.ec2.ModifyNetworkInterfaceAttribute", self._hold)

    def _hold(self, **_: Any) -> None:
        if self._first:
            self._first = False
            self.entered.set()
            self.released.wait(30)


@pytest.fixture
def held(aws: Aws) -> Iterator[HeldEniLane]:
    held = HeldEniLane(aws)
    yield held
    held.released.set()


def start_first_swap(
    lanes: SwapLanes, held: HeldEniLane, instance_id: str, eni_id: str, group: str
) -> threading.Thread:
    first = threading.Thread(target=lanes.swap, args=(instance_id, eni_id, [group], True))
    first.start()
    assert held.entered.wait(30)
    return first


def test_a_single_eni_swap_takes_the_instance_lane_while_the_eni_lane_is_busy(
    aws: Aws, fleet: Fleet, held: HeldEniLane
) -> None:
    vpc = fleet.vpc(61)
    web, isolation = fleet.group(vpc, "web"), fleet.group(vpc, "isolation")
    one, two = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    (eni_one,), (eni_two,) = fleet.eni_groups([one]), fleet.eni_groups([two])
    lanes = SwapLanes(aws, aws.sibling())

    first = start_first_swap(lanes, held, one, eni_one, isolation)
    lanes.swap(two, eni_two, [isolation], single_eni=True)
    assert fleet.eni_groups([two]) == {eni_two: (isolation,)}  # done while the first is in flight
    held.released.set()
    first.join(30)

    assert lanes.chosen == {ENI_LANE: 1, INSTANCE_LANE: 1}
    assert fleet.eni_groups([one, two]) == {eni_one: (isolation,), eni_two: (isolation,)}


def test_a_multi_eni_instance_always_goes_per_eni(aws: Aws, fleet: Fleet, held: HeldEniLane) -> None:
    vpc = fleet.vpc(62)
    web, db, isolation = fleet.group(vpc, "web"), fleet.group(vpc, "db"), fleet.group(vpc, "isolation")
    single = fleet.instance(vpc, [web])
    multi = fleet.instance(vpc, [web], extra_enis=[[db]])
    (eni_single,) = fleet.eni_groups([single])
    before = fleet.eni_groups([multi])
    swapped, left = sorted(before)
    lanes = SwapLanes(aws, aws.sibling())

    first = start_first_swap(lanes, held, single, eni_single, isolation)
    lanes.swap(multi, swapped, [isolation], single_eni=False)  # the ENI lane, busy or not
    held.released.set()
    first.join(30)

    assert lanes.chosen == {ENI_LANE: 2, INSTANCE_LANE: 0}
    assert fleet.eni_groups([multi]) == {swapped: (isolation,), left: before[left]}


def test_a_refused_instance_lane_call_falls_back_to_the_eni_lane(
    aws: Aws, fleet: Fleet, held: HeldEniLane
) -> None:
    # An ENI attached after discovery: EC2 refuses ModifyInstanceAttribute(Groups) on the now
    # two-ENI instance, and the swap of the ENI the run knows still happens.
    vpc = fleet.vpc(63)
    web, db, isolation = fleet.group(vpc, "web"), fleet.group(vpc, "db"), fleet.group(vpc, "isolation")
    other = fleet.instance(vpc, [web])
    (eni_other,) = fleet.eni_groups([other])
    grown = fleet.instance(vpc, [web], extra_enis=[[db]])
    before = fleet.eni_groups([grown])
    known, attached_since = sorted(before)
    lanes = SwapLanes(aws, aws.sibling())

    first = start_first_swap(lanes, held, other, eni_other, isolation)
    lanes.swap(grown, known, [isolation], single_eni=True)
    held.released.set()
    first.join(30)

    assert lanes.chosen[INSTANCE_LANE] == 1
    # the other ENI is untouched: the next isolate records its originals and cuts it
    assert fleet.eni_groups([grown]) == {known: (isolation,), attached_since: before[attached_since]}


def test_isolate_spreads_single_eni_swaps_over_both_lanes_and_release_restores_them(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(64)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(12)]
    before = fleet.eni_groups(instances)
    # The ENI lane's first swap stays in flight until a swap has gone through the instance lane:
    # the instance lane must take the next single-ENI swap while the ENI lane is busy.
    held = HeldEniLane(engine.aws)
    sent: list[str] = []

    def note(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name == "ModifyInstanceAttribute" and "Groups" in params:
            sent.append(params["InstanceId"])
            held.released.set()

    engine.lanes_aws.ec2().meta.events.register("before-parameter-build.ec2", note)
    try:
        report = engine.isolate(instances, "CASE-LANES")
    finally:
        held.released.set()

    assert all(result.ok for result in report.results), [r.steps for r in report.results]
    isolation = report.groups[vpc].isolation_group_id
    assert set(fleet.eni_groups(instances).values()) == {(isolation,)}
    assert sent and set(sent) <= set(instances)

    released = engine.release(instances, "CASE-LANES")
    assert all(result.ok for result in released.results)
    assert fleet.eni_groups(instances) == before
