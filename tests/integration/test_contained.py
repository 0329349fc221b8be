"""Contained means contained: what an attacker with a shell (and often the instance's role) can
touch never steers ec2ir. Each test here is an attack that worked before its fix."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.cli.app import main
from ec2ir.containment.groups import GROUP_NAMES, ISOLATION, ROLE_TAG
from ec2ir.containment.steps import Options
from ec2ir.core.models import HoldStatus, VpcGroups
from ec2ir.emulator.server import Emulator
from ec2ir.engine.facade import Engine
from ec2ir.store.state import StateStore
from tests.support.faults import error_response
from tests.support.fleets import Fleet

CASE = "IR-12"
OFFICE = "203.0.113.0/24"
QUIET = Options(evidence=False)


def tag(fleet: Fleet, group_id: str, role: str) -> None:
    """What anyone with ec2:CreateTags (a stolen instance role included) can do."""
    fleet.ec2.create_tags(Resources=[group_id], Tags=[{"Key": ROLE_TAG, "Value": role}])


def rules(fleet: Fleet, group_id: str) -> set[tuple[bool, str, str]]:
    return fleet.group_rules(group_id)


def open_to(fleet: Fleet, group_id: str, cidr: str) -> None:
    fleet.ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": cidr}]}],
    )


@pytest.mark.parametrize("role", ["allow-all", "isolation", "forensic"])
def test_a_production_group_tagged_as_ec2irs_is_left_untouched(
    engine: Engine, fleet: Fleet, role: str
) -> None:
    vpc = fleet.vpc(1)
    production = fleet.group(vpc, "production")
    open_to(fleet, production, "10.1.0.0/16")
    bystander = fleet.instance(vpc, [production])
    tag(fleet, production, role)
    before = rules(fleet, production)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([victim], CASE, office_cidr=OFFICE, options=QUIET)

    assert report.results[0].ok, report.results[0].detail
    assert rules(fleet, production) == before  # neither opened, emptied nor made the SSH source
    groups = report.groups[vpc]
    assert production not in {groups.forensic_group_id, groups.isolation_group_id, groups.allow_all_group_id}
    assert (False, "tcp/22", production) not in rules(fleet, groups.isolation_group_id)
    assert any(production in note and "left untouched" in note for note in report.notes), report.notes
    assert fleet.eni_groups([bystander]) and set(fleet.eni_groups([bystander]).values()) == {(production,)}


def test_a_victim_whose_own_group_is_tagged_isolation_is_still_contained_and_restored(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    own = fleet.group(vpc, "web")
    victim = fleet.instance(vpc, [own])
    tag(fleet, own, ISOLATION)  # the attacker's attempt to make ec2ir refuse

    report = engine.isolate([victim], CASE, options=QUIET)

    assert report.results[0].ok, report.results[0].detail
    isolation = report.groups[vpc].isolation_group_id
    assert set(fleet.eni_groups([victim]).values()) == {(isolation,)}
    engine.release([victim], CASE)
    assert set(fleet.eni_groups([victim]).values()) == {(own,)}


def test_ec2irs_groups_are_found_by_record_even_when_their_tags_are_removed(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET).groups[vpc]
    fleet.ec2.delete_tags(Resources=[first.isolation_group_id], Tags=[{"Key": ROLE_TAG}])

    second = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET)

    assert second.groups[vpc].isolation_group_id == first.isolation_group_id
    assert second.groups[vpc].created == ()


def legacy_group(fleet: Fleet, vpc: str, role: str) -> str:
    """A group as an earlier ec2ir made it: its exact name and its tag, nothing recorded."""
    group_id = str(
        fleet.ec2.create_security_group(
            GroupName=GROUP_NAMES[role],
            Description="made by an earlier ec2ir",
            VpcId=vpc,
            TagSpecifications=[
                {"ResourceType": "security-group", "Tags": [{"Key": ROLE_TAG, "Value": role}]}
            ],
        )["GroupId"]
    )
    return group_id


def make_allow_all(fleet: Fleet, group_id: str) -> None:
    everything: list[dict[str, Any]] = [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
    ]
    fleet.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=everything)
    fleet.ec2.authorize_security_group_egress(
        GroupId=group_id, IpPermissions=[{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]
    )


def test_an_earlier_versions_group_is_adopted_once_when_its_rules_are_exactly_ec2irs(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    legacy = legacy_group(fleet, vpc, "allow-all")
    make_allow_all(fleet, legacy)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([victim], CASE, options=QUIET)

    assert report.groups[vpc].allow_all_group_id == legacy
    assert any("adopted" in note and legacy in note for note in report.notes), report.notes
    again = engine.isolate([fleet.instance(vpc, [fleet.group(vpc, "db")])], CASE, options=QUIET)
    assert again.groups[vpc].allow_all_group_id == legacy
    assert not any("adopted" in note for note in again.notes)  # once: it is recorded now


def test_an_earlier_versions_group_worn_by_a_foreign_eni_is_never_adopted(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    legacy = legacy_group(fleet, vpc, "allow-all")
    make_allow_all(fleet, legacy)
    bystander = fleet.instance(vpc, [legacy])
    before = rules(fleet, legacy)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = engine.isolate([victim], CASE, options=QUIET)

    assert report.groups[vpc].allow_all_group_id != legacy
    assert rules(fleet, legacy) == before
    assert set(fleet.eni_groups([bystander]).values()) == {(legacy,)}


def test_a_drifted_isolation_group_worn_by_a_foreign_eni_is_replaced_not_changed(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    first = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET).groups[vpc]
    outsider = fleet.instance(vpc, [first.isolation_group_id])  # put there by hand, not held by ec2ir
    open_to(fleet, first.isolation_group_id, "10.1.0.0/16")
    drifted = rules(fleet, first.isolation_group_id)

    report = engine.isolate([fleet.instance(vpc, [web])], CASE, options=QUIET)

    replacement = report.groups[vpc].isolation_group_id
    assert replacement != first.isolation_group_id
    assert rules(fleet, first.isolation_group_id) == drifted  # someone else's traffic: not ours to change
    assert set(fleet.eni_groups([outsider]).values()) == {(first.isolation_group_id,)}
    assert (True, "-1/-1", "0.0.0.0/0") not in rules(fleet, replacement)
    assert any("replaced by a new group" in note for note in report.notes), report.notes
    # the first victim, still in the retired group, is recognised as held, never as an original
    assert first.isolation_group_id in report.groups[vpc].containment_group_ids


# -- 2. the allow-all window is bounded and never left open -----------------------------------------


class FakeTime:
    """The run's clock and sleep: time passes only when ec2ir sleeps, so no test waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class RefuseSwapsInto:
    """EC2 refusing every swap into ``group_id`` (either lane), with ``code``."""

    group_id: str
    code: str
    status: int = 400
    refused: int = 0

    def __call__(self, request: Any, model: Any = None, **_: Any) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        swap = "Action=ModifyNetworkInterfaceAttribute" in body or "Action=ModifyInstanceAttribute" in body
        if swap and self.group_id in body:
            self.refused += 1
            return error_response(request.url, self.status, "ec2", self.code, "injected by the test")
        return None

    def install(self, *clients: Any) -> RefuseSwapsInto:
        for client in clients:
            client.meta.events.register("before-send.ec2", self)
        return self


def timed_engine(aws: Aws, time: FakeTime) -> Engine:
    return Engine(aws, StateStore(aws), concurrency=4, clock=time.clock, sleep=time.sleep)


def prepared(engine: Engine, fleet: Fleet) -> tuple[str, str, VpcGroups]:
    """A VPC whose groups exist (from an earlier case), and a victim in its own web group."""
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    groups = engine.isolate([fleet.instance(vpc, [web])], "IR-0", options=QUIET).groups[vpc]
    return fleet.instance(vpc, [web]), web, groups


def test_an_isolation_swap_refused_outright_puts_the_eni_back_at_once(aws: Aws, fleet: Fleet) -> None:
    time = FakeTime()
    engine = timed_engine(aws, time)
    victim, web, groups = prepared(engine, fleet)
    refusal = RefuseSwapsInto(groups.isolation_group_id, "InvalidGroup.NotFound").install(
        engine.urgent_aws.ec2(), engine.aws.ec2(), engine.lanes_aws.ec2()
    )

    result = engine.isolate([victim], CASE, options=QUIET).results[0]

    assert not result.ok and result.error_code == "AllowAllWindowExceeded", result
    assert "went back" in result.detail
    assert set(fleet.eni_groups([victim]).values()) == {(web,)}  # never left in allow-all
    assert refusal.refused >= 1 and time.slept == []  # nothing to wait for: not retryable


def test_an_isolation_swap_throttled_past_the_deadline_puts_the_eni_back(aws: Aws, fleet: Fleet) -> None:
    time = FakeTime()
    engine = timed_engine(aws, time)
    victim, web, groups = prepared(engine, fleet)
    RefuseSwapsInto(groups.isolation_group_id, "RequestLimitExceeded", status=503).install(
        engine.urgent_aws.ec2(), engine.aws.ec2(), engine.lanes_aws.ec2()
    )

    result = engine.isolate([victim], CASE, options=replace(QUIET, untrack_deadline=2.0)).results[0]

    assert not result.ok and result.error_code == "AllowAllWindowExceeded", result
    assert "within 2 s" in result.detail
    assert set(fleet.eni_groups([victim]).values()) == {(web,)}
    assert 1.9 <= sum(time.slept) <= 2.0  # retried right up to the deadline, and no further
    assert max(time.slept) <= 0.1  # short pauses, never botocore's long backoff


def test_a_recorded_isolation_group_deleted_since_is_replaced_and_said_through_the_cli(
    aws: Aws, fleet: Fleet, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = timed_engine(aws, FakeTime())
    victim, _web, groups = prepared(engine, fleet)
    fleet.ec2.delete_security_group(GroupId=groups.isolation_group_id)

    code = main(
        [
            "isolate",
            victim,
            "--case",
            CASE,
            "--no-evidence",
            "--endpoint-url",
            emulator.endpoint_url,
            "--region",
            "us-east-1",
            "--untrack-deadline",
            "1",
            "--output",
            "json",
        ]
    )

    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    [vpc_groups] = out["groups"].values()
    assert vpc_groups["isolation_group_id"] != groups.isolation_group_id
    assert set(fleet.eni_groups([victim]).values()) == {(vpc_groups["isolation_group_id"],)}
    assert any("no longer exists; replacing it" in note for note in out["notes"])


def test_an_eni_left_in_allow_all_by_a_crashed_run_is_isolated_by_the_next(
    engine: Engine, fleet: Fleet
) -> None:
    victim, _web, groups = prepared(engine, fleet)
    engine.isolate([victim], CASE, options=QUIET)
    [eni] = fleet.eni_groups([victim])
    # what a run that died between its two swaps leaves: the hold isolating, the ENI in allow-all
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[groups.allow_all_group_id])
    hold = engine.store.get(victim)
    assert hold is not None
    engine.store.transition(hold, (HoldStatus.ISOLATED,), HoldStatus.ISOLATING)

    result = engine.isolate([victim], CASE, options=QUIET).results[0]

    assert result.ok, result.detail
    assert fleet.eni_groups([victim]) == {eni: (groups.isolation_group_id,)}


# -- 3. every ENI of a contained instance is contained, even one attached during the run --------------


def after_the_isolation_swap(engine: Engine, act: Any) -> None:
    """Run ``act`` once, right after the run's first swap into isolation returns."""
    done: list[bool] = []

    def hook(**_: Any) -> None:
        if not done:
            done.append(True)
            act()

    for operation in ("ModifyNetworkInterfaceAttribute", "ModifyInstanceAttribute"):
        engine.urgent_aws.ec2().meta.events.register(f"after-call.ec2.{operation}", hook)


def test_an_eni_attached_during_the_run_is_recorded_and_isolated(aws: Aws, fleet: Fleet) -> None:
    engine = timed_engine(aws, FakeTime())
    victim, _web, groups = prepared(engine, fleet)
    attacker = Fleet(Aws(aws.settings), subnets=fleet.subnets)
    mgmt = fleet.group(groups.vpc_id, "mgmt")
    attached: list[str] = []
    after_the_isolation_swap(
        engine, lambda: attached.append(attacker.attach_eni(victim, groups.vpc_id, [mgmt], 1))
    )

    result = engine.isolate([victim], CASE, options=QUIET).results[0]

    assert result.ok, result.detail
    assert attached and set(fleet.eni_groups([victim]).values()) == {(groups.isolation_group_id,)}
    assert "after the cut, 1 ENI(s)" in result.steps["network"]
    hold = engine.store.get(victim)
    assert hold is not None and hold.originals[attached[0]] == (mgmt,)
    engine.release([victim], CASE)
    assert fleet.eni_groups([victim])[attached[0]] == (mgmt,)


def test_an_eni_moved_back_during_the_run_is_isolated_again(aws: Aws, fleet: Fleet) -> None:
    engine = timed_engine(aws, FakeTime())
    victim, web, groups = prepared(engine, fleet)
    attacker = Aws(aws.settings)
    [eni] = fleet.eni_groups([victim])
    after_the_isolation_swap(
        engine,
        lambda: attacker.ec2().modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web]),
    )

    result = engine.isolate([victim], CASE, options=QUIET).results[0]

    assert result.ok, result.detail
    assert fleet.eni_groups([victim]) == {eni: (groups.isolation_group_id,)}


# -- 4. status --check reads the live state -------------------------------------------------------


def cli(emulator: Emulator, *words: str) -> list[str]:
    return [*words, "--endpoint-url", emulator.endpoint_url, "--region", "us-east-1"]


def test_status_check_finds_each_breach_and_repair_re_contains(
    engine: Engine, fleet: Fleet, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    victim = fleet.instance(vpc, [web])
    groups = engine.isolate([victim], CASE, office_cidr=OFFICE, options=QUIET).groups[vpc]
    assert main(cli(emulator, "status", "--check")) == 0
    capsys.readouterr()
    [eni] = fleet.eni_groups([victim])
    # someone moves the ENI back to production and opens the isolation group's egress
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web])
    fleet.ec2.authorize_security_group_egress(
        GroupId=groups.isolation_group_id,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    assert [h.status for h in engine.status(CASE)] == [HoldStatus.ISOLATED]  # the table alone is blind

    assert main(cli(emulator, "status", "--check", "--output", "json")) == 1
    found = json.loads(capsys.readouterr().out)
    kinds = {(b["kind"], b["subject"]) for b in found["breaches"]}
    assert kinds == {("eni-not-isolated", victim), ("group-rules", groups.isolation_group_id)}

    assert main(cli(emulator, "status", "--check", "--repair")) == 0
    out = capsys.readouterr().out
    assert "after the repair: no breach" in out
    assert fleet.eni_groups([victim]) == {eni: (groups.isolation_group_id,)}
    assert (True, "-1/-1", "0.0.0.0/0") not in fleet.group_rules(groups.isolation_group_id)
    assert any(e.action == "status:check" for e in engine.store.journal(CASE))


def test_status_check_sees_an_eni_left_in_allow_all_and_a_profile_associated_again(
    engine: Engine, fleet: Fleet, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    victim, _web, groups = prepared(engine, fleet)
    engine.isolate([victim], CASE, options=QUIET)
    [eni] = fleet.eni_groups([victim])
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[groups.allow_all_group_id])
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="p")["InstanceProfile"]
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=victim)

    assert main(cli(emulator, "status", "--check", "--case", CASE, "--output", "json")) == 1
    kinds = {b["kind"] for b in json.loads(capsys.readouterr().out)["breaches"]}
    assert kinds == {"eni-in-allow-all", "profile-associated"}

    assert main(cli(emulator, "status", "--check", "--repair", "--case", CASE)) == 0
    assert fleet.eni_groups([victim]) == {eni: (groups.isolation_group_id,)}
    associations = fleet.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [victim]}]
    )["IamInstanceProfileAssociations"]
    assert [a for a in associations if a["State"] in ("associating", "associated")] == []


# -- 5. read-only commands never create anything ------------------------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        ["status", "--table", "typo"],
        ["status", "--check", "--table", "typo"],
        ["status", "--region", "us-west-2"],
        ["release", "i-0123456789abcdef0", "--case", CASE, "--table", "typo"],
        ["report", CASE, "--table", "typo"],
        ["verify", CASE, "--table", "typo"],
        ["forensics", "detach", CASE, "--table", "typo"],
    ],
)
def test_reading_a_missing_table_is_refused_and_creates_nothing(
    aws: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str], words: list[str]
) -> None:
    argv = [*words, "--endpoint-url", emulator.endpoint_url]
    if "--region" not in words:
        argv += ["--region", "us-east-1"]

    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    for region in ("us-east-1", "us-west-2"):
        assert Aws(replace(aws.settings, region=region)).dynamodb().list_tables()["TableNames"] == []


def test_the_cli_honours_the_stacks_table_and_bucket_variables(
    engine: Engine,
    fleet: Fleet,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vpc = fleet.vpc(1)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])
    fleet.aws.client("s3").create_bucket(Bucket="stack-evidence")
    fleet.aws.client("s3").put_bucket_versioning(
        Bucket="stack-evidence", VersioningConfiguration={"Status": "Enabled"}
    )
    monkeypatch.setenv("EC2IR_TABLE", "stack-state")
    monkeypatch.setenv("EC2IR_EVIDENCE_BUCKET", "stack-evidence")

    assert main(cli(emulator, "isolate", victim, "--case", CASE, "--output", "json")) in (0, 1)
    result = json.loads(capsys.readouterr().out)["results"][0]

    assert StateStore(fleet.aws, "stack-state").get(victim) is not None
    assert any(ref["location"].startswith("s3://stack-evidence/") for ref in result["evidence"])
    assert main(cli(emulator, "status", "--output", "json")) == 0
    assert [h["instance_id"] for h in json.loads(capsys.readouterr().out)["holds"]] == [victim]


# -- 6. the forensic source the user names is the one used ------------------------------------------


def test_the_cli_admits_ssh_from_the_forensic_group_it_is_given(
    fleet: Fleet, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    vpc = fleet.vpc(1)
    security_team = fleet.group(vpc, "security-team")
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])

    code = main(
        [
            *cli(emulator, "isolate", victim, "--case", CASE, "--no-evidence", "--output", "json"),
            "--forensic-group-id",
            security_team,
            "--forensic-group-owner",
            "123456789012",
        ]
    )

    assert code == 0, capsys.readouterr().err
    groups = json.loads(capsys.readouterr().out)["groups"][vpc]
    assert groups["forensic_group_id"] == security_team
    assert (False, "tcp/22", security_team) in fleet.group_rules(groups["isolation_group_id"])


def test_an_allow_all_swap_whose_answer_is_lost_is_put_back(aws: Aws, fleet: Fleet) -> None:
    from botocore.exceptions import ReadTimeoutError

    engine = timed_engine(aws, FakeTime())
    victim, web, _groups = prepared(engine, fleet)
    lost: list[str] = []

    def lose_the_answer(model: Any, **_: Any) -> None:
        if not lost:  # applied by EC2, but the answer never arrives
            lost.append(model.name)
            raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    for client in (engine.aws.ec2(), engine.lanes_aws.ec2()):
        for operation in ("ModifyNetworkInterfaceAttribute", "ModifyInstanceAttribute"):
            client.meta.events.register(f"after-call.ec2.{operation}", lose_the_answer)

    result = engine.isolate([victim], CASE, options=QUIET).results[0]

    assert lost and not result.ok
    assert set(fleet.eni_groups([victim]).values()) == {(web,)}  # not left in allow-all


def test_the_stacks_scheduled_recheck_repairs_and_notifies(engine: Engine, fleet: Fleet) -> None:
    from ec2ir.handlers import recheck

    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    victim = fleet.instance(vpc, [web])
    isolation = engine.isolate([victim], CASE, options=QUIET).groups[vpc].isolation_group_id
    [eni] = fleet.eni_groups([victim])
    fleet.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web])
    sns, sqs = fleet.aws.client("sns"), fleet.aws.client("sqs")
    topic = sns.create_topic(Name="ec2ir-stack")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    outcome = recheck.handle(lambda: engine, topic)

    assert outcome["ok"] is True and outcome["remaining"] == []
    assert fleet.eni_groups([victim]) == {eni: (isolation,)}
    message = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert "found and repaired" in message["Subject"] and victim in message["Message"]
    assert recheck.handle(lambda: engine, topic)["breaches"] == []  # quiet once all is well


def test_the_notes_say_how_an_outside_forensic_group_reaches_another_vpc(
    engine: Engine, fleet: Fleet
) -> None:
    home, elsewhere = fleet.vpc(1), fleet.vpc(2)
    security_team = fleet.group(home, "security-team")
    near = fleet.instance(home, [fleet.group(home, "web")])
    far = fleet.instance(elsewhere, [fleet.group(elsewhere, "web")])

    report = engine.isolate([near, far], CASE, options=replace(QUIET, forensic_group=security_team))

    reach = [note for note in report.notes if "VPC peering" in note]
    assert len(reach) == 1 and reach[0].startswith(f"{elsewhere}:") and home in reach[0], report.notes


def test_s3_slow_down_is_throttling_so_ec2ir_waits_it_out_after_botocore_gives_up() -> None:
    from botocore.exceptions import ClientError

    from ec2ir.aws.session import classify_client_error
    from ec2ir.core.errors import Throttled

    answer = {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}
    error = classify_client_error("s3", ClientError(answer, "PutObject"))  # type: ignore[arg-type]

    assert isinstance(error, Throttled) and error.action == "s3:PutObject"


def test_progress_takes_back_a_contained_line_the_check_after_the_cut_disproves(
    aws: Aws, fleet: Fleet
) -> None:
    # The attacker, holding the instance's credentials, puts the ENI back in its open group right
    # after the swap, and the check after the cut is refused: the live line said "contained" while
    # the cut looked whole, and must not be the last word.
    from ec2ir.core.models import InstanceResult, Phase
    from tests.support.faults import Fault, inject_into

    engine = timed_engine(aws, FakeTime())
    victim, web, _ = prepared(engine, fleet)
    attacker = Aws(aws.settings)
    [eni] = fleet.eni_groups([victim])

    def attack() -> None:
        attacker.ec2().modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web])
        inject_into(engine.aws.ec2(), Fault("ec2", "DescribeInstances", "UnauthorizedOperation"))

    after_the_isolation_swap(engine, attack)
    said: list[tuple[str, str, bool]] = []

    def progress(result: InstanceResult, phase: str = "done") -> None:
        said.append((result.instance_id, phase, result.ok))

    result = engine.isolate([victim], "IR-P", options=QUIET, progress=progress).results[0]

    assert fleet.eni_groups([victim]) == {eni: (web,)} and not result.ok
    contained = [ok for instance, phase, ok in said if phase == Phase.CONTAINED]
    assert contained == [True, False]  # said when the cut ended, then taken back
