"""The outbreak stack's functions against the emulator: shards of one case in four places (two
Regions of the home account, two of a member account reached through an assumed role), the summary
of their results, and the CLI's start-and-follow.

moto's Step Functions cannot run this state machine: its default backend keeps every execution
RUNNING with a fixed history, and its executing parser would need Docker to run the Lambda tasks.
So the state machine is created and described in moto, the execution is started there for real,
and the follow logic is driven by real-shaped DescribeExecution, GetExecutionHistory, DescribeMapRun
and ListExecutions answers, parsed by botocore as AWS's would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-untyped]

from ec2ir.aws.session import Aws
from ec2ir.cli import stepfunctions
from ec2ir.core.models import HoldStatus, Place
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.engine.outbreak import Outbreak, Places
from ec2ir.handlers import outbreak as handler
from ec2ir.store.state import StateStore
from tests.support.outbreak import MEMBER, ROLE, OutbreakScene, outbreak_scene

CASE = "IR-SHARDS"
ROOT = Path(__file__).resolve().parents[2]


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


def _fresh(aws: Aws) -> Callable[[], Outbreak]:
    """A cold function's engine: places whose roles are assumed on first use."""
    return lambda: Outbreak(aws, StateStore(aws), concurrency=4, places=Places(aws, role_name=ROLE))


def test_isolate_and_release_through_one_shard_per_place(scene: OutbreakScene, aws: Aws) -> None:
    for infected in scene.infected:
        answer = handler.handle_shard(_event(infected.place, [infected.arn]), _fresh(aws))
        json.dumps(answer)  # what Step Functions receives
        assert answer["ok"], answer
        assert (answer["account"], answer["region"]) == (infected.place.account, infected.place.region)
        assert answer["counts"] == {"instances": 1, "ok": 1, "failed": 0}
        assert scene.groups_now(infected) != {infected.group_id}

    held = scene.outbreak.store.holds_everywhere(CASE)
    assert {h.instance_id for h in held} == {i.instance_id for i in scene.infected}

    for infected in scene.infected:
        answer = handler.handle_shard(_event(infected.place, [infected.arn], "release"), _fresh(aws))
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

    unreachable = handler.handle_shard(_event(member.place, [member.arn]), _fresh(aws))
    reached = handler.handle_shard(_event(home.place, [home.arn]), _fresh(aws))

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
        handler.handle_shard(_event(member.place, [member.arn]), _fresh(aws))


# -- the summary -------------------------------------------------------------------------------------

BUCKET = "ec2ir-outbreak-results"


def _bucket(aws: Aws) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)


def _written(aws: Aws, shards: list[dict[str, Any]], failed_child: dict[str, Any]) -> dict[str, str]:
    """The Map's ResultWriter files, as Step Functions writes them: a manifest naming one file of
    succeeded children and one of failed ones."""
    s3 = aws.client("s3")
    run = "shards/0b1c2d3e-map-run"
    succeeded = [
        {
            "ExecutionArn": f"arn:aws:states:us-east-1:111111111111:execution:x/Shards:{n}",
            "Status": "SUCCEEDED",
        }
        | {"Input": "{}", "Output": json.dumps(shard)}
        for n, shard in enumerate(shards)
    ]
    failed = [failed_child | {"Status": "FAILED", "ExecutionArn": "arn:aws:states:::execution:x/Shards:f"}]
    s3.put_object(Bucket=BUCKET, Key=f"{run}/SUCCEEDED_0.json", Body=json.dumps(succeeded).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{run}/FAILED_0.json", Body=json.dumps(failed).encode())
    manifest = {
        "DestinationBucket": BUCKET,
        "MapRunArn": "arn:aws:states:us-east-1:111111111111:mapRun:x/Shards:0b1c2d3e",
        "ResultFiles": {
            "FAILED": [{"Key": f"{run}/FAILED_0.json", "Size": 1}],
            "PENDING": [],
            "SUCCEEDED": [{"Key": f"{run}/SUCCEEDED_0.json", "Size": 1}],
        },
    }
    s3.put_object(Bucket=BUCKET, Key=f"{run}/manifest.json", Body=json.dumps(manifest).encode())
    return {"Bucket": BUCKET, "Key": f"{run}/manifest.json"}


def test_the_summary_merges_every_shard_s_result_caught_failures_included(
    scene: OutbreakScene, aws: Aws
) -> None:
    _bucket(aws)
    done = [handler.handle_shard(_event(i.place, [i.arn]), _fresh(aws)) for i in scene.infected[:2]]
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


def _definition() -> str:
    """The state machine's definition with its substitutions made, as CloudFormation would."""
    template = yaml_parse((ROOT / "outbreak.yaml").read_text())
    text = json.dumps(template["Resources"]["OutbreakStateMachine"]["Properties"]["Definition"])
    for name, value in {
        "ShardFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:shard",
        "SummaryFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:summary",
        "ResultsBucket": BUCKET,
    }.items():
        text = text.replace("${" + name + "}", value)
    return text


def _stack(aws: Aws) -> str:
    """A stack with outbreak.yaml's outputs: its state machine and results bucket."""
    template = {
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "StateMachineName": "ir-outbreak",
                    "RoleArn": "arn:aws:iam::123456789012:role/states",
                    "DefinitionString": _definition(),
                },
            }
        },
        "Outputs": {
            stepfunctions.STATE_MACHINE_OUTPUT: {"Value": {"Ref": "Machine"}},
            stepfunctions.RESULTS_BUCKET_OUTPUT: {"Value": BUCKET},
        },
    }
    aws.client("cloudformation").create_stack(StackName="ir", TemplateBody=json.dumps(template))
    return "ir"


def test_the_state_machine_is_created_and_described_in_the_emulator(aws: Aws) -> None:
    sfn = aws.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="ir-outbreak", definition=_definition(), roleArn="arn:aws:iam::123456789012:role/states"
    )["stateMachineArn"]

    described = sfn.describe_state_machine(stateMachineArn=arn)

    assert json.loads(described["definition"])["States"]["Shards"]["ToleratedFailurePercentage"] == 100


@dataclass
class Execution:
    """Real-shaped Step Functions answers for one execution of two shards, each ending in turn."""

    shards: list[dict[str, Any]]
    polls: int = 0
    started: list[str] = field(default_factory=list)
    summary_key: str = ""

    def answer(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if operation == "DescribeExecution" and "/Shards:" in request["executionArn"]:
            n = int(request["executionArn"].rsplit(":", 1)[1])
            return {"executionArn": request["executionArn"], "name": str(n), "status": "SUCCEEDED"} | {
                "output": json.dumps(self.shards[n])
            }
        if operation == "DescribeExecution":
            self.polls += 1
            self.started.append(request["executionArn"])
            done = self.polls >= 3
            answer = {"executionArn": request["executionArn"], "status": "SUCCEEDED" if done else "RUNNING"}
            return answer | (
                {"output": json.dumps({"bucket": BUCKET, "key": self.summary_key})} if done else {}
            )
        if operation == "GetExecutionHistory":
            map_run = "arn:aws:states:us-east-1:123456789012:mapRun:ir-outbreak/Shards:1"
            return {
                "events": [
                    {"id": 1, "type": "ExecutionStarted", "timestamp": 0},
                    {"id": 5, "type": "MapRunStarted", "timestamp": 0}
                    | {"mapRunStartedEventDetails": {"mapRunArn": map_run}},
                ]
            }
        ended = min(self.polls, len(self.shards))
        if operation == "DescribeMapRun":
            return {"itemCounts": {"total": len(self.shards), "succeeded": ended, "failed": 0, "aborted": 0}}
        assert operation == "ListExecutions"
        return {
            "executions": [
                {"executionArn": f"arn:aws:states:us-east-1:123456789012:execution:ir-outbreak/Shards:{n}"}
                | {"status": "SUCCEEDED" if n < ended else "RUNNING"}
                for n in range(len(self.shards))
            ]
        }


@pytest.fixture
def answered(aws: Aws) -> Iterator[Execution]:
    execution = Execution([])
    client = aws.client("stepfunctions")
    service_id = client.meta.service_model.service_id.hyphenize()

    def canned(operation: str) -> Callable[..., AWSResponse]:
        def send(request: Any, **_: Any) -> AWSResponse:
            headers = HTTPHeaders()
            headers["Content-Type"] = "application/x-amz-json-1.0"
            body = json.dumps(execution.answer(operation, json.loads(request.body))).encode()
            return AWSResponse(request.url, 200, headers, _Raw(body))

        return send

    for operation in ("DescribeExecution", "GetExecutionHistory", "DescribeMapRun", "ListExecutions"):
        client.meta.events.register(f"before-send.{service_id}.{operation}", canned(operation))
    yield execution


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def test_start_and_follow_says_each_shard_as_it_ends_and_returns_the_case_as_a_run_report(
    scene: OutbreakScene, aws: Aws, answered: Execution
) -> None:
    _bucket(aws)
    stack = _stack(aws)
    shards = [handler.handle_shard(_event(i.place, [i.arn]), _fresh(aws)) for i in scene.infected[2:]]
    answered.shards = shards
    merged = handler.merge(CASE, "isolate", "e", shards)
    answered.summary_key = f"summaries/{CASE}/e.json"
    aws.client("s3").put_object(Bucket=BUCKET, Key=answered.summary_key, Body=json.dumps(merged).encode())
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
    assert len(set(answered.started)) == 1
    assert [r.instance_id for r in again.results] == [r.instance_id for r in report.results]


def test_start_and_follow_refuses_bad_input_before_starting_anything(aws: Aws) -> None:
    from ec2ir.core.errors import UsageError

    place = Place(MEMBER, "us-east-1")
    wrong = f"arn:aws:ec2:eu-west-1:{MEMBER}:instance/i-0123456789abcdef0"
    with pytest.raises(UsageError, match="not in the shard's place"):
        stepfunctions.start_and_follow(aws, "no-such-stack", "isolate", CASE, {place: [wrong]})
    with pytest.raises(UsageError, match="isolate or release"):
        stepfunctions.start_and_follow(aws, "no-such-stack", "collect", CASE, {place: [wrong]})
