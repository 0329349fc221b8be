"""The outbreak from the command line: one case over four places (two Regions of the responder's
account, two of a member account through --role-name), isolated in one command, then seen whole by
status, status --check and report, and released exactly by bare ids."""

from __future__ import annotations

import pytest

from ec2ir.aws.session import Aws
from tests.conftest import Cli, one_line_error
from tests.support.faults import Fault, inject
from tests.support.outbreak import HOME_OTHER_REGION, MEMBER, ROLE, OutbreakScene, outbreak_scene

CASE = "IR-WIDE"


@pytest.fixture
def scene(aws: Aws) -> OutbreakScene:
    return outbreak_scene(aws)


def test_one_command_isolates_four_places_and_status_report_and_release_see_them_all(
    run: Cli, scene: OutbreakScene
) -> None:
    isolated = run("isolate", *scene.references(), "--case", CASE, "--role-name", ROLE, "--output", "json")
    assert isolated.code == 0, isolated.err
    results = isolated.json()["results"]
    assert all(r["ok"] for r in results)
    assert [(r["instance_id"], r["account"], r["region"]) for r in results] == [
        (i.instance_id, i.place.account, i.place.region) for i in scene.infected
    ]

    status = run("status", "--case", CASE, "--role-name", ROLE)
    assert status.code == 0, status.err
    assert "PLACE" in status.out
    for infected in scene.infected:
        assert infected.instance_id in status.out
    assert f"{MEMBER}/" in status.out

    checked = run("status", "--check", "--case", CASE, "--role-name", ROLE, "--output", "json")
    assert checked.code == 0, checked.err
    assert sorted(checked.json()["checked"]) == sorted(i.instance_id for i in scene.infected)

    report = run("report", CASE)
    assert report.code == 0, report.err
    for infected in scene.infected:
        assert infected.instance_id in report.out

    released = run("release", *(i.instance_id for i in scene.infected), "--case", CASE, "--role-name", ROLE)
    assert released.code == 0, released.err
    for infected in scene.infected:
        assert scene.groups_now(infected) == {infected.group_id}


def test_check_without_the_role_names_the_member_account_as_not_checked(
    run: Cli, scene: OutbreakScene
) -> None:
    assert run("isolate", *scene.references(), "--case", CASE, "--role-name", ROLE).code == 0

    checked = run("status", "--check", "--case", CASE, "--output", "json")

    assert checked.code != 0
    kinds = {(b["kind"], b["subject"].split("/")[0]) for b in checked.json()["breaches"]}
    assert kinds == {("not-checked", MEMBER)}


def test_regions_finds_bare_ids_in_each_region_of_the_account(run: Cli, scene: OutbreakScene) -> None:
    own = [i for i in scene.infected if i.place.account != MEMBER]

    isolated = run(
        "isolate",
        *(i.instance_id for i in own),
        "--case",
        CASE,
        "--regions",
        f"us-east-1,{HOME_OTHER_REGION}",
        "--output",
        "json",
    )

    assert isolated.code == 0, isolated.err
    assert [r["region"] for r in isolated.json()["results"]] == ["us-east-1", HOME_OTHER_REGION]
    for infected in own:
        assert scene.groups_now(infected) != {infected.group_id}


def test_a_bad_region_list_is_refused_before_anything_changes(
    run: Cli, scene: OutbreakScene, capsys: pytest.CaptureFixture[str]
) -> None:
    first = scene.infected[0]
    with pytest.raises(SystemExit) as refused:
        run("isolate", first.instance_id, "--case", CASE, "--regions", "us-east-1,mars-1\x1b[2J")
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "is not a Region name" in error and "\x1b" not in error
    assert scene.groups_now(first) == {first.group_id}


def test_a_region_that_cannot_be_read_is_named_and_the_others_proceed(scene: OutbreakScene) -> None:
    own = [i for i in scene.infected if i.place.account != MEMBER]
    home, other = own
    unreadable = inject(scene.places.aws_at(other.place), Fault("ec2", "DescribeInstances", "OptInRequired"))

    references = scene.outbreak.places.place_ids(
        [i.instance_id for i in own], ["us-east-1", HOME_OTHER_REGION]
    )
    report = scene.outbreak.isolate(references, CASE)

    assert unreadable.injected
    assert list(scene.outbreak.places.unreachable) == [other.place]
    assert "OptInRequired" in str(scene.outbreak.places.unreachable[other.place])
    assert [r.ok for r in report.results] == [True, False]  # the other is not found at home
    assert scene.groups_now(home) != {home.group_id}
    assert scene.groups_now(other) == {other.group_id}


def test_a_role_name_that_is_no_iam_name_is_refused_before_anything_changes(
    run: Cli, scene: OutbreakScene, capsys: pytest.CaptureFixture[str]
) -> None:
    first = scene.infected[0]
    with pytest.raises(SystemExit) as refused:
        run("isolate", *scene.references(), "--case", CASE, "--role-name", "ec2ir responder\x1b[2J")
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "is not an IAM role name" in error and "\x1b" not in error
    assert scene.groups_now(first) == {first.group_id}


@pytest.mark.evidence
def test_wait_follows_each_place_s_snapshots_in_their_own_region(run: Cli, scene: OutbreakScene) -> None:
    isolated = run("isolate", *scene.references(), "--case", CASE, "--role-name", ROLE, "--wait")

    assert isolated.code == 0, isolated.err
    waited = [line for line in isolated.err.splitlines() if "snapshot(s) completed" in line]
    assert waited == ["ec2ir: 1 of 1 snapshot(s) completed"] * len(scene.infected)


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ([], "--via stepfunctions needs --outbreak-stack NAME"),
        (["--outbreak-stack", "ir", "--memory"], "--memory cannot go through --via stepfunctions"),
        (["--outbreak-stack", "ir", "--block-ip", "203.0.113.9"], "--block-ip cannot go through"),
        (["--outbreak-stack", "no-such-stack"], "no-such-stack"),
    ],
)
def test_via_stepfunctions_is_refused_before_anything_starts_when_it_cannot_be_the_run_asked_for(
    run: Cli, scene: OutbreakScene, extra: list[str], refusal: str
) -> None:
    first = scene.infected[0]

    refused = run(
        "isolate", *scene.references(), "--case", CASE, "--role-name", ROLE, "--via", "stepfunctions", *extra
    )

    assert refused.code == 2, refused.err
    assert refusal in one_line_error(refused)
    assert scene.groups_now(first) == {first.group_id}


def test_regions_all_is_every_region_enabled_in_the_account(aws: Aws) -> None:
    from ec2ir.aws.targets import enabled_regions

    regions = enabled_regions(aws)

    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= set(regions)
    assert regions == sorted(set(regions))
