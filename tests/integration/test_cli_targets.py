"""Targets the way responders find them: ``-`` (standard input), instance ARNs, ``--filters``,
``--max-instances``, and the case as CASE_ID or ``--case`` (ec2ir.aws.targets, through the CLI)."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest

from ec2ir.aws import targets
from ec2ir.cli import app as cli
from ec2ir.cli.parser import build_parser
from ec2ir.core.errors import UsageError
from tests.conftest import Cli
from tests.support.fleets import Fleet

ACCOUNT = "123456789012"  # the emulator's
GOOD = "i-0123456789abcdef0"
SERIAL = itertools.count()


def arn(instance_id: str, region: str = "us-east-1", account: str = ACCOUNT, partition: str = "aws") -> str:
    return f"arn:{partition}:ec2:{region}:{account}:instance/{instance_id}"


def tagged(fleet: Fleet, vpc: str, env: str) -> str:
    instance = fleet.instance(vpc, [fleet.group(vpc, f"web-{env}-{next(SERIAL)}")])
    fleet.ec2.create_tags(Resources=[instance], Tags=[{"Key": "env", "Value": env}])
    return instance


def untouched(fleet: Fleet, before: dict[str, tuple[str, ...]], instances: list[str]) -> None:
    """Nothing changed: no state table (so no hold), no ec2ir group, every ENI in its groups."""
    assert fleet.aws.dynamodb().list_tables()["TableNames"] == []
    assert fleet.ec2ir_groups() == []
    assert fleet.eni_groups(instances) == before


# -- parsing, without AWS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["Name=tag:env,Values=prod"], [("tag:env", ["prod"])]),
        (
            ["Name=tag:env,Values=prod", "Name=vpc-id,Values=vpc-1,vpc-2"],
            [("tag:env", ["prod"]), ("vpc-id", ["vpc-1", "vpc-2"])],
        ),
        (
            ["Name=tag:env,Values=prod  Name=vpc-id,Values=vpc-1"],
            [("tag:env", ["prod"]), ("vpc-id", ["vpc-1"])],
        ),
        (["Values=a,b,Name=instance-type"], [("instance-type", ["a", "b"])]),
        (["Name=tag:Name,Values=\"web server\",'a,b',x\\ y"], [("tag:Name", ["web server", "a,b", "x y"])]),
        (['Name=tag:k,Values="Name=x"'], [("tag:k", ["Name=x"])]),
        (['[{"Name": "tag:env", "Values": ["prod", "stage"]}]'], [("tag:env", ["prod", "stage"])]),
        (["Name=tag:env,Values=prod,prod"], [("tag:env", ["prod"])]),
    ],
)
def test_filters_parse_as_the_aws_cli_writes_them(arguments: list[str], expected: list[Any]) -> None:
    parsed = targets.parse_filters(arguments)
    assert [(item["Name"], item["Values"]) for item in parsed] == expected


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("tag:env=prod", "malformed filter"),
        ("Name=tag:env", "has no Values"),
        ("Values=prod", "has no Name"),
        ("Name=tag:env,Values=", "empty or unprintable value"),
        ("Name=tag:env,Values=a,,b", "empty or unprintable value"),
        ("Name=,Values=a", "invalid Name"),
        ("name=tag:env,Values=a", "unknown key 'name'"),
        ("Name=a,Name=b,Values=c", "Name is given twice"),
        ("Name=a,Values=b Name=a,Values=c", "given more than once"),
        ('Name=a,Values="b', "unterminated"),
        ("Name=a,Values=b\\", "lone backslash"),
        ("Name=a,Values=b\x1b[31m", "unprintable"),
        ("i-0123456789abcdef0", "malformed filter"),
        ("[{", "not valid JSON"),
        ('[{"Name": "a", "Values": "b"}]', "each item must be"),
        ("   ", "no filter"),
    ],
)
def test_malformed_filters_are_refused_by_name(argument: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        targets.parse_filters([argument])
    assert message in str(refused.value)
    assert "\x1b" not in str(refused.value)


def test_standard_input_words_and_its_refusals() -> None:
    assert targets.expand(["-", GOOD], io.StringIO(" i-1\ti-2\n\ni-3 ")) == ["i-1", "i-2", "i-3", GOOD]
    closed = io.StringIO("x")
    closed.close()
    tty = io.StringIO("i-1")
    tty.isatty = lambda: True  # type: ignore[method-assign]
    for stdin, message in [
        (None, "closed"),
        (closed, "closed"),
        (io.StringIO(" \n\t"), "holds no instance ids"),
        (tty, "is a terminal"),
    ]:
        with pytest.raises(UsageError, match=message):
            targets.expand(["-"], stdin)
    with pytest.raises(UsageError, match="more than once"):
        targets.expand(["-", "-"], io.StringIO(GOOD))


def test_arns_name_their_instance_and_must_be_the_runs() -> None:
    ids, arns = targets.split_targets([arn(GOOD), GOOD, "i-0abcdef1"])
    assert ids == [GOOD, GOOD, "i-0abcdef1"] and arns[0].region == "us-east-1"
    targets.check_arns(arns, "aws", "us-east-1", ACCOUNT)
    for wrong, message in [
        (arn(GOOD, region="eu-west-1"), "is in Region eu-west-1, but this run acts in us-east-1"),
        (arn(GOOD, account="210987654321"), "is in account 210987654321"),
        (arn(GOOD, partition="aws-cn"), "is in partition aws-cn"),
    ]:
        with pytest.raises(UsageError, match=message):
            targets.check_arns(targets.split_targets([wrong])[1], "aws", "us-east-1", ACCOUNT)
    for malformed in [
        f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/vol-0123456789abcdef0",
        f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-XYZ",
        f"arn:aws:iam::{ACCOUNT}:instance/{GOOD}",
        f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{GOOD}\x1b[2J",
    ]:
        with pytest.raises(UsageError, match="malformed instance ARN") as refused:
            targets.split_targets([malformed])
        assert "\x1b" not in str(refused.value)
    with pytest.raises(UsageError, match="malformed instance id"):
        targets.split_targets(["i-nothex"])


class FakeAws:
    """DescribeInstances answering from a list, to test the resolver's limits without AWS."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.filters: list[Any] = []

    def partition(self) -> str:
        return "aws"

    def region(self) -> str:
        return "us-east-1"

    def account(self) -> str:
        return ACCOUNT

    def ec2(self) -> Any:
        return self

    def get_paginator(self, _: str) -> Any:
        return self

    def paginate(self, Filters: Any, PaginationConfig: Any) -> list[dict[str, Any]]:
        self.filters.append(Filters)
        instances = [{"InstanceId": i, "State": {"Name": s}} for i, s in self.states.items()]
        return [
            {"Reservations": [{"Instances": instances[:2]}]},
            {"Reservations": [{"Instances": instances[2:]}]},
        ]


def test_the_resolver_unites_named_and_selected_and_keeps_the_limit() -> None:
    fleet = {f"i-{n:08x}": "running" for n in range(1, 5)} | {
        "i-0000dead": "terminated",
        "i-0000beef": "shutting-down",
    }
    aws = FakeAws(fleet)

    chosen = targets.resolve(aws, ["i-00000002", arn("i-00000009")], ["Name=tag:env,Values=prod"], 4, None)

    assert chosen.selected == ["i-00000001", "i-00000002", "i-00000003", "i-00000004"]
    assert chosen.instance_ids == ["i-00000002", "i-00000009", "i-00000001", "i-00000003", "i-00000004"]
    assert aws.filters == [[{"Name": "tag:env", "Values": ["prod"]}]]
    with pytest.raises(
        UsageError, match=r"match 4 instances, more than --max-instances 3.*--max-instances 4"
    ):
        targets.resolve(aws, [], ["Name=tag:env,Values=prod"], 3, None)
    with pytest.raises(UsageError, match="no instance matches --filters"):
        targets.resolve(FakeAws({"i-0000dead": "terminated"}), [GOOD], ["Name=tag:env,Values=prod"], 25, None)
    assert targets.resolve(aws, [GOOD, GOOD], [], 1, None).instance_ids == [
        GOOD,
        GOOD,
    ]  # the engine collapses
    assert targets.workstation(aws, arn(GOOD)) == GOOD == targets.workstation(aws, GOOD)
    with pytest.raises(UsageError, match="is in Region eu-west-1"):
        targets.workstation(aws, arn(GOOD, region="eu-west-1"))


@pytest.mark.parametrize(
    ("argv", "case", "ids"),
    [
        (["collect", "IR-1", GOOD], "IR-1", [GOOD]),
        (["collect", "--case", "IR-1", GOOD, "-"], "IR-1", [GOOD, "-"]),
        (["collect", "IR-1", "--wait", GOOD, "--case", "IR-1"], "IR-1", [GOOD]),
        (["collect", "--case", "IR-1", "--filters", "Name=tag:env,Values=prod"], "IR-1", []),
        (["isolate", GOOD, "--case", "IR-1", arn(GOOD)], "IR-1", [GOOD, arn(GOOD)]),
        (["report", "--case", "IR-1"], "IR-1", None),
        (["verify", "IR-1", "--case", "IR-1"], "IR-1", None),
        (["forensics", "attach", "--case", "IR-1", "--to", GOOD], "IR-1", None),
        (["forensics", "detach", "IR-1"], "IR-1", None),
    ],
)
def test_the_case_as_case_id_or_case_option(argv: list[str], case: str, ids: list[str] | None) -> None:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    targets.settle(args, extras)
    assert args.case == case
    assert getattr(args, "instance_ids", None) == ids


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "IR-1", "--case", "IR-2"], "two case ids: IR-1 and --case IR-2"),
        (["verify"], "no case id given"),
        (["forensics", "detach"], "no case id given"),
        (["collect", GOOD], "names instances, not a case"),
        (["verify", "-"], "names instances, not a case"),
        (["collect", "IR-1"], "no instances given"),
        (["release", "--case", "IR-1"], "no instances given"),
        (["isolate", GOOD, "--case", "IR-1", "--bogus"], "unrecognized arguments: --bogus"),
        (["report", "IR-1", "extra"], "unrecognized arguments: extra"),
        (["isolate", GOOD, "--case", "IR-1", "--max-instances", "0"], "must be at least 1"),
    ],
)
def test_case_and_target_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        cli.main(argv)
    assert usage.value.code == 2
    assert message in capsys.readouterr().err


# -- through the CLI, against the emulator --------------------------------------------------------


def test_ids_from_standard_input_and_arns_are_isolated_and_released(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    piped, other, by_arn = (fleet.instance(vpc, [web]) for _ in range(3))
    before = fleet.eni_groups([piped, other, by_arn])

    isolated = run(
        "isolate", "-", arn(by_arn), "--case", "IR-1", "--no-evidence", "--output", "json",
        stdin=f"{piped}\t{other}\n{piped}\n",
    )  # fmt: skip

    assert isolated.code == 0, isolated.err
    report = isolated.json()
    assert sorted(r["instance_id"] for r in report["results"]) == sorted([piped, other, by_arn])
    assert "ignored 1 repeated instance id(s)" in report["notes"]
    released = run("release", "--case", "IR-1", "-", stdin=f"{arn(piped)} {other} {by_arn}")
    assert released.code == 0, released.err
    assert fleet.eni_groups([piped, other, by_arn]) == before


def test_arns_of_another_account_without_a_role_and_an_empty_stdin_are_refused(
    run: Cli, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])

    for argv, stdin, message in [
        ([arn(instance, account="210987654321")], None, "is in account 210987654321, but the credentials"),
        ([arn(instance, partition="aws-cn")], None, "is in partition aws-cn"),
        (["-"], "", "standard input holds no instance ids"),
        (["-"], f"{instance} i-bad\x1b[2J", "malformed instance id: 'i-bad\\x1b[2J'"),
    ]:
        refused = run("isolate", *argv, "--case", "IR-1", "--no-evidence", stdin=stdin)
        assert refused.code == 2
        [line] = refused.err.strip().splitlines()
        assert message in line and "\x1b" not in line

    untouched(fleet, before, [instance])


def test_an_arn_of_another_region_is_looked_for_there_and_not_here(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])
    elsewhere = arn(instance, region="eu-west-1")

    result = run("isolate", elsewhere, "--case", "IR-1", "--no-evidence", "--output", "json")

    assert result.code == 1
    [failed] = result.json()["results"]
    assert (failed["error_code"], failed["region"]) == ("InvalidInstanceID.NotFound", "eu-west-1")
    assert fleet.ec2ir_groups() == []  # a run did run (its table exists), but changed nothing here
    assert fleet.eni_groups([instance]) == before


def test_filters_select_by_tag_in_the_dry_run_and_the_run(run: Cli, fleet: Fleet) -> None:
    vpc, other_vpc = fleet.vpc(1), fleet.vpc(2)
    prod = [tagged(fleet, vpc, "prod"), tagged(fleet, other_vpc, "prod")]
    dev = tagged(fleet, vpc, "dev")
    gone = tagged(fleet, vpc, "prod")
    fleet.ec2.terminate_instances(InstanceIds=[gone])
    before = fleet.eni_groups([dev])
    selecting = ["--filters", "Name=tag:env,Values=prod", "--case", "IR-1", "--no-evidence"]

    planned = run("isolate", *selecting, "--dry-run", "--output", "json")
    shown = run("isolate", *selecting, "--dry-run")
    isolated = run("isolate", *selecting, "--output", "json")

    assert planned.code == 0, planned.err
    assert planned.json()["selected_by_filters"] == {
        "filters": [{"Name": "tag:env", "Values": ["prod"]}],
        "instances": sorted(prod),
    }
    assert sorted(planned.json()["instances"]) == sorted(prod)
    assert (
        shown.out.splitlines()[2]
        == f"--filters Name=tag:env,Values=prod selected 2 instance(s): {' '.join(sorted(prod))}"
    )
    assert isolated.code == 0, isolated.err
    assert sorted(r["instance_id"] for r in isolated.json()["results"]) == sorted(prod)
    assert "selected 2 instance(s)" in isolated.err
    assert fleet.eni_groups([dev]) == before


def test_a_filter_over_max_instances_or_matching_nothing_changes_nothing(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    prod = [tagged(fleet, vpc, "prod") for _ in range(3)]
    before = fleet.eni_groups(prod)

    too_many = run(
        "isolate", "--filters", "Name=tag:env,Values=prod", "--case", "IR-1", "--max-instances", "2"
    )
    typo = run("isolate", "--filters", "Name=tag:env,Values=prdo", "--case", "IR-1")
    collected = run(
        "collect", "--case", "IR-1", "--filters", "Name=tag:env,Values=prod", "--max-instances", "2"
    )

    assert too_many.code == 2 and collected.code == 2
    assert "match 3 instances, more than --max-instances 2" in too_many.err
    assert "pass --max-instances 3" in too_many.err
    assert typo.code == 2 and "no instance matches --filters Name=tag:env,Values=prdo" in typo.err
    untouched(fleet, before, prod)
    described = fleet.ec2.describe_instances(InstanceIds=prod)["Reservations"]
    assert [t["Key"] for r in described for i in r["Instances"] for t in i["Tags"]] == ["env"] * 3
    case_snapshots = fleet.ec2.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["ec2ir:case"]}])
    assert case_snapshots["Snapshots"] == []


def test_collect_report_and_verify_take_case_as_an_option(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    collected = run("collect", "--case", "IR-9", "--output", "json", arn(instance))
    reported = run("report", "--case", "IR-9")
    verified = run("verify", "IR-9", "--case", "IR-9")

    assert collected.code == 0, collected.err
    assert collected.json()["case_id"] == "IR-9"
    assert reported.code == 0 and "collect:snapshots" in reported.out
    assert verified.code == 0 and "match the journal" in verified.out


def test_json_filters_nested_deep_are_a_usage_error_not_a_crash() -> None:
    with pytest.raises(UsageError, match="not valid JSON"):
        targets.parse_filters(["[" * 100_000])


def test_more_ids_on_standard_input_than_max_instances_are_refused_before_any_change(
    run: Cli, fleet: Fleet
) -> None:
    # A query gone wrong piped into isolate is the same mistake as a filter that is too wide.
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(3)]
    before = fleet.eni_groups(instances)

    refused = run("isolate", "-", "--case", "IR-1", "--no-evidence", "--max-instances", "2",
                  stdin="\n".join(instances))  # fmt: skip

    assert refused.code == 2
    assert "standard input holds 3 instance ids, more than --max-instances 2" in refused.err
    assert "--max-instances 3" in refused.err  # the hint names the count to pass
    untouched(fleet, before, instances)
    allowed = run("isolate", "-", "--case", "IR-1", "--no-evidence", "--max-instances", "3",
                  stdin="\n".join(instances))  # fmt: skip
    assert allowed.code == 0, allowed.err
