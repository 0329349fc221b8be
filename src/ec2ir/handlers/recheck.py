"""The stack's scheduled re-check: ``ec2ir status --check --repair`` on the stack's table.

An EventBridge schedule invokes it every 15 minutes. Whatever is in breach (an ENI moved back to
its production group, a rule added to the isolation group, a profile associated again, an ENI a
dead run left in the allow-all group) is repaired through the same engine as the CLI, and the
stack's topic is told what was found and what is left.
"""

from __future__ import annotations

import os
from typing import Any

from ec2ir.containment.check import lines
from ec2ir.core.errors import Ec2irError
from ec2ir.handlers import TOPIC_ENV, EngineFactory, engine_from_environment, log_event, notify, setup_logging


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``ec2ir.handlers.recheck.handler``); the event is the schedule's."""
    setup_logging()
    return handle(engine_from_environment, os.environ.get(TOPIC_ENV))


def handle(engine_factory: EngineFactory, topic_arn: str | None) -> dict[str, Any]:
    """Check every held instance, repair what is in breach, and say so."""
    engine = engine_factory()
    try:
        report = engine.check(repair=True)
    except Ec2irError as error:
        outcome: dict[str, Any] = {"ok": False, "reason": str(error)}
        log_event("recheck-failed", outcome)
        notify(
            engine.aws, topic_arn, "ec2ir re-check FAILED", f"The scheduled re-check could not run: {error}"
        )
        return outcome
    outcome = report.as_dict()
    log_event("recheck", outcome)
    if report.breaches:
        left = len(report.remaining or [])
        subject = (
            f"ec2ir re-check: {len(report.breaches)} breach(es) found and repaired"
            if report.ok
            else f"ec2ir re-check: {left} breach(es) could NOT be repaired"
        )
        notify(engine.aws, topic_arn, subject, "\n".join(lines(report)))
    return outcome
