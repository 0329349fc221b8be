"""What a command that talks to AWS works with: its arguments, the session, the engine, and the
instances it was pointed at (ids, ``-`` for standard input, ARNs, ``--filters``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ec2ir.aws import targets

if TYPE_CHECKING:
    from ec2ir.aws.session import Aws
    from ec2ir.engine.facade import Engine


@dataclass
class Invocation:
    args: argparse.Namespace
    aws: Aws
    engine: Engine
    chosen: targets.Targets  # empty for the commands that take no instances


def open_invocation(args: argparse.Namespace) -> Invocation:
    """The session and engine of ``args``; the instances are settled before anything else is done."""
    from ec2ir.aws.session import Aws, AwsSettings
    from ec2ir.engine.facade import Engine
    from ec2ir.store.state import StateStore

    aws = Aws(
        AwsSettings(
            profile=args.profile,
            region=args.region,
            endpoint_url=args.endpoint_url,
            retry_mode=args.retry_mode,
            max_pool_connections=max(10, args.concurrency * 2),
            role_arn=args.role_arn,
            external_id=args.external_id,
        )
    )
    engine = Engine(aws, StateStore(aws, args.table), concurrency=args.concurrency)
    return Invocation(args, aws, engine, _chosen(aws, args))


def _chosen(aws: Aws, args: argparse.Namespace) -> targets.Targets:
    if args.command not in targets.COMMANDS:
        return targets.Targets([])
    chosen = targets.resolve(aws, args.instance_ids, args.filters, args.max_instances, sys.stdin)
    args.instance_ids = chosen.instance_ids
    if chosen.filters and not getattr(args, "dry_run", False):
        print(f"ec2ir: {chosen.describe()}", file=sys.stderr)
    return chosen
