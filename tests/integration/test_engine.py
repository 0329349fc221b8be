"""The engine against the corrected emulator: isolation, exact release, races, drift, failures."""

from __future__ import annotations

import functools

import pytest

from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.containment.steps import Options
from ec2ir.core.errors import StateTableError
from ec2ir.core.models import HoldStatus, VpcGroups
from ec2ir.engine.facade import Engine
from ec2ir.engine.results import RunReport
from ec2ir.store.items import instance_key
from ec2ir.store.state import StateStore
from tests.conftest import race
from tests.support.faults import Fault, inject
from tests.support.fleets import Fleet

OFFICE = "198.51.100.0/24"


def isolation_group(engine: Engine, fleet: Fleet, instance_id: str) -> str:
    groups = {g for eni in fleet.eni_groups([instance_id]).values() for g in eni}
    assert len(groups) == 1, groups
    return groups.pop()


def test_every_eni_of_a_multi_eni_instance_is_isolated_and_released_exactly(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    app, mgmt, backup = fleet.group(vpc, "app"), fleet.group(vpc, "mgmt"), fleet.group(vpc, "backup")
    instance = fleet.instance(vpc, [app], extra_enis=[[mgmt, backup]])
    before = fleet.eni_groups([instance])
    assert len(before) == 2

    report = engine.isolate([instance], "CASE-1", office_cidr=OFFICE)

    assert [r.ok for r in report.results] == [True]
    iso = report.groups[vpc].isolation_group_id
    assert fleet.eni_groups([instance]) == {eni: (iso,) for eni in before}
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.ISOLATED
    assert {eni: tuple(sorted(g)) for eni, g in hold.originals.items()} == before

    released = engine.release([instance], "CASE-1")

    assert [r.ok for r in released.results] == [True]
    assert fleet.eni_groups([instance]) == before


def test_instances_in_two_vpcs_each_get_their_own_vpcs_safe_groups(engine: Engine, fleet: Fleet) -> None:
    vpc_a, vpc_b = fleet.vpc(1), fleet.vpc(2)
    a = fleet.instance(vpc_a, [fleet.group(vpc_a, "web")])
    b = fleet.instance(vpc_b, [fleet.group(vpc_b, "db")])

    report = engine.isolate([a, b], "CASE-1", office_cidr=OFFICE)

    assert all(r.ok for r in report.results)
    assert set(report.groups) == {vpc_a, vpc_b}
    for vpc, instance in ((vpc_a, a), (vpc_b, b)):
        groups = report.groups[vpc]
        assert isolation_group(engine, fleet, instance) == groups.isolation_group_id
        assert fleet.group_rules(groups.isolation_group_id) == {
            (False, "tcp/22", groups.forensic_group_id),
            (True, "-1/-1", "127.0.0.1/32"),
        }
        assert fleet.group_rules(groups.forensic_group_id) == {
            (False, "tcp/22", OFFICE),
            (True, "-1/-1", "0.0.0.0/0"),
        }
    assert report.groups[vpc_a].isolation_group_id != report.groups[vpc_b].isolation_group_id


def test_groups_are_found_again_by_tag_not_duplicated(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], "CASE-1", office_cidr=OFFICE)
    second = engine.isolate([fleet.instance(vpc, [web])], "CASE-1")

    assert first.groups[vpc].isolation_group_id == second.groups[vpc].isolation_group_id
    assert second.groups[vpc].created == ()
    assert len(fleet.ec2ir_groups()) == 3  # forensic, isolation, allow-all


def test_isolating_twice_keeps_the_first_originals(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])

    engine.isolate([instance], "CASE-1", office_cidr=OFFICE)
    again = engine.isolate([instance], "CASE-1", office_cidr=OFFICE)

    assert again.results[0].ok and "originals kept" in again.results[0].detail
    hold = engine.store.get(instance)
    assert hold is not None
    assert {eni: tuple(sorted(g)) for eni, g in hold.originals.items()} == before
    engine.release([instance], "CASE-1")
    assert fleet.eni_groups([instance]) == before


def test_two_concurrent_isolations_of_one_instance_record_only_the_originals(
    emulator: object, engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instances = [
        fleet.instance(vpc, [fleet.group(vpc, f"g{i}")], extra_enis=[[fleet.group(vpc, f"m{i}")]])
        for i in range(4)
    ]
    before = fleet.eni_groups(instances)
    endpoint = engine.aws.settings.endpoint_url

    def responder() -> Engine:
        aws = Aws(AwsSettings(region="us-east-1", endpoint_url=endpoint))
        aws.ec2()
        return Engine(aws, StateStore(aws), concurrency=4)

    reports = race(2, responder, lambda responder: responder.isolate(instances, "CASE-1"))

    assert len(reports) == 2
    for report in reports:
        assert isinstance(report, RunReport), report
        assert all(r.ok for r in report.results), [r.detail for r in report.results]
    for instance in instances:
        hold = engine.store.get(instance)
        assert hold is not None and hold.status is HoldStatus.ISOLATED
        recorded = {eni: tuple(sorted(g)) for eni, g in hold.originals.items()}
        assert recorded == {eni: g for eni, g in before.items() if eni in recorded}
        assert len(recorded) == 2
    engine.release(instances, "CASE-1")
    assert fleet.eni_groups(instances) == before


def test_a_drifted_isolation_group_is_repaired_before_use(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], "CASE-1", office_cidr=OFFICE)
    groups = first.groups[vpc]
    fleet.ec2.authorize_security_group_egress(
        GroupId=groups.isolation_group_id,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    fleet.ec2.authorize_security_group_ingress(
        GroupId=groups.isolation_group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 3389, "ToPort": 3389, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        ],
    )

    second = engine.isolate([fleet.instance(vpc, [web])], "CASE-1")

    assert all(r.ok for r in second.results)
    assert any("had drifted: revoked egress all traffic to 0.0.0.0/0" in n for n in second.notes)
    assert any("revoked ingress tcp/3389 from 0.0.0.0/0" in n for n in second.notes)
    assert fleet.group_rules(groups.isolation_group_id) == {
        (False, "tcp/22", groups.forensic_group_id),
        (True, "-1/-1", "127.0.0.1/32"),
    }


def test_a_drifted_group_that_cannot_be_repaired_is_never_used(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], "CASE-1", office_cidr=OFFICE)
    fleet.ec2.authorize_security_group_egress(
        GroupId=first.groups[vpc].isolation_group_id,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    inject(engine.aws, Fault("ec2", "RevokeSecurityGroupEgress", "UnauthorizedOperation", status=403))
    victim = fleet.instance(vpc, [web])
    before = fleet.eni_groups([victim])

    report = engine.isolate([victim], "CASE-1")

    result = report.results[0]
    assert not result.ok and result.error_code == "UnauthorizedOperation"
    assert "ec2:RevokeSecurityGroupEgress" in result.detail
    assert fleet.eni_groups([victim]) == before
    assert engine.store.get(victim) is None


def test_unknown_and_terminated_instances_do_not_stop_the_others(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    good, gone = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    fleet.ec2.terminate_instances(InstanceIds=[gone])
    unknown = "i-0123456789abcdef0"

    report = engine.isolate([unknown, good, gone], "CASE-1", office_cidr=OFFICE)

    outcome = {r.instance_id: (r.ok, r.error_code) for r in report.results}
    assert outcome == {
        unknown: (False, "InvalidInstanceID.NotFound"),
        good: (True, ""),
        gone: (False, "InstanceTerminated"),
    }
    assert [r.instance_id for r in report.results] == [unknown, good, gone]
    assert isolation_group(engine, fleet, good) == report.groups[vpc].isolation_group_id


def test_a_stopped_instance_is_still_isolated(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    fleet.ec2.stop_instances(InstanceIds=[instance])

    report = engine.isolate([instance], "CASE-1")

    assert report.results[0].ok
    assert isolation_group(engine, fleet, instance) == report.groups[vpc].isolation_group_id


def test_releasing_an_instance_that_is_not_isolated_changes_nothing(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])
    engine.store.ensure_table()  # with no table at all, release refuses outright (test_contained)

    report = engine.release([instance], "CASE-1")

    assert [(r.ok, r.error_code) for r in report.results] == [(False, "NotIsolated")]
    assert fleet.eni_groups([instance]) == before
    assert engine.store.get(instance) is None


def test_another_case_can_neither_take_over_nor_release_an_instance(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])
    engine.isolate([instance], "CASE-1")

    isolate_b = engine.isolate([instance], "CASE-2")
    release_b = engine.release([instance], "CASE-2")

    for report in (isolate_b, release_b):
        result = report.results[0]
        assert (result.ok, result.error_code) == (False, "HeldByOtherCase")
        assert "held by case CASE-1" in result.detail
    hold = engine.store.get(instance)
    assert hold is not None and hold.case_id == "CASE-1" and hold.status is HoldStatus.ISOLATED
    engine.release([instance], "CASE-1")
    assert fleet.eni_groups([instance]) == before


def test_release_keeps_the_record_and_a_new_incident_archives_it(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web, db = fleet.group(vpc, "web"), fleet.group(vpc, "db")
    instance = fleet.instance(vpc, [web])
    engine.isolate([instance], "CASE-1")
    engine.release([instance], "CASE-1")
    first = engine.store.get(instance)
    assert first is not None and first.status is HoldStatus.RELEASED and first.released_by

    eni = next(iter(fleet.eni_groups([instance])))
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[db])
    engine.isolate([instance], "CASE-2")
    engine.release([instance], "CASE-2")

    assert fleet.eni_groups([instance]) == {eni: (db,)}
    archived = engine.aws.dynamodb().get_item(
        TableName=engine.store.table, Key=instance_key(instance, f"hold#{first.recorded_at}")
    )["Item"]
    assert archived["case_id"]["S"] == "CASE-1" and archived["status"]["S"] == "released"
    assert [h.case_id for h in engine.status(include_released=True)] == ["CASE-2"]
    assert engine.status() == []


def test_an_eni_attached_after_isolation_is_recorded_and_isolated(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], "CASE-1")
    late = fleet.attach_eni(instance, vpc, [fleet.group(vpc, "late")], 1)
    late_groups = fleet.eni_groups([instance])[late]

    report = engine.isolate([instance], "CASE-1")

    iso = report.groups[vpc].isolation_group_id
    assert fleet.eni_groups([instance])[late] == (iso,)
    hold = engine.store.get(instance)
    assert hold is not None and hold.originals[late] == late_groups
    engine.release([instance], "CASE-1")
    assert fleet.eni_groups([instance])[late] == late_groups


def test_an_eni_already_in_the_isolation_group_with_no_record_is_isolated_and_never_restored_blindly(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web, mgmt = fleet.group(vpc, "web"), fleet.group(vpc, "mgmt")
    first = engine.isolate([fleet.instance(vpc, [web])], "CASE-1")
    isolation = first.groups[vpc].isolation_group_id
    stray = fleet.instance(vpc, [isolation], extra_enis=[[mgmt]])

    report = engine.isolate([stray], "CASE-1", options=Options(evidence=False))

    result = report.results[0]
    assert result.ok, result.detail
    assert set(fleet.eni_groups([stray]).values()) == {(isolation,)}  # the second ENI is cut too
    assert result.warnings and "never known" in result.warnings[0]
    hold = engine.store.get(stray)
    assert hold is not None and len(hold.unknown_originals) == 1
    assert list(hold.originals.values()) == [(mgmt,)]  # the isolation group is never an original

    released = engine.release([stray], "CASE-1").results[0]

    assert released.warnings and "NOT restored" in released.warnings[0]
    assert sorted(fleet.eni_groups([stray]).values()) == sorted([(isolation,), (mgmt,)])


def test_throttled_calls_are_retried_not_reported(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    fault = inject(
        engine.aws,
        Fault("ec2", "ModifyNetworkInterfaceAttribute", "RequestLimitExceeded", status=503, times=2),
    )

    report = engine.isolate([instance], "CASE-1")

    assert report.results[0].ok
    # the allow-all swap retried twice; the swap out of allow-all goes through the urgent clients
    assert (fault.injected, fault.attempts) == (2, 3)
    isolation = report.groups[vpc].isolation_group_id
    assert set(fleet.eni_groups([instance]).values()) == {(isolation,)}


def test_a_missing_permission_names_the_iam_action_and_loses_nothing(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])
    fault = inject(
        engine.aws, Fault("ec2", "ModifyNetworkInterfaceAttribute", "UnauthorizedOperation", status=403)
    )

    report = engine.isolate([instance], "CASE-1")

    result = report.results[0]
    assert (result.ok, result.error_code) == (False, "UnauthorizedOperation")
    assert "missing IAM permission ec2:ModifyNetworkInterfaceAttribute" in result.detail
    assert fleet.eni_groups([instance]) == before
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.ISOLATING
    assert {eni: tuple(sorted(g)) for eni, g in hold.originals.items()} == before

    fault.times = fault.injected  # the permission is granted
    assert engine.isolate([instance], "CASE-1").results[0].ok
    engine.release([instance], "CASE-1")
    assert fleet.eni_groups([instance]) == before


@pytest.mark.parametrize("then", ["isolate-again", "release"])
def test_a_run_that_dies_between_two_enis_loses_nothing(engine: Engine, fleet: Fleet, then: str) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])
    fault = inject(
        engine.aws,
        Fault("ec2", "ModifyNetworkInterfaceAttribute", "InternalError", status=400, skip=1, times=1),
    )

    crashed = engine.isolate([instance], "CASE-1")

    assert not crashed.results[0].ok and fault.injected == 1
    half = fleet.eni_groups([instance])
    assert half != before and len({g for groups in half.values() for g in groups}) == 2
    if then == "isolate-again":
        assert engine.isolate([instance], "CASE-1").results[0].ok
    assert engine.release([instance], "CASE-1").results[0].ok
    assert fleet.eni_groups([instance]) == before


def test_an_interrupted_release_is_finished_by_releasing_again(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")], extra_enis=[[fleet.group(vpc, "mgmt")]])
    before = fleet.eni_groups([instance])
    engine.isolate([instance], "CASE-1")
    inject(  # the first ENI is restored, the second is not
        engine.aws,
        Fault("ec2", "ModifyNetworkInterfaceAttribute", "InternalError", status=400, skip=1, times=1),
    )

    assert not engine.release([instance], "CASE-1").results[0].ok
    hold = engine.store.get(instance)
    assert hold is not None and hold.status is HoldStatus.RELEASING
    refused = engine.isolate([instance], "CASE-1").results[0]
    assert (refused.ok, refused.error_code) == (False, "ReleaseInProgress")

    assert engine.release([instance], "CASE-1").results[0].ok
    assert fleet.eni_groups([instance]) == before


def test_the_state_table_is_created_on_demand_and_encrypted(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    engine.isolate([fleet.instance(vpc, [fleet.group(vpc, "web")])], "CASE-1")

    table = engine.aws.dynamodb().describe_table(TableName="ec2ir-state")["Table"]

    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"


def test_a_foreign_table_is_refused_before_anything_changes(aws: Aws, fleet: Fleet) -> None:
    aws.dynamodb().create_table(
        TableName="someone-elses",
        KeySchema=[{"AttributeName": "InstanceId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "InstanceId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    before = fleet.eni_groups([instance])

    with pytest.raises(StateTableError, match="not an ec2ir state table"):
        Engine(aws, StateStore(aws, "someone-elses")).isolate([instance], "CASE-1")

    assert fleet.eni_groups([instance]) == before
    assert fleet.ec2ir_groups() == []


def test_status_says_who_isolated_what_and_since_when(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    a, b = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    engine.isolate([a], "CASE-1")
    engine.isolate([b], "CASE-2")

    holds = engine.status("CASE-2")

    assert [h.instance_id for h in holds] == [b]
    assert holds[0].recorded_by.startswith("arn:aws:")
    assert holds[0].isolated_at >= holds[0].recorded_at
    assert list(holds[0].originals.values()) == [(web,)]


def ensure_groups_in(vpc_id: str, aws: Aws) -> VpcGroups:
    from ec2ir.containment.groups import ensure_vpc_groups

    return ensure_vpc_groups(aws, StateStore(aws), vpc_id, "CASE-1", OFFICE)


@pytest.mark.slow
@pytest.mark.parametrize("drifted", [False, True], ids=["new-vpc", "drifted-groups"])
def test_racing_runs_agree_on_one_pair_of_safe_groups_per_vpc(
    engine: Engine, fleet: Fleet, drifted: bool
) -> None:
    from ec2ir.containment.groups import ensure_vpc_groups

    endpoint = engine.aws.settings.endpoint_url
    engine.store.ensure_table()
    for attempt in range(3):
        vpc = fleet.vpc(10 + attempt)
        if drifted:
            made = ensure_vpc_groups(engine.aws, engine.store, vpc, "CASE-0", OFFICE)
            fleet.ec2.authorize_security_group_egress(
                GroupId=made.isolation_group_id,
                IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
            )
            fleet.ec2.revoke_security_group_egress(
                GroupId=made.isolation_group_id,
                IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}],
            )

        def fresh_client() -> Aws:
            aws = Aws(AwsSettings(region="us-east-1", endpoint_url=endpoint))
            aws.ec2(), aws.dynamodb()  # built before the start line, so the racers really overlap
            return aws

        outcomes = race(4, fresh_client, functools.partial(ensure_groups_in, vpc))

        assert len(outcomes) == 4 and all(isinstance(g, VpcGroups) for g in outcomes), outcomes
        pairs = {(g.forensic_group_id, g.isolation_group_id) for g in outcomes if isinstance(g, VpcGroups)}
        assert len(pairs) == 1, pairs
        [(forensic, isolation)] = pairs
        assert fleet.group_rules(isolation) == {(False, "tcp/22", forensic), (True, "-1/-1", "127.0.0.1/32")}


def test_a_repeated_instance_id_is_worked_on_once_and_noted(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([instance, instance], "CASE-1")

    assert [r.instance_id for r in report.results] == [instance]
    assert "ignored 1 repeated instance id(s)" in report.notes


def test_an_outside_forensic_group_is_admitted_and_left_alone(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    security_team = fleet.group(vpc, "security-team-forensics")
    fleet.ec2.authorize_security_group_ingress(
        GroupId=security_team,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": OFFICE}]}],
    )
    its_rules = fleet.group_rules(security_team)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate(
        [instance], "CASE-1", office_cidr="203.0.113.0/24", options=Options(forensic_group=security_team)
    )

    assert report.results[0].ok, report.results[0].detail
    groups = report.groups[vpc]
    assert groups.forensic_group_id == security_team and "forensic" not in groups.created
    assert fleet.group_rules(groups.isolation_group_id) == {
        (False, "tcp/22", security_team),
        (True, "-1/-1", "127.0.0.1/32"),
    }
    assert fleet.group_rules(security_team) == its_rules  # not ours to change
    names = {g["GroupName"] for g in fleet.ec2.describe_security_groups()["SecurityGroups"]}
    assert not any(name.startswith("ec2ir-forensic") for name in names)


def test_safe_groups_cost_no_second_read_and_drift_is_still_repaired(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first, second, third = (fleet.instance(vpc, [web]) for _ in range(3))
    engine.isolate([first], "CASE-1", office_cidr=OFFICE, options=Options(evidence=False))
    operations: list[str] = []
    engine.aws.ec2().meta.events.register(
        "before-parameter-build.ec2", lambda model, **_: operations.append(model.name)
    )

    engine.isolate([second], "CASE-1", office_cidr=OFFICE, options=Options(evidence=False))

    assert "DescribeSecurityGroupRules" not in operations  # the rules came with the groups' read
    isolation_id = next(iter(fleet.eni_groups([second]).values()))[0]
    fleet.ec2.authorize_security_group_egress(
        GroupId=isolation_id, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    operations.clear()

    report = engine.isolate([third], "CASE-1", office_cidr=OFFICE, options=Options(evidence=False))

    assert report.results[0].ok
    assert "DescribeSecurityGroupRules" in operations
    assert (True, "-1/-1", "0.0.0.0/0") not in fleet.group_rules(isolation_id)
    assert any("had drifted" in note for note in report.notes)
