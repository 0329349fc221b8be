"""Pauses that do not wait: ec2ir's backoffs, re-reads and polls run at full speed in tests.

A test asserts that a pause happens (and how long it asks for), never that time passed: a real
sleep makes the suite slower and no more right.
"""

from __future__ import annotations

import time
from typing import Any


def no_wait(seconds: float) -> None:
    """A sleep that returns at once. It still yields to the other threads, as a real sleep would,
    so that a test of racing runs interleaves them as production does."""
    del seconds
    time.sleep(0)


class RecordedPauses:
    """A sleep that records each pause asked for and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        no_wait(seconds)


class TimeWithoutWaiting:
    """A stand-in for the ``time`` module whose ``sleep`` does not wait; everything else is the
    real module's."""

    sleep = staticmethod(no_wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
