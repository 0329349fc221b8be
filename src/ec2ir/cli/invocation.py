"""What a command that talks to AWS works with: its arguments, the session, the engine, and the
instances it was pointed at (ids, ``-`` for standard input, ARNs, ``--filters``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ec2ir.aws import targets
from ec2ir.core.text import printable

if TYPE_CHECKING:
    from ec2ir.aws.session import Aws
    from ec2ir.engine.outbreak import Outbreak


@dataclass
class Invocation:
    args: argparse.Namespace
    aws: Aws
    engine: Outbreak
    chosen: targets.Targets  # empty for the commands that take no instances


def open_invocation(args: argparse.Namespace) -> Invocation:
    """The session and engine of ``args``; the instances are settled before anything else is done."""
    from ec2ir.aws.session import Aws, AwsSettings
    from ec2ir.engine.outbreak import Outbreak
    from ec2ir.engine.places import Places
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
    places = Places(aws, role_name=args.role_name, external_id=args.external_id)
    engine = Outbreak(aws, StateStore(aws, args.table), concurrency=args.concurrency, places=places)
    return Invocation(args, aws, engine, _chosen(aws, engine, args))


def _chosen(aws: Aws, engine: Outbreak, args: argparse.Namespace) -> targets.Targets:
    if args.command not in targets.COMMANDS:
        return targets.Targets([])
    regions = _regions(aws, args.regions)
    chosen = targets.resolve(
        aws,
        args.instance_ids,
        args.filters,
        args.max_instances,
        sys.stdin,
        role_name=args.role_name,
        selector=(lambda filters: engine.places.select(filters, regions)) if regions else None,
    )
    if regions:  # each bare id where it is, as an ARN when that is not the run's own Region
        chosen.instance_ids = engine.places.place_ids(chosen.instance_ids, regions)
    for place, error in engine.places.unreachable.items():  # the run goes on; its exit code says so (runs)
        print(printable(f"ec2ir: WARNING: {place.region} was not searched: {error}"), file=sys.stderr)
    args.instance_ids = chosen.instance_ids
    if chosen.filters and not getattr(args, "dry_run", False):
        print(f"ec2ir: {chosen.describe()}", file=sys.stderr)
    return chosen


def _regions(aws: Aws, asked: tuple[str, ...]) -> list[str]:
    """--regions: the Regions named, or every Region enabled in the account for ``all``."""
    if asked == ("all",):
        return targets.enabled_regions(aws)
    return list(asked)
