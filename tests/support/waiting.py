"""Pauses that do not wait: ec2ir's backoffs, re-reads and polls run at full speed in tests.

A test asserts that a pause happens (and how long it asks for), never that time passed: a real
sleep makes the suite slower and no more right.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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


class LimiterClock:
    """The clock of botocore's adaptive rate limiter (``botocore.retries.bucket.Clock``), in
    virtual time: where the limiter would wait for tokens, its clock moves on by that much and it
    goes on at once. Its rates and its pacing are computed as on real time, from the same
    readings; only the wait is skipped."""

    def __init__(self) -> None:
        self._skipped = 0.0
        self._lock = threading.Lock()

    def sleep(self, amount: float) -> None:
        with self._lock:
            self._skipped += amount
        no_wait(amount)

    def current_time(self) -> float:
        return time.time() + self._skipped


class _ConditionThatSkipsAhead(threading.Condition):
    """The token bucket's condition: a wait for tokens moves the bucket's clock on instead."""

    def __init__(self, lock: Any, clock: LimiterClock) -> None:
        super().__init__(lock)
        self._clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self._clock.sleep(timeout or 0.0)
        return True


def limiter_without_waiting() -> Callable[[], None]:
    """Give every adaptive rate limiter botocore makes from now on a ``LimiterClock``; returns the
    function that puts botocore back. Without it, a test that throttles a client in adaptive mode
    waits real seconds (16 s in one test) for the bucket to refill."""
    from botocore.retries import bucket

    bucket_module: Any = bucket  # botocore is untyped
    original_clock, original_init = bucket_module.Clock, bucket_module.TokenBucket.__init__

    def __init__(token_bucket: Any, max_rate: float, clock: Any, *args: Any, **kwargs: Any) -> None:
        original_init(token_bucket, max_rate, clock, *args, **kwargs)
        if isinstance(clock, LimiterClock):
            token_bucket._new_fill_rate_condition = _ConditionThatSkipsAhead(token_bucket._lock, clock)

    bucket_module.Clock, bucket_module.TokenBucket.__init__ = LimiterClock, __init__

    def undo() -> None:
        bucket_module.Clock, bucket_module.TokenBucket.__init__ = original_clock, original_init

    return undo
