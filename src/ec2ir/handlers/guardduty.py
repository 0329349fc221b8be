"""GuardDuty auto-containment: an EventBridge "GuardDuty Finding" event in, the instance contained.

The stack's EventBridge rule already selects findings on an EC2 instance at or above the
threshold; this handler checks everything again (defence in depth) and ignores, with one log line
and no exception, anything it cannot act on: a malformed event, another resource type, a lower
severity, a sample finding, a finding of another account or Region. An exception would only make
Lambda retry an event that can never succeed.

Each finding is its own case, ``gd-<finding id>``, so the hold, the tags and the record say which
finding contained the instance. GuardDuty sends the same finding again as it recurs; containing an
instance already held is a no-op, and one held under another case (the stack's, a responder's) is
left to that case.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ec2ir import validate
from ec2ir.errors import AwsError, Ec2irError
from ec2ir.handlers import (
    TOPIC_ENV,
    EngineFactory,
    engine_from_environment,
    log_event,
    notify,
    report_lines,
    setup_logging,
)
from ec2ir.models import ACTIVE_STATUSES
from ec2ir.steps import Options

log = logging.getLogger("ec2ir.handlers.guardduty")

THRESHOLD_ENV = "EC2IR_AUTO_CONTAIN_SEVERITY"
OFFICE_CIDR_ENV = "EC2IR_OFFICE_CIDR"
REVOKE_SESSIONS_ENV = "EC2IR_REVOKE_SESSIONS"
CASE_PREFIX = "gd-"
CONTAINED, ALREADY_HELD, IGNORED, FAILED = "contained", "already-held", "ignored", "failed"
_CASE_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


@dataclass(frozen=True)
class Finding:
    """The fields of a GuardDuty finding that containment depends on."""

    finding_id: str
    finding_type: str
    title: str
    severity: float
    account_id: str
    region: str
    instance_id: str
    sample: bool
    archived: bool


class Unusable(Exception):
    """The event is not a GuardDuty finding on an EC2 instance that can be acted on."""


def _text(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise Unusable(f"{where}.{key} is missing")
    return value


def _object(mapping: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    if not isinstance(value, Mapping):
        raise Unusable(f"{where}.{key} is missing or not an object")
    return value


def _is_sample(service: Mapping[str, Any]) -> bool:
    """GuardDuty's generated sample findings say so in additionalInfo: either directly, or (in the
    current schema) inside its ``value``, a JSON string."""
    info = service.get("additionalInfo")
    if not isinstance(info, Mapping):
        return False
    if info.get("sample") is True:
        return True
    value = info.get("value")
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return False
        return isinstance(decoded, Mapping) and decoded.get("sample") is True
    return False


def parse_finding(event: Any) -> Finding:
    """The finding of an EventBridge event, or ``Unusable`` saying why there is none."""
    if not isinstance(event, Mapping):
        raise Unusable("the event is not an object")
    if event.get("source") != "aws.guardduty" or event.get("detail-type") != "GuardDuty Finding":
        raise Unusable(f"not a GuardDuty finding (source {event.get('source')!r})")
    detail = _object(event, "detail", "event")
    resource = _object(detail, "resource", "detail")
    resource_type = resource.get("resourceType")
    if resource_type != "Instance":
        raise Unusable(f"the finding is about a {resource_type or 'unnamed'} resource, not an EC2 instance")
    instance = _object(resource, "instanceDetails", "detail.resource")
    instance_id = _text(instance, "instanceId", "detail.resource.instanceDetails")
    if not validate.INSTANCE_ID.match(instance_id):
        raise Unusable(f"{instance_id!r} is not an EC2 instance id")
    severity = detail.get("severity")
    if isinstance(severity, bool) or not isinstance(severity, int | float):
        raise Unusable("detail.severity is missing or not a number")
    service = detail.get("service")
    service = service if isinstance(service, Mapping) else {}
    return Finding(
        finding_id=_text(detail, "id", "detail"),
        finding_type=str(detail.get("type", "")),
        title=str(detail.get("title", "")),
        severity=float(severity),
        account_id=_text(detail, "accountId", "detail"),
        region=_text(detail, "region", "detail"),
        instance_id=instance_id,
        sample=_is_sample(service),
        archived=service.get("archived") is True,
    )


def case_for(finding_id: str) -> str:
    """``gd-<finding id>``, always a valid case id (ec2ir.validate.CASE_ID). GuardDuty ids are 32
    hex digits; anything else is made safe, or replaced by its hash when it cannot be."""
    safe = _CASE_UNSAFE.sub("", finding_id)
    candidate = f"{CASE_PREFIX}{safe}"
    if safe == finding_id and validate.CASE_ID.match(candidate):
        return candidate
    return f"{CASE_PREFIX}{hashlib.sha256(finding_id.encode()).hexdigest()[:32]}"


def threshold_from(raw: str | None) -> float | None:
    """The severity threshold, or None (auto-containment off) when unset or unreadable."""
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        log.error("%s=%r is not a number; auto-containment is off", THRESHOLD_ENV, raw)
        return None


def _ignored(why: str, finding: Finding | None = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {"outcome": IGNORED, "reason": why}
    if finding is not None:
        outcome |= {"finding": finding.finding_id, "instance": finding.instance_id}
    log_event("ignored", outcome)
    return outcome


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.guardduty.handler``)."""
    setup_logging()
    arn = str(getattr(context, "invoked_function_arn", "") or "")
    own_account = arn.split(":")[4] if arn.count(":") >= 5 else None
    return handle(
        event,
        engine_from_environment,
        threshold=threshold_from(os.environ.get(THRESHOLD_ENV)),
        own_account=own_account,
        own_region=os.environ.get("AWS_REGION"),
        office_cidr=os.environ.get(OFFICE_CIDR_ENV) or None,
        revoke_sessions=os.environ.get(REVOKE_SESSIONS_ENV, "").lower() == "true",
        topic_arn=os.environ.get(TOPIC_ENV),
    )


def handle(
    event: Any,
    engine_factory: EngineFactory,
    threshold: float | None,
    own_account: str | None = None,
    own_region: str | None = None,
    office_cidr: str | None = None,
    revoke_sessions: bool = False,
    topic_arn: str | None = None,
) -> dict[str, Any]:
    """Contain the instance a finding names, when it qualifies; say what happened."""
    try:
        finding = parse_finding(event)
    except Unusable as why:
        return _ignored(str(why))
    if threshold is None:
        return _ignored("auto-containment is off (no severity threshold is set)", finding)
    if finding.severity < threshold:
        return _ignored(f"severity {finding.severity:g} is below the threshold {threshold:g}", finding)
    if finding.sample:
        return _ignored("GuardDuty sample finding", finding)
    if finding.archived:
        return _ignored("the finding is archived", finding)
    if own_account and finding.account_id != own_account:
        return _ignored(
            f"the finding is in account {finding.account_id}; this function contains instances of "
            f"{own_account} only",
            finding,
        )
    if own_region and finding.region != own_region:
        return _ignored(f"the finding is in {finding.region}; this function works in {own_region}", finding)

    case = case_for(finding.finding_id)
    outcome: dict[str, Any] = {"finding": finding.finding_id, "instance": finding.instance_id, "case": case}
    try:
        engine = engine_factory()
        try:
            before = engine.store.get(finding.instance_id)
        except AwsError:
            before = None  # no table yet: the engine creates it, and nothing is held
        report = engine.isolate(
            [finding.instance_id],
            case,
            office_cidr,
            options=Options(revoke_sessions=revoke_sessions),
        )
    except Ec2irError as error:
        outcome |= {"outcome": FAILED, "reason": str(error)}
        log_event("failed", outcome)
        return outcome
    log_event("isolate", report.as_dict())
    result = report.results[0]
    held_before = before is not None and before.status in ACTIVE_STATUSES
    if result.ok:
        outcome["outcome"] = ALREADY_HELD if held_before else CONTAINED
        outcome["reason"] = result.detail
    elif result.error_code == "HeldByOtherCase":
        outcome |= {"outcome": ALREADY_HELD, "reason": result.detail}
    else:
        outcome |= {"outcome": FAILED, "reason": f"{result.error_code}: {result.detail}"}
    log_event(outcome["outcome"], outcome)
    if outcome["outcome"] != ALREADY_HELD:
        verb = "contained" if outcome["outcome"] == CONTAINED else "could NOT fully contain"
        subject = f"ec2ir {verb} {finding.instance_id} (GuardDuty {finding.severity:g})"
        message = "\n".join(
            [
                f"GuardDuty finding {finding.finding_id}: {finding.finding_type}",
                finding.title,
                f"severity {finding.severity:g}, account {finding.account_id}, {finding.region}",
                "",
                *report_lines(report),
            ]
        )
        notify(engine.aws, topic_arn, subject, message)
    return outcome
