"""The outbreak stack (outbreak.yaml) in the emulator, and its state machine's executions answered as
Step Functions would answer them.

moto's Step Functions cannot run this state machine: its default backend keeps every execution
RUNNING with a fixed history, and its executing parser would need Docker to run the Lambda tasks.
So the state machine is created (through CloudFormation, with the stack's outputs) and described in
moto, each execution is started there for real, and the follow logic is driven by real-shaped
DescribeExecution, GetExecutionHistory, DescribeMapRun and ListExecutions answers (``Execution``),
parsed by botocore as AWS's would be.

Two ways in: ``answer_on_client`` gives them to one client (a test of ``start_and_follow``), and
``StackAtTheDoor`` at the emulator's door, for every client, the CLI's own among them. The door
also runs each execution it starts as the state machine would: every shard through the real shard
function (``handle_shard``) against the emulator, its results written as the Map's ResultWriter
writes them, and the case summary by the real summary function (``handle_summary``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-untyped]

from ec2ir.aws.session import Aws
from ec2ir.cli import stepfunctions
from ec2ir.core.models import Place
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.handlers import outbreak as handler
from ec2ir.store.state import StateStore
from ec2ir.store.table import DEFAULT_TABLE
from tests.support.outbreak import ROLE

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "ec2ir-outbreak-results"
STACK = "ir"
STATE_MACHINE = "ir-outbreak"
MAP_LABEL = "Shards"  # the Map state's Label in outbreak.yaml: it names the map run and its children
# What Step Functions answers in (the JSON 1.0 protocol), and the operations the follower reads.
JSON_1_0 = "application/x-amz-json-1.0"
FOLLOWED = ("DescribeExecution", "GetExecutionHistory", "DescribeMapRun", "ListExecutions")
Dispatch = Callable[[str, str, dict[str, str], bytes], tuple[int, list[tuple[str, str]], bytes]]


def definition() -> str:
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


def create_bucket(aws: Aws) -> None:
    """The stack's results bucket."""
    aws.client("s3").create_bucket(Bucket=BUCKET)


def create_stack(aws: Aws) -> str:
    """A stack with outbreak.yaml's outputs: its state machine and results bucket; its name."""
    template = {
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "StateMachineName": STATE_MACHINE,
                    "RoleArn": "arn:aws:iam::123456789012:role/states",
                    "DefinitionString": definition(),
                },
            }
        },
        "Outputs": {
            stepfunctions.STATE_MACHINE_OUTPUT: {"Value": {"Ref": "Machine"}},
            stepfunctions.RESULTS_BUCKET_OUTPUT: {"Value": BUCKET},
            # the shards' table (cold_outbreak's): where release finds each instance's place
            stepfunctions.STATE_TABLE_OUTPUT: {"Value": DEFAULT_TABLE},
        },
    }
    aws.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
    return STACK


def cold_outbreak(aws: Aws) -> Callable[[], Outbreak]:
    """A cold function's engine: places whose roles are assumed on first use."""
    return lambda: Outbreak(aws, StateStore(aws), concurrency=4, places=Places(aws, role_name=ROLE))


def write_results(
    aws: Aws, succeeded: list[dict[str, Any]], failed: list[dict[str, Any]], map_run: str = "0b1c2d3e"
) -> dict[str, str]:
    """The Map's ResultWriter files, as Step Functions writes them under the Prefix ``shards``: a
    manifest naming one file of succeeded children and one of failed ones. Answers the
    ``ResultWriterDetails`` (the manifest's bucket and key) that the Summary state is given."""
    s3 = aws.client("s3")
    run = f"{handler.SHARD_RESULTS_PREFIX}{map_run}"
    s3.put_object(Bucket=BUCKET, Key=f"{run}/SUCCEEDED_0.json", Body=json.dumps(succeeded).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{run}/FAILED_0.json", Body=json.dumps(failed).encode())
    manifest = {
        "DestinationBucket": BUCKET,
        "MapRunArn": f"arn:aws:states:us-east-1:123456789012:mapRun:{STATE_MACHINE}/{MAP_LABEL}:{map_run}",
        "ResultFiles": {
            "FAILED": [{"Key": f"{run}/FAILED_0.json", "Size": 1}],
            "PENDING": [],
            "SUCCEEDED": [{"Key": f"{run}/SUCCEEDED_0.json", "Size": 1}],
        },
    }
    s3.put_object(Bucket=BUCKET, Key=f"{run}/manifest.json", Body=json.dumps(manifest).encode())
    return {"Bucket": BUCKET, "Key": f"{run}/manifest.json"}


@dataclass
class Execution:
    """Real-shaped Step Functions answers for one execution of the outbreak state machine: each poll
    of the execution ends one more shard (its child execution), and the poll numbered
    ``polls_until_done`` finds the execution SUCCEEDED with ``output`` (the summary function's
    answer) and every shard ended."""

    shards: list[dict[str, Any]]  # each child execution's output, in order
    output: dict[str, Any] = field(default_factory=dict)
    polls_until_done: int = 3
    machine: str = f"arn:aws:states:us-east-1:123456789012:stateMachine:{STATE_MACHINE}"
    map_run: str = "1"
    arn: str = ""  # the execution's own ARN, when answers are routed by it (StackAtTheDoor)
    input: str = ""  # the execution's input, as DescribeExecution gives it back
    polls: int = 0
    followed: list[str] = field(default_factory=list)  # the execution ARN of each poll

    @property
    def map_run_arn(self) -> str:
        return self.machine.replace(":stateMachine:", ":mapRun:") + f"/{MAP_LABEL}:{self.map_run}"

    def child_arns(self) -> list[str]:
        prefix = self.machine.replace(":stateMachine:", ":execution:") + f"/{MAP_LABEL}:"
        return [f"{prefix}{self.map_run}-{n}" for n in range(len(self.shards))]

    def owns(self, arn: str) -> bool:
        return arn in (self.arn, self.map_run_arn) or arn in self.child_arns()

    def answer(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if operation == "DescribeExecution" and request["executionArn"] in self.child_arns():
            return self._child(self.child_arns().index(request["executionArn"]))
        if operation == "DescribeExecution":
            return self._described(request["executionArn"])
        if operation == "GetExecutionHistory":
            started = {"mapRunStartedEventDetails": {"mapRunArn": self.map_run_arn}}
            return {
                "events": [
                    {"id": 1, "type": "ExecutionStarted", "timestamp": 0, "previousEventId": 0},
                    {"id": 5, "type": "MapRunStarted", "timestamp": 0, "previousEventId": 4} | started,
                ]
            }
        ended = self._ended()
        total = len(self.shards)
        if operation == "DescribeMapRun":
            counts = {"pending": 0, "running": total - ended, "succeeded": ended, "failed": 0}
            return {
                "mapRunArn": self.map_run_arn,
                "status": "SUCCEEDED" if ended == total else "RUNNING",
                "itemCounts": counts | {"timedOut": 0, "aborted": 0, "total": total, "resultsWritten": ended},
            }
        assert operation == "ListExecutions", operation
        return {
            "executions": [
                {"executionArn": arn, "stateMachineArn": self.machine, "name": arn.rsplit(":", 1)[1]}
                | {"status": "SUCCEEDED" if n < ended else "RUNNING", "startDate": 0}
                for n, arn in enumerate(self.child_arns())
            ]
        }

    def _ended(self) -> int:
        return len(self.shards) if self.polls >= self.polls_until_done else min(self.polls, len(self.shards))

    def _child(self, n: int) -> dict[str, Any]:
        arn = self.child_arns()[n]
        return {"executionArn": arn, "name": arn.rsplit(":", 1)[1], "status": "SUCCEEDED"} | {
            "stateMachineArn": f"{self.machine}/{MAP_LABEL}",
            "startDate": 0,
            "output": json.dumps(self.shards[n]),
        }

    def _described(self, arn: str) -> dict[str, Any]:
        self.polls += 1
        self.followed.append(arn)
        done = self.polls >= self.polls_until_done
        described = {
            "executionArn": arn,
            "stateMachineArn": self.machine,
            "startDate": 0,
            "input": self.input,
        }
        if not done:
            return described | {"status": "RUNNING"}
        return described | {"status": "SUCCEEDED", "output": json.dumps(self.output)}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def answer_on_client(client: Any, execution: Execution) -> None:
    """``client`` (a Step Functions client) has the followed operations answered by ``execution``."""
    service_id = client.meta.service_model.service_id.hyphenize()

    def canned(operation: str) -> Callable[..., AWSResponse]:
        def send(request: Any, **_: Any) -> AWSResponse:
            headers = HTTPHeaders()
            headers["Content-Type"] = JSON_1_0
            body = json.dumps(execution.answer(operation, json.loads(request.body))).encode()
            return AWSResponse(request.url, 200, headers, _Raw(body))

        return send

    for operation in FOLLOWED:
        client.meta.events.register(f"before-send.{service_id}.{operation}", canned(operation))


@dataclass
class StackAtTheDoor:
    """The outbreak stack's executions, run and answered at the emulator's door (for every client).

    StartExecution goes to moto (which checks the state machine and the name, and names the
    execution's ARN); an execution it starts is then run here as the state machine runs it (see the
    module's doc) and ends at once: its first poll finds it SUCCEEDED, so a follower never pauses.
    A start of a name already run is refused with ExecutionAlreadyExists, as Step Functions refuses
    a closed execution's name whatever the input (StartExecution's API reference). The shard of a
    place in ``failing`` ends as the state machine's Catch records a shard that failed all its
    retries (RecordShardFailure): ``(error, cause)``."""

    aws: Aws
    failing: dict[Place, tuple[str, str]] = field(default_factory=dict)
    # the places whose shard function refuses its event (an older function than the CLI, say)
    refusing: set[Place] = field(default_factory=set)
    starts: list[dict[str, Any]] = field(default_factory=list)  # each StartExecution's name and input
    refused: list[str] = field(default_factory=list)  # the names refused as already run
    executions: dict[str, Execution] = field(default_factory=dict)  # by name
    shards_run: list[Place] = field(default_factory=list)

    def wrap(self, dispatch: Dispatch) -> Dispatch:
        def door(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
            target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
            service, _, operation = target.partition(".")
            if service != "AWSStepFunctions":
                return dispatch(method, url, headers, body)
            request = json.loads(body or b"{}")
            if operation == "StartExecution":
                return self._start(request, lambda: dispatch(method, url, headers, body))
            arn = str(request.get("executionArn") or request.get("mapRunArn") or "")
            owner = next((e for e in self.executions.values() if e.owns(arn)), None)
            if operation not in FOLLOWED or owner is None:
                return dispatch(method, url, headers, body)
            return _json_answer(200, owner.answer(operation, request))

        return door

    def _start(self, request: dict[str, Any], forward: Callable[[], Any]) -> Any:
        name, execution_input = str(request["name"]), json.loads(request["input"])
        self.starts.append({"name": name, "input": execution_input})
        if name in self.executions:
            self.refused.append(name)
            message = f"Execution Already Exists: '{self.executions[name].arn}'"
            return _json_answer(400, {"__type": "ExecutionAlreadyExists", "message": message})
        status, headers, content = forward()
        if status == 200:
            arn = str(json.loads(content)["executionArn"])
            self.executions[name] = self._run(request["stateMachineArn"], arn, name, execution_input)
        return status, headers, content

    def _run(self, machine: str, arn: str, name: str, execution_input: dict[str, Any]) -> Execution:
        """The state machine's run: each Map item as its ItemSelector makes it, through RunShard
        (or its Catch), every child's result written, then the Summary state."""
        common = {key: execution_input[key] for key in ("case_id", "action", "options")}
        outputs = [self._shard(common | item) for item in execution_input["shards"]]
        map_run = f"{len(self.executions) + 1:08x}"
        execution = Execution(outputs, polls_until_done=1, machine=machine, map_run=map_run, arn=arn)
        execution.input = json.dumps(execution_input)
        succeeded = [
            {"ExecutionArn": child, "Status": "SUCCEEDED", "Input": "{}", "Output": json.dumps(output)}
            for child, output in zip(execution.child_arns(), outputs, strict=True)
        ]
        written = write_results(self.aws, succeeded, [], map_run)
        summary_event = {"case_id": common["case_id"], "action": common["action"], "execution": name}
        execution.output = handler.handle_summary(summary_event | {"results": written}, self.aws, BUCKET)
        return execution

    def _shard(self, item: dict[str, Any]) -> dict[str, Any]:
        place = Place(item["account"], item["region"])
        self.shards_run.append(place)
        if place in self.refusing:
            return handler.refused_summary(item, "option 'untrack' is not one isolate takes")
        if place not in self.failing:
            return handler.handle_shard(item, cold_outbreak(self.aws))
        error, cause = self.failing[place]
        recorded = {key: item[key] for key in ("case_id", "action", "account", "region", "instance_arns")}
        return {"failed": True, **recorded, "error": error, "cause": cause}


def _json_answer(status: int, body: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [("Content-Type", JSON_1_0), ("x-amzn-RequestId", "answered-at-the-door")]
    return status, headers, json.dumps(body).encode()


@contextmanager
def answering(emulator: Any, door: StackAtTheDoor) -> Iterator[StackAtTheDoor]:
    """The emulator answers Step Functions through ``door`` until the block ends."""
    emulator.dispatch = door.wrap(emulator.dispatch)
    try:
        yield door
    finally:
        del emulator.dispatch
