"""The ranked pool: the most urgent waiting task first, failures handed to the waiter."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ec2ir.core.pools import RankedPool


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


def test_a_later_rank_waits_while_a_lower_one_runs_even_with_a_worker_free() -> None:
    # Two workers: the credential cut holds one; the protection, submitted next, must not take
    # the free one, and runs only once the cut (and the cut that arrives meanwhile) has ended.
    ran: list[str] = []
    first_cut, second_cut = threading.Event(), threading.Event()

    def cut_when(gate: threading.Event, name: str) -> None:
        gate.wait()
        ran.append(name)

    with ThreadPoolExecutor(2) as workers:
        pool = RankedPool(workers)
        cut = pool.submit(0, functools.partial(cut_when, first_cut, "imds-a"))
        protect = pool.submit(1, functools.partial(ran.append, "protect-a"))
        later_cut = pool.submit(0, functools.partial(cut_when, second_cut, "imds-b"))
        first_cut.set()
        cut.result()
        assert not protect.done()  # imds-b still runs
        second_cut.set()
        later_cut.result()
        protect.result()
    assert ran == ["imds-a", "imds-b", "protect-a"]
