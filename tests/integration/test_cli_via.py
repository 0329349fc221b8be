"""``isolate`` and ``release --via stepfunctions --outbreak-stack`` from the command line: the run
handed to the outbreak stack (created in the emulator through CloudFormation), its execution run
shard by shard by the real shard and summary functions against the emulator and answered at the
emulator's door (tests/support/outbreak_stack.py), followed on standard error and printed as a
local run's."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from ec2ir.aws.session import Aws
from ec2ir.core.models import HoldStatus
from ec2ir.emulator.inprocess import InProcessEmulator
from tests.conftest import Cli
from tests.support.outbreak import MEMBER, ROLE, OutbreakScene, outbreak_scene
from tests.support.outbreak_stack import STACK, StackAtTheDoor, answering, create_bucket, create_stack

CASE = "IR-VIA"


@pytest.fixture
def scene(aws: Aws) -> OutbreakScene:
    return outbreak_scene(aws)


@pytest.fixture
def stack(aws: Aws, emulator: InProcessEmulator) -> Iterator[StackAtTheDoor]:
    create_bucket(aws)
    create_stack(aws)
    with answering(emulator, StackAtTheDoor(aws)) as door:
        yield door


def _via(command: str, *references: str, output: str = "table") -> list[str]:
    return [
        command,
        *references,
        "--case",
        CASE,
        "--role-name",
        ROLE,
        "--via",
        "stepfunctions",
        "--outbreak-stack",
        STACK,
        "--output",
        output,
    ]


def _shard_lines(err: str) -> list[str]:
    """The progress lines that each say one shard's outcome: they begin with its place."""
    return [line for line in err.splitlines() if re.match(r"ec2ir: [0-9]{12}/[a-z0-9-]+: ", line)]


def test_isolate_via_stepfunctions_contains_every_place_through_the_shards_and_prints_the_run(
    run: Cli, scene: OutbreakScene, stack: StackAtTheDoor
) -> None:
    isolated = run(*_via("isolate", *scene.references()))

    assert isolated.code == 0, isolated.err
    for infected in scene.infected:
        [row] = [line for line in isolated.out.splitlines() if line.startswith(infected.instance_id)]
        assert str(infected.place) in row and "isolated" in row, row
        assert scene.groups_now(infected) != {infected.group_id}
    lines = isolated.err.splitlines()
    assert (
        lines[0].startswith(f"ec2ir: started ec2ir-isolate-{CASE}-")
        and f"on {STACK} (4 shard(s))" in lines[0]
    )
    assert sorted(_shard_lines(isolated.err)) == sorted(
        f"ec2ir: {i.place}: 1 of 1 isolate (ok)" for i in scene.infected
    )
    assert lines[-1] == "ec2ir: shards: 4 of 4 ended"
    # the shards ran in each place, and the holds are the case's, in the home account's table
    assert sorted(stack.shards_run) == sorted(i.place for i in scene.infected)
    held = scene.outbreak.store.holds_everywhere(CASE)
    assert {(h.instance_id, h.status) for h in held} == {
        (i.instance_id, HoldStatus.ISOLATED) for i in scene.infected
    }
    # the execution had ended at its first poll: the follower never paused
    [execution] = stack.executions.values()
    assert execution.polls == 1


def test_the_same_request_again_after_its_execution_ended_runs_it_again_as_a_new_execution(
    run: Cli, scene: OutbreakScene, stack: StackAtTheDoor, aws: Aws
) -> None:
    first = run(*_via("isolate", *scene.references(), output="json"))
    again = run(*_via("isolate", *scene.references(), output="json"))

    assert (first.code, again.code) == (0, 0), again.err
    placed = {(r["instance_id"], r["account"], r["region"], r["ok"]) for r in again.json()["results"]}
    assert placed == {(i.instance_id, i.place.account, i.place.region, True) for i in scene.infected}
    # an ended execution's old summary is never taken for this run's: the request runs again
    [one, refused, two] = stack.starts
    assert refused["name"] == one["name"] and stack.refused == [one["name"]]
    assert two["name"] != one["name"] and two["input"] == one["input"]
    assert "ran before and has ended: starting the request again" in again.err
    assert len(stack.shards_run) == 2 * len(scene.infected)  # each shard ran again (a no-op)
    machine = aws.client("stepfunctions").list_state_machines()["stateMachines"][0]["stateMachineArn"]
    assert len(aws.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]) == 2


def test_an_execution_of_the_request_s_name_with_another_input_is_refused_never_followed(
    scene: OutbreakScene, stack: StackAtTheDoor, aws: Aws
) -> None:
    from ec2ir.cli import stepfunctions
    from ec2ir.core.errors import UsageError

    machine = aws.client("stepfunctions").list_state_machines()["stateMachines"][0]["stateMachineArn"]
    first, second = scene.infected[2], scene.infected[3]
    theirs = stepfunctions.request("isolate", CASE, {first.place: [first.arn]}, {})
    ours = stepfunctions.request("isolate", CASE, {second.place: [second.arn]}, {})
    name = stepfunctions.execution_name("isolate", CASE, ours)
    stepfunctions.start(aws, machine, name, theirs)  # someone else started it first, under our name

    with pytest.raises(UsageError, match="exists with another input"):
        stepfunctions.start(aws, machine, name, ours)


def test_a_shard_that_failed_fails_its_instances_by_name_and_the_run_exits_1(
    run: Cli, scene: OutbreakScene, stack: StackAtTheDoor
) -> None:
    lost = next(i for i in scene.infected if i.place.account == MEMBER)
    stack.failing[lost.place] = ("Lambda.TooManyRequestsException", "Rate exceeded")

    isolated = run(*_via("isolate", *scene.references()))

    assert isolated.code == 1, isolated.err
    failures = [line for line in isolated.err.splitlines() if line.startswith("ec2ir: i-")]
    assert failures == [f"ec2ir: {lost.instance_id}: Lambda.TooManyRequestsException: Rate exceeded"]
    assert f"ec2ir: {lost.place}: 0 of 1 isolate (1 FAILED)" in _shard_lines(isolated.err)
    [row] = [line for line in isolated.out.splitlines() if line.startswith(lost.instance_id)]
    assert "FAILED Lambda.TooManyRequestsException" in row and str(lost.place) in row
    assert scene.groups_now(lost) == {lost.group_id}
    for contained in (i for i in scene.infected if i is not lost):
        assert scene.groups_now(contained) != {contained.group_id}


def test_release_via_stepfunctions_sends_bare_ids_to_the_places_of_their_holds(
    run: Cli, scene: OutbreakScene, stack: StackAtTheDoor
) -> None:
    isolated = run("isolate", *scene.references(), "--case", CASE, "--role-name", ROLE)
    assert isolated.code == 0, isolated.err
    assert stack.starts == []  # a local run

    # the CLI's own --table is not where the shards keep the holds: the stack's table is
    released = run(*_via("release", *(i.instance_id for i in scene.infected)), "--table", "not-the-stacks")

    assert released.code == 0, released.err
    [started] = stack.starts
    assert started["input"]["action"] == "release"
    assert started["input"]["options"] == {"rejoin": False}
    assert started["input"]["shards"] == [
        {"account": i.place.account, "region": i.place.region, "instance_arns": [i.arn]}
        for i in sorted(scene.infected, key=lambda i: (i.place.account, i.place.region))
    ]
    for infected in scene.infected:
        assert scene.groups_now(infected) == {infected.group_id}
        [row] = [line for line in released.out.splitlines() if line.startswith(infected.instance_id)]
        assert str(infected.place) in row and "released" in row, row
    statuses = {h.status for h in scene.outbreak.store.holds_everywhere(CASE)}
    assert statuses == {HoldStatus.RELEASED}


def test_an_instance_no_shard_answered_for_fails_and_the_run_exits_1(
    run: Cli, scene: OutbreakScene, stack: StackAtTheDoor
) -> None:
    refused = next(i for i in scene.infected if i.place.account == MEMBER)
    stack.refusing.add(refused.place)

    isolated = run(*_via("isolate", *scene.references(), output="json"))

    assert isolated.code == 1, isolated.err
    by_id = {r["instance_id"]: r for r in isolated.json()["results"]}
    assert (by_id[refused.instance_id]["ok"], by_id[refused.instance_id]["error_code"]) == (
        False,
        "NoShardResult",
    )
    assert all(r["ok"] for i, r in by_id.items() if i != refused.instance_id)
    assert scene.groups_now(refused) == {refused.group_id}
