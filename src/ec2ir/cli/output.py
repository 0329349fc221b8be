"""Standard output and error for a reader that may go away (``ec2ir permissions | head -1``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def guarded_output() -> Iterator[None]:
    """stdout and stderr behind a ClosedPipeGuard inside the block, the real streams back after it."""
    guard = ClosedPipeGuard(sys.stdout)
    sys.stdout = guard
    # standard error too: `2>&1 | tee log` dies with the same Ctrl-C the run must still finish
    error_guard = ClosedPipeGuard(sys.stderr)
    sys.stderr = error_guard
    try:
        yield
    finally:
        sys.stdout = guard.stream
        sys.stderr = error_guard.stream


class ClosedPipeGuard:
    """stdout, for a reader that may go away (`ec2ir permissions | head -1`): once the pipe is
    closed, what is left to print is dropped quietly, and the command goes on to finish its work,
    say on stderr what failed and exit with its own code. The process's real stdout then points
    at /dev/null, so that Python's last flush at exit cannot fail again."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return int(self.stream.write(text))
            except BrokenPipeError:
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._closed()

    def _closed(self) -> None:
        self.closed_pipe = True
        if self.stream is not None and self.stream in (sys.__stdout__, sys.__stderr__):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)
