"""What the HTML report and its SVG timeline share: the colour of each outcome and hold status,
and the escaping of hostile text."""

from __future__ import annotations

import html

from ec2ir.core.models import HoldStatus
from ec2ir.core.text import printable
from ec2ir.report.model import DONE, FAILED, NOT_COLLECTED, NOT_STARTED, OTHER, SKIPPED

COLOURS = {
    DONE: "#2e7d32",
    FAILED: "#c62828",
    SKIPPED: "#8a8f98",
    NOT_COLLECTED: "#e08a00",
    NOT_STARTED: "#6a1b9a",
    OTHER: "#1f5fa8",
}
STATUS_COLOURS = {
    HoldStatus.ISOLATED.value: "#c62828",
    HoldStatus.ISOLATING.value: "#e08a00",
    HoldStatus.RELEASING.value: "#e08a00",
    HoldStatus.RELEASED.value: "#2e7d32",
    "not held": "#8a8f98",
}


def escape(text: object) -> str:
    """Text for HTML or SVG: control characters as visible escapes, then HTML-escaped."""
    return html.escape(printable(text), quote=True)
