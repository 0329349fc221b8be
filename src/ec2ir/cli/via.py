"""``isolate`` and ``release`` with ``--via stepfunctions``: the run handed to the outbreak stack's
state machine (outbreak.yaml, ``ec2ir.cli.stepfunctions``), followed, and printed as a local run.

The instances are settled here as for a local run (ids, ARNs, ``-``, ``--filters``, ``--regions``);
each is then named by its ARN, by place. A flag the shards cannot carry out is refused before
anything starts, never dropped: the run would not be the one asked for.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ec2ir.core.errors import UsageError
from ec2ir.core.text import printable

if TYPE_CHECKING:
    from ec2ir.cli.invocation import Invocation
    from ec2ir.engine.results import RunReport
    from ec2ir.store.state import StateStore

# What only a local run does, by command: the flag, and whether it was given (its value differs
# from the flag's default). The shards take the options of ec2ir.handlers.outbreak.OPTION_TYPES.
LOCAL_ONLY: dict[str, dict[str, object]] = {
    "isolate": {
        "memory": False,
        "block_ip": [],
        "keep_metadata": False,
        "forensic_group_id": "",
        "forensic_group_owner": "",
        "evidence_bucket": "",
        "object_lock_days": 0,
        "wait": False,
        "allow_any_source": False,
        "untrack_deadline": 5.0,
    },
    "release": {"replace_group": [], "skip_missing_groups": False},
}


def via_stepfunctions(run: Invocation, shard_options: dict[str, object]) -> RunReport:
    """Start the stack's execution and follow it shard by shard on standard error; its result,
    for the caller to print as a local run's."""
    from ec2ir.cli.stepfunctions import start_and_follow

    args = run.args
    if not args.outbreak_stack:
        raise UsageError(
            "--via stepfunctions needs --outbreak-stack NAME", "the stack deployed from outbreak.yaml"
        )
    given = [
        "--" + flag.replace("_", "-")
        for flag, default in LOCAL_ONLY[args.command].items()
        if getattr(args, flag, default) != default
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)} cannot go through --via stepfunctions: the shards do not carry "
            "them out; nothing was started",
            "drop them, or run locally (--via local); EC2IR_EVIDENCE_BUCKET sets --evidence-bucket",
        )
    case = args.case if args.command == "release" else None  # release: each place from its hold
    arns_by_place = run.engine.places.arns_by_place(args.instance_ids, _shards_table(run), case)
    return start_and_follow(
        run.aws,
        args.outbreak_stack,
        args.command,
        args.case,
        arns_by_place,
        {name: value for name, value in shard_options.items() if value is not None},
        say=lambda line: print(printable(f"ec2ir: {line}"), file=sys.stderr),
    )


def _shards_table(run: Invocation) -> StateStore:
    """Where the stack's shards keep every place's holds: its own table (StateTableName), not the
    CLI's --table, so that release finds each instance's place where the shards recorded it."""
    from ec2ir.cli.stepfunctions import find_stack
    from ec2ir.store.state import StateStore

    stack = find_stack(run.aws, run.args.outbreak_stack)
    return StateStore(run.aws, stack.state_table) if stack.state_table else run.engine.store
