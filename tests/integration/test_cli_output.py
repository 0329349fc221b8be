"""What the command tells a responder (issue 16): each step's outcome in the table, a warning for
anything asked for and not done, and reruns that are quiet and truthful."""

from __future__ import annotations

import pytest

from ec2ir.containment.steps import TAG_ISOLATED_AT, Options
from ec2ir.core.models import InstanceResult
from ec2ir.engine.facade import Engine
from ec2ir.engine.results import RunReport
from ec2ir.render.terminal import render_run, run_warnings
from ec2ir.report.build import build_report
from tests.conftest import Cli
from tests.support.faults import Fault, inject
from tests.support.fleets import Fleet, web_member

CASE = "IR-16"


def in_target_group(fleet: Fleet) -> tuple[str, str]:
    """A plain instance registered in a target group (port 8080), and the group's ARN."""
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    elbv2 = fleet.aws.client("elbv2")
    group = str(
        elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0][
            "TargetGroupArn"
        ]
    )
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instance, "Port": 8080}])
    return instance, group


def tags_of(fleet: Fleet, instance: str) -> dict[str, str]:
    described = fleet.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in described.get("Tags", []) if t["Key"].startswith("ec2ir:")}


def lines_under(out: str, instance: str) -> list[str]:
    """The indented lines that follow the instance's row in the run table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(instance))
    under = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        under.append(line.strip())
    return under


# -- point 4: the default output tells the whole story ------------------------------------------


def test_the_table_shows_what_each_step_did_under_the_instance(run: Cli, fleet: Fleet) -> None:
    instance, _ = web_member(fleet)

    isolated = run("isolate", instance, "--case", CASE, "--no-evidence")
    released = run("release", instance, "--case", CASE)

    assert isolated.code == 0, isolated.err
    steps = lines_under(isolated.out, instance)
    assert "autoscaling: detached from web-asg" in steps, isolated.out
    assert any(line.startswith("network: 1 ENI(s) isolated") for line in steps), steps
    assert any(line.startswith("load-balancers: deregistered from 1 target group(s)") for line in steps)
    assert any(line.startswith("credentials: instance profile") and "disassociated" in line for line in steps)
    assert not any("revoke-sessions" in line for line in steps)  # skipped with nothing to say
    assert "WARNING" not in isolated.err
    assert released.code == 0, released.err
    undone = lines_under(released.out, instance)
    assert any(
        line.startswith("load-balancers: left out of its load balancers (use --rejoin") for line in undone
    )
    assert any(line.startswith("autoscaling: left out of web-asg") for line in undone), undone


def test_collect_memory_not_collected_exits_1_with_a_warning(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])  # not managed by SSM

    collected = run("collect", CASE, instance, "--memory", "--memory-timeout", "5")
    as_json = run("collect", CASE, instance, "--memory", "--memory-timeout", "5", "--output", "json")

    assert collected.code == 1, (collected.out, collected.err)
    assert any(
        line.strip().startswith("memory: not collected") for line in lines_under(collected.out, instance)
    )
    assert f"{instance}  collected" not in collected.out
    warnings = [line for line in collected.err.splitlines() if "WARNING" in line]
    assert any("memory: not collected" in line for line in warnings), collected.err
    assert as_json.code == 1
    [result] = as_json.json()["results"]
    assert result["ok"] is False and not as_json.json()["ok"]
    assert result["steps"]["memory"].startswith("not collected")


def test_step_lines_and_warnings_are_printable_and_quiet() -> None:
    hostile = "web\x1b[2J\nFAKE: all clear"
    result = InstanceResult(
        "i-0123456789abcdef0",
        "isolate",
        ok=True,
        detail="1 ENI(s) isolated",
        steps={
            "protect": "done: termination protection on (1 change(s))",
            "autoscaling": f"done: detached from {hostile}",
            "load-balancers": f"FAILED: DeregisterTargets: InvalidTarget: {hostile}",
            "revoke-sessions": "skipped: nothing to do for this instance",
            "tags": "skipped: the instance is terminated: nothing to put back",
            "memory": f"not collected: {hostile}",
        },
        warnings=(f"odd {hostile}",),
    )
    report = RunReport("isolate", CASE, "arn:aws:iam::123456789012:user/me", [result])

    out = render_run(report)
    warnings = run_warnings(report)

    assert "\x1b" not in out and "\nFAKE" not in out
    under = lines_under(out, result.instance_id)
    assert "autoscaling: detached from web\\x1b[2J\\nFAKE: all clear" in under
    assert "tags: skipped: the instance is terminated: nothing to put back" in under
    assert not any("revoke-sessions" in line for line in under)
    assert all("\x1b" not in line and "\n" not in line for line in warnings)
    assert len(warnings) == 4 and all(
        w.startswith(f"ec2ir: {result.instance_id}: WARNING: ") for w in warnings
    )
    assert any("load-balancers: FAILED" in w for w in warnings)
    assert any("memory: not collected" in w for w in warnings)
    assert any("tags: skipped: the instance is terminated" in w for w in warnings)
    assert not any("revoke-sessions" in w or "protect" in w for w in warnings)


# -- point 5: reruns are quiet and truthful ------------------------------------------------------


def test_a_rerun_of_a_finished_isolate_exits_0_and_changes_no_tag(run: Cli, fleet: Fleet) -> None:
    instance, _ = in_target_group(fleet)
    first = run("isolate", instance, "--case", CASE, "--no-evidence")
    assert first.code == 0, first.err
    tagged = tags_of(fleet, instance)

    again = run("isolate", instance, "--case", CASE, "--no-evidence", "--output", "json")

    assert again.code == 0, again.err
    [result] = again.json()["results"]
    assert result["ok"], result
    assert result["steps"]["load-balancers"].startswith("done: deregistered from 1 target group(s)")
    assert "(already out of 1 target group(s))" in result["steps"]["load-balancers"]
    assert tags_of(fleet, instance) == tagged
    assert tagged[TAG_ISOLATED_AT]
    assert "WARNING" not in again.err


def test_invalid_target_is_a_failure_while_the_instance_is_still_registered(
    engine: Engine, fleet: Fleet
) -> None:
    instance, group = in_target_group(fleet)
    inject(fleet.aws, Fault("elbv2", "DeregisterTargets", "InvalidTarget"))

    report = engine.isolate([instance], CASE, options=Options(evidence=False))
    again = engine.isolate([instance], CASE, options=Options(evidence=False))

    for result in (report.results[0], again.results[0]):
        assert not result.ok
        assert result.steps["load-balancers"].startswith("FAILED"), result.steps
    health = fleet.aws.client("elbv2").describe_target_health(TargetGroupArn=group)
    assert instance in [t["Target"]["Id"] for t in health["TargetHealthDescriptions"]]


@pytest.mark.evidence
def test_a_rerun_journals_evidence_again_but_the_report_counts_it_once(
    run: Cli, fleet: Fleet, engine: Engine
) -> None:
    instance, _ = in_target_group(fleet)
    first = run("isolate", instance, "--case", CASE)
    again = run("isolate", instance, "--case", CASE)
    assert (first.code, again.code) == (0, 0), (first.err, again.err)

    findings = engine.verify(CASE)
    report = build_report(engine.store, CASE)

    pieces = {(f.ref.kind, f.ref.location, f.ref.version_id) for f in findings if f.ref.kind != "journal"}
    pieces -= {p for p in pieces if p[0] == "journal-head"}
    journaled = [ref for entry in engine.store.journal(CASE) for ref in entry.evidence]
    assert len(journaled) > len(pieces)  # the rerun journaled the evidence again
    assert report.summary.evidence == len(pieces) == len(report.evidence)
    assert report.summary.failures == 0, [e for e in report.timeline if e.result.startswith("FAILED")]
