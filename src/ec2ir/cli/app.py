"""The ``ec2ir`` command: a thin adapter that parses arguments, calls the engine and prints.

Exit codes: 0 when everything asked for is done; 1 when some instances failed (each is named with
its error code and message); 2 for bad input or usage, and for any refusal before the first
change, so that 2 always means nothing was changed; 130 when Ctrl-C interrupted the run
(``ec2ir.cli.interrupts``). An error that stops a command exits with its class's own
``exit_code`` (``ec2ir.core.errors``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from ec2ir.aws import targets
from ec2ir.cli import commands
from ec2ir.cli.output import guarded_output
from ec2ir.cli.parser import build_parser
from ec2ir.core.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, Ec2irError, UsageError
from ec2ir.core.text import printable


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    try:
        targets.settle(args, extras)  # ids after an option, CASE_ID or --case, no target at all
    except UsageError as error:
        parser.error(printable(str(error)))
    with guarded_output(), _logging(args):
        return _dispatch(args)


@contextlib.contextmanager
def _logging(args: argparse.Namespace) -> Iterator[None]:
    """``--debug`` (botocore's wire log) or ``-v`` (each step with its time) on stderr, inside the block."""
    if not (args.debug or args.verbose):
        yield
        return
    import logging

    from ec2ir.aws import debuglog

    debug = debuglog.enable() if args.debug else debuglog.enable(level=logging.INFO, loggers=("ec2ir",))
    try:
        yield
    finally:
        debuglog.disable(debug)


def _dispatch(args: argparse.Namespace) -> int:
    """The command's exit code; an error that stops it is one line on stderr, never a traceback."""
    try:
        return EMULATOR_COMMANDS.get(args.command, commands.dispatch)(args)
    except Ec2irError as error:
        print(f"ec2ir: error: {printable(str(error))}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # a bug: still one line, and the state table still holds the truth
        if os.environ.get("EC2IR_DEBUG"):
            raise
        print(
            f"ec2ir: internal error: {error!r} (every change made so far is recorded; "
            "run again, or set EC2IR_DEBUG=1 for a traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        print(
            "ec2ir: interrupted; every change made so far is recorded in the state table. "
            "Run the same command again to finish it.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _demo(args: argparse.Namespace) -> int:
    """``ec2ir demo``: the demo drives this very ``main``, passed in so that it never imports the CLI."""
    from ec2ir.emulator.demo import run_demo, seed_only

    return seed_only(args.endpoint_url) if args.seed_only else run_demo(main)


def _emulator(args: argparse.Namespace) -> int:
    from ec2ir.emulator.demo import serve_emulator

    return serve_emulator(args.port)


# The commands that start the embedded emulator: the CLI and the demo are both adapters, so only
# this module, never the command handlers below it, imports the demo.
EMULATOR_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"demo": _demo, "emulator": _emulator}


if __name__ == "__main__":
    sys.exit(main())
