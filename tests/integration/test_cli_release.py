"""After release: ``rejoin`` for released holds, original groups deleted meanwhile
(``--replace-group``, ``--skip-missing-groups``) and ``release --dry-run``, through the CLI."""

from __future__ import annotations

import pytest

from ec2ir.cli import app as cli
from ec2ir.cli.parser import build_parser
from ec2ir.core.errors import EXIT_USAGE
from ec2ir.core.models import HoldStatus
from ec2ir.store.state import StateStore
from tests.conftest import Cli, Run, one_line_error
from tests.support.fleets import Fleet

CASE = "IR-16"


def isolate(run: Cli, *instances: str) -> Run:
    isolated = run("isolate", *instances, "--case", CASE, "--no-evidence", "--output", "json")
    assert isolated.code == 0, isolated.err
    return isolated


def journal_actions(fleet: Fleet, instance: str) -> list[tuple[str, str]]:
    return [(e.action, e.result) for e in StateStore(fleet.aws).journal(CASE) if e.target == instance]


def hold_status(fleet: Fleet, instance: str) -> str:
    hold = StateStore(fleet.aws).get(instance)
    assert hold is not None
    return hold.status.value


# -- rejoin -----------------------------------------------------------------------------------------


def in_service(fleet: Fleet, instance: str, target_group: str) -> tuple[bool, bool]:
    autoscaling = fleet.aws.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance])
    health = fleet.aws.client("elbv2").describe_target_health(TargetGroupArn=target_group)
    targets = {(t["Target"]["Id"], t["Target"]["Port"]) for t in health["TargetHealthDescriptions"]}
    return bool(autoscaling["AutoScalingInstances"]), (instance, 8080) in targets


def asg_member_behind_a_target_group(fleet: Fleet) -> tuple[str, str]:
    """An Auto Scaling group's instance, registered on port 8080 with a target group of an ALB."""
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    member = fleet.asg_member(vpc, [web])
    target_group = fleet.alb_target_group(vpc, [web])
    elbv2 = fleet.aws.client("elbv2")
    elbv2.register_targets(TargetGroupArn=target_group, Targets=[{"Id": member, "Port": 8080}])
    return member, target_group


def test_rejoin_after_a_plain_release_puts_it_back_in_service_once(run: Cli, fleet: Fleet) -> None:
    member, target_group = asg_member_behind_a_target_group(fleet)
    isolate(run, member)
    assert in_service(fleet, member, target_group) == (False, False)
    released = run("release", member, "--case", CASE)
    assert released.code == 0, released.err
    assert in_service(fleet, member, target_group) == (False, False)
    assert run("release", member, "--case", CASE, "--rejoin").code == 1  # NotIsolated: the dead end

    rejoined = run("rejoin", member, "--case", CASE, "--output", "json")
    again = run("rejoin", member, "--case", CASE)

    assert rejoined.code == 0, rejoined.err
    [result] = rejoined.json()["results"]
    assert result["ok"] and "web-asg" in result["steps"]["autoscaling"]
    assert in_service(fleet, member, target_group) == (True, True)
    actions = [action for action, _ in journal_actions(fleet, member)]
    assert "rejoin:autoscaling" in actions and "rejoin:load-balancers" in actions
    assert again.code == 0, again.err
    assert "already in service" in again.out
    assert hold_status(fleet, member) == "released"


def test_rejoin_refuses_an_active_hold_another_case_and_an_unknown_instance(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    held, never = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    isolate(run, held)
    isolated = fleet.eni_groups([held])

    active = run("rejoin", held, "--case", CASE)
    other = run("rejoin", held, "--case", "IR-OTHER")
    unknown = run("rejoin", never, "--case", CASE)

    assert (active.code, other.code, unknown.code) == (1, 1, 1)
    assert f"{held}: StillHeld:" in active.err and "release --rejoin" in active.err
    assert f"{held}: HeldByOtherCase:" in other.err
    assert f"{never}: NotReleased:" in unknown.err
    assert fleet.eni_groups([held]) == isolated
    assert hold_status(fleet, held) == "isolated"


# -- original groups deleted meanwhile --------------------------------------------------------------


def test_release_refuses_a_deleted_original_group_then_replace_group_finishes_it(
    run: Cli, fleet: Fleet
) -> None:
    vpc, other_vpc = fleet.vpc(1), fleet.vpc(2)
    web, mgmt = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt")
    instance = fleet.instance(vpc, [web, mgmt])
    isolate(run, instance)
    isolated_groups = fleet.eni_groups([instance])
    fleet.ec2.delete_security_group(GroupId=web)
    new, elsewhere = fleet.group(vpc, "web-v2"), fleet.group(other_vpc, "web-v2")

    refused = run("release", instance, "--case", CASE)
    malformed = run("release", instance, "--case", CASE, "--replace-group", f"{web}=web-v2")
    not_gone = run("release", instance, "--case", CASE, "--replace-group", f"{mgmt}={new}")
    wrong_vpc = run("release", instance, "--case", CASE, "--replace-group", f"{web}={elsewhere}")

    assert refused.code == 1
    assert f"{instance}: InvalidGroup.NotFound:" in refused.err
    assert web in refused.err and "--replace-group" in refused.err and "--skip-missing-groups" in refused.err
    assert malformed.code == EXIT_USAGE and "web-v2" in one_line_error(malformed)
    assert not_gone.code == EXIT_USAGE and f"{mgmt} still exists" in one_line_error(not_gone)
    assert wrong_vpc.code == 1 and other_vpc in wrong_vpc.err
    assert fleet.eni_groups([instance]) == isolated_groups  # still contained: nothing was changed
    assert hold_status(fleet, instance) != "released"

    finished = run("release", instance, "--case", CASE, "--replace-group", f"{web}={new}", "--output", "json")

    assert finished.code == 0, finished.err
    [eni] = fleet.eni_groups([instance])
    assert fleet.eni_groups([instance]) == {eni: tuple(sorted((new, mgmt)))}
    [result] = finished.json()["results"]
    assert f"{web}" in result["detail"] and new in result["detail"]
    assert (
        "release:replace-group",
        f"done: {eni}: {web} (deleted) replaced by {new}",
    ) in journal_actions(fleet, instance)
    assert hold_status(fleet, instance) == "released"


def test_skip_missing_groups_finishes_a_stuck_release_and_never_leaves_an_eni_groupless(
    run: Cli, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web, mgmt, lone = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt"), fleet.group(vpc, "lone")
    two_groups, one_group = fleet.instance(vpc, [web, mgmt]), fleet.instance(vpc, [lone])
    isolate(run, two_groups, one_group)
    store = StateStore(fleet.aws)
    stuck = store.get(two_groups)
    assert stuck is not None
    store.transition(stuck, (stuck.status,), HoldStatus.RELEASING)  # a release cut short
    isolated_lone = fleet.eni_groups([one_group])
    for group in (mgmt, lone):
        fleet.ec2.delete_security_group(GroupId=group)

    skipped = run("release", two_groups, one_group, "--case", CASE, "--skip-missing-groups")

    assert skipped.code == 1
    [eni] = fleet.eni_groups([two_groups])
    assert fleet.eni_groups([two_groups]) == {eni: (web,)}
    assert hold_status(fleet, two_groups) == "released"
    assert ("release:skip-group", f"done: {eni}: {mgmt} (deleted) left out") in journal_actions(
        fleet, two_groups
    )
    assert f"{one_group}: InvalidGroup.NotFound:" in skipped.err and "no group" in skipped.err
    assert fleet.eni_groups([one_group]) == isolated_lone
    assert hold_status(fleet, one_group) == "isolated"


# -- release --dry-run --------------------------------------------------------------------------------


def test_release_dry_run_lists_what_would_be_restored_and_changes_nothing(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web, mgmt = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt")
    instance = fleet.instance(vpc, [web, mgmt])
    isolate(run, instance)
    fleet.ec2.delete_security_group(GroupId=web)
    new = fleet.group(vpc, "web-v2")
    isolated = fleet.eni_groups([instance])
    journal_before = journal_actions(fleet, instance)

    plan = run(
        "release",
        instance,
        "--case",
        CASE,
        "--dry-run",
        "--replace-group",
        f"{web}={new}",
        "--output",
        "json",
    )
    table = run("release", instance, "--case", CASE, "--dry-run")

    assert plan.code == 0, plan.err
    assert plan.json()["dry_run"] is True
    [planned] = plan.json()["results"]
    [eni] = isolated
    assert planned["ok"] and sorted(planned["enis"][eni]) == sorted([new, mgmt])
    assert f"{web} (deleted) replaced by {new}" in planned["detail"]
    assert set(planned["steps"]) >= {"network", "tags", "metadata", "protect"}
    assert "leave out of" not in planned["steps"]["network"]
    assert table.code == 1 and "InvalidGroup.NotFound" in table.out and "--replace-group" in table.out
    assert fleet.eni_groups([instance]) == isolated
    assert hold_status(fleet, instance) == "isolated"
    assert journal_actions(fleet, instance) == journal_before


@pytest.mark.parametrize("value", ["sg-12345678", "sg-1=sg-12345678", "sg-12345678=sg-12345678"])
def test_replace_group_needs_two_different_group_ids(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # refused before any AWS call: no emulator needed (nothing listens on port 9)
    argv = ["release", "i-0123456789abcdef0", "--case", CASE, "--replace-group", value]
    code = cli.main([*argv, "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"])

    assert code == EXIT_USAGE
    error = one_line_error(Run(code, *capsys.readouterr()))
    assert "--replace-group" in error and ("OLD=NEW" in error or "given once" in error)


def test_rejoin_takes_its_targets_like_release() -> None:
    from ec2ir.aws import targets

    assert "rejoin" in targets.COMMANDS
    args = build_parser().parse_args(["rejoin", "--case", "IR-1", "--filters", "Name=tag:env,Values=prod"])
    assert args.filters == ["Name=tag:env,Values=prod"] and args.max_instances == 25


def test_rejoin_never_puts_back_an_instance_isolated_again_meanwhile(run: Cli, fleet: Fleet) -> None:
    """Rejoining a contained instance to its Auto Scaling group would let the group terminate it,
    evidence and all: the hold is read again right before each change."""
    from typing import Any

    from ec2ir.engine.facade import Engine

    member, target_group = asg_member_behind_a_target_group(fleet)
    isolate(run, member)
    assert run("release", member, "--case", CASE).code == 0
    engine = Engine(fleet.aws, StateStore(fleet.aws))
    isolated_again: list[int] = []

    def isolate_meanwhile(**_: Any) -> None:
        if not isolated_again:  # after rejoin read the released hold, before it changes anything
            isolated_again.append(isolate(run, member).code)

    engine.aws.client("autoscaling").meta.events.register(
        "before-call.autoscaling.DescribeAutoScalingInstances", isolate_meanwhile
    )

    report = engine.rejoin([member], CASE)

    assert isolated_again == [0]
    [result] = report.results
    assert not result.ok and result.error_code in ("StillHeld", "StaleRecord"), result.detail
    assert in_service(fleet, member, target_group) == (False, False)
    assert hold_status(fleet, member) == "isolated"
