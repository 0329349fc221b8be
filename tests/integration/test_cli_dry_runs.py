"""The habits of a good CLI (issue 16, point 8), continued: shell completion as an optional extra,
and dry runs for collect and forensics attach/detach, and isolate's dry run naming the evidence it
would take and each ENI's path. A dry run is proven to change nothing by recording every AWS call
the command makes: none may be anything but a read or an EC2 DryRun probe."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest

from ec2ir.cli import app as cli
from ec2ir.core.errors import EXIT_USAGE
from ec2ir.store.state import StateStore
from tests.conftest import Cli, one_line_error
from tests.support.fleets import Fleet

CASE = "IR-DRY"
READS = ("Describe", "Get", "List", "Head", "Query", "Scan", "Simulate", "BatchGet", "Lookup")


@pytest.fixture
def changes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call that could change something (any operation but a read, unless it is a DryRun
    probe), made by a client built from now on: botocore's before-parameter-build event sees each
    call's own arguments, before anything is sent."""
    seen: list[str] = []
    create_client = botocore.session.Session.create_client

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        if not model.name.startswith(READS) and params.get("DryRun") is not True:
            seen.append(f"{model.service_model.service_name}:{model.name}")

    def hooked(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        client.meta.events.register("before-parameter-build", record)
        return client

    monkeypatch.setattr(botocore.session.Session, "create_client", hooked)
    yield seen


def world(fleet: Fleet) -> dict[str, Any]:
    """What a dry run must leave as it was: snapshots, volumes, buckets, tables, the case journal."""
    ec2 = fleet.ec2
    tables = fleet.aws.client("dynamodb").list_tables()["TableNames"]
    return {
        "snapshots": sorted(s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
        "volumes": sorted(
            (v["VolumeId"], tuple(a["InstanceId"] for a in v["Attachments"]))
            for v in ec2.describe_volumes()["Volumes"]
        ),
        "buckets": sorted(b["Name"] for b in fleet.aws.client("s3").list_buckets().get("Buckets", [])),
        "tables": sorted(tables),
        "journal": len(StateStore(fleet.aws).journal(CASE)) if tables else 0,
        "groups": sorted(fleet.ec2ir_groups()),
    }


def calls(steps: list[dict[str, Any]], action: str) -> list[list[str]]:
    return [call["resources"] for step in steps for call in step["calls"] if call["action"] == action]


# -- shell completion ---------------------------------------------------------------------------


def test_completion_prints_a_bash_script_that_knows_the_subcommands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["completion", "bash"])

    out = capsys.readouterr().out
    assert code == 0
    assert "complete " in out  # bash's builtin, registering the function
    for command in ("isolate", "release", "collect", "forensics", "completion"):
        assert command in out
    assert "--dry-run" in out


def test_completion_without_shtab_says_how_to_install_it_and_the_rest_still_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "shtab", None)  # `import shtab` now raises ImportError

    code = cli.main(["completion", "zsh"])
    captured = capsys.readouterr()
    other = cli.main(["permissions"])  # the core never needs shtab

    assert code == EXIT_USAGE
    assert captured.out == ""
    line = captured.err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "shtab" in line and "pip install 'ec2ir[completion]'" in line
    assert other == 0 and '"Statement"' in capsys.readouterr().out


# -- collect --dry-run ----------------------------------------------------------------------------


def test_collect_dry_run_lists_the_snapshots_and_objects_and_changes_nothing(
    run: Cli, fleet: Fleet, changes: list[str]
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    fleet.ec2.create_tags(Resources=[instance], Tags=[{"Key": "Name", "Value": "web-1"}])
    [volume] = [v["VolumeId"] for v in fleet.ec2.describe_volumes()["Volumes"]]
    before = world(fleet)
    changes.clear()  # the fleet's own set-up is not the dry run's

    planned = run("collect", CASE, instance, "--dry-run", "--memory", "--output", "json")
    shown = run("collect", CASE, instance, "--dry-run")

    assert planned.code == 0, planned.err
    plan = planned.json()
    assert plan["action"] == "collect" and plan["dry_run"] is True
    assert plan["names"] == {instance: "web-1"}
    assert f"{instance} (web-1):" in shown.out
    bucket = plan["evidence"]["bucket"]
    assert bucket.startswith("ec2ir-evidence-")
    assert any(line.startswith(f"create the evidence bucket s3://{bucket}") for line in plan["setup"])
    steps = plan["instances"][instance]
    assert [step["step"] for step in steps] == ["memory", "snapshots", "evidence-metadata", "journal"]
    [snapshot] = calls(steps, "ec2:CreateSnapshots")
    assert snapshot[0] == instance and snapshot[1].startswith(volume)
    objects = [key for [key] in calls(steps, "s3:PutObject")]
    prefix = f"s3://{bucket}/{CASE}/{instance}/"
    assert all(key.startswith(prefix) for key in objects)
    assert {key.rsplit("/", 1)[1] for key in objects} >= {
        "memory.lime",
        "describe-instances.json",
        "console-output.json",
    }
    assert calls(steps, "ssm:SendCommand") == [[instance]]
    assert "ec2:CreateSnapshots" in plan["permissions"] and "s3:PutObject" in plan["permissions"]

    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"DRY RUN for case {CASE}")
    assert f"ec2:CreateSnapshots {instance} {volume}" in shown.out
    assert f"s3:PutObject {prefix}" in shown.out

    assert changes == []
    assert world(fleet) == before  # no snapshot, no bucket, no state table, no journal entry


def test_collect_dry_run_refuses_what_collect_refuses(run: Cli, fleet: Fleet, changes: list[str]) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    missing = "i-0123456789abcdef0"
    before = world(fleet)
    changes.clear()  # the fleet's own set-up is not the dry run's

    planned = run("collect", CASE, instance, missing, "--dry-run", "--output", "json")
    shown = run("collect", CASE, missing, "--dry-run")
    bad_bucket = run("collect", CASE, instance, "--dry-run", "--evidence-bucket", "Not_A_Bucket")

    assert planned.code == 1
    plan = planned.json()
    [refused] = plan["refused"]
    assert refused["instance_id"] == missing and refused["error_code"] == "InvalidInstanceID.NotFound"
    assert list(plan["instances"]) == [instance]
    assert shown.code == 1
    assert f"{missing}: would fail: InvalidInstanceID.NotFound" in shown.out
    assert bad_bucket.code == EXIT_USAGE
    assert "not a valid S3 bucket name" in one_line_error(bad_bucket)
    assert changes == []
    assert world(fleet) == before


# -- isolate --dry-run: the evidence and each ENI's path ------------------------------------------


@pytest.mark.evidence
def test_isolate_dry_run_names_the_evidence_calls_and_each_enis_path(
    run: Cli, fleet: Fleet, changes: list[str]
) -> None:
    vpc = fleet.vpc(1)
    web, mgmt = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt")
    instance = fleet.instance(vpc, [web], extra_enis=[[mgmt]])
    volumes = [v["VolumeId"] for v in fleet.ec2.describe_volumes()["Volumes"]]
    enis = fleet.eni_groups([instance])
    before = world(fleet)
    changes.clear()  # the fleet's own set-up is not the dry run's

    planned = run("isolate", instance, "--case", CASE, "--dry-run", "--output", "json")
    shown = run("isolate", instance, "--case", CASE, "--dry-run")

    assert planned.code == 0, planned.err
    plan = planned.json()
    bucket = plan["evidence"]["bucket"]
    assert any(line.startswith(f"create the evidence bucket s3://{bucket}") for line in plan["setup"])
    evidence = plan["evidence"]["instances"][instance]
    [snapshot] = calls(evidence, "ec2:CreateSnapshots")
    assert snapshot[0] == instance and {r.split()[0] for r in snapshot[1:]} == set(volumes)
    objects = [key for [key] in calls(evidence, "s3:PutObject")]
    assert f"s3://{bucket}/{CASE}/{instance}/" in objects[0]
    assert {key.rsplit("/", 1)[1] for key in objects} >= {"describe-instances.json", "console-output.json"}
    paths = plan["eni_paths"][instance]
    assert set(paths) == set(enis)
    for eni, groups in enis.items():
        assert tuple(paths[eni]["current"]) == groups
        assert paths[eni]["allow_all"].startswith("ec2ir-untrack-")  # not created yet
        assert paths[eni]["isolation"].startswith("ec2ir-isolation-")
    assert "s3:PutObject" in plan["permissions"] and "ec2:CreateSnapshots" in plan["permissions"]

    assert shown.code == 0, shown.err
    assert f"{web} (web) -> ec2ir-untrack-" in shown.out and f"{mgmt} (mgmt) -> ec2ir-untrack-" in shown.out
    assert f"then the evidence, to s3://{bucket}:" in shown.out
    assert f"ec2:CreateSnapshots {instance}" in shown.out
    assert changes == []
    assert world(fleet) == before


def test_isolate_dry_run_names_the_groups_ec2ir_already_has(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first, second = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    assert run("isolate", first, "--case", CASE, "--no-evidence").code == 0
    names = {
        group["GroupId"]: group["GroupName"]
        for group in fleet.ec2.describe_security_groups(GroupIds=fleet.ec2ir_groups())["SecurityGroups"]
    }

    planned = run("isolate", second, "--case", CASE, "--dry-run", "--no-untrack", "--output", "json")
    shown = run("isolate", second, "--case", CASE, "--dry-run", "--no-evidence")

    assert planned.code == 0, planned.err
    [path] = planned.json()["eni_paths"][second].values()
    isolation = next(g for g, name in names.items() if name.startswith("ec2ir-isolation-"))
    assert path == {"current": [web], "allow_all": "", "isolation": f"{isolation} ({names[isolation]})"}
    allow_all = next(g for g, name in names.items() if name.startswith("ec2ir-untrack-"))
    assert f"{web} (web) -> {allow_all} ({names[allow_all]}) -> {isolation} ({names[isolation]})" in shown.out
    assert "then the evidence" not in shown.out  # --no-evidence: none listed


# -- forensics attach/detach --dry-run ------------------------------------------------------------


def collected_case(run: Cli, fleet: Fleet) -> tuple[str, str]:
    """A case with snapshots of one instance (collect), and a separate workstation."""
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    workstation = fleet.instance(vpc, [fleet.group(vpc, "forensic")])
    collected = run("collect", CASE, instance)
    assert collected.code == 0, collected.err
    return instance, workstation


def test_forensics_attach_dry_run_lists_volumes_and_devices_and_changes_nothing(
    run: Cli, fleet: Fleet, changes: list[str]
) -> None:
    instance, workstation = collected_case(run, fleet)
    case_tag = [{"Name": "tag:ec2ir:case", "Values": [CASE]}]
    snapshots = fleet.ec2.describe_snapshots(OwnerIds=["self"], Filters=case_tag)["Snapshots"]
    before = world(fleet)
    changes.clear()  # the fleet's own set-up is not the dry run's

    planned = run("forensics", "attach", CASE, "--to", workstation, "--dry-run", "--output", "json")
    shown = run("forensics", "attach", CASE, "--to", workstation, "--dry-run")
    refused = run("forensics", "attach", CASE, "--to", instance, "--dry-run")

    assert planned.code == 0, planned.err
    report = planned.json()
    assert report["dry_run"] is True
    copies = report["copies"]
    assert {copy["snapshot_id"] for copy in copies} == {s["SnapshotId"] for s in snapshots}
    zone = report["availability_zone"]
    for copy, device in zip(copies, ["/dev/sdf", "/dev/sdg", "/dev/sdh"], strict=False):
        assert copy["device"] == device and copy["volume_id"] == ""
        assert copy["calls"] == [
            f"ec2:CreateVolume {copy['snapshot_id']} {zone}",
            f"ec2:AttachVolume (new volume) {workstation} {device}",
        ]
        assert copy["result"].startswith("would: attach a volume from")
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"DRY RUN for case {CASE}")
    assert "would CreateVolume, AttachVolume" in shown.out
    assert "dry run, nothing changed" in shown.out and "ro,noload" not in shown.out
    assert refused.code == EXIT_USAGE  # the compromised instance itself: refused as attach refuses it
    assert "compromised instances" in one_line_error(refused)
    assert changes == []
    assert world(fleet) == before  # no volume, no attachment, no journal entry


def test_forensics_detach_dry_run_lists_what_it_would_detach_and_delete(
    run: Cli, fleet: Fleet, changes: list[str]
) -> None:
    _, workstation = collected_case(run, fleet)
    attached = run("forensics", "attach", CASE, "--to", workstation, "--output", "json")
    assert attached.code == 0, attached.err
    copies = {c["volume_id"]: c["device"] for c in attached.json()["copies"]}
    before = world(fleet)
    changes.clear()  # the fleet's own set-up is not the dry run's

    planned = run("forensics", "detach", CASE, "--dry-run", "--output", "json")
    shown = run("forensics", "detach", CASE, "--dry-run")

    assert planned.code == 0, planned.err
    report = planned.json()
    assert report["dry_run"] is True
    assert {c["volume_id"] for c in report["copies"]} == set(copies)
    for copy in report["copies"]:
        volume = copy["volume_id"]
        assert copy["calls"] == [
            f"ec2:DetachVolume {volume} {workstation} {copies[volume]}",
            f"ec2:DeleteVolume {volume}",
        ]
    assert shown.code == 0, shown.err
    assert "would DetachVolume, DeleteVolume" in shown.out
    assert "would be detached and deleted" in shown.out
    assert changes == []
    assert world(fleet) == before  # still attached, nothing journaled


@pytest.mark.evidence
def test_the_objects_the_plan_names_are_the_objects_the_run_writes(run: Cli, fleet: Fleet) -> None:
    # The plan lists the metadata objects from a list of its own (evidence.METADATA_FILES); the
    # run writes them from evidence.metadata_items: the two must not drift apart.
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    planned = run("isolate", instance, "--case", CASE, "--dry-run", "--output", "json")
    isolated = run("isolate", instance, "--case", CASE, "--output", "json")

    assert planned.code == 0 and isolated.code == 0, isolated.err
    steps = planned.json()["evidence"]["instances"][instance]
    named = {key.rsplit("/", 1)[1] for [key] in calls(steps, "s3:PutObject")}
    [result] = isolated.json()["results"]
    written = {
        ref["location"].rsplit("/", 1)[1] for ref in result["evidence"] if ref["location"].startswith("s3://")
    }
    assert named == written
