"""Ctrl-C while a command changes things: the first stops new work, the second exits at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ec2ir.core.errors import EXIT_INTERRUPTED
from ec2ir.core.interrupt import Interrupt

FIRST_INTERRUPT = "ec2ir: interrupt: finishing the swaps in flight; Ctrl-C again to abort at once"
# The second Ctrl-C's line; os._exit, as the run's workers are not daemons and would be waited for.
ABORTED = (
    "ec2ir: aborted at once: an ENI whose swap was under way may be left in the allow-all group "
    "(open both ways) or half restored; run `ec2ir {command}` again now with the same arguments: it "
    "finishes from the originals recorded before the first change (`ec2ir status --check` shows "
    "what is left)"
)
_abort: Callable[[int], Any] = os._exit  # the second Ctrl-C's exit (tests replace it)


class InterruptHandler:
    """SIGINT while a command changes things. The first sets the run's Interrupt: no new
    instance or step starts, the swaps and steps in flight finish, and the run returns its
    partial results (exit 130). The second exits at once, without waiting for anything: the
    state table holds every original from before the first change, and the next run of the same
    command finishes (an ENI left in the allow-all group included)."""

    def __init__(self, interrupt: Interrupt, command: str) -> None:
        self.interrupt = interrupt
        self.command = command
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        # A plain flag first: a second SIGINT landing inside Event.set (which holds a lock the
        # nested handler would wait on for ever) sees it and aborts instead.
        if not self.seen:
            self.seen = True
            self.interrupt.set()
            _say(FIRST_INTERRUPT)
            return
        _say(ABORTED.format(command=self.command))
        _abort(EXIT_INTERRUPTED)


def _say(line: str) -> None:
    """One line on standard error from a signal handler, which may have interrupted a write to
    it: a buffered write reentered that way raises, so it goes to the descriptor instead."""
    try:
        print(line, file=sys.stderr, flush=True)
    except Exception:  # reentered (RuntimeError), or a reader gone with the same Ctrl-C (EPIPE)
        with contextlib.suppress(OSError):
            os.write(2, (line + "\n").encode())


@contextlib.contextmanager
def interruptible(interrupt: Interrupt, command: str) -> Iterator[InterruptHandler]:
    """SIGINT handled by an InterruptHandler inside the block, the previous handler back after
    it; from a thread other than the main one (where no handler can be set) the block runs as is."""
    handler = InterruptHandler(interrupt, command)
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:  # None: a handler not set from Python; Python's own is the nearest to put back
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
