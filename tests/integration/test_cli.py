"""The ``ec2ir`` command over HTTP against the corrected emulator: output, exit codes, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.cli import app as cli
from ec2ir.emulator.server import Emulator
from ec2ir.store.state import StateStore
from tests.conftest import Cli, one_line_error
from tests.support.faults import Fault, error_response, inject_into
from tests.support.fleets import Fleet

OFFICE = "198.51.100.0/24"


def test_isolate_status_release_round_trip_in_json(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])

    isolated = run("isolate", instance, "--case", "IR-7", "--office-cidr", OFFICE, "--output", "json")
    status = run("status", "--case", "IR-7", "--output", "json")
    released = run("release", instance, "--case", "IR-7", "--output", "json")
    after_status = run("status", "--output", "json")

    assert (isolated.code, status.code, released.code) == (0, 0, 0)
    report = isolated.json()
    iso = report["groups"][vpc]["isolation_group_id"]
    assert report["ok"] and report["results"][0]["enis"] == {eni: [iso] for eni in before}
    [hold] = status.json()["holds"]
    assert hold["status"] == "isolated" and hold["case_id"] == "IR-7"
    assert {eni: tuple(sorted(g)) for eni, g in hold["originals"].items()} == before
    assert released.json()["ok"]
    assert after_status.json()["holds"] == []
    assert fleet.eni_groups([instance]) == before


def test_table_output_names_groups_and_summarises(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    isolated = run("isolate", instance, "--case", "IR-7")
    status = run("status")

    assert isolated.code == 0
    assert f"{instance}  isolated" in isolated.out
    assert "case IR-7: 1 isolated, 0 failed" in isolated.out
    assert "admits nobody until you run isolate again with --office-cidr" in isolated.out
    assert instance in status.out and "IR-7" in status.out and "isolated" in status.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["isolate", "i-123", "--case", "IR-1"], "malformed instance id: 'i-123'"),
        (["isolate", "I-0123456789ABCDEF0", "--case", "IR-1"], "malformed instance id"),
        (["isolate", "{good}", "--case", "IR-1", "--office-cidr", "10.0.0.300/24"], "invalid office CIDR"),
        (["isolate", "{good}", "--case", "IR-1", "--office-cidr", "10.0.0.1/24"], "invalid office CIDR"),
        (["isolate", "{good}", "--case", "IR-1", "--office-cidr", "0.0.0.0/0"], "whole internet"),
        (["isolate", "{good}", "--case", "bad case!"], "malformed case id"),
        (["release", "i-zz", "--case", "IR-1"], "malformed instance id"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    run: Cli, fleet: Fleet, argv: list[str], message: str
) -> None:
    vpc = fleet.vpc(1)
    good = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([good])

    result = run(*[good if arg == "{good}" else arg for arg in argv])

    assert result.code == 2
    assert message in one_line_error(result)
    assert fleet.eni_groups([good]) == before
    assert fleet.ec2ir_groups() == []
    assert fleet.aws.dynamodb().list_tables()["TableNames"] == []


def test_usage_errors_exit_2(run: Cli) -> None:
    with pytest.raises(SystemExit) as missing_case:
        run("isolate", "i-0123456789abcdef0")
    with pytest.raises(SystemExit) as no_ids:
        run("isolate", "--case", "IR-1")
    assert (missing_case.value.code, no_ids.value.code) == (2, 2)


def test_any_source_is_accepted_only_when_asked_for(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    result = run("isolate", instance, "--case", "IR-1", "--office-cidr", "0.0.0.0/0", "--allow-any-source")

    assert result.code == 0


def test_unknown_and_terminated_exit_1_naming_each_while_the_rest_are_isolated(
    run: Cli, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    good, gone = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    fleet.ec2.terminate_instances(InstanceIds=[gone])
    unknown = "i-0aaaaaaaaaaaaaaaa"

    result = run("isolate", good, unknown, gone, "--case", "IR-1", "--output", "json")

    assert result.code == 1
    assert f"ec2ir: {unknown}: InvalidInstanceID.NotFound:" in result.err
    assert f"ec2ir: {gone}: InstanceTerminated:" in result.err
    assert "Traceback" not in result.err
    isolation = result.json()["groups"][vpc]["isolation_group_id"]
    assert list(fleet.eni_groups([good]).values()) == [(isolation,)]


def test_releasing_what_is_not_isolated_exits_1_and_changes_nothing(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])
    StateStore(fleet.aws).ensure_table()  # with no table at all, release refuses outright (exit 2)

    result = run("release", instance, "--case", "IR-1")

    assert result.code == 1
    assert f"ec2ir: {instance}: NotIsolated:" in result.err
    assert fleet.eni_groups([instance]) == before


def test_no_credentials_exit_2_with_a_hint(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    result = run("isolate", instance, "--case", "IR-1")

    assert result.code == 2
    assert "no AWS credentials found" in one_line_error(result)


def test_a_missing_permission_before_any_change_exits_2_naming_the_action(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])
    make_client = Aws._make_client

    def denying_client(self: Aws, service: str) -> Any:
        client = make_client(self, service)
        if service == "dynamodb":
            inject_into(client, Fault("dynamodb", "DescribeTable", "AccessDeniedException"))
        return client

    monkeypatch.setattr(Aws, "_make_client", denying_client)

    result = run("isolate", instance, "--case", "IR-1")

    assert result.code == 2
    assert "missing IAM permission dynamodb:DescribeTable" in one_line_error(result)
    assert fleet.eni_groups([instance]) == before


def test_plain_progress_lines_when_not_a_terminal(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(5)]

    result = run("isolate", *instances, "--case", "IR-1")

    assert result.code == 0
    progress = [line for line in result.err.splitlines() if line.startswith("[")]
    # each instance contained (its cut), then done (evidence and the rest), each phase counted to 5
    assert len(progress) == 10 and progress[-1].startswith("[5/5] isolate i-")
    assert [line.split()[:2] for line in progress[:5]] == [[f"[{n}/5]", "contained"] for n in range(1, 6)]
    assert "\r" not in result.err


def test_two_cli_processes_isolating_the_same_instances_agree(
    served_emulator: Emulator, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instances = [
        fleet.instance(vpc, [fleet.group(vpc, f"web{i}")], extra_enis=[[fleet.group(vpc, f"m{i}")]])
        for i in range(3)
    ]
    before = fleet.eni_groups(instances)
    argv = [
        sys.executable,
        "-m",
        "ec2ir.cli.app",
        "isolate",
        *instances,
        "--case",
        "IR-1",
        "--output",
        "json",
    ]
    env = os.environ | {"AWS_ENDPOINT_URL": served_emulator.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}

    racers = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [racer.communicate(timeout=120)[0] for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0]
    assert all(json.loads(output)["ok"] for output in outputs)
    status = subprocess.run(
        [sys.executable, "-m", "ec2ir.cli.app", "status", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    recorded = {
        eni: tuple(sorted(groups))
        for hold in json.loads(status.stdout)["holds"]
        for eni, groups in hold["originals"].items()
    }
    assert recorded == before
    subprocess.run(
        [sys.executable, "-m", "ec2ir.cli.app", "release", *instances, "--case", "IR-1"], env=env, check=True
    )
    assert fleet.eni_groups(instances) == before


@pytest.mark.e2e
def test_the_demo_isolates_and_restores_exactly() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "ec2ir.cli.app", "demo"], capture_output=True, text=True, timeout=300
    )

    assert demo.returncode == 0, demo.stderr
    assert "isolated during the incident: yes" in demo.stdout
    assert "restored exactly afterwards:  yes" in demo.stdout
    assert demo.stdout.count("ec2ir-isolation") >= 4


@pytest.mark.e2e
def test_the_emulator_command_serves_any_boto3_client() -> None:
    import socket

    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "ec2ir.cli.app", "emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert f"http://127.0.0.1:{port}" in server.stdout.readline()
        ec2 = boto3.client(
            "ec2",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert ec2.describe_vpcs()["Vpcs"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dry_run_prints_the_plan_and_changes_nothing(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])

    result = run("isolate", instance, "--case", "IR-1", "--dry-run", "--office-cidr", OFFICE)

    assert result.code == 0, result.err
    assert "DRY RUN" in result.out and "nothing will be changed" in result.out
    assert (
        "ec2:ModifyNetworkInterfaceAttribute" in result.out
        and "[allowed by DryRun (1 call(s))]" in result.out
    )
    assert fleet.eni_groups([instance]) == before
    assert fleet.ec2ir_groups() == []
    assert fleet.aws.dynamodb().list_tables()["TableNames"] == []


def test_preflight_lists_every_action_with_a_verdict(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    fleet.instance(vpc, [fleet.group(vpc, "web")])

    result = run("preflight", "--output", "json")

    assert result.code == 0, result.err
    listed = result.json()["actions"]
    checks = {check["action"]: check for check in listed}
    assert len(checks) == len(listed)  # each action once
    swap = checks["ec2:ModifyNetworkInterfaceAttribute"]
    assert swap.pop("purposes")  # what it is needed for, as the table says
    assert swap == {"action": "ec2:ModifyNetworkInterfaceAttribute", "verdict": "allowed", "how": "DryRun"}
    assert any("network ACL" in purpose for purpose in checks["ec2:CreateNetworkAclEntry"]["purposes"])
    assert checks["autoscaling:DetachInstances"]["how"] == "iam:SimulatePrincipalPolicy"
    assert {check["verdict"] for check in checks.values()} == {"allowed"}


def test_permissions_prints_a_policy_covering_each_step(capsys: pytest.CaptureFixture[str]) -> None:
    from ec2ir.containment.steps import STEPS

    assert cli.main(["permissions"]) == 0
    policy = json.loads(capsys.readouterr().out)
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    for step in STEPS:
        assert step.permissions and set(step.permissions) <= actions, step.name
    assert "ec2:ModifyInstanceAttribute" in actions and "autoscaling:DetachInstances" in actions


def test_the_help_warns_about_revoke_sessions_and_rejoin(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["isolate", "--help"])
    isolate_help = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        cli.main(["release", "--help"])
    release_help = " ".join(capsys.readouterr().out.split())

    assert "affects EVERY instance and person using that role" in isolate_help
    assert "--no-untrack" in isolate_help and "survive the swap" in isolate_help
    assert "--rejoin" in release_help and "already replaced it" in release_help


@pytest.mark.slow
def test_ten_thousand_ids_are_validated_and_discovered_in_batches(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    real = fleet.instance(vpc, [fleet.group(vpc, "web")])
    unknown = [f"i-{n:017x}" for n in range(1, 10_000)]

    result = run("isolate", real, *unknown, "--case", "IR-1", "--output", "json")

    assert result.code == 1
    report = result.json()
    assert len(report["results"]) == 10_000
    assert report["results"][0]["ok"] is True
    assert {r["error_code"] for r in report["results"][1:]} == {"InvalidInstanceID.NotFound"}


def test_a_vpc_the_caller_may_not_touch_fails_only_its_own_instances(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, forbidden = fleet.vpc(1), fleet.vpc(2)
    ok = fleet.instance(allowed, [fleet.group(allowed, "web")])
    blocked = fleet.instance(forbidden, [fleet.group(forbidden, "db")])
    before = fleet.eni_groups([blocked])
    make_client = Aws._make_client

    def client_denied_in_one_vpc(self: Aws, service: str) -> Any:
        client = make_client(self, service)
        if service == "ec2":

            def deny(request: Any, **_: Any) -> Any:
                body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
                if f"VpcId={forbidden}" in body:
                    return error_response(request.url, 403, "ec2", "UnauthorizedOperation", "not in this VPC")
                return None

            client.meta.events.register("before-send.ec2.CreateSecurityGroup", deny)
        return client

    monkeypatch.setattr(Aws, "_make_client", client_denied_in_one_vpc)

    result = run("isolate", ok, blocked, "--case", "IR-1", "--output", "json")

    assert result.code == 1
    outcome = {r["instance_id"]: r for r in result.json()["results"]}
    assert outcome[ok]["ok"] is True, outcome[ok]
    assert outcome[blocked]["ok"] is False and "CreateSecurityGroup" in outcome[blocked]["detail"]
    assert fleet.eni_groups([blocked]) == before


def test_credentials_that_expire_mid_run_are_reported_and_a_rerun_finishes(
    run: Cli, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])
    make_client = Aws._make_client

    def expiring(self: Aws, service: str) -> Any:
        client = make_client(self, service)
        if service == "ec2":
            inject_into(client, Fault("ec2", "ModifyNetworkInterfaceAttribute", "RequestExpired", skip=1))
        return client

    with monkeypatch.context() as patch:
        patch.setattr(Aws, "_make_client", expiring)
        expired = run("isolate", instance, "--case", "IR-1")

    assert expired.code == 1
    assert "refused the credentials (RequestExpired" in expired.err
    finished = run("isolate", instance, "--case", "IR-1", "--output", "json")
    assert finished.code == 0
    released = run("release", instance, "--case", "IR-1")
    assert released.code == 0
    assert fleet.eni_groups([instance]) == before


def test_a_foreign_table_exits_2(run: Cli, fleet: Fleet) -> None:
    fleet.aws.dynamodb().create_table(
        TableName="theirs",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    result = run("isolate", instance, "--case", "IR-1", "--table", "theirs")

    assert result.code == 2
    assert "not an ec2ir state table" in one_line_error(result)


def test_role_arn_acts_in_the_other_account_through_assume_role(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    role = fleet.aws.client("iam").create_role(
        RoleName="ec2ir-responder", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )["Role"]["Arn"]

    result = run(
        "isolate",
        instance,
        "--case",
        "IR-1",
        "--role-arn",
        role,
        "--external-id",
        "sec-1",
        "--output",
        "json",
    )

    assert result.code == 0, result.err
    assert ":assumed-role/ec2ir-responder/ec2ir" in result.json()["actor"]


def test_collect_verify_report_and_forensics_from_the_command_line(
    run: Cli, fleet: Fleet, tmp_path: Any
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    workstation = fleet.instance(vpc, [fleet.group(vpc, "forensic")])

    collected = run("collect", "IR-9", instance, "--output", "json")
    assert collected.code == 0, collected.err
    evidence = collected.json()["results"][0]["evidence"]
    assert {ref["kind"] for ref in evidence} >= {"snapshot", "metadata:describe-instances"}

    verified = run("verify", "IR-9")
    assert verified.code == 0, verified.out
    assert "match the journal" in verified.out

    out = tmp_path / "IR-9.html"
    reported = run("report", "IR-9", "--format", "html", "-o", str(out))
    assert reported.code == 0 and out.read_text().startswith("<!DOCTYPE html>")
    markdown = run("report", "IR-9")
    assert "collect:snapshots" in markdown.out

    attached = run("forensics", "attach", "IR-9", "--to", workstation)
    assert attached.code == 0, attached.err
    assert "ro,noload" in attached.out
    detached = run("forensics", "detach", "IR-9")
    assert detached.code == 0, detached.err


def test_verify_exits_1_when_evidence_was_deleted(run: Cli, fleet: Fleet, aws: Aws) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    collected = run("collect", "IR-9", instance, "--output", "json")
    ref = next(r for r in collected.json()["results"][0]["evidence"] if r["kind"] == "metadata:iam")
    bucket, key = ref["location"].removeprefix("s3://").split("/", 1)
    aws.client("s3").delete_object(Bucket=bucket, Key=key, VersionId=ref["version_id"])

    verified = run("verify", "IR-9")

    assert verified.code == 1
    assert "MISSING" in verified.out and "do NOT match the journal" in verified.out


def test_no_evidence_and_unknown_cases_and_bad_buckets(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    isolated = run("isolate", instance, "--case", "IR-9", "--no-evidence", "--output", "json")
    assert isolated.code == 0
    assert isolated.json()["results"][0]["evidence"] == []
    assert "snapshots" not in isolated.json()["results"][0]["steps"]

    unknown = run("report", "IR-404")
    assert unknown.code == 2 and "IR-404" in one_line_error(unknown)
    bad_bucket = run("collect", "IR-9", instance, "--evidence-bucket", "No_Such")
    assert bad_bucket.code == 2 and "not a valid S3 bucket name" in one_line_error(bad_bucket)
    with pytest.raises(SystemExit) as negative:
        run("collect", "IR-9", instance, "--object-lock-days", "-1")
    assert negative.value.code == 2


@pytest.mark.evidence
def test_wait_shows_snapshot_progress(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    isolated = run("isolate", instance, "--case", "IR-9", "--wait")

    assert isolated.code == 0, isolated.err
    assert "snapshots: 1/1 completed" in isolated.err
    assert "1 of 1 snapshot(s) completed" in isolated.err
