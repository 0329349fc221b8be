"""The option groups several commands share, and the argparse types of their values.

Each group is an argparse parent parser, built once per parser and passed as ``parents=`` to every
command that takes it, so that an option means the same everywhere.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable

# The same variables the stack's functions read, so that a responder's shell can point at the stack's
# table and bucket once.
TABLE_ENV = "EC2IR_TABLE"
EVIDENCE_BUCKET_ENV = "EC2IR_EVIDENCE_BUCKET"


def common_options() -> argparse.ArgumentParser:
    """The AWS session, the state table, the output format and the concurrency: every command
    that talks to AWS takes them."""
    parent = argparse.ArgumentParser(add_help=False)
    aws = parent.add_argument_group("AWS")
    aws.add_argument("--profile", help="named profile from the shared AWS config")
    aws.add_argument("--region", help="AWS Region (default: the profile's or AWS_REGION)")
    aws.add_argument(
        "--endpoint-url",
        help="AWS-compatible endpoint for every call (default: AWS_ENDPOINT_URL, else AWS)",
    )
    aws.add_argument(
        "--role-arn",
        help="act in another account by assuming this role (e.g. from the security account into a "
        "member account); its credentials renew themselves during long runs",
    )
    aws.add_argument("--external-id", help="the external id the role's trust policy requires")
    aws.add_argument(
        "--role-name",
        metavar="NAME",
        type=role_name,
        default="",
        help="for instances of other accounts (named by ARN, or held by the case): assume "
        "arn:<partition>:iam::<account>:role/NAME in each, with --external-id if given",
    )
    aws.add_argument(
        "--retry-mode",
        choices=["adaptive", "standard"],
        default="adaptive",
        help="botocore retry mode for throttled calls (default: adaptive)",
    )
    parent.add_argument(
        "--table",
        default=os.environ.get(TABLE_ENV) or "ec2ir-state",
        help=f"DynamoDB state table (default: ${TABLE_ENV}, else ec2ir-state)",
    )
    parent.add_argument(
        "--output",
        choices=["table", "json"],
        default="table",
        help="output format (default: table); json is one object whose schema field names its shape "
        "(docs/json.md)",
    )
    parent.add_argument(
        "--concurrency",
        type=positive_int,
        default=16,
        help="instances worked on at once (default: 16)",
    )
    return parent


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return whole_number


positive_int = at_least(1)
non_negative_int = at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def evidence_options() -> argparse.ArgumentParser:
    """Where evidence goes and what is taken, for isolate and collect."""
    parent = argparse.ArgumentParser(add_help=False)
    evidence = parent.add_argument_group("evidence")
    evidence.add_argument(
        "--evidence-bucket",
        metavar="BUCKET",
        default=os.environ.get(EVIDENCE_BUCKET_ENV, ""),
        help=f"where captured metadata (and memory) go (default: ${EVIDENCE_BUCKET_ENV}, else "
        "ec2ir-evidence-<account>-<region>, "
        "created versioned, KMS-encrypted, public access blocked and TLS-only if missing)",
    )
    evidence.add_argument(
        "--object-lock-days",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="when ec2ir creates the evidence bucket, enable Object Lock in compliance mode for N days: "
        "nobody, root included, can delete or overwrite evidence before then",
    )
    evidence.add_argument(
        "--wait",
        action="store_true",
        help="wait until every snapshot is completed, with a progress bar",
    )
    evidence.add_argument(
        "--memory",
        action="store_true",
        help="acquire RAM with AVML through SSM Run Command before anything else (the instance stays "
        "connected until then, at most --memory-timeout); unmanaged instances are noted and skipped",
    )
    evidence.add_argument(
        "--memory-timeout",
        type=positive_int,
        default=600,
        metavar="SECONDS",
        help="after this, isolation goes ahead with or without the memory (default: 600)",
    )
    return parent


TARGETS_HELP = (
    "an instance id or ARN (an ARN may name any account and Region: see --role-name); - reads them "
    "from standard input (whitespace separated)"
)


def target_options() -> argparse.ArgumentParser:
    """--filters and --max-instances, for the commands that take instances (ec2ir.aws.targets)."""
    parent = argparse.ArgumentParser(add_help=False)
    chosen = parent.add_argument_group("selecting instances")
    chosen.add_argument(
        "--filters",
        action="extend",
        nargs="+",
        default=[],
        metavar="Name=NAME,Values=V1,V2",
        help="(repeatable) select instances as the AWS CLI does (e.g. Name=tag:env,Values=prod "
        "Name=vpc-id,Values=vpc-1; an instance must match every filter), besides those named; "
        "terminated and shutting-down ones are left out",
    )
    chosen.add_argument(
        "--max-instances",
        type=positive_int,
        default=25,
        metavar="N",
        help="refuse, changing nothing, when --filters or stdin select over N instances (default: 25)",
    )
    chosen.add_argument(
        "--regions",
        type=region_list,
        default=(),
        metavar="R1,R2|all",
        help="look for bare instance ids, and apply --filters, in each of these Regions of the "
        "account (all: every Region enabled in it) rather than in --region alone; each Region "
        "runs side by side, with clients of its own",
    )
    return parent


REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
# IAM's role names (64 characters of [\w+=,.@-]), optionally under a path (IAM's RoleName and Path)
ROLE_NAME = re.compile(r"(/?[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII)


def role_name(text: str) -> str:
    """An argparse type: an IAM role's name, with its path if it has one ("" is none)."""
    if not text:
        return text
    if len(text) > 512 or not ROLE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text[:70]!r} is not an IAM role name (e.g. ec2ir-responder)")
    return text.strip("/")


def region_list(text: str) -> tuple[str, ...]:
    """An argparse type: Region names separated by commas, or ``all``."""
    regions = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if regions == ("all",):
        return regions
    for region in regions:
        if not REGION.fullmatch(region):
            raise argparse.ArgumentTypeError(
                f"{region[:40]!r} is not a Region name (e.g. eu-west-1), nor all"
            )
    if not regions:
        raise argparse.ArgumentTypeError("name at least one Region, or all")
    return regions


def case_arguments(command: argparse.ArgumentParser) -> None:
    """The case, as CASE_ID or as --case (ec2ir.aws.targets.settle takes either)."""
    command.add_argument("case", nargs="?", metavar="CASE_ID")
    command.add_argument("--case", dest="case_option", metavar="CASE_ID", help="the case, instead of CASE_ID")
