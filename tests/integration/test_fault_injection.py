"""Nothing lost: a fault at every AWS call of isolate and of release, then a fresh run.

The harness builds the scene once and saves the emulator's state; each run starts from a restored
copy of it. It first counts the calls a clean run makes, then replays the run once per call k:
(a) call k answers with an AWS error (throttling, a 500, AccessDenied, in turn), or
(b) call k succeeds and the process dies right after it (raised from botocore's transport).
A fresh run must then complete, and release must put back every ENI's groups and every other
recorded setting exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.containment.steps import Options
from ec2ir.core.errors import Ec2irError
from ec2ir.core.models import HoldStatus
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.engine.facade import Engine
from ec2ir.store.state import StateStore
from tests.support.faults import Crash, FaultPoint
from tests.support.fleets import Fleet

CASE = "IR-FAULT"
SERVICES = ("sts", "dynamodb", "ec2", "autoscaling", "elbv2", "elb", "iam")
ERRORS = ("RequestLimitExceeded", "InternalError", "AccessDenied")
# Evidence comes after the cut and never touches what release puts back; tests/integration/test_evidence.py
# crashes it on its own, so here every fault point lands on containment.
CONTAIN_ONLY = Options(evidence=False)


@dataclass
class Tally:
    fault_points: int = 0
    originals_lost: int = 0
    half_isolated: int = 0
    left_in_allow_all: int = 0  # ENIs a faulty run that ended (not crashed) left in allow-all

    def report(self, what: str) -> str:
        return (
            f"{what}: fault points tried {self.fault_points}, originals lost {self.originals_lost}, "
            f"instances left half isolated after the rerun {self.half_isolated}, ENIs left in "
            f"allow-all by a run that ended {self.left_in_allow_all}"
        )


def build(fleet: Fleet) -> list[str]:
    vpc = fleet.vpc(1)
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    multi = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=multi)
    protected = fleet.instance(vpc, [fleet.group(vpc, "db"), fleet.group(vpc, "backup")])
    fleet.ec2.modify_instance_attribute(InstanceId=protected, DisableApiTermination={"Value": True})
    return [multi, protected]


def settings(fleet: Fleet, instances: list[str]) -> dict[str, Any]:
    """Everything release must put back, read without ec2ir's code."""
    ec2 = fleet.ec2
    seen: dict[str, Any] = {"enis": fleet.eni_groups(instances)}
    associations = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    seen["profiles"] = sorted((a["InstanceId"], a["IamInstanceProfile"]["Arn"]) for a in associations)
    for instance in instances:
        described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
        seen[instance] = (
            ec2.describe_instance_attribute(InstanceId=instance, Attribute="disableApiTermination")[
                "DisableApiTermination"
            ]["Value"],
            ec2.describe_instance_attribute(
                InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior"
            )["InstanceInitiatedShutdownBehavior"]["Value"],
            sorted(
                (m["DeviceName"], m["Ebs"]["DeleteOnTermination"]) for m in described["BlockDeviceMappings"]
            ),
            sorted(
                (t["Key"], t["Value"])
                for t in described.get("Tags", [])
                if t["Key"].startswith("ec2ir:") and t["Key"] != "ec2ir:state"
            ),
        )
    return seen


def in_allow_all(engine: Engine, fleet: Fleet, instances: list[str]) -> int:
    """ENIs of ``instances`` sitting in one of ec2ir's recorded allow-all groups."""
    records = engine.store.group_records(engine.aws.region())
    allow_all = {record.roles["allow-all"] for record in records.values() if "allow-all" in record.roles}
    return sum(bool(set(groups) & allow_all) for groups in fleet.eni_groups(instances).values())


def fully_isolated(engine: Engine, fleet: Fleet, instance: str) -> bool:
    hold = engine.store.get(instance)
    groups = {g for eni in fleet.eni_groups([instance]).values() for g in eni}
    # ec2ir's isolation group is the one its record names (never one found by name or tag)
    records = engine.store.group_records(engine.aws.region())
    isolation = {record.roles["isolation"] for record in records.values() if "isolation" in record.roles}
    termination = fleet.ec2.describe_instance_attribute(
        InstanceId=instance, Attribute="disableApiTermination"
    )
    return (
        hold is not None
        and hold.status is HoldStatus.ISOLATED
        and len(isolation) == 1
        and groups == isolation
        and termination["DisableApiTermination"]["Value"] is True
    )


class Harness:
    """One scene, built once and saved; each fault point starts from a restored copy of it."""

    def __init__(self, emulator: InProcessEmulator, isolated_first: bool = False) -> None:
        self.emulator = emulator
        emulator.reset()
        self.fleet = Fleet(self.aws())
        self.instances = build(self.fleet)
        self.before = settings(self.fleet, self.instances)  # what release must put back
        if isolated_first:  # release's sweep starts from isolated instances
            self.engine(self.aws()).isolate(self.instances, CASE, options=CONTAIN_ONLY)
        self.scene = emulator.save()

    def aws(self) -> Aws:
        return Aws(AwsSettings(region="us-east-1", endpoint_url=self.emulator.endpoint_url))

    def engine(self, aws: Aws) -> Engine:
        return Engine(aws, StateStore(aws), concurrency=1)  # one worker: call k is the same call each time

    def fresh_scene(self) -> None:
        self.emulator.restore(self.scene)

    def faulty(self, point: FaultPoint) -> Engine:
        aws = self.aws()
        point.install(aws, SERVICES)
        engine = self.engine(aws)
        # the swaps' own clients too: the instance lane and the urgent swap out of allow-all
        for lane in (engine.lanes_aws, engine.urgent_aws):
            point.install(lane, ("ec2",))
        return engine

    def count_calls(self, run: Callable[[Engine, list[str]], object]) -> int:
        self.fresh_scene()
        point = FaultPoint()
        run(self.faulty(point), self.instances)
        return len(point.calls)

    def points(self, calls: int, shard: int) -> list[FaultPoint]:
        """This shard's share of the fault points: an AWS error at each call, then a crash right
        after each call."""
        every = [FaultPoint(at=k, error_code=ERRORS[k % len(ERRORS)]) for k in range(1, calls + 1)] + [
            FaultPoint(at=k, crash_after=True) for k in range(1, calls + 1)
        ]
        return every[shard::SHARDS]


def try_run(run: Callable[[], object]) -> None:
    # The faulty run may end any way at all; what matters is what the next run finds.
    with contextlib.suppress(Crash, Ec2irError):
        run()


# The sweeps are split into shards, so that parallel workers share them.
SHARDS = 4
shards = pytest.mark.parametrize("shard", range(SHARDS), ids=[f"shard-{n}" for n in range(SHARDS)])


@pytest.mark.slow  # one whole run per call of the command, twice
@shards
def test_a_fault_at_any_call_of_isolate_loses_nothing(emulator: InProcessEmulator, shard: int) -> None:
    harness = Harness(emulator)
    fleet, instances = harness.fleet, harness.instances
    calls = harness.count_calls(lambda e, ids: e.isolate(ids, CASE, options=CONTAIN_ONLY))
    tally = Tally()
    points = harness.points(calls, shard)
    for point in points:
        harness.fresh_scene()
        try_run(functools.partial(harness.faulty(point).isolate, instances, CASE, options=CONTAIN_ONLY))
        engine = harness.engine(harness.aws())
        if not point.crashed:  # a run that ends, however it ends, leaves no ENI in allow-all
            tally.left_in_allow_all += in_allow_all(engine, fleet, instances)

        engine.isolate(instances, CASE, options=CONTAIN_ONLY)
        tally.half_isolated += sum(not fully_isolated(engine, fleet, i) for i in instances)
        engine.release(instances, CASE)
        tally.originals_lost += settings(fleet, instances) != harness.before
        tally.fault_points += 1

    print(tally.report(f"isolate ({calls} calls, shard {shard})"))
    assert calls >= 30
    assert (tally.fault_points, tally.originals_lost, tally.half_isolated) == (len(points), 0, 0)
    assert len(points) >= 2 * calls // SHARDS
    assert tally.left_in_allow_all == 0


@pytest.mark.slow  # one whole run per call of the command, twice
@shards
def test_a_fault_at_any_call_of_release_loses_nothing(emulator: InProcessEmulator, shard: int) -> None:
    harness = Harness(emulator, isolated_first=True)
    fleet, instances = harness.fleet, harness.instances
    calls = harness.count_calls(lambda e, ids: e.release(ids, CASE))
    tally = Tally()
    points = harness.points(calls, shard)
    for point in points:
        harness.fresh_scene()
        try_run(functools.partial(harness.faulty(point).release, instances, CASE))

        engine = harness.engine(harness.aws())
        second = engine.release(instances, CASE)
        finished = all(r.ok or r.error_code == "NotIsolated" for r in second.results)
        tally.half_isolated += not finished
        tally.originals_lost += settings(fleet, instances) != harness.before
        tally.fault_points += 1

    print(tally.report(f"release ({calls} calls, shard {shard})"))
    assert calls >= 10
    assert (tally.fault_points, tally.originals_lost, tally.half_isolated) == (len(points), 0, 0)
    assert len(points) >= 2 * calls // SHARDS
