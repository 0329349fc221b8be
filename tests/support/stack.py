"""The stack's side of the tests: the pre-signed response catcher, a Lambda context, the stack's status,
and the GuardDuty fixtures."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

from ec2ir.aws.session import Aws
from ec2ir.handlers import cloudformation

STACK_NAME = "incident-ir-7"
STACK_ID = (
    f"arn:aws:cloudformation:us-east-1:123456789012:stack/{STACK_NAME}/4f1c2a60-1d2e-11f0-9c1b-0affd1e2c3b4"
)


FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:incident-ir-7-ContainmentFunction-AbC123"
MAX_BODY = 64 * 1024
FIXTURES = Path(__file__).parents[1] / "fixtures" / "guardduty"


class ResponseCatcher:
    """The pre-signed response URLs: a loopback HTTP server that records every PUT it gets."""

    def __init__(self) -> None:
        received: list[Received] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
                body = json.loads(self.rfile.read(length))
                received.append(Received(self.path, dict(self.headers), body, time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str) -> str:
        return f"{self.origin}/cloudformation-responses/{name}?X-Amz-Signature=stand-in"

    def answers(self, name: str) -> list[Received]:
        return [r for r in self.received if r.path.startswith(f"/cloudformation-responses/{name}?")]

    def only_answer(self, name: str) -> Received:
        answers = self.answers(name)
        assert len(answers) == 1, f"expected one answer to {name}, got {len(answers)}"
        return answers[0]


class LambdaRuntimeContext:
    """What the Lambda runtime passes as ``context``, with a deadline that really runs out."""

    def __init__(self, remaining_ms: int = 900_000) -> None:
        self.deadline = time.monotonic() + remaining_ms / 1000
        self.log_stream_name = "2026/03/14/[$LATEST]0123456789abcdef0123456789abcdef"
        self.invoked_function_arn = FUNCTION_ARN

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class StackStatus:
    """CloudFormation's DescribeStacks answer for the stack, in the API's own response shape,
    while the stack is in ``status``. moto cannot hold a stack in the middle of an operation (its
    deletes and rollbacks finish at once), so the call is answered at botocore's ``before-call``
    hook, where the handler's real client and parsing still run. ``status=None`` lets the call
    through to the emulator, which does not know the stack (a status that cannot be read)."""

    def __init__(self, aws: Aws, status: str | None = "CREATE_COMPLETE", stack_id: str = STACK_ID) -> None:
        self.status = status
        self.stack_id = stack_id
        self.calls = 0
        aws.client("cloudformation").meta.events.register(
            "before-call.cloudformation.DescribeStacks", self.answer
        )

    def answer(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        self.calls += 1
        if self.status is None:
            return None
        stack = {
            "StackId": self.stack_id,
            "StackName": cloudformation.stack_name_of(self.stack_id),
            "CreationTime": datetime(2026, 3, 14, 9, 0, tzinfo=UTC),
            "StackStatus": self.status,
            "DisableRollback": False,
        }
        metadata = {"RequestId": str(uuid.uuid4()), "HTTPStatusCode": 200}
        return AWSResponse("https://cloudformation.us-east-1.amazonaws.com/", 200, HTTPHeaders(), None), {
            "Stacks": [stack],
            "ResponseMetadata": metadata,
        }


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival
