"""AWS errors injected at the transport, below botocore's retries and above the emulator.

A fault answers a chosen operation with a real-shaped error response instead of sending the request,
so the code under test (and botocore's retry logic) sees exactly what AWS would return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

from ec2ir.aws import Aws


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def _error_body(service: str, code: str, message: str) -> tuple[bytes, dict[str, str]]:
    if service == "dynamodb":
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
        return body.encode(), {"Content-Type": "application/x-amz-json-1.0"}
    if service == "sts":
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
        body, headers = _error_body(self.service, self.code, self.message)
        http_headers = HTTPHeaders()
        for name, value in headers.items():
            http_headers[name] = value
        return AWSResponse(request.url, self.status, http_headers, _Body(body))


def inject(aws: Aws, fault: Fault) -> Fault:
    return inject_into(aws.client(fault.service), fault)


def inject_into(client: Any, fault: Fault) -> Fault:
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{service_id}.{fault.operation}", fault)
    return fault
