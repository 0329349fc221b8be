"""``Custom::Containment``: the incident stack's lifecycle drives the engine.

* **Create** isolates the listed instances under the stack's case.
* **Update** isolates the new list (added instances are contained, the others are re-verified and
  any drift is repaired; originals already recorded are never replaced, because the engine's
  conditional write keeps the first ones) and releases the instances that were removed.
* **Delete** releases the listed instances, but only when the stack itself is being deleted.

**A rollback never releases.** CloudFormation answers a failed resource by rolling back, and a
rollback sends Delete (after a failed Create) or an Update with the old list (after a failed
Update). Released then, a compromised instance would go back on the network because some other
resource, or one other instance, failed. So:

* Create and Update answer SUCCESS once containment was attempted for every listed instance; the
  instances that failed are named in the reason and in ``FailedInstanceIds``. FAILED is kept for
  input refused before any change (a malformed instance id, a case change while instances are
  held), for an engine that could not start, and for work unfinished at the deadline.
* Delete and the release half of Update read the stack's own status (``DescribeStacks``) and
  release only during ``DELETE_IN_PROGRESS`` (Delete) or ``UPDATE_IN_PROGRESS`` (Update). In any
  other state (``ROLLBACK_IN_PROGRESS``, ``UPDATE_ROLLBACK_IN_PROGRESS``, an unreadable status...)
  the instances stay held, the answer is SUCCESS, and the reason and the notification say how to
  release them with the CLI.

**The function obeys its own stack only.** Anyone allowed to invoke it could otherwise send a
forged Delete. A request is acted on, and answered, only when its ``StackId`` is the stack that
created the function (``EC2IR_STACK_ID``) and its ``ResponseURL`` is CloudFormation's response
bucket of that stack's partition and Region over https; anything else is refused with one log
line, no change and no HTTP request.

CloudFormation waits for an answer on a pre-signed URL, and a missing answer hangs the stack. So
every invocation answers, SUCCESS or FAILED with a reason, before the Lambda deadline: the work runs
on a worker thread, and when time is nearly out FAILED is sent while the work is left to the
engine's own guarantees (write-ahead originals; a release racing an isolate wins). The answer fits
CloudFormation's 4,096 bytes: long lists in Data give way first, and the head of the reason always
stays; the full list of snapshot ids is an object in the evidence bucket (``SnapshotIdsKey``).

A retried request (the same RequestId, for example an asynchronous Lambda retry) gets the answer the
first attempt sent, from a record kept in the state table, and changes nothing: a late retry of a
Create can never re-isolate instances that were released since.

The protocol itself (the request, the answer and its size, the deadline, whom to obey) is
``ec2ir.handlers.cloudformation``; this module maps the stack's lifecycle onto the engine.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ec2ir.aws.session import PERMISSION_CODES
from ec2ir.containment.steps import Options
from ec2ir.core import validate
from ec2ir.core.errors import Ec2irError, PermissionDenied, UsageError
from ec2ir.core.models import InstanceResult
from ec2ir.engine.facade import Engine
from ec2ir.engine.results import RunReport
from ec2ir.handlers import (
    TOPIC_ENV,
    EngineFactory,
    LambdaContext,
    engine_from_environment,
    log_event,
    notify,
    setup_logging,
)
from ec2ir.handlers.cloudformation import (
    CREATE,
    DELETE,
    FAILED,
    SUCCESS,
    UPDATE,
    Answer,
    Deadline,
    MalformedRequest,
    Request,
    ResponseUrls,
    answer_in_time,
    answer_malformed,
    refusal,
    stack_name_of,
    stack_status,
)
from ec2ir.store.ledger import AnsweredRequest

log = logging.getLogger("ec2ir.handlers.custom_resource")

# The stack that created the function (the template sets it to AWS::StackId).
STACK_ENV = "EC2IR_STACK_ID"
# What this handler calls itself, beyond the engine (tests/integration/test_template.py checks the grant).
HANDLER_ACTIONS = ("cloudformation:DescribeStacks",)
# The only stack states in which the listed instances are released (see the module docstring).
RELEASE_ON = {DELETE: "DELETE_IN_PROGRESS", UPDATE: "UPDATE_IN_PROGRESS"}
WORKER_THREAD_PREFIX = "ec2ir-containment-"
# What a FAILED answer at the deadline adds: the work goes on, and is safe to repeat.
UNFINISHED = (
    "The state table records what was done; a rollback keeps whatever was contained (it never "
    "releases), and repeating the operation is safe"
)
# A physical id for an answer to a request too malformed to carry one.
MALFORMED_PHYSICAL_ID = "ec2ir:malformed-request"
# A role and policy created with the stack can take a few seconds to reach every IAM endpoint.
PERMISSION_RETRIES, PERMISSION_DELAY = 3, 10.0
HELD_BY_OTHER_CASE, NOT_ISOLATED = "HeldByOtherCase", "NotIsolated"
# Results that leave nothing to release: never held by this case, or already put back.
NOTHING_TO_RELEASE = frozenset({NOT_ISOLATED, HELD_BY_OTHER_CASE})


def physical_id_of(event: Mapping[str, Any]) -> str:
    """The physical id of a new Containment: derived from the case and the stack, it stays the same
    for the stack's life (Update and Delete always echo the id CloudFormation sends)."""
    case = (event.get("ResourceProperties") or {}).get("CaseId")
    owner = case if isinstance(case, str) and validate.CASE_ID.match(case) else event["LogicalResourceId"]
    return f"ec2ir:{owner}:{stack_name_of(event['StackId'])}"


def _refused(event: Any, why: str) -> dict[str, Any]:
    """One log line, nothing changed, nothing sent."""
    fields = event if isinstance(event, Mapping) else {}
    log_event(
        "refused",
        {
            "why": why,
            **{key: fields.get(key) for key in ("RequestType", "RequestId", "StackId", "LogicalResourceId")},
        },
    )
    return {"Refused": why}


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
            # the stack's own isolation group: the engine records it as ec2ir's in its VPC
            isolation_group, _ = validate.forensic_group(str(properties.get("IsolationGroupId") or ""), "")
            options = Options(
                untrack=_flag(properties, "Untrack", True),
                revoke_sessions=_flag(properties, "RevokeSessions", False),
                rejoin=_flag(properties, "Rejoin", False),
                forensic_group=forensic_group,
                forensic_group_owner=forensic_owner,
                isolation_group=isolation_group,
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


def _answered_before(engine: Engine, request: Request) -> Answer | None:
    """The answer a first attempt of this request sent, from the state table's request ledger."""
    sent = engine.store.answered_request(request.request_id)
    return Answer(sent.status, sent.reason, dict(sent.data), replayed=True) if sent else None


def _keep_answer(engine: Engine, request: Request, answer: Answer) -> None:
    engine.store.keep_answer(
        AnsweredRequest(
            request_id=request.request_id,
            status=answer.status,
            reason=answer.reason,
            data=answer.data,
            request_type=request.request_type,
            stack_id=request.stack_id,
            logical_id=request.logical_id,
            physical_id=request.physical_id,
        )
    )


# -- the work ----------------------------------------------------------------------------------------


def _answer(engine: Engine, request: Request, deadline: float) -> Answer:
    replay = _answered_before(engine, request)
    if replay is not None:
        log.info(
            "request %s was answered before (%s); sending that answer again",
            request.request_id,
            replay.status,
        )
        return replay
    if request.request_type == CREATE:
        return _create(engine, request, Containment.from_properties(request.properties), deadline)
    if request.request_type == UPDATE:
        return _update(engine, request, deadline)
    if request.request_type == DELETE:
        return _delete(engine, request, Containment.from_properties(request.properties, lenient=True))
    return Answer(FAILED, f"unknown RequestType {request.request_type!r}")


def _create(engine: Engine, request: Request, wanted: Containment, deadline: float) -> Answer:
    assert wanted.case_id is not None  # strict parsing raised otherwise
    report = _isolate(engine, wanted, deadline) if wanted.instance_ids else None
    key, problem = _store_snapshot_list(engine, request, report)
    return _outcome(wanted.case_id, report, notes=[problem] if problem else [], snapshot_key=key)


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
    key, problem = _store_snapshot_list(engine, request, report)
    released: list[str] = []
    release_failures: list[InstanceResult] = []
    notes: list[str] = [problem] if problem else []
    kept = _kept_unless(engine, request, case, removed) if removed else None
    if removed and kept is None:
        released, release_failures, more = _release(engine, case, removed, wanted.options.rejoin)
        notes += more
    answer = _outcome(case, report, released, release_failures, notes, key)
    if kept is None:
        return answer
    # First, so that it survives any cut of the reason to CloudFormation's 4 KB.
    return Answer(answer.status, f"{kept.reason}; {answer.reason}", answer.data, notice=kept.notice)


def _delete(engine: Engine, request: Request, listed: Containment) -> Answer:
    if listed.case_id is None:
        return Answer(SUCCESS, "nothing to release: the properties name no valid case")
    if not listed.instance_ids:
        return Answer(SUCCESS, "nothing to release: no valid instance ids listed")
    if not engine.store.exists():
        return Answer(SUCCESS, f"nothing to release: state table {engine.store.table} does not exist")
    case = listed.case_id
    kept = _kept_unless(engine, request, case, list(listed.instance_ids))
    if kept is not None:
        return kept
    released, failures, notes = _release(engine, case, list(listed.instance_ids), listed.options.rejoin)
    if failures:
        return Answer(FAILED, _failure_reason(case, failures, len(listed.instance_ids)))
    summary = f"released {', '.join(released)}" if released else "nothing was still held"
    return Answer(SUCCESS, "; ".join([summary, *notes]))


def _kept_unless(engine: Engine, request: Request, case: str, instance_ids: list[str]) -> Answer | None:
    """None when the stack's status allows this request to release; otherwise the SUCCESS answer
    that keeps every instance held and says how to release them by hand."""
    wanted = RELEASE_ON[request.request_type]
    status, problem = stack_status(engine.aws, request.stack_id)
    if status == wanted:
        return None
    try:
        holding = {h.instance_id for h in engine.status(case)}
        held = [i for i in instance_ids if i in holding]
    except Ec2irError as error:
        log.warning("could not list what case %s holds: %s", case, error)
        held = list(instance_ids)
    state = f"is {status}" if status else problem
    why = (
        f"not released: stack {request.stack_name} {state}, and only a {request.request_type} "
        f"during {wanted} releases (a rollback never does)"
    )
    if not held:
        reason = f"{why}; case {case} holds none of {', '.join(instance_ids)}, so nothing stays held"
        return Answer(SUCCESS, reason)
    command = f"ec2ir release {' '.join(held)} --case {case} --table {engine.store.table}"
    reason = f"{why}. {', '.join(held)} STAY CONTAINED under case {case}; to release them run: {command}"
    log_event("kept", {"stack_status": status, "problem": problem, "case": case, "held": held})
    state_now = status or "status unknown"
    notice = f"ec2ir kept {len(held)} instance(s) contained: {request.stack_name} {state_now}"
    return Answer(SUCCESS, reason, notice=notice)


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
    """Release what this case holds; (released, failures, notes). The engine's release decides,
    as it does for the CLI: a terminated instance has nothing to put back, but its hold is closed
    and what the case changed elsewhere (a role's deny policy) is undone; one never held or already
    released needs nothing."""
    report = engine.release(instance_ids, case, rejoin=rejoin)
    log_event("release", report.as_dict())
    try:
        gone = engine.gone(instance_ids)
    except Ec2irError:  # only the wording of the answer depends on it: the release is done
        gone = []
    released = [r.instance_id for r in report.results if r.ok and r.instance_id not in gone]
    failures = [r for r in report.results if not r.ok and r.error_code not in NOTHING_TO_RELEASE]
    notes = [f"{', '.join(gone)} no longer exist(s); the record stays in the state table"] if gone else []
    for result in report.results:
        if result.instance_id in gone:
            continue
        if result.error_code == NOT_ISOLATED:
            notes.append(f"{result.instance_id} was not held (never isolated, or released by hand)")
        elif result.error_code == HELD_BY_OTHER_CASE:
            notes.append(f"{result.instance_id} is held by another case and was left alone")
    return released, failures, notes


def _held_elsewhere(report: RunReport | None) -> list[InstanceResult]:
    """Instances another case already holds (GuardDuty's, a responder's): contained, not ours."""
    return [r for r in report.results if r.error_code == HELD_BY_OTHER_CASE] if report else []


def _data(
    case: str, report: RunReport | None, failed: Sequence[str] = (), snapshot_key: str = ""
) -> dict[str, str]:
    """The attributes ``Fn::GetAtt`` reads. Every key is always present, or a GetAtt on it would
    fail the stack."""
    groups = list(report.groups.values()) if report else []
    contained = sum(1 for r in report.results if r.ok) if report else 0
    return {
        "CaseId": case,
        "IsolationGroupIds": ",".join(sorted({g.isolation_group_id for g in groups if g.isolation_group_id})),
        "ForensicGroupIds": ",".join(sorted({g.forensic_group_id for g in groups if g.forensic_group_id})),
        "ContainedCount": str(contained + len(_held_elsewhere(report))),
        "FailedCount": str(len(failed)),
        "FailedInstanceIds": ",".join(failed),
        "SnapshotIds": ",".join(s for r in report.results for s in r.snapshot_ids) if report else "",
        "SnapshotIdsKey": snapshot_key,
    }


def _outcome(
    case: str,
    report: RunReport | None,
    released: Sequence[str] = (),
    release_failures: Sequence[InstanceResult] = (),
    notes: Sequence[str] = (),
    snapshot_key: str = "",
) -> Answer:
    """SUCCESS once every listed instance was attempted: a FAILED here would roll the stack back,
    and nothing that is contained may depend on every other instance succeeding too. What failed
    comes first in the reason (its head survives any cut to 4 KB) and in ``FailedInstanceIds``."""
    listed = list(report.results) if report else []
    elsewhere = _held_elsewhere(report)
    failures = [r for r in listed if not r.ok and r not in elsewhere] + list(release_failures)
    data = _data(case, report, [r.instance_id for r in failures], snapshot_key)
    parts: list[str] = []
    if failures:
        total = len(listed) + len(released) + len(release_failures)
        parts.append(
            f"{_failure_reason(case, failures, total)} (answered SUCCESS so that no rollback "
            "releases what is contained: fix the cause and update the stack, or use ec2ir isolate)"
        )
    contained = sum(1 for r in listed if r.ok)
    parts.append(f"contained {contained} instance(s) under case {case}")
    if data["IsolationGroupIds"]:
        parts[-1] += f" (isolation groups {data['IsolationGroupIds']})"
    parts += [f"{r.instance_id} stays with the case that holds it: {r.detail}" for r in elsewhere]
    parts += [
        f"{r.instance_id}: evidence incomplete: {'; '.join(r.evidence_failed)}"
        for r in listed
        if r.evidence_failed
    ]
    if released:
        parts.append(f"released {', '.join(released)}")
    if snapshot_key:
        parts.append(f"snapshot ids listed in the evidence bucket under {snapshot_key}")
    parts += [*notes, *(report.notes if report else [])]
    return Answer(SUCCESS, "; ".join(parts), data)


def _failure_reason(case: str, failures: Sequence[InstanceResult], total: int) -> str:
    details = "; ".join(f"{r.instance_id}: {r.action}: {r.error_code}: {r.detail}" for r in failures)
    return f"{len(failures)} of {total} instance(s) failed under case {case}: {details}"


def _store_snapshot_list(engine: Engine, request: Request, report: RunReport | None) -> tuple[str, str]:
    """The full list of snapshot ids, which the answer's 4 KB cannot hold for a large fleet, kept
    in the evidence bucket under the request that took them; (its key, or "" and why not)."""
    if report is None:
        return "", ""
    stored = engine.store_snapshot_list(
        report,
        f"cloudformation/{request.stack_name}/{request.request_id}",
        {
            "stack_id": request.stack_id,
            "request_id": request.request_id,
            "request_type": request.request_type,
        },
    )
    return stored.key, stored.problem


# -- the entry points -------------------------------------------------------------------------------


def handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.custom_resource.handler``)."""
    setup_logging()
    return handle(
        event,
        context,
        engine_from_environment,
        topic_arn=os.environ.get(TOPIC_ENV),
        own_stack_id=os.environ.get(STACK_ENV, "").strip() or None,
    )


def handle(
    event: Mapping[str, Any],
    context: LambdaContext,
    engine_factory: EngineFactory,
    topic_arn: str | None = None,
    *,
    own_stack_id: str | None,
    extra_response_origins: Collection[str] = (),
) -> dict[str, Any]:
    """Answer one request of the function's own stack before the deadline ``context`` gives;
    returns the body sent, or ``{"Refused": why}`` for a request it neither acts on nor answers.

    ``extra_response_origins`` (``scheme://host:port``) lets tests catch answers on loopback;
    the Lambda entry point never passes any."""
    clock = Deadline.of(context.get_remaining_time_in_millis())
    log_stream = str(getattr(context, "log_stream_name", "") or "")
    urls = ResponseUrls.for_stack(own_stack_id, extra_response_origins) if own_stack_id else None
    why = refusal(event, own_stack_id, urls, STACK_ENV)
    if why is not None:
        return _refused(event, why)
    log_event("request", {k: v for k, v in event.items() if k != "ResponseURL"})
    try:
        request = Request.from_event(event, physical_id_of)
    except MalformedRequest as error:
        return answer_malformed(event, str(error), clock.deadline, MALFORMED_PHYSICAL_ID)

    engines: list[Engine] = []

    def work() -> Answer:
        engine = engine_factory()
        engines.append(engine)
        return _answer(engine, request, clock.answer_by)

    thread = WORKER_THREAD_PREFIX + request.request_id
    sent = answer_in_time(request, work, clock, thread, UNFINISHED, log_stream)
    answer = sent.answer
    log_event(
        "answer",
        {"sent": sent.delivered, "status": answer.status, "reason": answer.reason, "data": answer.data},
    )
    # Kept only once answered, and only for work that finished: a retry after a timeout must redo
    # the work (safely; the engine is idempotent) rather than repeat a FAILED it never deserved.
    if engines and sent.finished and not answer.replayed:
        _after_answer(engines[0], request, answer, topic_arn)
    return dict(json.loads(sent.body))


def _after_answer(engine: Engine, request: Request, answer: Answer, topic_arn: str | None) -> None:
    try:
        _keep_answer(engine, request, answer)
    except Ec2irError as error:
        log.warning("could not record the answer to request %s: %s", request.request_id, error)
    subject = answer.notice or f"ec2ir {request.request_type} {answer.status}: {request.stack_name}"
    notify(engine.aws, topic_arn, subject, answer.reason)
