"""A thread pool that runs the most urgent waiting task first."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class RankedPool:
    """Tasks on a thread pool's workers, the lowest rank first among those still waiting; equal
    ranks in the order they came.

    A plain pool runs tasks in the order they were submitted. ``isolate`` submits each instance's
    late steps as its cut completes, so with it, one instance's low-urgency call would go ahead
    of the next instance's credential cut, both spending tokens from the same EC2 bucket."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._waiting: list[tuple[int, int, Callable[[], Any], Future[Any]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def submit(self, rank: int, task: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            heapq.heappush(self._waiting, (rank, next(self._order), task, future))
        # One worker's turn per task: whichever task ranks first when a worker is free takes it.
        self._pool.submit(self._run_next)
        return future

    def _run_next(self) -> None:
        with self._lock:
            _, _, task, future = heapq.heappop(self._waiting)
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(task())
        except BaseException as error:  # handed to whoever waits on the future, as a pool does
            future.set_exception(error)
