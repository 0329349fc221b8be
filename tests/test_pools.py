"""The ranked pool: the most urgent waiting task first, failures handed to the waiter."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ec2ir.pools import RankedPool


def test_the_lowest_rank_waiting_runs_first_and_equal_ranks_keep_their_order() -> None:
    ran: list[str] = []
    gate = threading.Event()
    with ThreadPoolExecutor(1) as workers:
        pool = RankedPool(workers)
        busy = pool.submit(0, gate.wait)  # holds the only worker while the rest queue
        futures = [
            pool.submit(rank, functools.partial(ran.append, name))
            for rank, name in [(1, "protect-a"), (0, "imds-a"), (1, "protect-b"), (0, "imds-b")]
        ]
        gate.set()
        busy.result()
        for future in futures:
            future.result()
    assert ran == ["imds-a", "imds-b", "protect-a", "protect-b"]


def test_a_task_that_raises_hands_the_error_to_its_future() -> None:
    def broken() -> None:
        raise ValueError("boom")

    with ThreadPoolExecutor(2) as workers:
        pool = RankedPool(workers)
        failed = pool.submit(0, broken)
        fine = pool.submit(0, lambda: 42)
        with pytest.raises(ValueError, match="boom"):
            failed.result()
        assert fine.result() == 42
