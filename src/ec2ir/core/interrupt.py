"""A run's cancellation: once set, no new instance and no new step starts.

The CLI sets it on the first Ctrl-C (``ec2ir.cli.app``). What is in flight finishes: a step already
started runs to its end, so an ENI whose swap into the allow-all group has begun always goes on
into the isolation group (``ec2ir.containment.lanes.SwapLanes.untrack``), and a release that began restoring
an instance restores all of it. What never started is reported ``Interrupted``
(``ec2ir.core.errors.Interrupted``), and the next run of the same command finishes it from the
originals the state table recorded before the first change.
"""

from __future__ import annotations

import threading


class Interrupt:
    """A thread-safe, one-way flag, with the run-wide pieces of work it kept from starting."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.skipped: list[str] = []  # run-wide work not started, e.g. the --block-ip entries

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def stops(self, what: str) -> bool:
        """Whether ``what``, a piece of the run's own work (not one instance's), must not start;
        if so it is remembered in ``skipped``, to be said with the results."""
        if not self._event.is_set():
            return False
        with self._lock:
            self.skipped.append(what)
        return True
