"""A thread pool that runs the most urgent waiting task first."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_Entry = tuple[int, int, Callable[[], Any], "Future[Any]"]


class RankedPool:
    """Tasks on a thread pool's workers, the lowest rank first among those still waiting; equal
    ranks in the order they came. A task does not start while a task of a lower rank is waiting
    or running: it is set aside, and goes back in line once the last of those has ended.

    A plain pool runs tasks in the order they were submitted. ``isolate`` submits each instance's
    late steps as its cut completes, so with it, one instance's low-urgency call would go ahead
    of the next instance's credential cut, both spending tokens from the same EC2 bucket. Ranking
    alone is not enough: the cuts' tasks arrive a few at a time, and a worker that frees up
    between two arrivals would start a protection whose calls then take the bucket's tokens
    ahead of the credential cuts still to come, so a later rank waits while a lower one runs."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._waiting: list[_Entry] = []
        self._set_aside: list[_Entry] = []
        self._running: Counter[int] = Counter()
        self._order = itertools.count()
        self._lock = threading.Lock()

    def submit(self, rank: int, task: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            heapq.heappush(self._waiting, (rank, next(self._order), task, future))
        # One worker's turn per task: whichever task ranks first when a worker is free takes it.
        self._pool.submit(self._run_next)
        return future

    def _lower_busy(self, rank: int) -> bool:
        """Whether a task of a lower rank is waiting or running (under the lock)."""
        waiting = bool(self._waiting) and self._waiting[0][0] < rank
        return waiting or any(count and other < rank for other, count in self._running.items())

    def _run_next(self) -> None:
        with self._lock:
            entry = heapq.heappop(self._waiting)
            rank, _, task, future = entry
            if self._lower_busy(rank):
                self._set_aside.append(entry)  # its turn comes back when the lower ranks end
                return
            self._running[rank] += 1
        try:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(task())
            except BaseException as error:  # handed to whoever waits on the future, as a pool does
                future.set_exception(error)
        finally:
            self._ended(rank)

    def _ended(self, rank: int) -> None:
        with self._lock:
            self._running[rank] -= 1
            ready = [entry for entry in self._set_aside if not self._lower_busy(entry[0])]
            if not ready:
                return
            self._set_aside = [entry for entry in self._set_aside if entry not in ready]
            for entry in ready:
                heapq.heappush(self._waiting, entry)
        for _ in ready:
            self._pool.submit(self._run_next)
