"""``Custom::Containment``: the incident stack's lifecycle drives the engine.

* **Create** isolates the listed instances under the stack's case.
* **Update** isolates the new list (added instances are contained, the others are re-verified and
  any drift is repaired; originals already recorded are never replaced, because the engine's
  conditional write keeps the first ones) and releases the instances that were removed.
* **Delete** releases the listed instances. It succeeds when there is nothing left to release: after
  a Create that failed, when the instances were released by hand, or when they no longer exist.

CloudFormation waits for an answer on a pre-signed URL, and a missing answer hangs the stack. So
every invocation answers, SUCCESS or FAILED with a reason, before the Lambda deadline: the work runs
on a worker thread, and when time is nearly out FAILED is sent while the work is left to the
engine's own guarantees (write-ahead originals; a release racing an isolate wins).

A retried request (the same RequestId, for example an asynchronous Lambda retry) gets the answer the
first attempt sent, from a record kept in the state table, and changes nothing: a late retry of a
Create can never re-isolate instances that a rollback has since released.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ec2ir import validate
from ec2ir.aws import PERMISSION_CODES, discover, translated
from ec2ir.engine import GONE_STATES, Engine, RunReport
from ec2ir.errors import AwsError, Ec2irError, PermissionDenied, UsageError
from ec2ir.handlers import (
    TOPIC_ENV,
    EngineFactory,
    LambdaContext,
    engine_from_environment,
    log_event,
    notify,
    setup_logging,
)
from ec2ir.models import InstanceResult
from ec2ir.steps import Options

T = TypeVar("T")
log = logging.getLogger("ec2ir.handlers.custom_resource")

SUCCESS, FAILED = "SUCCESS", "FAILED"
CREATE, UPDATE, DELETE = "Create", "Update", "Delete"
# CloudFormation refuses a response body over 4 KiB.
RESPONSE_LIMIT = 4096
WORKER_THREAD_PREFIX = "ec2ir-containment-"
# Time kept back from the Lambda deadline to send the answer: a fifth of the budget, within bounds.
MIN_RESERVE, MAX_RESERVE = 0.25, 15.0
# A role and policy created with the stack can take a few seconds to reach every IAM endpoint.
PERMISSION_RETRIES, PERMISSION_DELAY = 3, 10.0
HELD_BY_OTHER_CASE, NOT_ISOLATED = "HeldByOtherCase", "NotIsolated"
# Results that leave nothing to release: never held by this case, or already put back.
NOTHING_TO_RELEASE = frozenset({NOT_ISOLATED, HELD_BY_OTHER_CASE})
LEDGER_PREFIX = "cfn-request#"
LEDGER_SORT_KEY = "answer"


class MalformedRequest(Exception):
    """The event is not a CloudFormation custom resource request that can be answered."""


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
    def from_event(cls, event: Mapping[str, Any]) -> Request:
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
        physical_id = str(event.get("PhysicalResourceId") or "")
        if not physical_id:
            # Only Create has none yet. Derived from the case and the stack, it stays the same for
            # the stack's life: Update and Delete always echo the id CloudFormation sends.
            case = properties.get("CaseId")
            owner = (
                case if isinstance(case, str) and validate.CASE_ID.match(case) else event["LogicalResourceId"]
            )
            physical_id = f"ec2ir:{owner}:{stack_name_of(event['StackId'])}"
        return cls(
            request_type=event["RequestType"],
            request_id=event["RequestId"],
            stack_id=event["StackId"],
            logical_id=event["LogicalResourceId"],
            response_url=event["ResponseURL"],
            physical_id=physical_id,
            properties=properties,
            old_properties=old_properties,
        )


def stack_name_of(stack_id: str) -> str:
    """The name in a stack ARN (arn:aws:cloudformation:region:account:stack/NAME/guid)."""
    parts = stack_id.split("/")
    return parts[1] if len(parts) >= 3 else stack_id


@dataclass(frozen=True)
class Answer:
    status: str
    reason: str
    data: dict[str, str] = field(default_factory=dict)
    replayed: bool = False  # the answer a first attempt of this request already sent


@dataclass(frozen=True)
class Containment:
    """What the resource's properties ask for (CloudFormation passes every value as a string)."""

    case_id: str | None
    instance_ids: tuple[str, ...]
    office_cidr: str | None
    options: Options

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any], lenient: bool = False) -> Containment:
        """Strict for Create and Update (bad input fails them before any change); lenient for the
        properties of the past (Delete, the old side of an Update), which must never block a
        release: unusable values there are dropped, since nothing could have been done with them."""
        raw_case = properties.get("CaseId")
        try:
            case: str | None = validate.case_id(raw_case if isinstance(raw_case, str) else "")
        except UsageError:
            if not lenient:
                raise
            case = None
        ids = _instance_ids(properties.get("InstanceIds"), lenient)
        cidr_raw = properties.get("OfficeCidr")
        try:
            cidr = validate.office_cidr(cidr_raw) if isinstance(cidr_raw, str) and cidr_raw else None
            forensic_group, forensic_owner = validate.forensic_group(
                str(properties.get("ForensicGroupId") or ""),
                str(properties.get("ForensicGroupOwnerId") or ""),
            )
            options = Options(
                untrack=_flag(properties, "Untrack", True),
                revoke_sessions=_flag(properties, "RevokeSessions", False),
                rejoin=_flag(properties, "Rejoin", False),
                forensic_group=forensic_group,
                forensic_group_owner=forensic_owner,
            )
        except UsageError:
            if not lenient:
                raise
            cidr, options = None, Options()
        return cls(case, ids, cidr, options)


def _instance_ids(raw: Any, lenient: bool) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, Sequence):
        items = [str(item) for item in raw]
    else:
        if lenient:
            return ()
        raise UsageError("InstanceIds must be a list of instance ids")
    items = [item.strip() for item in items if item.strip()]
    if not items:
        return ()
    if lenient:
        return tuple(dict.fromkeys(item for item in items if validate.INSTANCE_ID.match(item)))
    return tuple(validate.instance_ids(items))


def _flag(properties: Mapping[str, Any], name: str, default: bool) -> bool:
    value = properties.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise UsageError(f"{name} must be true or false, not {value!r}")


# -- the record of answered requests ---------------------------------------------------------------


class Ledger:
    """The answer sent for each RequestId, kept in the state table beside the holds.

    Its items (``pk = cfn-request#<RequestId>``) never match the holds' ``sk = hold``, so
    ``ec2ir status`` does not see them; they stay as the record of what CloudFormation asked."""

    def __init__(self, engine: Engine) -> None:
        self.aws = engine.aws
        self.table = engine.store.table

    def _key(self, request_id: str) -> dict[str, Any]:
        return {"pk": {"S": LEDGER_PREFIX + request_id}, "sk": {"S": LEDGER_SORT_KEY}}

    def find(self, request_id: str) -> Answer | None:
        try:
            with translated("dynamodb", "GetItem"):
                item = (
                    self.aws.dynamodb()
                    .get_item(TableName=self.table, Key=self._key(request_id), ConsistentRead=True)
                    .get("Item")
                )
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return None  # no table, so no request was ever answered from it
            raise
        if not item:
            return None
        data = json.loads(item["data"]["S"])
        return Answer(item["status"]["S"], item["reason"]["S"], dict(data), replayed=True)

    def keep(self, request: Request, answer: Answer) -> None:
        """Record the answer; the first one recorded for a RequestId stands."""
        item = self._key(request.request_id) | {
            "request_type": {"S": request.request_type},
            "stack_id": {"S": request.stack_id},
            "logical_id": {"S": request.logical_id},
            "physical_id": {"S": request.physical_id},
            "status": {"S": answer.status},
            "reason": {"S": answer.reason or "-"},
            "data": {"S": json.dumps(answer.data, sort_keys=True)},
            "answered_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        }
        try:
            with translated("dynamodb", "PutItem"):
                self.aws.dynamodb().put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
        except AwsError as error:
            if error.code not in ("ConditionalCheckFailedException", "ResourceNotFoundException"):
                raise


# -- the work ----------------------------------------------------------------------------------------


def _answer(engine: Engine, request: Request, deadline: float) -> Answer:
    replay = Ledger(engine).find(request.request_id)
    if replay is not None:
        log.info(
            "request %s was answered before (%s); sending that answer again",
            request.request_id,
            replay.status,
        )
        return replay
    if request.request_type == CREATE:
        return _create(engine, Containment.from_properties(request.properties), deadline)
    if request.request_type == UPDATE:
        return _update(engine, request, deadline)
    if request.request_type == DELETE:
        return _delete(engine, Containment.from_properties(request.properties, lenient=True))
    return Answer(FAILED, f"unknown RequestType {request.request_type!r}")


def _create(engine: Engine, wanted: Containment, deadline: float) -> Answer:
    assert wanted.case_id is not None  # strict parsing raised otherwise
    report = _isolate(engine, wanted, deadline) if wanted.instance_ids else None
    return _outcome(wanted.case_id, report)


def _update(engine: Engine, request: Request, deadline: float) -> Answer:
    wanted = Containment.from_properties(request.properties)
    before = Containment.from_properties(request.old_properties, lenient=True)
    assert wanted.case_id is not None
    case = wanted.case_id
    removed = [i for i in before.instance_ids if i not in wanted.instance_ids]
    if before.case_id and before.case_id != case:
        held = sorted(
            hold.instance_id
            for hold in engine.status(before.case_id)
            if hold.instance_id in before.instance_ids
        )
        if held:
            return Answer(
                FAILED,
                f"CaseId cannot change from {before.case_id} to {case} while the stack holds "
                f"{', '.join(held)} under {before.case_id}: remove them from the list first, or "
                "deploy a new stack for the new case",
                _data(case, None),
            )
        # The old case holds nothing of this stack (a refused change being rolled back lands
        # here): there is nothing to release under it.
        removed = []
    report = _isolate(engine, wanted, deadline) if wanted.instance_ids else None
    released: list[str] = []
    release_failures: list[InstanceResult] = []
    notes: list[str] = []
    if removed:
        released, release_failures, notes = _release(engine, case, removed, wanted.options.rejoin)
    return _outcome(case, report, released, release_failures, notes)


def _delete(engine: Engine, listed: Containment) -> Answer:
    if listed.case_id is None:
        return Answer(SUCCESS, "nothing to release: the properties name no valid case")
    if not listed.instance_ids:
        return Answer(SUCCESS, "nothing to release: no valid instance ids listed")
    if not engine.store.exists():
        return Answer(SUCCESS, f"nothing to release: state table {engine.store.table} does not exist")
    case = listed.case_id
    released, failures, notes = _release(engine, case, list(listed.instance_ids), listed.options.rejoin)
    if failures:
        return Answer(FAILED, _failure_reason(case, failures, len(listed.instance_ids)))
    summary = f"released {', '.join(released)}" if released else "nothing was still held"
    return Answer(SUCCESS, "; ".join([summary, *notes]))


def _isolate(engine: Engine, wanted: Containment, deadline: float) -> RunReport:
    """Isolate, waiting out the IAM propagation of a role created with the stack."""
    assert wanted.case_id is not None
    attempt = 0
    while True:
        attempt += 1
        try:
            report = engine.isolate(
                wanted.instance_ids, wanted.case_id, wanted.office_cidr, options=wanted.options
            )
        except PermissionDenied:
            if not _may_retry(attempt, deadline):
                raise
            report = None
        if report is not None:
            log_event("isolate", report.as_dict())
            denied = [r for r in report.failed if r.error_code in PERMISSION_CODES]
            if not denied or not _may_retry(attempt, deadline):
                return report
        log.warning("permission denied on attempt %d; IAM may still be propagating, retrying", attempt)
        time.sleep(PERMISSION_DELAY)


def _may_retry(attempt: int, deadline: float) -> bool:
    # Leave time for one more full run after the wait.
    return attempt < PERMISSION_RETRIES and deadline - time.monotonic() > 6 * PERMISSION_DELAY


def _release(
    engine: Engine, case: str, instance_ids: list[str], rejoin: bool
) -> tuple[list[str], list[InstanceResult], list[str]]:
    """Release what this case holds; (released, failures, notes). An instance that no longer
    exists has nothing to put back, and one never held or already released needs nothing."""
    facts = discover(engine.aws, instance_ids)
    gone = [i for i in instance_ids if i not in facts or facts[i].state in GONE_STATES]
    live = [i for i in instance_ids if i not in gone]
    notes = [f"{', '.join(gone)} no longer exist(s); the record stays in the state table"] if gone else []
    if not live:
        return [], [], notes
    report = engine.release(live, case, rejoin=rejoin)
    log_event("release", report.as_dict())
    released = [r.instance_id for r in report.results if r.ok]
    failures = [r for r in report.results if not r.ok and r.error_code not in NOTHING_TO_RELEASE]
    for result in report.results:
        if result.error_code == NOT_ISOLATED:
            notes.append(f"{result.instance_id} was not held (never isolated, or released by hand)")
        elif result.error_code == HELD_BY_OTHER_CASE:
            notes.append(f"{result.instance_id} is held by another case and was left alone")
    return released, failures, notes


def _held_elsewhere(report: RunReport | None) -> list[InstanceResult]:
    """Instances another case already holds (GuardDuty's, a responder's): contained, not ours."""
    return [r for r in report.results if r.error_code == HELD_BY_OTHER_CASE] if report else []


def _data(case: str, report: RunReport | None) -> dict[str, str]:
    """The attributes ``Fn::GetAtt`` reads. Every key is always present, or a GetAtt on it would
    fail the stack."""
    groups = list(report.groups.values()) if report else []
    contained = sum(1 for r in report.results if r.ok) if report else 0
    return {
        "CaseId": case,
        "IsolationGroupIds": ",".join(sorted({g.isolation_group_id for g in groups if g.isolation_group_id})),
        "ForensicGroupIds": ",".join(sorted({g.forensic_group_id for g in groups if g.forensic_group_id})),
        "ContainedCount": str(contained + len(_held_elsewhere(report))),
        "SnapshotIds": ",".join(s for r in report.results for s in r.snapshot_ids) if report else "",
    }


def _outcome(
    case: str,
    report: RunReport | None,
    released: Sequence[str] = (),
    release_failures: Sequence[InstanceResult] = (),
    notes: Sequence[str] = (),
) -> Answer:
    """SUCCESS only if every listed instance is contained (under this case, or already under
    another one) and every removed one released."""
    data = _data(case, report)
    listed = list(report.results) if report else []
    elsewhere = _held_elsewhere(report)
    failures = [r for r in listed if not r.ok and r not in elsewhere] + list(release_failures)
    if failures:
        total = len(listed) + len(released) + len(release_failures)
        return Answer(FAILED, _failure_reason(case, failures, total), data)
    parts = [f"contained {len(listed) - len(elsewhere)} instance(s) under case {case}"]
    if data["IsolationGroupIds"]:
        parts[0] += f" (isolation groups {data['IsolationGroupIds']})"
    parts += [f"{r.instance_id} stays with the case that holds it: {r.detail}" for r in elsewhere]
    # Evidence that failed never fails the stack: a failed Create would roll back, and the
    # rollback's Delete would release instances that are contained.
    parts += [
        f"{r.instance_id}: evidence incomplete: {'; '.join(r.evidence_failed)}"
        for r in listed
        if r.evidence_failed
    ]
    if released:
        parts.append(f"released {', '.join(released)}")
    parts += [*notes, *(report.notes if report else [])]
    return Answer(SUCCESS, "; ".join(parts), data)


def _failure_reason(case: str, failures: Sequence[InstanceResult], total: int) -> str:
    details = "; ".join(f"{r.instance_id}: {r.action}: {r.error_code}: {r.detail}" for r in failures)
    return f"{len(failures)} of {total} instance(s) failed under case {case}: {details}"


# -- the deadline --------------------------------------------------------------------------------------


class Worker(Generic[T]):
    """Runs the work on a daemon thread, so the handler can answer while it is unfinished."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._result: list[T] = []
        self._error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=WORKER_THREAD_PREFIX + name, daemon=True)

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


def response_body(request: Request, answer: Answer, log_stream: str = "") -> bytes:
    """The JSON CloudFormation expects, trimmed to its 4 KiB limit (the reason first)."""
    reason = answer.reason + (f" (details: CloudWatch log stream {log_stream})" if log_stream else "")
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
    encoded = json.dumps(body).encode()
    if len(encoded) > RESPONSE_LIMIT:
        room = max(0, len(reason.encode()) - (len(encoded) - RESPONSE_LIMIT) - 20)
        body["Reason"] = reason.encode()[:room].decode(errors="ignore") + " [truncated]"
        encoded = json.dumps(body).encode()
    for key in sorted(body["Data"], key=lambda k: -len(body["Data"][k])):
        if len(encoded) <= RESPONSE_LIMIT:
            break
        body["Data"][key] = ""  # only a pathological fleet gets here; the log has the full list
        encoded = json.dumps(body).encode()
    return encoded


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


# -- the entry points -------------------------------------------------------------------------------


def handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.custom_resource.handler``)."""
    setup_logging()
    return handle(event, context, engine_from_environment, topic_arn=os.environ.get(TOPIC_ENV))


def handle(
    event: Mapping[str, Any],
    context: LambdaContext,
    engine_factory: EngineFactory,
    topic_arn: str | None = None,
) -> dict[str, Any]:
    """Answer one request before the deadline ``context`` gives; returns the body sent."""
    started = time.monotonic()
    budget = max(0.0, context.get_remaining_time_in_millis() / 1000)
    deadline = started + budget
    answer_by = deadline - reserve_for(budget)
    log_stream = str(getattr(context, "log_stream_name", "") or "")
    log_event("request", {k: v for k, v in event.items() if k != "ResponseURL"})
    try:
        request = Request.from_event(event)
    except MalformedRequest as error:
        return _answer_malformed(event, str(error), deadline)

    engines: list[Engine] = []

    def work() -> Answer:
        engine = engine_factory()
        engines.append(engine)
        return _answer(engine, request, answer_by)

    worker: Worker[Answer] = Worker(work, request.request_id)
    try:
        answer = worker.run(answer_by - time.monotonic())
        if answer is None:
            answer = Answer(
                FAILED,
                f"{request.request_type} did not finish within the function's time limit "
                f"({budget:.0f} s). The state table records what was done, so CloudFormation's "
                "rollback, or repeating the operation, is safe",
            )
            log.error("answering FAILED at the deadline; the work is still running")
    except Ec2irError as error:
        answer = Answer(FAILED, f"{request.request_type} failed: {error}")
    except Exception as error:
        log.exception("the %s request failed unexpectedly", request.request_type)
        answer = Answer(FAILED, f"{request.request_type} failed: {type(error).__name__}: {error}")
    body = response_body(request, answer, log_stream)
    sent = send_response(request.response_url, body, deadline)
    log_event("answer", {"sent": sent, "status": answer.status, "reason": answer.reason, "data": answer.data})
    # Kept only once answered, and only for work that finished: a retry after a timeout must redo
    # the work (safely; the engine is idempotent) rather than repeat a FAILED it never deserved.
    if engines and not worker.thread.is_alive() and not answer.replayed:
        _after_answer(engines[0], request, answer, topic_arn)
    return dict(json.loads(body))


def _after_answer(engine: Engine, request: Request, answer: Answer, topic_arn: str | None) -> None:
    try:
        Ledger(engine).keep(request, answer)
    except Ec2irError as error:
        log.warning("could not record the answer to request %s: %s", request.request_id, error)
    subject = f"ec2ir {request.request_type} {answer.status}: {request.stack_name}"
    notify(engine.aws, topic_arn, subject, answer.reason)


def _answer_malformed(event: Mapping[str, Any], why: str, deadline: float) -> dict[str, Any]:
    """Answer FAILED when the request can be answered at all; otherwise only log it."""
    log.error("malformed custom resource request: %s", why)
    url = event.get("ResponseURL")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        return {"Status": FAILED, "Reason": why}
    request = Request(
        request_type=str(event.get("RequestType", "")),
        request_id=str(event.get("RequestId", "")),
        stack_id=str(event.get("StackId", "")),
        logical_id=str(event.get("LogicalResourceId", "")),
        response_url=url,
        physical_id=str(event.get("PhysicalResourceId") or "ec2ir:malformed-request"),
        properties={},
        old_properties={},
    )
    body = response_body(request, Answer(FAILED, f"malformed request: {why}"))
    send_response(url, body, deadline)
    return dict(json.loads(body))
