"""The outbreak stack's functions against the emulator: shards of one case in four places (two
Regions of the home account, two of a member account reached through an assumed role), the summary
of their results, and the CLI's start-and-follow (the state machine in the emulator, its executions
answered by tests/support/outbreak_stack.py, which says why).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.cli import stepfunctions
from ec2ir.core.models import HoldStatus, Place
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.engine.outbreak import Outbreak
from ec2ir.handlers import outbreak as handler
from tests.support.outbreak import MEMBER, ROLE, OutbreakScene, outbreak_scene
from tests.support.outbreak_stack import (
    BUCKET,
    Execution,
    answer_on_client,
    cold_outbreak,
    create_bucket,
    create_stack,
    definition,
    write_results,
)

CASE = "IR-SHARDS"


@pytest.fixture
def scene(aws: Aws) -> OutbreakScene:
    return outbreak_scene(aws)


def _event(place: Place, arns: list[str], action: str = "isolate", **options: Any) -> dict[str, Any]:
    return {
        "case_id": CASE,
        "action": action,
        "account": place.account,
        "region": place.region,
        "instance_arns": arns,
        "options": options,
    }


def test_isolate_and_release_through_one_shard_per_place(scene: OutbreakScene, aws: Aws) -> None:
    for infected in scene.infected:
        answer = handler.handle_shard(_event(infected.place, [infected.arn]), cold_outbreak(aws))
        json.dumps(answer)  # what Step Functions receives
        assert answer["ok"], answer
        assert (answer["account"], answer["region"]) == (infected.place.account, infected.place.region)
        assert answer["counts"] == {"instances": 1, "ok": 1, "failed": 0}
        assert scene.groups_now(infected) != {infected.group_id}

    held = scene.outbreak.store.holds_everywhere(CASE)
    assert {h.instance_id for h in held} == {i.instance_id for i in scene.infected}

    for infected in scene.infected:
        answer = handler.handle_shard(_event(infected.place, [infected.arn], "release"), cold_outbreak(aws))
        assert answer["ok"], answer
        assert scene.groups_now(infected) == {infected.group_id}
    assert {h.status for h in scene.outbreak.store.holds_everywhere(CASE)} == {HoldStatus.RELEASED}


def test_a_bad_event_is_answered_as_refused_before_any_engine_is_built(scene: OutbreakScene) -> None:
    member = next(i for i in scene.infected if i.place.account == MEMBER)
    elsewhere = Place(MEMBER, "eu-central-1")

    def never() -> Outbreak:
        raise AssertionError("a refused event must not reach the engine")

    for event in (
        _event(elsewhere, [member.arn]),  # an ARN outside the shard's place
        _event(member.place, [member.arn], "terminate"),
        _event(member.place, [member.arn], memory=True),
        {**_event(member.place, [member.arn]), "case_id": "\x1b[2J"},
        ["not", "an", "object"],
    ):
        answer = handler.handle_shard(event, never)
        assert not answer["ok"] and answer["error"].startswith(handler.REFUSED), answer
        assert "\x1b" not in json.dumps(answer)
    assert scene.groups_now(member) == {member.group_id}


@dataclass
class StsAnswer:
    """The emulator's STS answering AssumeRole for the member account with an error."""

    status: int
    code: str
    calls: int = 0

    def wrap(self, dispatch: Callable[..., Any]) -> Callable[..., Any]:
        def answered(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
            if b"Action=AssumeRole" in body and MEMBER.encode() in body:
                self.calls += 1
                xml = (
                    f"<ErrorResponse><Error><Type>Sender</Type><Code>{self.code}</Code>"
                    "<Message>not authorized to perform sts:AssumeRole</Message></Error>"
                    "<RequestId>sts-refused</RequestId></ErrorResponse>"
                )
                return self.status, [("Content-Type", "text/xml")], xml.encode()
            return dispatch(method, url, headers, body)

        return answered


def test_a_role_that_cannot_be_assumed_fails_its_place_by_name_and_other_places_go_on(
    scene: OutbreakScene, aws: Aws, emulator: InProcessEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = StsAnswer(403, "AccessDenied")
    monkeypatch.setattr(emulator, "dispatch", refusal.wrap(emulator.dispatch))
    member = next(i for i in scene.infected if i.place.account == MEMBER)
    home = scene.infected[0]

    unreachable = handler.handle_shard(_event(member.place, [member.arn]), cold_outbreak(aws))
    reached = handler.handle_shard(_event(home.place, [home.arn]), cold_outbreak(aws))

    assert refusal.calls >= 1
    assert not unreachable["ok"]
    [failed] = unreachable["results"]
    assert failed["error_code"] == handler.UNREACHABLE
    assert str(member.place) in failed["detail"] and f"role/{ROLE}" in failed["detail"]
    assert "AccessDenied" in failed["detail"]
    assert scene.groups_now(member) == {member.group_id}
    assert reached["ok"], reached


def test_sts_failing_for_a_while_raises_so_that_step_functions_retries(
    scene: OutbreakScene, aws: Aws, emulator: InProcessEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator, "dispatch", StsAnswer(400, "Throttling").wrap(emulator.dispatch))
    member = next(i for i in scene.infected if i.place.account == MEMBER)

    with pytest.raises(handler.ShardTransient, match=str(member.place)):
        handler.handle_shard(_event(member.place, [member.arn]), cold_outbreak(aws))


# -- the summary -------------------------------------------------------------------------------------


def _written(aws: Aws, shards: list[dict[str, Any]], failed_child: dict[str, Any]) -> dict[str, str]:
    """The Map's ResultWriter files: the shards' outputs as succeeded children, and one failed child."""
    succeeded = [
        {
            "ExecutionArn": f"arn:aws:states:us-east-1:111111111111:execution:x/Shards:{n}",
            "Status": "SUCCEEDED",
        }
        | {"Input": "{}", "Output": json.dumps(shard)}
        for n, shard in enumerate(shards)
    ]
    failed = [failed_child | {"Status": "FAILED", "ExecutionArn": "arn:aws:states:::execution:x/Shards:f"}]
    return write_results(aws, succeeded, failed)


def test_the_summary_merges_every_shard_s_result_caught_failures_included(
    scene: OutbreakScene, aws: Aws
) -> None:
    create_bucket(aws)
    done = [handler.handle_shard(_event(i.place, [i.arn]), cold_outbreak(aws)) for i in scene.infected[:2]]
    lost = scene.infected[2]
    caught = {
        "failed": True,
        "case_id": CASE,
        "action": "isolate",
        "account": lost.place.account,
        "region": lost.place.region,
        "instance_arns": [lost.arn],
        "error": "Lambda.TooManyRequestsException",
        "cause": "Rate exceeded",
    }
    dead = scene.infected[3]
    child_input = _event(dead.place, [dead.arn])
    failed_child = {"Input": json.dumps(child_input), "Error": "States.Runtime", "Cause": "the child failed"}
    results = _written(aws, [*done, caught], failed_child)

    answer = handler.handle_summary(
        {"case_id": CASE, "action": "isolate", "execution": "ec2ir-isolate-x", "results": results},
        aws,
        BUCKET,
    )

    assert answer["key"] == f"summaries/{CASE}/ec2ir-isolate-x.json"
    assert answer["counts"] == {"shards": 4, "instances": 4, "ok": 2, "failed": 2, "shards_failed": 2}
    stored = json.loads(aws.client("s3").get_object(Bucket=BUCKET, Key=answer["key"])["Body"].read())
    report = handler.report_from_summary(stored)
    by_id = {r.instance_id: r for r in report.results}
    assert set(by_id) == {i.instance_id for i in scene.infected}
    assert by_id[lost.instance_id].error_code == "Lambda.TooManyRequestsException"
    assert by_id[lost.instance_id].place == lost.place
    assert by_id[dead.instance_id].error_code == "States.Runtime"
    assert all(by_id[i.instance_id].ok for i in scene.infected[:2])


def test_the_summary_reads_only_the_stack_s_own_bucket(aws: Aws) -> None:
    from ec2ir.core.errors import UsageError

    event = {"case_id": CASE, "action": "isolate", "execution": "e"}
    with pytest.raises(UsageError, match="results bucket"):
        handler.handle_summary(event | {"results": {"Bucket": "elsewhere", "Key": "shards/m"}}, aws, BUCKET)
    with pytest.raises(UsageError, match="under shards/"):
        handler.handle_summary(event | {"results": {"Bucket": BUCKET, "Key": "summaries/x"}}, aws, BUCKET)


# -- the state machine in the emulator, and the CLI following it ------------------------------------


def test_the_state_machine_is_created_and_described_in_the_emulator(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="ir-outbreak", definition=definition(), roleArn="arn:aws:iam::123456789012:role/states"
    )["stateMachineArn"]

    described = sfn.describe_state_machine(stateMachineArn=arn)

    assert json.loads(described["definition"])["States"]["Shards"]["ToleratedFailurePercentage"] == 100


@pytest.fixture
def answered(aws: Aws) -> Iterator[Execution]:
    execution = Execution([])
    answer_on_client(aws.client("stepfunctions"), execution)
    yield execution


def test_start_and_follow_says_each_shard_as_it_ends_and_returns_the_case_as_a_run_report(
    scene: OutbreakScene, aws: Aws, answered: Execution
) -> None:
    create_bucket(aws)
    stack = create_stack(aws)
    shards = [handler.handle_shard(_event(i.place, [i.arn]), cold_outbreak(aws)) for i in scene.infected[2:]]
    answered.shards = shards
    merged = handler.merge(CASE, "isolate", "e", shards)
    summary_key = f"summaries/{CASE}/e.json"
    answered.output = {"bucket": BUCKET, "key": summary_key}
    aws.client("s3").put_object(Bucket=BUCKET, Key=summary_key, Body=json.dumps(merged).encode())
    said: list[str] = []
    paused: list[float] = []
    aws.sleep = paused.append
    by_place = {i.place: [i.arn] for i in scene.infected[2:]}

    report = stepfunctions.start_and_follow(aws, stack, "isolate", CASE, by_place, {}, said.append)
    again = stepfunctions.start_and_follow(aws, stack, "isolate", CASE, by_place, {}, lambda _: None)

    assert [r.instance_id for r in report.results] == [i.instance_id for i in scene.infected[2:]]
    assert all(r.ok for r in report.results) and report.action == "isolate" and report.case_id == CASE
    assert [r.place for r in report.results] == [i.place for i in scene.infected[2:]]
    assert said[0].startswith("started ec2ir-isolate-IR-SHARDS-") and "2 shard(s)" in said[0]
    assert [line for line in said if line.startswith(MEMBER)] == [
        f"{i.place}: 1 of 1 isolate (ok)" for i in scene.infected[2:]
    ]
    assert said[-1] == "shards: 2 of 2 ended"
    assert paused == [stepfunctions.POLL_SECONDS] * 2
    # the same request is the same execution, followed again rather than run again
    assert len(set(answered.followed)) == 1
    assert [r.instance_id for r in again.results] == [r.instance_id for r in report.results]


def test_start_and_follow_refuses_bad_input_before_starting_anything(aws: Aws) -> None:
    from ec2ir.core.errors import UsageError

    place = Place(MEMBER, "us-east-1")
    wrong = f"arn:aws:ec2:eu-west-1:{MEMBER}:instance/i-0123456789abcdef0"
    with pytest.raises(UsageError, match="not in the shard's place"):
        stepfunctions.start_and_follow(aws, "no-such-stack", "isolate", CASE, {place: [wrong]})
    with pytest.raises(UsageError, match="isolate or release"):
        stepfunctions.start_and_follow(aws, "no-such-stack", "collect", CASE, {place: [wrong]})
