"""ec2ir's own pauses (backoff, re-reads) go through the one sleep its ``Aws`` carries, and it pauses
only when something still has to settle: never before the read that confirms its own change."""

from __future__ import annotations

import threading
import time

import pytest

from ec2ir.aws.session import Aws
from ec2ir.containment.groups import Rule, enforce_rules, ssh_from
from ec2ir.containment.lanes import set_eni_groups
from ec2ir.store.items import instance_key
from ec2ir.store.state import StateStore
from tests.support.faults import Answer, Fault, answer, inject
from tests.support.fleets import Fleet
from tests.support.waiting import RecordedPauses

LOCKED_DOWN = frozenset({ssh_from("10.9.0.0/16"), Rule(True, "tcp", 443, 443, "10.9.0.0/16")})


@pytest.fixture
def real_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every pause asked of ``time.sleep`` itself during the test, answered at once: ec2ir must ask
    none, since its pauses go through its ``Aws``."""
    asked: list[float] = []
    real = time.sleep

    def instead(seconds: float) -> None:
        if seconds:
            asked.append(seconds)
        real(0)

    monkeypatch.setattr(time, "sleep", instead)
    return asked


def pausing(aws: Aws) -> tuple[Aws, RecordedPauses]:
    pauses = RecordedPauses()
    return Aws(aws.settings, sleep=pauses), pauses


def test_enforcing_rules_confirms_its_own_change_without_pausing(
    aws: Aws, fleet: Fleet, real_sleeps: list[float]
) -> None:
    group = fleet.group(fleet.vpc(9), "drifted")  # a new group: egress to anywhere, no ingress
    recorded, pauses = pausing(aws)

    enforced = enforce_rules(recorded, group, LOCKED_DOWN)

    assert enforced.settled == LOCKED_DOWN
    assert any(change.startswith("revoked") for change in enforced.changes)
    assert pauses.pauses == []
    assert real_sleeps == []


def test_a_reread_that_still_differs_pauses_before_the_next_round(
    aws: Aws, fleet: Fleet, real_sleeps: list[float]
) -> None:
    group = fleet.group(fleet.vpc(9), "raced")
    recorded, pauses = pausing(aws)
    # A racing run "already added" the SSH rule, which is in fact not there yet: the confirming
    # re-read differs, and the round after it waits before reading again.
    inject(recorded, Fault("ec2", "AuthorizeSecurityGroupIngress", "InvalidPermission.Duplicate", times=1))

    enforced = enforce_rules(recorded, group, LOCKED_DOWN)

    assert enforced.settled == LOCKED_DOWN
    assert len(pauses.pauses) == 1 and pauses.pauses[0] > 0
    assert real_sleeps == []


def test_enforcing_rules_that_never_settle_keeps_its_patience(
    aws: Aws, fleet: Fleet, real_sleeps: list[float]
) -> None:
    group = fleet.group(fleet.vpc(9), "never-settles")
    recorded, pauses = pausing(aws)
    inject(recorded, Fault("ec2", "AuthorizeSecurityGroupIngress", "InvalidPermission.Duplicate"))

    enforced = enforce_rules(recorded, group, LOCKED_DOWN)

    assert enforced.settled is None
    assert sum(pauses.pauses) >= 0.6  # as long as ec2ir has always given a racing change
    assert real_sleeps == []


def test_patient_calls_back_off_through_the_sleep_of_their_aws(
    aws: Aws, fleet: Fleet, real_sleeps: list[float]
) -> None:
    vpc = fleet.vpc(9)
    eni = fleet.ec2.create_network_interface(SubnetId=fleet.subnets[vpc])["NetworkInterface"]
    group = fleet.group(vpc, "target")
    recorded, pauses = pausing(aws)
    # without botocore's retries, each throttled answer reaches ec2ir's own backoff; a sibling
    # keeps its parent's sleep
    once = recorded.sibling(retries=False)
    inject(once, Fault("ec2", "ModifyNetworkInterfaceAttribute", "RequestLimitExceeded", status=503, times=2))

    set_eni_groups(once, eni["NetworkInterfaceId"], [group])

    assert len(pauses.pauses) == 2
    assert real_sleeps == []
    described = fleet.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni["NetworkInterfaceId"]])
    assert [g["GroupId"] for g in described["NetworkInterfaces"][0]["Groups"]] == [group]


def test_unprocessed_keys_are_asked_again_after_a_pause_through_the_aws(
    aws: Aws, real_sleeps: list[float]
) -> None:
    recorded, pauses = pausing(aws)
    store = StateStore(recorded)
    store.ensure_table()
    keys = [instance_key("i-0123456789abcdef0")]
    answer(
        recorded,
        Answer(
            "dynamodb",
            "BatchGetItem",
            {"Responses": {store.table: []}, "UnprocessedKeys": {store.table: {"Keys": keys}}},
            times=1,
        ),
    )

    assert store.get_many(["i-0123456789abcdef0"]) == {}
    assert len(pauses.pauses) == 1
    assert real_sleeps == []


def test_botocore_s_own_throttled_retries_wait_for_no_real_time(
    aws: Aws, fleet: Fleet, real_sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's botocore waits in virtual time: throttled in adaptive mode, a client's rate
    limiter would otherwise wait real seconds on its token bucket (a condition's wait, not a
    sleep) before each retry."""
    waits: list[float] = []
    real_wait = threading.Condition.wait

    def recorded_wait(condition: threading.Condition, timeout: float | None = None) -> bool:
        if timeout:
            waits.append(timeout)
            return real_wait(condition, 0)
        return real_wait(condition, timeout)  # an untimed wait (another thread's) waits as ever

    monkeypatch.setattr(threading.Condition, "wait", recorded_wait)
    fresh = Aws(aws.settings, sleep=aws.sleep)  # adaptive retries, as in production
    assert fresh.settings.retry_mode == "adaptive"
    throttled = inject(fresh, Fault("ec2", "DescribeVpcs", "RequestLimitExceeded", status=503, times=6))

    fresh.ec2().describe_vpcs()

    assert throttled.injected == 6 and throttled.attempts == 7
    assert waits == [] and real_sleeps == []
