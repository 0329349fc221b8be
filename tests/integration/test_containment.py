"""Containment that holds, on a fleet shaped like a real one: every step, its undo, the plan."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ec2ir.containment.steps import Options, revoke_policy_name
from ec2ir.core.models import HoldStatus
from ec2ir.emulator.server import Emulator
from ec2ir.engine.facade import Engine
from ec2ir.permissions.policy import required_actions
from tests.support.faults import Fault, inject
from tests.support.fleets import Fleet
from tests.support.recorders import CallRecorder

CASE = "IR-9"


@dataclass
class RichFleet:
    """An ASG member, a target-group member, a Classic ELB member, an instance with a profile,
    one with termination protection already on, and a multi-ENI instance."""

    vpc: str
    asg: str
    asg_member: str
    target_group: str
    tg_member: str
    classic_elb: str
    elb_member: str
    profiled: str
    role: str
    protected: str
    multi_eni: str

    @property
    def instances(self) -> list[str]:
        return [
            self.asg_member,
            self.tg_member,
            self.elb_member,
            self.profiled,
            self.protected,
            self.multi_eni,
        ]


def build_rich_fleet(fleet: Fleet) -> RichFleet:
    aws = fleet.aws
    vpc = fleet.vpc(1)
    subnet = fleet.subnets[vpc]
    web = fleet.group(vpc, "web")

    asg_member = fleet.asg_member(vpc, [web])

    target_group = fleet.alb_target_group(vpc, [web])
    elbv2 = aws.client("elbv2")
    tg_member = fleet.instance(vpc, [web])
    elbv2.register_targets(TargetGroupArn=target_group, Targets=[{"Id": tg_member, "Port": 8080}])

    elb = aws.client("elb")
    elb.create_load_balancer(
        LoadBalancerName="legacy",
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}],
        Subnets=[subnet],
    )
    elb_member = fleet.instance(vpc, [web])
    elb.register_instances_with_load_balancer(
        LoadBalancerName="legacy", Instances=[{"InstanceId": elb_member}]
    )

    iam = aws.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    profiled = fleet.instance(vpc, [web])
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=profiled)

    protected = fleet.instance(vpc, [web])
    fleet.ec2.modify_instance_attribute(InstanceId=protected, DisableApiTermination={"Value": True})
    fleet.ec2.create_tags(Resources=[protected], Tags=[{"Key": "ec2ir:case", "Value": "OLD-1"}])

    multi_eni = fleet.instance(vpc, [web], extra_enis=[[fleet.group(vpc, "mgmt")]])
    return RichFleet(
        vpc,
        "web-asg",
        asg_member,
        target_group,
        tg_member,
        "legacy",
        elb_member,
        profiled,
        "app-role",
        protected,
        multi_eni,
    )


def observe(fleet: Fleet, rich: RichFleet) -> dict[str, Any]:
    """Everything about the fleet that containment may touch, read without ec2ir's code."""
    aws, ec2 = fleet.aws, fleet.ec2
    state: dict[str, Any] = {"enis": fleet.eni_groups(rich.instances)}
    for instance in rich.instances:
        described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
        state[instance] = {
            "termination": ec2.describe_instance_attribute(
                InstanceId=instance, Attribute="disableApiTermination"
            )["DisableApiTermination"]["Value"],
            "shutdown": ec2.describe_instance_attribute(
                InstanceId=instance, Attribute="instanceInitiatedShutdownBehavior"
            )["InstanceInitiatedShutdownBehavior"]["Value"],
            "delete_on_termination": {
                m["DeviceName"]: m["Ebs"]["DeleteOnTermination"]
                for m in described.get("BlockDeviceMappings", [])
            },
            "tags": {
                t["Key"]: t["Value"] for t in described.get("Tags", []) if t["Key"].startswith("ec2ir:")
            },
        }
    asg = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[rich.asg])[
        "AutoScalingGroups"
    ][0]
    state["asg_members"] = sorted(i["InstanceId"] for i in asg["Instances"])
    state["asg_desired"] = asg["DesiredCapacity"]
    health = aws.client("elbv2").describe_target_health(TargetGroupArn=rich.target_group)
    state["tg_targets"] = sorted(
        (t["Target"]["Id"], t["Target"]["Port"]) for t in health["TargetHealthDescriptions"]
    )
    described_elb = aws.client("elb").describe_load_balancers(LoadBalancerNames=[rich.classic_elb])
    state["elb_members"] = sorted(
        i["InstanceId"] for i in described_elb["LoadBalancerDescriptions"][0]["Instances"]
    )
    associations = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    state["profiles"] = sorted(
        (a["InstanceId"], a["IamInstanceProfile"]["Arn"]) for a in associations if a["State"] == "associated"
    )
    state["role_policies"] = aws.client("iam").list_role_policies(RoleName=rich.role)["PolicyNames"]
    return state


@pytest.fixture
def rich(fleet: Fleet) -> RichFleet:
    return build_rich_fleet(fleet)


def test_isolate_applies_every_step_and_release_undoes_it_exactly(
    engine: Engine, fleet: Fleet, rich: RichFleet
) -> None:
    before = observe(fleet, rich)

    report = engine.isolate(rich.instances, CASE, options=Options(revoke_sessions=True))

    assert all(r.ok for r in report.results), [(r.instance_id, r.steps) for r in report.results]
    during = observe(fleet, rich)
    isolation = report.groups[rich.vpc].isolation_group_id
    assert set(during["enis"].values()) == {(isolation,)}
    for instance in rich.instances:
        assert during[instance]["termination"] is True
        assert during[instance]["shutdown"] == "stop"
        assert set(during[instance]["delete_on_termination"].values()) <= {False}
        assert during[instance]["tags"]["ec2ir:case"] == CASE
        assert during[instance]["tags"]["ec2ir:state"] == "isolated"
    assert rich.asg_member not in during["asg_members"]
    assert during["asg_desired"] == before["asg_desired"]  # capacity is replaced, not shrunk
    assert rich.tg_member not in [target for target, _ in during["tg_targets"]]
    assert rich.elb_member not in during["elb_members"]
    assert rich.profiled not in [instance for instance, _ in during["profiles"]]
    assert revoke_policy_name(CASE) in during["role_policies"]
    deny = json.loads(
        urllib.parse.unquote(
            json.dumps(
                fleet.aws.client("iam").get_role_policy(
                    RoleName=rich.role, PolicyName=revoke_policy_name(CASE)
                )["PolicyDocument"]
            )
        )
    )
    assert deny["Statement"][0]["Effect"] == "Deny"
    assert "aws:TokenIssueTime" in deny["Statement"][0]["Condition"]["DateLessThan"]

    released = engine.release(rich.instances, CASE)

    assert all(r.ok for r in released.results), [(r.instance_id, r.steps) for r in released.results]
    after = observe(fleet, rich)
    expected = dict(before)
    expected["asg_members"] = [i for i in before["asg_members"] if i != rich.asg_member] + [
        i for i in after["asg_members"] if i not in before["asg_members"]
    ]
    expected["asg_members"] = sorted(expected["asg_members"])
    expected["tg_targets"] = [t for t in before["tg_targets"] if t[0] != rich.tg_member]
    expected["elb_members"] = [i for i in before["elb_members"] if i != rich.elb_member]
    for instance in rich.instances:
        expected[instance] = dict(before[instance])
        expected[instance]["tags"] = {**before[instance]["tags"], "ec2ir:state": "released"}
    assert after == expected
    assert after[rich.protected]["termination"] is True
    assert after[rich.protected]["tags"]["ec2ir:case"] == "OLD-1"


def test_release_with_rejoin_puts_the_instance_back_in_service(
    engine: Engine, fleet: Fleet, rich: RichFleet
) -> None:
    before = observe(fleet, rich)
    engine.isolate(rich.instances, CASE)

    released = engine.release(rich.instances, CASE, rejoin=True)

    assert all(r.ok for r in released.results), [(r.instance_id, r.steps) for r in released.results]
    after = observe(fleet, rich)
    assert rich.asg_member in after["asg_members"]
    assert after["tg_targets"] == before["tg_targets"]
    assert after["elb_members"] == before["elb_members"]
    assert after["enis"] == before["enis"]


def test_every_eni_passes_through_the_allow_all_group_before_the_isolation_group(
    engine: Engine, fleet: Fleet, rich: RichFleet
) -> None:
    recorder = CallRecorder(engine.aws, engine.lanes_aws, engine.urgent_aws, engine.evidence_aws)

    report = engine.isolate(rich.instances, CASE)

    groups = report.groups[rich.vpc]
    swaps: dict[str, list[str]] = {}
    enis_of = {instance_id: list(fleet.eni_groups([instance_id])) for instance_id in rich.instances}
    for action, params in recorder.calls:
        if action == "ec2:ModifyNetworkInterfaceAttribute":
            swaps.setdefault(params["NetworkInterfaceId"], []).extend(params["Groups"])
        elif action == "ec2:ModifyInstanceAttribute" and "Groups" in params:
            (eni_id,) = enis_of[params["InstanceId"]]  # the instance lane takes single-ENI instances only
            swaps.setdefault(eni_id, []).extend(params["Groups"])
    assert len(swaps) == len(fleet.eni_groups(rich.instances)) == 7
    assert all(seq == [groups.allow_all_group_id, groups.isolation_group_id] for seq in swaps.values()), swaps
    assert fleet.group_rules(groups.allow_all_group_id) == {
        (False, "-1/-1", "0.0.0.0/0"),
        (False, "-1/-1", "::/0"),
        (True, "-1/-1", "0.0.0.0/0"),
        (True, "-1/-1", "::/0"),
    }
    member_enis = set(fleet.eni_groups([rich.asg_member]))

    def first(action: str, about_member: Any) -> int:
        return next(i for i, (a, p) in enumerate(recorder.calls) if a == action and about_member(p))

    def about(key: str) -> Callable[[dict[str, Any]], bool]:
        return lambda p: rich.asg_member in json.dumps(p.get(key))

    put = first("dynamodb:PutItem", about("Item"))
    detach = first("autoscaling:DetachInstances", about("InstanceIds"))

    def is_swap(action: str, params: dict[str, Any]) -> bool:
        return action == "ec2:ModifyNetworkInterfaceAttribute" or (
            action == "ec2:ModifyInstanceAttribute" and "Groups" in params
        )

    swap = next(
        i
        for i, (a, p) in enumerate(recorder.calls)
        if is_swap(a, p)
        and (p.get("NetworkInterfaceId") in member_enis or p.get("InstanceId") == rich.asg_member)
    )
    assert put < detach < swap  # recorded, then out of the ASG, then cut
    # Protection shares EC2's mutating bucket with single-ENI swaps: it waits until every instance
    # is cut off, and is recorded before it changes anything.
    last_swap = max(i for i, (a, p) in enumerate(recorder.calls) if is_swap(a, p))
    protect_record = first(
        "dynamodb:UpdateItem", lambda p: "steps.#step" in p.get("UpdateExpression", "") and about("Key")(p)
    )
    protect = first("ec2:ModifyInstanceAttribute", lambda p: "Groups" not in p and about("InstanceId")(p))
    assert put < last_swap < protect_record < protect


def test_no_untrack_swaps_straight_into_isolation(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    recorder = CallRecorder(engine.aws, engine.lanes_aws, engine.urgent_aws, engine.evidence_aws)

    report = engine.isolate([instance], CASE, options=Options(untrack=False))

    swaps = [p["Groups"] for a, p in recorder.calls if a == "ec2:ModifyNetworkInterfaceAttribute"]
    assert swaps == [[report.groups[vpc].isolation_group_id]]
    assert any("--no-untrack" in note for note in report.notes)


def test_a_refused_step_is_named_and_the_rest_still_contain(
    engine: Engine, fleet: Fleet, rich: RichFleet
) -> None:
    before = observe(fleet, rich)
    inject(engine.aws, Fault("autoscaling", "DetachInstances", "AccessDenied", status=403))

    report = engine.isolate(rich.instances, CASE)

    results = {r.instance_id: r for r in report.results}
    failed = results[rich.asg_member]
    assert (failed.ok, failed.error_code) == (False, "AccessDenied")
    assert "autoscaling" in failed.detail and "autoscaling:DetachInstances" in failed.detail
    assert failed.steps["network"].startswith("done") and failed.steps["tags"].startswith("done")
    assert all(r.ok for i, r in results.items() if i != rich.asg_member)
    isolation = report.groups[rich.vpc].isolation_group_id
    assert set(observe(fleet, rich)["enis"].values()) == {(isolation,)}

    released = engine.release(rich.instances, CASE)

    assert all(r.ok for r in released.results), [(r.instance_id, r.steps) for r in released.results]
    after = observe(fleet, rich)
    assert after["enis"] == before["enis"]
    assert after[rich.asg_member]["termination"] == before[rich.asg_member]["termination"]


# Models moto creates when it is only read: DescribeTargetHealth materialises a health record.
READ_ARTIFACTS = {("elbv2", "FakeHealthStatus")}


@pytest.fixture
def emulator_state(served_emulator: Emulator) -> Iterator[Any]:
    """The whole emulator's state: every model of every service, as moto's own dump gives it."""

    def snapshot() -> Any:
        url = f"{served_emulator.endpoint_url}/moto-api/data.json"
        with urllib.request.urlopen(url, timeout=30) as response:
            dump = json.load(response)
        return {
            service: {
                model: items for model, items in models.items() if (service, model) not in READ_ARTIFACTS
            }
            for service, models in dump.items()
            if any(models.values())  # a service merely looked at, with nothing in it
        }

    yield snapshot


def test_dry_run_plans_every_step_and_changes_nothing(
    engine: Engine, fleet: Fleet, rich: RichFleet, emulator_state: Any
) -> None:
    before = emulator_state()

    plan = engine.plan(
        rich.instances, CASE, office_cidr="198.51.100.0/24", options=Options(revoke_sessions=True)
    )

    assert emulator_state() == before
    assert any("create the state table" in line for line in plan.setup)
    assert any("create the forensic, isolation, allow-all group(s)" in line for line in plan.setup)
    steps = {i: {p.step: p for p in planned} for i, planned in plan.instances.items()}
    assert [c.action for c in steps[rich.asg_member]["autoscaling"].calls] == ["autoscaling:DetachInstances"]
    assert steps[rich.tg_member]["load-balancers"].calls[0].resources == (rich.target_group, rich.tg_member)
    assert steps[rich.profiled]["revoke-sessions"].calls[0].resources[0] == rich.role
    assert len(steps[rich.multi_eni]["network"].calls) == 4  # two ENIs, two swaps each
    assert steps[rich.protected]["autoscaling"].note == "nothing to do for this instance"
    assert plan.checks["ec2:ModifyNetworkInterfaceAttribute"].how == "DryRun (7 call(s))"  # one per ENI
    assert plan.checks["ec2:ModifyNetworkInterfaceAttribute"].verdict == "allowed"
    assert plan.checks["autoscaling:DetachInstances"].how == "iam:SimulatePrincipalPolicy"
    assert not plan.denied


def test_dry_run_names_a_denied_action(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    inject(engine.aws, Fault("ec2", "ModifyNetworkInterfaceAttribute", "UnauthorizedOperation", status=403))

    plan = engine.plan([instance], CASE)

    assert [check.action for check in plan.denied] == ["ec2:ModifyNetworkInterfaceAttribute"]


@pytest.mark.evidence  # every client of a run, the evidence and S3 ones too
def test_the_printed_policy_covers_every_call_of_a_full_isolate_and_release(
    engine: Engine, fleet: Fleet, rich: RichFleet
) -> None:
    recorder = CallRecorder(engine.aws, engine.lanes_aws, engine.urgent_aws, engine.evidence_aws)

    engine.isolate(rich.instances, CASE, office_cidr="198.51.100.0/24", options=Options(revoke_sessions=True))
    engine.release(rich.instances, CASE, rejoin=True)
    engine.plan(rich.instances, "IR-10")

    called = recorder.actions() - {"iam:SimulatePrincipalPolicy"}  # the check of the policy itself
    assert called - set(required_actions()) == set()
    assert len(called) >= 25
    # every client of the run was watched: the swap lanes', the evidence's and S3's too
    assert {"ec2:ModifyNetworkInterfaceAttribute", "ec2:CreateSnapshots", "s3:PutObject"} <= called


@pytest.mark.evidence  # the evidence clients are watched too: none may change anything first
def test_the_hold_records_every_step_before_the_first_change(
    engine: Engine, fleet: Fleet, rich: RichFleet
) -> None:
    recorder = CallRecorder(engine.aws, engine.lanes_aws, engine.urgent_aws, engine.evidence_aws)

    engine.isolate([rich.asg_member], CASE)

    order = [action for action, _ in recorder.calls]
    put = order.index("dynamodb:PutItem")
    first_change = min(
        order.index(a) for a in ("ec2:ModifyInstanceAttribute", "autoscaling:DetachInstances") if a in order
    )
    assert put < first_change
    hold = engine.store.get(rich.asg_member)
    assert hold is not None and hold.status is HoldStatus.ISOLATED
    assert set(hold.steps) == {"protect", "autoscaling", "metadata", "tags"}
    assert hold.steps["autoscaling"] == {"group": rich.asg}
