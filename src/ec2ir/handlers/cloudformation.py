"""The CloudFormation custom-resource protocol, apart from what any one resource does.

A custom resource's function gets a request (``Request``), must answer it once, SUCCESS or FAILED,
by a PUT of a small JSON body to the pre-signed ``ResponseURL`` (``response_body``,
``send_response``), and must do so before its own deadline, or the stack hangs for an hour
(``answer_in_time`` runs the work on a worker thread and answers FAILED when time is nearly out).
A function should obey its own stack only and answer only to CloudFormation's response bucket of
that stack's partition and Region (``refusal``, ``ResponseUrls``).

Nothing here knows what the resource does: the caller hands in the work, and gets the answer sent.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ec2ir.aws.session import Aws, dns_suffix, translated
from ec2ir.core.errors import Ec2irError

T = TypeVar("T")
log = logging.getLogger("ec2ir.handlers.cloudformation")

SUCCESS, FAILED = "SUCCESS", "FAILED"
CREATE, UPDATE, DELETE = "Create", "Update", "Delete"
# CloudFormation's own bucket for answers: cloudformation-custom-resource-response-<Region without
# dashes>, e.g. https://cloudformation-custom-resource-response-useast1.s3-us-east-1.amazonaws.com/...
# or ...-cnnorth1.s3.cn-north-1.amazonaws.com.cn/... (AWS Lambda Developer Guide, "Using AWS Lambda
# with CloudFormation").
RESPONSE_BUCKET_PREFIX = "cloudformation-custom-resource-response-"
# CloudFormation refuses a response body over 4 KiB.
RESPONSE_LIMIT = 4096
# Data gives way before the reason is cut below this many characters.
REASON_FLOOR = 1024
# Time kept back from the Lambda deadline to send the answer: a fifth of the budget, within bounds.
MIN_RESERVE, MAX_RESERVE = 0.25, 15.0


class MalformedRequest(Exception):
    """The event is not a CloudFormation custom resource request that can be answered."""


def stack_name_of(stack_id: str) -> str:
    """The name in a stack ARN (arn:aws:cloudformation:region:account:stack/NAME/guid)."""
    parts = stack_id.split("/")
    return parts[1] if len(parts) >= 3 else stack_id


def logical_physical_id(event: Mapping[str, Any]) -> str:
    """A physical id for a new resource: its logical id and its stack's name."""
    return f"{event['LogicalResourceId']}:{stack_name_of(event['StackId'])}"


@dataclass(frozen=True)
class Request:
    """One CloudFormation custom resource request."""

    request_type: str
    request_id: str
    stack_id: str
    logical_id: str
    response_url: str
    physical_id: str
    properties: Mapping[str, Any]
    old_properties: Mapping[str, Any]

    @property
    def stack_name(self) -> str:
        return stack_name_of(self.stack_id)

    @classmethod
    def from_event(
        cls,
        event: Mapping[str, Any],
        new_physical_id: Callable[[Mapping[str, Any]], str] = logical_physical_id,
    ) -> Request:
        """The request an event makes. Only Create comes without a physical id: it gets
        ``new_physical_id(event)``, which must give the same id for the stack's life, since Update
        and Delete always echo the one CloudFormation sends."""
        missing = [
            key
            for key in ("RequestType", "RequestId", "StackId", "LogicalResourceId", "ResponseURL")
            if not isinstance(event.get(key), str) or not event.get(key)
        ]
        if missing:
            raise MalformedRequest(f"the request lacks {', '.join(missing)}")
        url = urllib.parse.urlsplit(event["ResponseURL"])
        if url.scheme not in ("https", "http") or not url.netloc:
            raise MalformedRequest("the ResponseURL is not an http(s) URL")
        properties = event.get("ResourceProperties") or {}
        old_properties = event.get("OldResourceProperties") or {}
        if not isinstance(properties, Mapping) or not isinstance(old_properties, Mapping):
            raise MalformedRequest("ResourceProperties must be an object")
        return cls(
            request_type=event["RequestType"],
            request_id=event["RequestId"],
            stack_id=event["StackId"],
            logical_id=event["LogicalResourceId"],
            response_url=event["ResponseURL"],
            physical_id=str(event.get("PhysicalResourceId") or "") or new_physical_id(event),
            properties=properties,
            old_properties=old_properties,
        )


@dataclass(frozen=True)
class Answer:
    status: str
    reason: str
    data: dict[str, str] = field(default_factory=dict)
    replayed: bool = False  # the answer a first attempt of this request already sent
    notice: str = ""  # the notification's subject, when the status alone would mislead


# -- whom the function obeys --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseUrls:
    """Where answers may go: CloudFormation's response bucket in the stack's partition and Region,
    over https on the default port. ``extra_origins`` (``scheme://host:port``) exist for tests that
    catch answers on loopback; a Lambda entry point never passes any."""

    region: str
    suffix: str
    extra_origins: frozenset[str] = frozenset()

    @classmethod
    def for_stack(cls, stack_id: str, extra_origins: Collection[str] = ()) -> ResponseUrls | None:
        parts = stack_id.split(":")
        if len(parts) < 6 or parts[0] != "arn" or parts[2] != "cloudformation" or not parts[3]:
            return None
        suffix = dns_suffix(parts[1])
        return cls(parts[3], suffix, frozenset(extra_origins)) if suffix else None

    @property
    def host(self) -> re.Pattern[str]:
        bucket = RESPONSE_BUCKET_PREFIX + self.region.replace("-", "")
        region, suffix = re.escape(self.region), re.escape(self.suffix)
        return re.compile(rf"{re.escape(bucket)}\.s3(?:[.-]{region})?\.{suffix}")

    def allows(self, url: str) -> bool:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if not parts.hostname or parts.username is not None or parts.password is not None:
            return False
        if f"{parts.scheme}://{parts.hostname}:{port}" in self.extra_origins:
            return True
        return (
            parts.scheme == "https"
            and port in (None, 443)
            and self.host.fullmatch(parts.hostname.lower()) is not None
        )


def refusal(
    event: Any, own_stack_id: str | None, urls: ResponseUrls | None, stack_setting: str = "the stack id"
) -> str | None:
    """Why this event must be neither acted on nor answered, or None when it may be.
    ``stack_setting`` names where the function's own stack id should have come from."""
    if not isinstance(event, Mapping):
        return "the event is not an object"
    if not own_stack_id:
        return f"{stack_setting} is not set, so no stack can be recognised as this function's own"
    stack_id = event.get("StackId")
    if stack_id != own_stack_id:
        return f"the request is for stack {stack_id!r}, not for this function's stack {own_stack_id}"
    if urls is None:
        return f"cannot tell the partition and Region of {own_stack_id}"
    url = event.get("ResponseURL")
    if not isinstance(url, str) or not urls.allows(url):
        host = urllib.parse.urlsplit(url).netloc if isinstance(url, str) else repr(url)
        return (
            f"the ResponseURL ({host}) is not CloudFormation's response bucket in {urls.region} "
            f"over https (*.{urls.suffix})"
        )
    return None


def stack_status(aws: Aws, stack_id: str) -> tuple[str, str]:
    """The stack's status from DescribeStacks, or ("", why it could not be read)."""
    try:
        with translated("cloudformation", "DescribeStacks"):
            stacks = aws.client("cloudformation").describe_stacks(StackName=stack_id).get("Stacks")
    except Ec2irError as error:
        return "", f"its status could not be read ({error})"
    if not stacks or not stacks[0].get("StackStatus"):
        return "", "DescribeStacks returned no status for it"
    return str(stacks[0]["StackStatus"]), ""


# -- the deadline --------------------------------------------------------------------------------------


class Worker(Generic[T]):
    """Runs the work on a daemon thread, so the handler can answer while it is unfinished."""

    def __init__(self, work: Callable[[], T], thread_name: str) -> None:
        self._work = work
        self._result: list[T] = []
        self._error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        try:
            self._result.append(self._work())
        except BaseException as error:  # handed to the handler thread, which answers FAILED
            self._error.append(error)

    def run(self, timeout: float) -> T | None:
        """The work's result, or None if it is still running after ``timeout`` seconds."""
        self.thread.start()
        self.thread.join(max(0.0, timeout))
        if self.thread.is_alive():
            return None
        if self._error:
            raise self._error[0]
        return self._result[0]


def reserve_for(budget: float) -> float:
    return min(MAX_RESERVE, max(MIN_RESERVE, budget * 0.2))


@dataclass(frozen=True)
class Deadline:
    """The invocation's time: the budget the context gave, when it ends, and when to answer by."""

    budget: float
    deadline: float
    answer_by: float

    @classmethod
    def of(cls, remaining_ms: float) -> Deadline:
        started = time.monotonic()
        budget = max(0.0, remaining_ms / 1000)
        deadline = started + budget
        return cls(budget, deadline, deadline - reserve_for(budget))


@dataclass(frozen=True)
class Sent:
    """What ``answer_in_time`` answered, and whether the work had finished by then."""

    answer: Answer
    body: bytes
    delivered: bool
    finished: bool


def answer_in_time(
    request: Request,
    work: Callable[[], Answer],
    clock: Deadline,
    thread_name: str,
    unfinished_note: str,
    log_stream: str = "",
) -> Sent:
    """Run the work and send its answer; FAILED, with the work left running, when it is not done by
    ``clock.answer_by`` (``unfinished_note`` says what then), or when it raised."""
    worker: Worker[Answer] = Worker(work, thread_name)
    try:
        answer = worker.run(clock.answer_by - time.monotonic())
        if answer is None:
            answer = Answer(
                FAILED,
                f"{request.request_type} did not finish within the function's time limit "
                f"({clock.budget:.0f} s). {unfinished_note}",
            )
            log.error("answering FAILED at the deadline; the work is still running")
    except Ec2irError as error:
        answer = Answer(FAILED, f"{request.request_type} failed: {error}")
    except Exception as error:
        log.exception("the %s request failed unexpectedly", request.request_type)
        answer = Answer(FAILED, f"{request.request_type} failed: {type(error).__name__}: {error}")
    body = response_body(request, answer, log_stream)
    delivered = send_response(request.response_url, body, clock.deadline)
    return Sent(answer, body, delivered, finished=not worker.thread.is_alive())


def answer_malformed(
    event: Mapping[str, Any], why: str, deadline: float, fallback_physical_id: str
) -> dict[str, Any]:
    """Answer FAILED (the event's StackId and ResponseURL were already checked); a request without
    a physical id is answered with ``fallback_physical_id``."""
    log.error("malformed custom resource request: %s", why)
    url = str(event["ResponseURL"])
    request = Request(
        request_type=str(event.get("RequestType", "")),
        request_id=str(event.get("RequestId", "")),
        stack_id=str(event.get("StackId", "")),
        logical_id=str(event.get("LogicalResourceId", "")),
        response_url=url,
        physical_id=str(event.get("PhysicalResourceId") or fallback_physical_id),
        properties={},
        old_properties={},
    )
    body = response_body(request, Answer(FAILED, f"malformed request: {why}"))
    send_response(url, body, deadline)
    return dict(json.loads(body))


# -- the answer ------------------------------------------------------------------------------------------


def response_body(request: Request, answer: Answer, log_stream: str = "") -> bytes:
    """The JSON CloudFormation expects, within its 4 KiB limit.

    When the whole answer does not fit, the longest Data values give way first (emptied, every key
    kept, so that no ``Fn::GetAtt`` fails) until the reason's first ``REASON_FLOOR`` characters
    fit; then the reason is cut to the longest head that fits, and says where the full text is."""
    where = f"CloudWatch log stream {log_stream}" if log_stream else "the function's CloudWatch log"
    reason = answer.reason + (f" (details: {where})" if log_stream else "")
    body: dict[str, Any] = {
        "Status": answer.status,
        "Reason": reason,
        "PhysicalResourceId": request.physical_id,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_id,
        "NoEcho": False,
        "Data": dict(answer.data),
    }

    def size(reason_text: str) -> int:
        return len(json.dumps(body | {"Reason": reason_text}).encode())

    if size(reason) <= RESPONSE_LIMIT:
        return json.dumps(body).encode()
    marker = f" ... [cut to fit CloudFormation's 4 KB; the full reason is in {where}] [truncated]"

    def head(length: int) -> str:
        return reason if length >= len(reason) else reason[:length] + marker

    floor = head(REASON_FLOOR)
    for key in sorted(body["Data"], key=lambda k: -len(body["Data"][k])):
        if size(floor) <= RESPONSE_LIMIT or not body["Data"][key]:
            break
        log.warning("answer too large: Data %s (%d characters) left out", key, len(body["Data"][key]))
        body["Data"][key] = ""
    # The longest head of the reason that fits (a longer head is never smaller).
    low, high = 0, len(reason)
    while low < high:
        middle = (low + high + 1) // 2
        if size(head(middle)) <= RESPONSE_LIMIT:
            low = middle
        else:
            high = middle - 1
    body["Reason"] = head(low)
    return json.dumps(body).encode()


def send_response(url: str, body: bytes, deadline: float) -> bool:
    """PUT the answer to the pre-signed URL, retrying while the deadline allows."""
    attempt = 0
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0.02:
            log.error("no time left to answer CloudFormation (attempt %d)", attempt)
            return False
        # The URL is signed without a content type, so none may be sent.
        put = urllib.request.Request(
            url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
        )
        try:
            with urllib.request.urlopen(put, timeout=min(5.0, max(0.02, left * 0.5))) as answer:
                answer.read()
            return True
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            log.warning("answering CloudFormation failed (attempt %d): %s", attempt, error)
            if attempt >= 3:
                return False
            time.sleep(min(0.5, max(0.0, (deadline - time.monotonic()) * 0.1)))
