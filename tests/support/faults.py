"""AWS errors injected at the transport, below botocore's retries and above the emulator.

A fault answers a chosen operation with a real-shaped error response instead of sending the request,
so the code under test (and botocore's retry logic) sees exactly what AWS would return.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

from ec2ir.aws.session import Aws


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def _error_body(service: str, code: str, message: str) -> tuple[bytes, dict[str, str]]:
    if service == "dynamodb":
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
        return body.encode(), {"Content-Type": "application/x-amz-json-1.0"}
    if service != "ec2":  # the other query-protocol services: STS, IAM, Auto Scaling, ELB
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
            "</Error><RequestId>fault-injected</RequestId></ErrorResponse>"
        )
        return xml.encode(), {"Content-Type": "text/xml"}
    xml = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>fault-injected</RequestID></Response>"
    )
    return xml.encode(), {"Content-Type": "text/xml"}


def error_response(url: str, status: int, service: str, code: str, message: str) -> AWSResponse:
    body, headers = _error_body(service, code, message)
    http_headers = HTTPHeaders()
    for name, value in headers.items():
        http_headers[name] = value
    return AWSResponse(url, status, http_headers, _Body(body))


@dataclass
class Fault:
    """Fail ``operation`` with ``code``, on attempts ``skip`` .. ``skip + times - 1`` (all if None)."""

    service: str
    operation: str
    code: str
    status: int = 400
    times: int | None = None
    skip: int = 0
    message: str = "injected by the test"
    attempts: int = field(default=0, init=False)
    injected: int = field(default=0, init=False)

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        self.attempts += 1
        if self.attempts <= self.skip:
            return None
        if self.times is not None and self.injected >= self.times:
            return None
        self.injected += 1
        return error_response(request.url, self.status, self.service, self.code, self.message)


def inject(aws: Aws, fault: Fault) -> Fault:
    return inject_into(aws.client(fault.service), fault)


def inject_into(client: Any, fault: Fault) -> Fault:
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{service_id}.{fault.operation}", fault)
    return fault


class Crash(BaseException):
    """The process died. A BaseException, so that no ``except Exception`` in ec2ir can swallow it."""


@dataclass
class FaultPoint:
    """Counts every API call made through one Aws and, at call ``at``, either answers it with an
    AWS error (``error_code``) or lets it succeed and then kills the run (``crash_after``).

    After a crash every later call raises too: a dead process makes no more calls."""

    at: int | None = None
    error_code: str = ""
    crash_after: bool = False
    calls: list[str] = field(default_factory=list)
    crashed: bool = False
    _fail_next_send: bool = False

    def install(self, aws: Aws, services: tuple[str, ...]) -> FaultPoint:
        for service in services:
            events = aws.client(service).meta.events
            events.register("before-call", self._before_call)
            events.register("before-send", functools.partial(self._before_send, service))
            events.register("after-call", self._after_call)
        return self

    def _before_call(self, model: Any, **_: Any) -> None:
        if self.crashed:
            raise Crash(f"the process is dead (crashed after call {self.at})")
        self.calls.append(model.name)
        if len(self.calls) == self.at and self.error_code:
            self._fail_next_send = True

    def _before_send(self, service: str, request: Any, **_: Any) -> AWSResponse | None:
        if not self._fail_next_send:
            return None
        self._fail_next_send = False
        code = self.error_code
        if service == "dynamodb" and code == "RequestLimitExceeded":
            code = "ThrottlingException"
        status = {"RequestLimitExceeded": 503, "ThrottlingException": 400, "InternalError": 500}.get(
            code, 403
        )
        return error_response(request.url, status, service, code, "injected fault")

    def _after_call(self, **_: Any) -> None:
        if self.crash_after and len(self.calls) == self.at and not self.crashed:
            self.crashed = True
            raise Crash(f"the process died right after call {self.at} ({self.calls[-1]})")


@dataclass
class Answer:
    """Answer ``operation`` of a JSON-protocol service (SSM, DynamoDB) with ``body`` instead of
    sending the request: a real-shaped success, for states the emulator never reaches (a command
    that stays InProgress), or a JSON-protocol error (``status`` 400 and a ``__type`` body), which
    ``Fault`` shapes as XML. Every attempt is answered, or the first ``times`` only."""

    service: str
    operation: str
    body: dict[str, Any]
    status: int = 200
    times: int | None = None
    answered: int = field(default=0, init=False)

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        if self.times is not None and self.answered >= self.times:
            return None
        self.answered += 1
        target = "1.0" if self.service == "dynamodb" else "1.1"
        headers = HTTPHeaders()
        headers["Content-Type"] = f"application/x-amz-json-{target}"
        headers["x-amzn-RequestId"] = f"answer-injected-{self.answered}"
        return AWSResponse(request.url, self.status, headers, _Body(json.dumps(self.body).encode()))


def answer(aws: Aws, canned: Answer) -> Answer:
    client = aws.client(canned.service)
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{service_id}.{canned.operation}", canned)
    return canned


@contextmanager
def refusing_assume_role(emulator: Any, role_arn: str) -> Iterator[list[str]]:
    """STS refuses to let anyone assume ``role_arn`` (AccessDenied, as AWS answers when the role's
    trust policy does not name the caller), whichever client asks: the emulator answers so at its
    door. Yields the refused requests' role ARNs."""
    from urllib.parse import parse_qs

    refused: list[str] = []
    dispatch = emulator.dispatch

    def answer(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        asked = parse_qs(body.decode("utf-8", "replace"))
        if asked.get("Action") == ["AssumeRole"] and asked.get("RoleArn") == [role_arn]:
            refused.append(role_arn)
            xml, content = _error_body(
                "sts", "AccessDenied", f"not authorized to perform: sts:AssumeRole on {role_arn}"
            )
            return 403, list(content.items()), xml
        return dispatch(method, url, headers, body)

    emulator.dispatch = answer
    try:
        yield refused
    finally:
        del emulator.dispatch
