"""Lambda adapters: the CloudFormation custom resource and the GuardDuty auto-containment handler.

Both run the same engine as the CLI (``ec2ir.engine.facade.Engine`` on ``ec2ir.aws.session.Aws`` and
``ec2ir.store.state.StateStore``); they only parse their event, call the engine and report. What they
share lives here: the engine built from the function's environment, the Lambda context they rely
on, and best-effort notifications to the stack's SNS topic.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ec2ir.aws.session import Aws, AwsSettings, translated
from ec2ir.core.errors import Ec2irError, UsageError
from ec2ir.engine.facade import Engine
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.engine.results import RunReport
from ec2ir.engine.runtime import DEFAULT_CONCURRENCY
from ec2ir.store.state import StateStore

TABLE_ENV = "EC2IR_TABLE"
TOPIC_ENV = "EC2IR_TOPIC_ARN"
CONCURRENCY_ENV = "EC2IR_CONCURRENCY"
EVIDENCE_BUCKET_ENV = "EC2IR_EVIDENCE_BUCKET"
MEMBER_ROLE_ENV = "EC2IR_MEMBER_ROLE_NAME"  # the role each member account trusts, by name
EXTERNAL_ID_ENV = "EC2IR_EXTERNAL_ID"
# SNS caps a subject at 100 characters and a message at 256 KiB; stay well inside both.
SUBJECT_LIMIT = 100
MESSAGE_LIMIT = 64 * 1024

log = logging.getLogger("ec2ir.handlers")

EngineFactory = Callable[[], Engine]


class LambdaContext(Protocol):
    """The part of the Lambda runtime's context object the handlers use."""

    def get_remaining_time_in_millis(self) -> int: ...


def setup_logging() -> None:
    """INFO lines to the function's log, once per execution environment."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    log.setLevel(logging.INFO)


def engine_from_environment(environ: Mapping[str, str] = os.environ) -> Outbreak:
    """The engine on the function's own credentials, Region and state table (``EC2IR_TABLE``),
    reaching member accounts through the role ``EC2IR_MEMBER_ROLE_NAME`` names, if any (the
    scheduled re-check then checks a member's holds there, and GuardDuty contains its findings)."""
    table = environ.get(TABLE_ENV, "").strip()
    if not table:
        raise UsageError(f"{TABLE_ENV} is not set", "the stack sets it to its state table")
    try:
        concurrency = int(environ.get(CONCURRENCY_ENV) or DEFAULT_CONCURRENCY)
    except ValueError as exc:
        raise UsageError(f"{CONCURRENCY_ENV} must be a whole number") from exc
    aws = Aws(AwsSettings(region=environ.get("AWS_REGION") or None))
    bucket = environ.get(EVIDENCE_BUCKET_ENV, "").strip()
    places = Places(
        aws,
        role_name=environ.get(MEMBER_ROLE_ENV, "").strip(),
        external_id=environ.get(EXTERNAL_ID_ENV, "").strip() or None,
    )
    return Outbreak(
        aws, StateStore(aws, table), concurrency=concurrency, evidence_bucket=bucket, places=places
    )


def report_lines(report: RunReport) -> list[str]:
    """One line per instance and note, for logs and notifications."""
    lines = [f"{report.action} under case {report.case_id} by {report.actor}"]
    for result in report.results:
        state = "ok" if result.ok else f"FAILED ({result.error_code})"
        lines.append(f"  {result.instance_id}: {state}: {result.detail}")
    lines.extend(f"  note: {note}" for note in report.notes)
    return lines


def notify(aws: Aws, topic_arn: str | None, subject: str, message: str) -> bool:
    """Publish to the stack's topic; a notification must never fail the containment itself."""
    if not topic_arn:
        return False
    try:
        with translated("sns", "Publish"):
            aws.client("sns").publish(
                TopicArn=topic_arn,
                Subject=subject[:SUBJECT_LIMIT],
                Message=message[:MESSAGE_LIMIT],
            )
    except Ec2irError as error:
        log.warning("could not notify %s: %s", topic_arn, error)
        return False
    return True


def log_event(kind: str, payload: Mapping[str, Any]) -> None:
    """One structured line, so the function's log can be searched by field."""
    log.info("%s %s", kind, json.dumps(payload, default=str, sort_keys=True))
