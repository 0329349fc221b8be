"""Which instances a command acts on: ids, instance ARNs, ``-`` (standard input) and ``--filters``.

The parsing functions need no AWS and change nothing; ``resolve`` checks ARNs against the caller's
partition, Region and account and turns ``--filters`` into instance ids with DescribeInstances,
before the engine is called. Every refusal is a ``UsageError`` (exit 2): nothing has changed yet.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from ec2ir.core import validate
from ec2ir.core.errors import UsageError
from ec2ir.core.text import printable

# The commands that take instances (and so ``-``, ARNs, --filters and --max-instances).
COMMANDS = ("isolate", "release", "collect", "rejoin")
STDIN = "-"
MAX_STDIN_CHARS = 4 * 1024 * 1024  # some 200,000 ids: standard input is read whole, never unbounded
# Instances that are going or gone are never selected by a filter (the engine's GONE_STATES).
EXCLUDED_STATES = frozenset({"terminated", "shutting-down"})
ARN = re.compile(
    r"^arn:(?P<partition>aws(?:-[a-z]+)*):ec2:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+):"
    r"(?P<account>[0-9]{12}):instance/(?P<id>.*)$"
)
FILTER_KEYS = ("Name", "Values")
MAX_FILTER_NAME = 260  # tag:<key>, a key being at most 128 characters
ITEM_HINT = "a filter item is Name=NAME,Values=V1,V2 (quote a value holding a comma, space or '=')"


class _Account(Protocol):
    def partition(self) -> str: ...
    def region(self) -> str: ...
    def account(self) -> str: ...
    def ec2(self) -> Any: ...


@dataclass(frozen=True)
class InstanceArn:
    arn: str
    partition: str
    region: str
    account: str
    instance_id: str


@dataclass
class Targets:
    """What the engine is given: the named instances in their order (repeats kept, the engine
    collapses them and says so), then what the filters selected that was not named."""

    instance_ids: list[str]
    filters: list[dict[str, Any]] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"filters": self.filters, "instances": self.selected}

    def describe(self) -> str:
        shown = " ".join(format_filter(f) for f in self.filters)
        return printable(
            f"--filters {shown} selected {len(self.selected)} instance(s): {' '.join(self.selected)}"
        )


# -- pure parsing ---------------------------------------------------------------------------------


def read_ids(stdin: TextIO | None) -> list[str]:
    """The whitespace-separated words of standard input, for ``-``."""
    hint = "pipe them in: aws ec2 describe-instances --query ... --output text | ec2ir isolate - --case C"
    if stdin is None or stdin.closed:
        raise UsageError("'-' reads instance ids from standard input, but it is closed", hint)
    try:
        if stdin.isatty():
            raise UsageError("'-' reads instance ids from standard input, but it is a terminal", hint)
        text = stdin.read(MAX_STDIN_CHARS + 1)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read instance ids from standard input: {printable(exc)}", hint) from exc
    if len(text) > MAX_STDIN_CHARS:
        raise UsageError(
            f"standard input holds more than {MAX_STDIN_CHARS} characters", "pass the ids in smaller runs"
        )
    words = text.split()
    if not words:
        raise UsageError("'-' was given but standard input holds no instance ids", hint)
    return words


def expand(named: Sequence[str], stdin: TextIO | None) -> list[str]:
    """``named`` with ``-`` replaced by the words of standard input (``-`` at most once)."""
    if named.count(STDIN) > 1:
        raise UsageError("'-' (standard input) was given more than once", "give it once")
    words: list[str] = []
    for item in named:
        words.extend(read_ids(stdin) if item == STDIN else [item])
    return words


def parse_arn(text: str) -> InstanceArn:
    matched = ARN.fullmatch(text)
    if not matched or not validate.INSTANCE_ID.fullmatch(matched["id"]):
        raise UsageError(
            f"malformed instance ARN {printable(repr(text))}",
            "an instance ARN looks like arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0",
        )
    return InstanceArn(text, matched["partition"], matched["region"], matched["account"], matched["id"])


def split_targets(words: Sequence[str]) -> tuple[list[str], list[InstanceArn]]:
    """Each word's instance id (an ARN's own), in order, and the ARNs; malformed ones refused."""
    arns: list[InstanceArn] = []
    ids: list[str] = []
    for word in words:
        if word.startswith("arn:"):
            arns.append(parse_arn(word))
            ids.append(arns[-1].instance_id)
        else:
            ids.append(word)
    if ids:
        validate.instance_ids(ids)  # refuses a malformed one, naming it
    return ids, arns


def check_arns(arns: Sequence[InstanceArn], partition: str, region: str, account: str) -> None:
    """An ARN must name an instance in the run's partition, Region and account."""
    for arn in arns:
        shown = printable(arn.arn)
        check_partition(arn, partition)
        if arn.region != region:
            raise UsageError(
                f"{shown} is in Region {arn.region}, but this run acts in {printable(region)}",
                f"run it with --region {arn.region}",
            )
        if arn.account != account:
            raise UsageError(
                f"{shown} is in account {arn.account}, but the credentials act in {printable(account)}",
                "act in that account (--role-arn, or its profile)",
            )


def check_reachable(arns: Sequence[InstanceArn], partition: str, account: str, role_name: str) -> None:
    """An ARN may name any Region; another account only with a role to act in it (--role-name),
    and never another partition, which no credentials span."""
    for arn in arns:
        check_partition(arn, partition)
        if arn.account != account and not role_name:
            shown = printable(arn.arn)
            raise UsageError(
                f"{shown} is in account {arn.account}, but the credentials act in {printable(account)}",
                "pass --role-name NAME to act in each other account through its role NAME "
                "(or act in that account: --role-arn, or its profile)",
            )


def check_partition(arn: InstanceArn, partition: str) -> None:
    """No credentials span partitions: an ARN of another is refused."""
    if arn.partition != partition:
        raise UsageError(
            f"{printable(arn.arn)} is in partition {arn.partition}, but the credentials act in "
            f"{printable(partition)}",
            "use credentials of that partition",
        )


def _reference(word: str, region: str, account: str) -> str:
    """How the engine is given a named instance: its id when it is in the run's own place."""
    if not word.startswith("arn:"):
        return word
    arn = parse_arn(word)
    return arn.instance_id if (arn.region, arn.account) == (region, account) else arn.arn


def format_filter(item: dict[str, Any]) -> str:
    return f"Name={item['Name']},Values={','.join(item['Values'])}"


def parse_filters(arguments: Sequence[str]) -> list[dict[str, Any]]:
    """The AWS CLI's ``--filters``: shorthand items ``Name=NAME,Values=V1,V2`` separated by
    whitespace (in one argument or several), or a JSON list of ``{"Name": ..., "Values": [...]}``.
    Every item is one EC2 filter; EC2 selects instances that match all of them."""
    filters: list[dict[str, Any]] = []
    for argument in arguments:
        text = argument.strip()
        if text.startswith("["):
            filters.extend(_json_filters(text))
        else:
            filters.extend(_shorthand_item(item, argument) for item in _scan(argument))
    if arguments and not filters:
        raise UsageError("--filters was given no filter", ITEM_HINT)
    names = [item["Name"] for item in filters]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f"filter {printable(repr(repeated[0]))} is given more than once",
            "give all its values in one item: Name=NAME,Values=V1,V2",
        )
    return filters


def _scan(text: str) -> list[list[tuple[str, bool]]]:
    """The items of a shorthand argument: each a list of comma-separated segments, each segment
    its text (quotes removed, backslash escapes applied) and whether it may start a key (its
    beginning was not quoted or escaped)."""
    return _ShorthandScanner(text).scan()


class _ShorthandScanner:
    """One pass over a shorthand argument, character by character; `_scan` is its only user."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[list[tuple[str, bool]]] = []
        self.segments: list[tuple[str, bool]] = []
        self.current: list[str] = []
        self.literal_at: int | None = None  # where the segment's first quoted or escaped character is
        self.quote = ""
        self.in_item = False
        self.index = 0

    def scan(self) -> list[list[tuple[str, bool]]]:
        while self.index < len(self.text):
            char = self.text[self.index]
            if self.quote:
                self._quoted(char)
            else:
                self._unquoted(char)
            self.index += 1
        if self.quote:
            raise UsageError(
                f"filter {printable(repr(self.text))} has an unterminated {self.quote} quote", ITEM_HINT
            )
        if self.in_item:
            self._end_item()
        return self.items

    def _quoted(self, char: str) -> None:
        text, index = self.text, self.index
        if char == self.quote:
            self.quote = ""
        elif char == "\\" and index + 1 < len(text) and text[index + 1] in (self.quote, "\\"):
            self.index += 1
            self.current.append(text[self.index])
        else:
            self.current.append(char)

    def _unquoted(self, char: str) -> None:
        if char in "\"'":
            self.quote, self.in_item = char, True
            self._mark_literal()
        elif char == "\\":
            self._escape()
        elif char == ",":
            self._end_segment()
            self.in_item = True
        elif char.isspace():
            if self.in_item:
                self._end_item()
        else:
            self.current.append(char)
            self.in_item = True

    def _escape(self) -> None:
        if self.index + 1 == len(self.text):
            raise UsageError(f"filter {printable(repr(self.text))} ends in a lone backslash", ITEM_HINT)
        self._mark_literal()
        self.index += 1
        self.current.append(self.text[self.index])
        self.in_item = True

    def _mark_literal(self) -> None:
        if self.literal_at is None:
            self.literal_at = len(self.current)

    def _end_segment(self) -> None:
        keyable = self.literal_at is None or "=" in "".join(self.current[: self.literal_at])
        self.segments.append(("".join(self.current), keyable))
        self.current, self.literal_at = [], None

    def _end_item(self) -> None:
        self._end_segment()
        self.items.append(self.segments)
        self.segments, self.in_item = [], False


def _shorthand_item(segments: list[tuple[str, bool]], argument: str) -> dict[str, Any]:
    shown = printable(repr(argument))
    found: dict[str, list[str]] = {}
    key = ""
    for text, keyable in segments:
        head, equals, rest = text.partition("=")
        if keyable and equals and re.fullmatch(r"[A-Za-z]+", head):
            if head not in FILTER_KEYS:
                raise UsageError(f"unknown key {printable(repr(head))} in filter {shown}", ITEM_HINT)
            if head in found:
                raise UsageError(f"{head} is given twice in filter {shown}", ITEM_HINT)
            key = head
            found[key] = [rest]
        elif key == "Values":
            found[key].append(text)
        else:
            raise UsageError(f"malformed filter {shown}", ITEM_HINT)
    missing = [key for key in FILTER_KEYS if key not in found]
    if missing:
        raise UsageError(f"filter {shown} has no {missing[0]}", ITEM_HINT)
    return _checked(found["Name"][0], found["Values"], shown)


def _json_filters(text: str) -> list[dict[str, Any]]:
    shown = printable(repr(text[:200]))
    try:
        loaded = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: a list nested thousands deep
        raise UsageError(f"--filters {shown} is not valid JSON: {printable(exc)}", ITEM_HINT) from exc
    if not isinstance(loaded, list):
        raise UsageError(f"--filters {shown} is not a JSON list", ITEM_HINT)
    filters = []
    for item in loaded:
        if (
            not isinstance(item, dict)
            or set(item) != set(FILTER_KEYS)
            or not isinstance(item["Name"], str)
            or not isinstance(item["Values"], list)
            or not all(isinstance(value, str) for value in item["Values"])
        ):
            raise UsageError(
                f'--filters {shown}: each item must be {{"Name": NAME, "Values": [V1, ...]}}', ITEM_HINT
            )
        filters.append(_checked(item["Name"], item["Values"], shown))
    return filters


def _checked(name: str, values: list[str], shown: str) -> dict[str, Any]:
    if not name or len(name) > MAX_FILTER_NAME or not name.isprintable():
        raise UsageError(f"filter {shown} has an invalid Name {printable(repr(name))}", ITEM_HINT)
    if not values or any(not value or not value.isprintable() for value in values):
        raise UsageError(f"filter {shown} has an empty or unprintable value", ITEM_HINT)
    return {"Name": name, "Values": list(dict.fromkeys(values))}


# -- the command line's arguments -----------------------------------------------------------------


def looks_like_target(word: str) -> bool:
    return word == STDIN or word.startswith("arn:") or bool(validate.INSTANCE_ID.fullmatch(word))


def settle(args: argparse.Namespace, extras: Sequence[str]) -> None:
    """Finish what argparse cannot: instance ids after an option (``collect C --wait i-1``), the
    case given positionally or with ``--case``, and a targeted command with no target at all."""
    if extras:
        if not hasattr(args, "instance_ids") or any(w.startswith("-") and w != STDIN for w in extras):
            raise UsageError(f"unrecognized arguments: {' '.join(extras)}")
        args.instance_ids = [*args.instance_ids, *extras]
    if hasattr(args, "case_option"):
        positional, option = args.case, args.case_option
        if positional is not None and looks_like_target(positional):
            if args.command != "collect" or option is None:
                raise UsageError(
                    f"{printable(positional)} names instances, not a case",
                    "name the case first, or with --case",
                )
            args.instance_ids, positional = [positional, *args.instance_ids], None
        if positional is not None and option is not None and positional != option:
            raise UsageError(
                f"two case ids: {printable(positional)} and --case {printable(option)}", "give the case once"
            )
        if positional is None and option is None:
            raise UsageError("no case id given", "give it as CASE_ID or with --case")
        args.case = positional if positional is not None else option
    if args.command in COMMANDS and not args.instance_ids and not args.filters:
        raise UsageError(
            "no instances given",
            "name instance ids or ARNs, '-' to read them from standard input, or select them with --filters",
        )


# -- resolving against AWS ------------------------------------------------------------------------


def select(aws: _Account, filters: list[dict[str, Any]]) -> list[str]:
    """The instances that match every filter, except those terminated or shutting down."""
    from ec2ir.aws.session import translated

    selected: set[str] = set()
    paginator = aws.ec2().get_paginator("describe_instances")
    with translated("ec2", "DescribeInstances"):
        for page in paginator.paginate(Filters=filters, PaginationConfig={"PageSize": 1000}):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    if instance.get("State", {}).get("Name") not in EXCLUDED_STATES:
                        selected.add(str(instance["InstanceId"]))
    return sorted(selected)


def enabled_regions(aws: _Account) -> list[str]:
    """``--regions all``: the Regions enabled in the account (DescribeRegions leaves out those
    not opted in)."""
    from ec2ir.aws.session import translated

    with translated("ec2", "DescribeRegions"):
        answer = aws.ec2().describe_regions(AllRegions=False)
    return sorted(str(region["RegionName"]) for region in answer.get("Regions", []))


def resolve(
    aws: _Account,
    named: Sequence[str],
    filter_arguments: Sequence[str],
    max_instances: int,
    stdin: TextIO | None,
    role_name: str = "",
    selector: Callable[[list[dict[str, Any]]], list[str]] | None = None,
) -> Targets:
    """Every check that needs no AWS first, then the ARNs' account, then the filters' selection.
    An instance of the run's own account and Region is given to the engine by its id, one
    elsewhere by its ARN (ec2ir.engine.outbreak). ``selector`` applies the filters instead of
    DescribeInstances in the run's own Region (--regions: in each Region)."""
    filters = parse_filters(filter_arguments)
    words = expand(named, stdin)
    piped = set(words) - set(named)  # what standard input added: a query that can go wrong too
    if len(piped) > max_instances:
        raise UsageError(
            f"standard input holds {len(piped)} instance ids, more than --max-instances "
            f"{max_instances}; nothing was changed",
            f"check what was piped in; to act on all of them, pass --max-instances {len(piped)}",
        )
    ids, arns = split_targets(words)
    if not ids and not filters:
        raise UsageError(
            "no instances given",
            "name instance ids or ARNs, '-' to read them from standard input, or select them with --filters",
        )
    if arns:
        check_reachable(arns, aws.partition(), aws.account(), role_name)
        ids = [_reference(word, aws.region(), aws.account()) for word in words]
    if not filters:
        return Targets(ids)
    selected = selector(filters) if selector else select(aws, filters)
    shown = " ".join(format_filter(item) for item in filters)
    if not selected:
        raise UsageError(
            printable(f"no instance matches --filters {shown} in {aws.region()} (nothing was changed)"),
            "check the filter names and values (tag:KEY for a tag) and the Region",
        )
    if len(selected) > max_instances:
        raise UsageError(
            printable(
                f"--filters {shown} match {len(selected)} instances, more than --max-instances "
                f"{max_instances}; nothing was changed"
            ),
            f"check the filters; to act on all of them, pass --max-instances {len(selected)}",
        )
    named_ids = set(ids)
    return Targets([*ids, *(i for i in selected if i not in named_ids)], filters, selected)


def workstation(aws: _Account, raw: str) -> str:
    """``forensics attach --to``: an instance id, or its ARN in this partition, Region and account."""
    if not raw.startswith("arn:"):
        return raw
    arn = parse_arn(raw)
    check_arns([arn], aws.partition(), aws.region(), aws.account())
    return arn.instance_id
