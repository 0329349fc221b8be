"""One case across four places (two Regions of the run's account, two of a member account through
an assumed role): isolate, status, check, report and exact release, each place by its own clients."""

from __future__ import annotations

import pytest

from ec2ir.aws.session import Aws
from ec2ir.core.models import HoldStatus, Place
from ec2ir.emulator.inprocess import InProcessEmulator
from ec2ir.engine.outbreak import Outbreak
from ec2ir.engine.places import Places
from ec2ir.store.items import instance_key
from ec2ir.store.state import StateStore
from tests.support.faults import refusing_assume_role
from tests.support.outbreak import MEMBER, ROLE, OutbreakScene, outbreak_scene

CASE = "IR-OUTBREAK"


@pytest.fixture
def scene(aws: Aws) -> OutbreakScene:
    return outbreak_scene(aws)


def test_one_isolate_contains_every_place_each_in_its_own_isolation_group(scene: OutbreakScene) -> None:
    report = scene.outbreak.isolate(scene.references(), CASE)

    assert [r.instance_id for r in report.results] == [i.instance_id for i in scene.infected]
    assert all(r.ok for r in report.results), [r.detail for r in report.results]
    for infected in scene.infected:
        [isolation] = scene.groups_now(infected)
        fleet = scene.fleet(infected.place)
        assert isolation in fleet.ec2ir_groups(), f"{infected.place} is not in its own isolation group"
        assert isolation != infected.group_id
    assert [r.place for r in report.results] == [i.place for i in scene.infected]
    # a note every place made is said once, without a place
    assert len([n for n in report.notes if "isolation limits" in n]) == 1


def test_every_place_s_hold_is_in_the_run_s_table_keyed_by_its_place(scene: OutbreakScene, aws: Aws) -> None:
    scene.outbreak.isolate(scene.references(), CASE)

    holds = scene.outbreak.store.holds_everywhere(CASE)
    assert {h.instance_id for h in holds} == {i.instance_id for i in scene.infected}
    home = scene.places.home_place()
    for infected in scene.infected:
        place = None if infected.place == home else infected.place
        item = aws.dynamodb().get_item(
            TableName=scene.outbreak.store.table, Key=instance_key(infected.instance_id, place=place)
        )["Item"]
        assert item["case_id"]["S"] == CASE
    # the home place's holds keep the key every hold had before runs spanned places
    first = scene.infected[0]
    legacy_key = {"pk": {"S": f"instance#{first.instance_id}"}, "sk": {"S": "hold"}}
    assert aws.dynamodb().get_item(TableName=scene.outbreak.store.table, Key=legacy_key).get("Item")


def test_status_and_check_see_the_whole_case_and_a_breach_in_a_member_account(scene: OutbreakScene) -> None:
    scene.outbreak.isolate(scene.references(), CASE)
    held = scene.outbreak.status(CASE)
    expected = {(i.instance_id, HoldStatus.ISOLATED) for i in scene.infected}
    assert {(h.instance_id, h.status) for h in held} == expected
    assert scene.outbreak.check(CASE).ok

    member = next(i for i in scene.infected if i.place.account == MEMBER)
    fleet = scene.fleet(member.place)
    [eni] = fleet.eni_groups([member.instance_id])
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[member.group_id])

    checked = scene.outbreak.check(CASE)
    assert not checked.ok
    assert [b.subject for b in checked.breaches] == [member.instance_id]


def test_release_by_bare_id_finds_each_place_in_its_hold_and_restores_exactly(scene: OutbreakScene) -> None:
    scene.outbreak.isolate(scene.references(), CASE)

    released = scene.outbreak.release([i.instance_id for i in scene.infected], CASE)

    assert all(r.ok for r in released.results), [r.detail for r in released.results]
    for infected in scene.infected:
        assert scene.groups_now(infected) == {infected.group_id}
    assert {h.status for h in scene.outbreak.store.holds_everywhere(CASE)} == {HoldStatus.RELEASED}


def test_an_account_ec2ir_cannot_reach_fails_its_instances_by_name_and_the_others_are_contained(
    scene: OutbreakScene, aws: Aws
) -> None:
    # no --role-name: the member account cannot be reached
    outbreak = Outbreak(aws, StateStore(aws), concurrency=4, places=Places(aws))

    report = outbreak.isolate(scene.references(), CASE)

    by_id = {r.instance_id: r for r in report.results}
    for infected in scene.infected:
        result = by_id[infected.instance_id]
        if infected.place.account == MEMBER:
            assert not result.ok
            assert MEMBER in result.detail and "--role-name" in result.detail
        else:
            assert result.ok, result.detail
            assert scene.groups_now(infected) != {infected.group_id}


def test_a_hold_item_whose_place_is_not_its_key_s_is_refused(scene: OutbreakScene, aws: Aws) -> None:
    from ec2ir.core.errors import OriginalsTampered

    scene.outbreak.isolate(scene.references(), CASE)
    first = scene.infected[0]  # the home place's: keyed by its id alone
    aws.dynamodb().update_item(
        TableName=scene.outbreak.store.table,
        Key=instance_key(first.instance_id),
        UpdateExpression="SET account = :a, #r = :r",
        ExpressionAttributeNames={"#r": "region"},
        ExpressionAttributeValues={":a": {"S": MEMBER}, ":r": {"S": "us-east-1"}},
    )

    with pytest.raises(OriginalsTampered):
        scene.outbreak.store.holds_everywhere(CASE)


def test_an_arn_in_another_partition_is_refused_before_anything_changes(scene: OutbreakScene) -> None:
    from ec2ir.core.errors import UsageError

    first = scene.infected[0]
    with pytest.raises(UsageError, match="partition"):
        scene.outbreak.isolate([f"arn:aws-cn:ec2:cn-north-1:{MEMBER}:instance/{first.instance_id}"], CASE)
    assert scene.groups_now(first) == {first.group_id}


def test_places_are_distinct_sessions(scene: OutbreakScene) -> None:
    home = scene.places.home_place()
    other = scene.places.aws_at(Place(home.account, "eu-west-1"))
    assert other is not scene.places.home
    assert other.region() == "eu-west-1"
    assert scene.places.aws_at(Place(MEMBER, "us-east-1")).account() == MEMBER


@pytest.mark.evidence  # the member account's evidence and S3 clients are watched too
def test_the_member_policy_covers_every_call_made_in_a_member_account_and_none_reaches_its_table(
    scene: OutbreakScene,
) -> None:
    from ec2ir.permissions.policy import required_actions
    from tests.support.recorders import CallRecorder

    member = next(i for i in scene.infected if i.place.account == MEMBER)
    there = scene.outbreak.engine_at(member.place)
    recorder = CallRecorder(there.aws, there.lanes_aws, there.urgent_aws, there.evidence_aws)

    scene.outbreak.isolate([member.arn], CASE, office_cidr="198.51.100.0/24")
    scene.outbreak.release([member.instance_id], CASE)

    called = recorder.actions()
    assert called - set(required_actions(member=True)) == set()
    assert {"ec2:ModifyNetworkInterfaceAttribute", "ec2:CreateSnapshots", "s3:PutObject"} <= called
    assert not {a for a in called if a.startswith("dynamodb:")}  # the case's state stays at home
    assert "sts:AssumeRole" in required_actions() and "sts:AssumeRole" not in required_actions(member=True)


def test_a_hold_item_naming_no_real_place_is_refused_and_never_printed(
    scene: OutbreakScene, aws: Aws
) -> None:
    from ec2ir.core.errors import OriginalsTampered

    scene.outbreak.isolate(scene.references(), CASE)
    member = next(i for i in scene.infected if i.place.account == MEMBER)
    table, key = scene.outbreak.store.table, instance_key(member.instance_id, place=member.place)
    item = aws.dynamodb().get_item(TableName=table, Key=key)["Item"]
    forged = "us-east-1\x1b[2J"
    item |= {"region": {"S": forged}, "pk": {"S": f"instance#{MEMBER}:{forged}:{member.instance_id}"}}
    aws.dynamodb().put_item(TableName=table, Item=item)

    with pytest.raises(OriginalsTampered, match="names no real account and Region") as refused:
        scene.outbreak.store.holds_everywhere(CASE)
    assert "\x1b" not in str(refused.value)


@pytest.mark.evidence
def test_a_bucket_named_for_the_run_is_its_own_account_s_and_a_member_s_evidence_stays_in_the_member(
    scene: OutbreakScene,
) -> None:
    from ec2ir.containment.steps import Options

    report = scene.outbreak.isolate(
        scene.references(), CASE, options=Options(evidence_bucket="ir-2026-050-evidence")
    )

    assert all(r.ok and not r.evidence_failed for r in report.results), [
        (r.detail, r.evidence_failed) for r in report.results
    ]
    for result in report.results:
        assert result.place is not None
        buckets = {ref.location.split("/")[2] for ref in result.evidence if ref.location.startswith("s3://")}
        expected = (
            {f"ec2ir-evidence-{MEMBER}-{result.place.region}"}
            if result.place.account == MEMBER
            else {"ir-2026-050-evidence"}
        )
        assert buckets == expected, (result.place, buckets)


def test_a_role_that_cannot_be_assumed_fails_that_account_s_instances_by_name_and_the_others_proceed(
    aws: Aws, emulator: InProcessEmulator
) -> None:
    scene = outbreak_scene(aws)  # built with the role; the run below must assume it afresh
    places = Places(aws, role_name=ROLE)
    outbreak = Outbreak(aws, StateStore(aws), concurrency=4, places=places)

    with refusing_assume_role(emulator, places.role_arn(MEMBER)) as refused:
        report = outbreak.isolate(scene.references(), CASE)

    assert refused
    by_id = {r.instance_id: r for r in report.results}
    for infected in scene.infected:
        result = by_id[infected.instance_id]
        if infected.place.account == MEMBER:
            assert (result.ok, result.error_code) == (False, "AccessDenied"), result
            assert "sts:AssumeRole" in result.detail
            assert scene.groups_now(infected) == {infected.group_id}
        else:
            assert result.ok, result.detail
    assert not [h for h in outbreak.store.holds_everywhere(CASE) if h.place and h.place.account == MEMBER]


def test_the_dry_run_plans_every_place_and_says_the_table_s_creation_once(scene: OutbreakScene) -> None:
    plan = scene.outbreak.plan(scene.references(), CASE)

    assert set(plan.instances) == {i.instance_id for i in scene.infected}
    assert not plan.would_fail, (plan.refused, plan.denied)
    assert len([line for line in plan.setup if "create the state table" in line]) == 1
    for infected in scene.infected:
        assert any(line.startswith(f"{infected.place}: ") for line in plan.setup)
    assert not scene.outbreak.store.exists()  # nothing changed: not even the table was made


@pytest.mark.evidence
def test_with_evidence_in_every_place_verify_finds_it_all_intact_and_release_proves_every_hold(
    scene: OutbreakScene,
) -> None:
    scene.outbreak.isolate(scene.references(), CASE)

    findings = scene.outbreak.verify(CASE)

    assert [f"{f.status}: {f.ref.location} {f.detail}" for f in findings if not f.ok] == []
    snapshots = [f for f in findings if f.ref.kind == "snapshot"]
    assert len(snapshots) == len(scene.infected)
    released = scene.outbreak.release([i.instance_id for i in scene.infected], CASE)
    assert [(r.instance_id, r.warnings) for r in released.results if not r.ok or r.warnings] == []


def _denies(scene: OutbreakScene, infected: object, cidr: str) -> int:
    from tests.support.outbreak import Infected

    assert isinstance(infected, Infected)
    acls = scene.fleet(infected.place).ec2.describe_network_acls()["NetworkAcls"]
    return sum(
        1
        for acl in acls
        for entry in acl["Entries"]
        if entry.get("CidrBlock") == cidr and entry["RuleAction"] == "deny"
    )


def test_block_ip_denies_at_every_place_s_edge_and_release_removes_each_place_s_entries(
    scene: OutbreakScene,
) -> None:
    from ec2ir.containment.steps import Options

    attacker = "203.0.113.7/32"
    report = scene.outbreak.isolate(scene.references(), CASE, options=Options(block_ips=(attacker,)))
    assert all(r.ok and not r.warnings for r in report.results), [
        (r.detail, r.warnings) for r in report.results
    ]
    assert [_denies(scene, i, attacker) for i in scene.infected] == [2, 2, 2, 2]  # in and out, each place

    released = scene.outbreak.release([i.instance_id for i in scene.infected], CASE)

    assert all(r.ok and not r.warnings for r in released.results), [
        (r.detail, r.warnings) for r in released.results
    ]
    assert [_denies(scene, i, attacker) for i in scene.infected] == [0, 0, 0, 0]


def test_block_ip_and_unblock_ip_reach_every_place_the_case_holds(scene: OutbreakScene) -> None:
    attacker = "198.51.100.66/32"
    scene.outbreak.isolate(scene.references(), CASE)

    blocked = scene.outbreak.block_ip([attacker], CASE)
    assert blocked.ok, blocked.all_notes()
    assert [_denies(scene, i, attacker) for i in scene.infected] == [2, 2, 2, 2]

    unblocked = scene.outbreak.unblock_ip([attacker], CASE)
    assert unblocked.ok, unblocked.all_notes()
    assert [_denies(scene, i, attacker) for i in scene.infected] == [0, 0, 0, 0]


def test_block_ip_reaches_the_members_of_a_case_that_holds_nothing_in_the_run_s_own_place(
    scene: OutbreakScene,
) -> None:
    attacker = "198.51.100.67/32"
    members = [i for i in scene.infected if i.place.account == MEMBER]
    scene.outbreak.isolate([i.arn for i in members], CASE)

    blocked = scene.outbreak.block_ip([attacker], CASE)

    assert blocked.ok, blocked.all_notes()
    assert [_denies(scene, i, attacker) for i in members] == [2, 2]
    unblocked = scene.outbreak.unblock_ip([attacker], CASE)
    assert unblocked.ok, unblocked.all_notes()
    assert [_denies(scene, i, attacker) for i in members] == [0, 0]


def test_two_accounts_of_a_shared_vpc_each_keep_their_own_groups_in_it(aws: Aws) -> None:
    home_store = StateStore(aws)
    home_store.ensure_table()
    member_store = home_store.at(Place(MEMBER, "us-east-1"))
    home_account = aws.account()

    # a VPC shared through RAM: the same id in both accounts' runs
    mine = home_store.record_group("us-east-1", home_account, "vpc-0shared0000000001", "isolation", "sg-0aaa")
    theirs = member_store.record_group("us-east-1", MEMBER, "vpc-0shared0000000001", "isolation", "sg-0bbb")

    assert (mine, theirs) == ("sg-0aaa", "sg-0bbb")
    assert home_store.group_records("us-east-1")["vpc-0shared0000000001"].roles["isolation"] == "sg-0aaa"
    assert member_store.group_records("us-east-1")["vpc-0shared0000000001"].roles["isolation"] == "sg-0bbb"


def test_a_hold_recorded_in_another_account_or_region_is_never_acted_on_here(
    scene: OutbreakScene, aws: Aws
) -> None:
    first = scene.infected[0]  # the table's own place: keyed by its id alone
    scene.outbreak.isolate([first.instance_id], CASE)
    table = scene.outbreak.store.table
    item = aws.dynamodb().get_item(TableName=table, Key=instance_key(first.instance_id))["Item"]
    assert item["recorded_in"]["S"] == f"{aws.account()}/us-east-1"
    # the same table reached from another place (a table ARN, other credentials): as if recorded there
    aws.dynamodb().update_item(
        TableName=table,
        Key=instance_key(first.instance_id),
        UpdateExpression="SET recorded_in = :elsewhere",
        ExpressionAttributeValues={":elsewhere": {"S": "999988887777/eu-west-1"}},
    )
    isolated_groups = scene.groups_now(first)

    released = scene.outbreak.release([first.instance_id], CASE)

    [result] = released.results
    assert (result.ok, result.error_code) == (False, "HoldElsewhere"), result
    assert "999988887777/eu-west-1" in result.detail
    assert scene.groups_now(first) == isolated_groups  # nothing was changed
