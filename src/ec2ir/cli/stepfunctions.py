"""``--via stepfunctions``: a case's run handed to the outbreak stack's state machine (outbreak.yaml)
and followed from the terminal, its result printed as a local run's.

The CLI checks every shard as the shard function will (``ec2ir.handlers.outbreak.parse_shard``)
before anything starts, finds the state machine in the stack's outputs, and starts one execution
whose name is derived from the request itself: the same request started twice is the same
execution (Step Functions answers a running one's ARN again, and refuses a closed one's name, which
is then followed instead of run again). ``again`` gives a deliberate repeat a new name.

Progress comes from the execution's own record: its history names the Distributed Map's run, the
map run counts its shards, and each child execution that ended holds its shard's summary, printed
as it arrives. At the end the case summary is read from the stack's results bucket (it can be far
larger than an execution's 256 KiB output) and returned as a ``RunReport``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws.session import Aws, method_name, translated
from ec2ir.aws.targets import parse_arn
from ec2ir.core import validate
from ec2ir.core.errors import AwsError, Ec2irError, UsageError
from ec2ir.core.models import Place
from ec2ir.core.text import printable
from ec2ir.engine.results import RunReport, failure
from ec2ir.handlers.outbreak import (
    ACTIONS,
    PAYLOAD_LIMIT,
    SUMMARY_PREFIX,
    NoShardResult,
    parse_shard,
    report_from_summary,
    shard_items,
    shard_result,
)

STATE_MACHINE_OUTPUT = "StateMachineArn"
RESULTS_BUCKET_OUTPUT = "ResultsBucketName"
STATE_TABLE_OUTPUT = "StateTableName"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
POLL_SECONDS = 5.0
# A Standard workflow runs for up to a year; the CLI stops following (the run goes on) after this.
MAX_WAIT_SECONDS = 6 * 3600.0
Say = Callable[[str], None]


@dataclass(frozen=True)
class Stack:
    state_machine_arn: str
    results_bucket: str
    state_table: str = ""  # where the shards keep every place's holds (StateTableName)


def start_and_follow(
    aws: Aws,
    stack_name: str,
    action: str,
    case_id: str,
    arns_by_place: Mapping[Place, Sequence[str]],
    options: Mapping[str, object] | None = None,
    say: Say = lambda line: None,
    again: str = "",
    poll_seconds: float = POLL_SECONDS,
    max_wait_seconds: float = MAX_WAIT_SECONDS,
) -> RunReport:
    """Run ``action`` (isolate or release) on the instances, given as ARNs by place, through the
    outbreak stack ``stack_name``; ``say`` each shard's outcome as it ends; return the merged result.
    Raises ``UsageError`` for bad input (nothing started) and ``Ec2irError`` for an execution that
    failed, timed out, was aborted, or was still running after ``max_wait_seconds``."""
    execution_input = request(action, case_id, arns_by_place, options or {})
    stack = find_stack(aws, stack_name)
    name = execution_name(action, case_id, execution_input, again)
    arn, fresh = start(aws, stack.state_machine_arn, name, execution_input)
    if fresh is None:  # the same request ran before and has ended: this is a new run of it
        say(f"{name} ran before and has ended: starting the request again")
        name = execution_name(action, case_id, execution_input, again + secrets.token_hex(4))
        arn, fresh = start(aws, stack.state_machine_arn, name, execution_input)
    say(
        f"{'started' if fresh else 'following the running'} {name} on {stack_name} "
        f"({len(execution_input['shards'])} shard(s))"
    )
    output = Follower(aws, arn, say).until_done(poll_seconds, max_wait_seconds)
    report = read_summary(aws, stack, case_id, output)
    return with_every_instance(report, arns_by_place, action)


def with_every_instance(
    report: RunReport, arns_by_place: Mapping[Place, Sequence[str]], action: str
) -> RunReport:
    """The summary's report, with a failure for every instance asked for that it does not name (a
    shard refused, or lost): a run never ends ok for an instance nothing was done to."""
    answered = {(result.place, result.instance_id) for result in report.results}
    for place, arns in arns_by_place.items():
        for arn in arns:
            instance_id = parse_arn(arn).instance_id
            if (place, instance_id) not in answered:
                missing = NoShardResult(f"no shard of the execution answered for {instance_id} in {place}")
                report.results.append(failure(instance_id, action, missing, place=place))
    return report


def request(
    action: str, case_id: str, arns_by_place: Mapping[Place, Sequence[str]], options: Mapping[str, object]
) -> dict[str, Any]:
    """The execution's input, each shard checked as the shard function will check it."""
    validate.case_id(case_id)
    if action not in ACTIONS:
        raise UsageError(f"--via stepfunctions runs {' or '.join(ACTIONS)}, not {printable(action)}")
    shards = shard_items(arns_by_place)
    if not shards:
        raise UsageError("no instances to act on")
    for item in shards:
        parse_shard({"case_id": case_id, "action": action, "options": dict(options), **item})
    execution_input = {"case_id": case_id, "action": action, "options": dict(options), "shards": shards}
    size = len(json.dumps(execution_input, separators=(",", ":")).encode())
    if size > PAYLOAD_LIMIT:
        raise UsageError(
            f"the request is {size} bytes; an execution input is at most {PAYLOAD_LIMIT}",
            "split the instances into several runs (about 3,000 instance ARNs fit in one)",
        )
    return execution_input


def execution_name(action: str, case_id: str, execution_input: Mapping[str, Any], again: str = "") -> str:
    """A name derived from the request (and ``again``): at most 80 of Step Functions' characters."""
    canonical = json.dumps(execution_input, sort_keys=True, separators=(",", ":")) + "\0" + again
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:24]
    safe_case = re.sub(r"[^A-Za-z0-9_-]", "-", case_id)[:32]
    return f"ec2ir-{action}-{safe_case}-{digest}"


def find_stack(aws: Aws, stack_name: str) -> Stack:
    """The state machine and results bucket the stack's outputs name."""
    with translated("cloudformation", "DescribeStacks"):
        stacks = aws.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o.get("OutputKey"): str(o.get("OutputValue", "")) for o in stacks[0].get("Outputs", [])}
    missing = [key for key in (STATE_MACHINE_OUTPUT, RESULTS_BUCKET_OUTPUT) if not outputs.get(key)]
    if missing:
        raise UsageError(
            f"stack {printable(stack_name)} has no output {', '.join(missing)}",
            "name the outbreak stack (deployed from outbreak.yaml) with --outbreak-stack",
        )
    return Stack(
        outputs[STATE_MACHINE_OUTPUT], outputs[RESULTS_BUCKET_OUTPUT], outputs.get(STATE_TABLE_OUTPUT, "")
    )


def start(
    aws: Aws, state_machine_arn: str, name: str, execution_input: Mapping[str, Any]
) -> tuple[str, bool | None]:
    """StartExecution: the execution's ARN, and True when it was started now, False when the same
    request is still running (a CLI run again is following it), None when it has ended. Step
    Functions refuses a name that exists whatever the input: one whose input is not this
    request's is someone else's, and is refused, never followed."""
    client = aws.client("stepfunctions")
    try:
        with translated("states", "StartExecution"):
            answer = client.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input)
            )
        return str(answer["executionArn"]), True
    except AwsError as error:
        if error.code != "ExecutionAlreadyExists":
            raise
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    arn = f"{prefix}:execution:{machine}:{name}"
    with translated("states", "DescribeExecution"):
        existing = client.describe_execution(executionArn=arn)
    if _loaded(existing.get("input")) != json.loads(json.dumps(execution_input)):
        raise UsageError(
            f"an execution named {name} exists with another input: it is not this request's; "
            "nothing was started",
            "check who started it (CloudTrail: StartExecution); to run anyway, change the request",
        )
    return arn, (False if existing.get("status") == RUNNING else None)


@dataclass
class Follower:
    """Polls one execution, saying each shard's outcome once, as its child execution ends."""

    aws: Aws
    execution_arn: str
    say: Say
    map_run_arn: str = ""
    seen: set[str] = field(default_factory=set)
    counted: tuple[int, int] = (-1, -1)

    def until_done(self, poll_seconds: float, max_wait_seconds: float) -> Mapping[str, Any]:
        waited = 0.0
        while True:
            described = self._call("DescribeExecution", executionArn=self.execution_arn)
            self._shards()
            status = str(described.get("status", ""))
            if status == SUCCEEDED:
                return _json_object(described.get("output"), "the execution's output")
            if status != RUNNING:
                raise Ec2irError(
                    printable(
                        f"execution {self.execution_arn} ended {status}: {described.get('error', '')} "
                        f"{str(described.get('cause', ''))[:500]}"
                    ),
                    "see the execution in the Step Functions console; the state table records what was done",
                )
            if waited >= max_wait_seconds:
                raise Ec2irError(
                    f"execution {self.execution_arn} is still running after {max_wait_seconds:.0f} s",
                    "it goes on; run the same command again to follow it",
                )
            self.aws.sleep(poll_seconds)
            waited += poll_seconds

    def _shards(self) -> None:
        if not self.map_run_arn:
            self.map_run_arn = self._find_map_run()
            if not self.map_run_arn:
                return
        counts = self._call("DescribeMapRun", mapRunArn=self.map_run_arn).get("itemCounts", {})
        done = int(counts.get("succeeded", 0)) + int(counts.get("failed", 0)) + int(counts.get("aborted", 0))
        total = int(counts.get("total", 0))
        for child in self._children():
            arn = str(child.get("executionArn", ""))
            if arn in self.seen or child.get("status") == RUNNING:
                continue
            self.seen.add(arn)
            self.say(shard_line(self._call("DescribeExecution", executionArn=arn)))
        if (done, total) != self.counted:
            self.counted = (done, total)
            self.say(f"shards: {done} of {total} ended")

    def _find_map_run(self) -> str:
        for event in self._history():
            details = event.get("mapRunStartedEventDetails")
            if event.get("type") == "MapRunStarted" and isinstance(details, Mapping):
                return str(details.get("mapRunArn", ""))
        return ""

    def _history(self) -> Iterator[Mapping[str, Any]]:
        return self._pages(
            "GetExecutionHistory", "events", executionArn=self.execution_arn, includeExecutionData=False
        )

    def _children(self) -> Iterator[Mapping[str, Any]]:
        return self._pages("ListExecutions", "executions", mapRunArn=self.map_run_arn)

    def _pages(self, operation: str, key: str, **arguments: Any) -> Iterator[Mapping[str, Any]]:
        """Every item of a paginated answer, a thousand a call."""
        token = ""
        while True:
            page = self._call(
                operation, maxResults=1000, **arguments, **({"nextToken": token} if token else {})
            )
            yield from page.get(key, [])
            token = str(page.get("nextToken") or "")
            if not token:
                return

    def _call(self, operation: str, **arguments: Any) -> Mapping[str, Any]:
        with translated("states", operation):
            client = self.aws.client("stepfunctions")
            answer: Mapping[str, Any] = getattr(client, method_name(operation))(**arguments)
        return answer


def shard_line(child: Mapping[str, Any]) -> str:
    """One shard's outcome, from its child execution (printable: its output came from a function
    whose input anyone allowed to start the state machine wrote)."""
    status = str(child.get("status", ""))
    if status != SUCCEEDED:
        return printable(f"shard {child.get('name', '')}: {status}: {child.get('error', '')}")
    one = shard_result(_loaded(child.get("output")))
    where = f"{one['account']}/{one['region']}" if one["account"] else "a shard"
    counts = one["counts"]
    if one["error"] and not one["results"]:
        return f"{where}: FAILED: {one['error']}"
    state = "ok" if one["ok"] else f"{counts['failed']} FAILED"
    return f"{where}: {counts['ok']} of {counts['instances']} {one['action'] or 'done'} ({state})"


def read_summary(aws: Aws, stack: Stack, case_id: str, output: Mapping[str, Any]) -> RunReport:
    """The case summary the summary function wrote, read from the stack's own bucket only."""
    bucket, key = str(output.get("bucket", "")), str(output.get("key", ""))
    if bucket != stack.results_bucket or not key.startswith(f"{SUMMARY_PREFIX}{case_id}/") or ".." in key:
        raise Ec2irError(
            printable(f"the execution's output names s3://{bucket}/{key}, not a summary of case {case_id}"),
            f"the summary is written to {stack.results_bucket} under {SUMMARY_PREFIX}{case_id}/",
        )
    with translated("s3", "GetObject"):
        body = aws.client("s3").get_object(Bucket=bucket, Key=key, ExpectedBucketOwner=aws.account())["Body"]
        text = body.read()
    return report_from_summary(_json_object(text, f"s3://{bucket}/{key}"), caller=aws.caller_arn())


def _loaded(text: object) -> Any:
    try:
        return json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        return None


def _json_object(text: object, what: str) -> Mapping[str, Any]:
    loaded = _loaded(text)
    if not isinstance(loaded, Mapping):
        raise Ec2irError(f"{what} is not a JSON object")
    return loaded
