"""Issue 19: the attacker's address cut at the subnet edge, with network ACL deny entries.

Through the CLI (isolate --block-ip, block-ip, unblock-ip, status --check, release) and the engine
(GuardDuty's skip-unsafe contract, crashes mid-way, the dry run), against the corrected emulator.
Evidence is off throughout: none of this is about evidence."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError

from ec2ir.aws import ranges as aws_ranges
from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.containment import nacl, nacl_entries, nacl_report, nacl_screening
from ec2ir.containment.steps import Options
from ec2ir.core.errors import UsageError
from ec2ir.core.models import HoldStatus
from ec2ir.emulator.server import DEMO_REGION, Emulator
from ec2ir.engine.facade import Engine
from ec2ir.permissions.policy import isolate_actions, release_only_actions, required_actions
from ec2ir.render.terminal import render_plan
from ec2ir.store.items import instance_key
from ec2ir.store.state import StateStore
from tests.conftest import Cli, one_line_error
from tests.support.faults import Crash
from tests.support.fleets import Fleet
from tests.support.recorders import CallRecorder

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import CreateNetworkAclEntryRequestTypeDef

ATTACKER = "203.0.113.7"  # TEST-NET-3: nobody's, so always blockable
ATTACKER_V6 = "2001:db8:dead::/48"
Entry = tuple[bool, int, str, str, str]  # egress, rule number, action, protocol, CIDR


def subnet(fleet: Fleet, vpc: str, octet: int) -> str:
    second = vpc_octet(fleet, vpc)
    made = fleet.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{second}.{octet}.0/24")
    return str(made["Subnet"]["SubnetId"])


def vpc_octet(fleet: Fleet, vpc: str) -> int:
    cidr = fleet.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"]
    return int(cidr.split(".")[1])


def instance_in(fleet: Fleet, vpc: str, subnet_id: str, groups: list[str]) -> str:
    fleet.subnets[vpc], default = subnet_id, fleet.subnets[vpc]
    try:
        return fleet.instance(vpc, groups)
    finally:
        fleet.subnets[vpc] = default


def acl_of(fleet: Fleet, subnet_id: str) -> str:
    acls = fleet.ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])
    [acl] = acls["NetworkAcls"]
    return str(acl["NetworkAclId"])


def entries(fleet: Fleet, acl: str) -> set[Entry]:
    """Every entry of the ACL but the default ones (rule 32767), as AWS reports it."""
    [described] = fleet.ec2.describe_network_acls(NetworkAclIds=[acl])["NetworkAcls"]
    return {
        (
            bool(e["Egress"]),
            int(e["RuleNumber"]),
            e["RuleAction"],
            e["Protocol"],
            e.get("CidrBlock") or e.get("Ipv6CidrBlock", ""),
        )
        for e in described["Entries"]
        if e["RuleNumber"] < 32767
    }


def deny(egress: bool, rule: int, cidr: str) -> Entry:
    return (egress, rule, "deny", "-1", cidr)


ALLOW_ALL = {(False, 100, "allow", "-1", "0.0.0.0/0"), (True, 100, "allow", "-1", "0.0.0.0/0")}


def records(aws: Aws, acl: str) -> dict[tuple[bool, int], dict[str, Any]]:
    found = nacl_entries.RecordStore(StateStore(aws)).of_acl(acl)
    return {(r.egress, r.rule_number): r.__dict__ for r in found}


def actions(aws: Aws, case: str) -> list[tuple[str, str]]:
    """The case's journaled changes to network ACLs: (action, ACL)."""
    journal = StateStore(aws).journal(case)
    return [(e.action, e.target) for e in journal if "nacl" in e.action and e.result.startswith("done")]


# -- 1, 2 and 5 through the CLI: isolate --block-ip, status --check, release -------------------------


def test_isolate_blocks_in_every_acl_of_the_case_and_release_of_the_last_instance_removes_it(
    run: Cli, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    first, second, idle = fleet.subnets[vpc], subnet(fleet, vpc, 2), subnet(fleet, vpc, 3)
    web = fleet.group(vpc, "web")
    a, b = instance_in(fleet, vpc, first, [web]), instance_in(fleet, vpc, second, [web])
    acl = acl_of(fleet, first)
    assert acl_of(fleet, second) == acl_of(fleet, idle) == acl  # the VPC's default ACL serves all three
    assert entries(fleet, acl) == ALLOW_ALL

    isolated = run(
        "isolate", a, b, "--case", "IR-19", "--no-evidence", "--output", "json",
        "--block-ip", ATTACKER, "--block-ip", ATTACKER_V6,
    )  # fmt: skip

    assert isolated.code == 0, isolated.err
    report = isolated.json()
    assert report["ok"]
    blocked = ALLOW_ALL | {
        deny(False, 1, f"{ATTACKER}/32"),
        deny(False, 2, ATTACKER_V6),
        deny(True, 1, f"{ATTACKER}/32"),
        deny(True, 2, ATTACKER_V6),
    }
    assert entries(fleet, acl) == blocked
    [changed] = [note for note in report["notes"] if note.startswith(f"network ACL {acl}")]
    assert first in changed and second in changed
    assert f"also serves {idle}" in changed and "their instances lose those addresses too" in changed
    assert ATTACKER not in changed  # a note names an address only when it is NOT denied
    assert {r["status"] for r in records(fleet.aws, acl).values()} == {"applied"}
    assert {r["case_id"] for r in records(fleet.aws, acl).values()} == {"IR-19"}
    assert actions(fleet.aws, "IR-19").count(("isolate:nacl-add", acl)) == 4

    checked = run("status", "--check", "--case", "IR-19")
    assert checked.code == 0, checked.out
    # someone deletes one entry and turns another into an allow
    fleet.ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=1, Egress=False)
    fleet.ec2.replace_network_acl_entry(
        NetworkAclId=acl,
        RuleNumber=2,
        Egress=True,
        Protocol="-1",
        RuleAction="allow",
        Ipv6CidrBlock=ATTACKER_V6,
    )
    breached = run("status", "--check", "--case", "IR-19", "--output", "json")
    assert breached.code == 1
    kinds = {(b["kind"], b["subject"]) for b in breached.json()["breaches"]}
    assert kinds == {("nacl-entry-missing", acl), ("nacl-entry-changed", acl)}

    repaired = run("status", "--check", "--repair", "--case", "IR-19", "--output", "json")

    # the missing entry is back where it was; the changed one is left as it is, and still reported:
    # a deny ahead of it would need a rule number below 2, and 1 is ec2ir's own
    assert repaired.code == 1, repaired.out
    assert [(b["kind"], b["subject"]) for b in repaired.json()["remaining"]] == [("nacl-entry-changed", acl)]
    changed_by_someone = (True, 2, "allow", "-1", ATTACKER_V6)
    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 1, f"{ATTACKER}/32"),
        deny(False, 2, ATTACKER_V6),
        deny(True, 1, f"{ATTACKER}/32"),
        changed_by_someone,
    }
    assert actions(fleet.aws, "IR-19").count(("status-check:nacl-add", acl)) == 1

    # b still sits in a subnet this ACL serves: releasing a keeps the block
    released_a = run("release", a, "--case", "IR-19")
    assert released_a.code == 0, released_a.err
    assert deny(False, 1, f"{ATTACKER}/32") in entries(fleet, acl)

    released_b = run("release", b, "--case", "IR-19", "--output", "json")

    # released, and what ec2ir added is gone; the changed entry is never ec2ir's to remove (exit 1)
    assert released_b.code == 1, released_b.err
    assert released_b.json()["results"][0]["ok"]
    assert entries(fleet, acl) == ALLOW_ALL | {changed_by_someone}
    assert "changed since ec2ir added it: left as it is" in released_b.err
    assert any(note.startswith(f"network ACL {acl}") for note in released_b.json()["notes"])
    assert {r["status"] for r in records(fleet.aws, acl).values()} == {"removed"}
    assert actions(fleet.aws, "IR-19").count(("release:nacl-remove", acl)) == 3


# -- 1 and 2: block-ip and unblock-ip later, two cases, the dry run --------------------------------------


@pytest.mark.parametrize("forged", [("b",), ("a", "b")], ids=["B's hold", "every hold"])
def test_a_hold_rewritten_to_released_does_not_lift_the_block_while_ec2_still_isolates_it(
    run: Cli, fleet: Fleet, forged: tuple[str, ...]
) -> None:
    """Whoever can write the state table marks B's hold RELEASED (or every hold of the case, so
    that the release of A reads no hold to act on): releasing A (same subnet) must not remove the
    case's deny entries while EC2 still has B's ENI in ec2ir's isolation group."""
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = {"a": fleet.instance(vpc, [web]), "b": fleet.instance(vpc, [web])}
    acl = acl_of(fleet, fleet.subnets[vpc])
    isolated = run("isolate", *instances.values(), "--case", "IR-19", "--block-ip", ATTACKER)
    assert isolated.code == 0, isolated.err
    blocked = ALLOW_ALL | {deny(False, 1, f"{ATTACKER}/32"), deny(True, 1, f"{ATTACKER}/32")}
    assert entries(fleet, acl) == blocked
    b_isolated = fleet.eni_groups([instances["b"]])
    for name in forged:
        fleet.aws.dynamodb().update_item(  # the attacker's own write, not ec2ir's
            TableName=StateStore(fleet.aws).table,
            Key=instance_key(instances[name]),
            UpdateExpression="SET #s = :released",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":released": {"S": HoldStatus.RELEASED.value}},
        )

    released = run("release", instances["a"], "--case", "IR-19")

    assert released.code == (1 if "a" in forged else 0), released.err  # a forged A is not released
    assert fleet.eni_groups([instances["b"]]) == b_isolated  # EC2 still isolates B
    assert entries(fleet, acl) == blocked  # so its subnet keeps the case's block
    assert ("release:nacl-remove", acl) not in actions(fleet.aws, "IR-19")


def test_block_ip_and_unblock_ip_later_and_one_case_never_removes_anothers_block(
    run: Cli, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    a, b = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    acl = acl_of(fleet, fleet.subnets[vpc])
    assert run("isolate", a, "--case", "C1", "--no-evidence").code == 0
    assert run("isolate", b, "--case", "C2", "--no-evidence").code == 0

    first = run("block-ip", ATTACKER, "--case", "C1", "--output", "json")
    assert first.code == 0, first.err
    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 1, f"{ATTACKER}/32"),
        deny(True, 1, f"{ATTACKER}/32"),
    }
    assert {c["result"] for c in first.json()["changes"]} == {"added"}

    planned = run("block-ip", ATTACKER, "--case", "C2", "--dry-run")
    assert planned.code == 0, planned.err
    assert [acl, vpc, "inbound", "2", f"{ATTACKER}/32", "would", "add"] in [
        line.split() for line in planned.out.splitlines()
    ]
    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 1, f"{ATTACKER}/32"),
        deny(True, 1, f"{ATTACKER}/32"),
    }

    assert run("block-ip", ATTACKER, "--case", "C2").code == 0
    again = run("block-ip", ATTACKER, "--case", "C1", "--output", "json")
    assert again.code == 0 and {c["result"] for c in again.json()["changes"]} == {"already there"}
    both = ALLOW_ALL | {deny(e, r, f"{ATTACKER}/32") for e in (False, True) for r in (1, 2)}
    assert entries(fleet, acl) == both

    unblocked = run("unblock-ip", ATTACKER, "--case", "C1")

    assert unblocked.code == 0, unblocked.err
    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 2, f"{ATTACKER}/32"),
        deny(True, 2, f"{ATTACKER}/32"),
    }
    assert (
        actions(fleet.aws, "C1") == [("block-ip:nacl-add", acl)] * 2 + [("unblock-ip:nacl-remove", acl)] * 2
    )
    nothing = run("unblock-ip", ATTACKER, "--case", "C1")
    assert nothing.code == 0 and "no entry of case C1 denies 203.0.113.7/32" in nothing.out
    # C2's entry changed by someone since: left, and said so (exit 1)
    fleet.ec2.replace_network_acl_entry(
        NetworkAclId=acl, RuleNumber=2, Egress=False, Protocol="6", RuleAction="deny",
        CidrBlock=f"{ATTACKER}/32", PortRange={"From": 22, "To": 22},
    )  # fmt: skip
    left = run("unblock-ip", ATTACKER, "--case", "C2")
    assert left.code == 1
    assert "changed since ec2ir added it: left as it is" in left.out
    assert entries(fleet, acl) == ALLOW_ALL | {(False, 2, "deny", "6", f"{ATTACKER}/32")}

    outside = run("block-ip", "10.1.200.9", "--case", "C1")
    assert outside.code == 2 and "overlaps the VPC's own CIDR 10.1.0.0/16" in one_line_error(outside)
    unknown = run("block-ip", ATTACKER, "--case", "C9")
    assert unknown.code == 2 and "case C9 holds no instance" in one_line_error(unknown)


# -- 3 through the CLI: never cut your own side; 1: no free rule number ---------------------------------


def test_unsafe_blocks_exit_2_before_any_change_and_a_full_acl_is_left_alone(run: Cli, fleet: Fleet) -> None:
    vpc, forensic_vpc = fleet.vpc(1), fleet.vpc(2)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    workstation_group = fleet.group(forensic_vpc, "workstations")
    workstation = fleet.instance(forensic_vpc, [workstation_group])
    ip = fleet.ec2.describe_instances(InstanceIds=[workstation])["Reservations"][0]["Instances"][0]
    workstation_ip = ip["PrivateIpAddress"]
    acl = acl_of(fleet, fleet.subnets[vpc])
    refusals = [
        (["--block-ip", "203.0.113.300"], "malformed address to block '203.0.113.300'"),
        (["--block-ip", "203.0.113.7/24"], "malformed address to block '203.0.113.7/24'"),
        (["--block-ip", "100.64.0.0/10"], "wider than /16"),
        (["--block-ip", "2001:db8::/32"], "wider than /48"),
        (["--block-ip", "169.254.169.254"], "link-local"),
        (["--block-ip", "fd00:ec2::254"], "link-local"),
        (["--block-ip", "10.1.77.1"], "overlaps the VPC's own CIDR 10.1.0.0/16"),
        (
            ["--office-cidr", "198.51.100.0/24", "--block-ip", "198.51.100.7"],
            "the office CIDR 198.51.100.0/24",
        ),
        (["--block-ip", "52.216.4.4"], "AWS's own 52.216.0.0/15 (S3, us-east-1)"),
        (
            ["--forensic-group-id", workstation_group, "--block-ip", workstation_ip],
            f"the forensic workstation's address {workstation_ip}/32",
        ),
        (["--block-ip", ATTACKER, "--block-ip", "52.94.0.1"], "AWS's own 52.94.0.0/22 (DYNAMODB, us-east-1)"),
    ]
    for extra, says in refusals:
        refused = run("isolate", instance, "--case", "IR-3", "--no-evidence", *extra)

        assert refused.code == 2, (extra, refused.err)
        assert says in one_line_error(refused), extra
        assert entries(fleet, acl) == ALLOW_ALL
        assert fleet.ec2ir_groups() == []
    store = StateStore(fleet.aws)
    assert not store.exists() or store.holds() == []

    # someone's own rule 1 leaves no room ahead of it inbound: nothing is added in this ACL
    fleet.ec2.create_network_acl_entry(
        NetworkAclId=acl, RuleNumber=1, Egress=False, Protocol="6", RuleAction="allow",
        CidrBlock="0.0.0.0/0", PortRange={"From": 443, "To": 443},
    )  # fmt: skip
    full = run(
        "isolate", instance, "--case", "IR-3", "--no-evidence", "--block-ip", ATTACKER, "--output", "json"
    )

    assert full.code == 1
    report = full.json()
    assert report["results"][0]["ok"] and report["results"][0]["enis"]  # contained all the same
    assert any(
        note.startswith(f"network ACL {acl}: NOT blocked") and "no free rule number below 1 inbound" in note
        for note in report["notes"]
    )
    assert any("203.0.113.7/32 is not blocked" in w for w in report["results"][0]["warnings"])
    assert entries(fleet, acl) == ALLOW_ALL | {(False, 1, "allow", "6", "0.0.0.0/0")}


def test_the_dry_run_lists_the_entries_it_would_add_and_checks_the_permission(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    acl = acl_of(fleet, fleet.subnets[vpc])
    dry_runs: list[dict[str, Any]] = []
    engine.aws.ec2().meta.events.register(
        "before-parameter-build.ec2.CreateNetworkAclEntry", lambda params, **_: dry_runs.append(params)
    )

    plan = engine.plan([instance], "IR-4", options=Options(block_ips=(ATTACKER,)))

    assert f"{acl} ({vpc}): deny {ATTACKER}/32 inbound at rule 1 and outbound at rule 1" in "\n".join(
        plan.setup
    )
    assert plan.checks["ec2:CreateNetworkAclEntry"].verdict == "allowed"
    assert plan.checks["ec2:CreateNetworkAclEntry"].how.startswith("DryRun")
    assert len(dry_runs) == 2 and all(p.get("DryRun") for p in dry_runs)  # one probe an entry
    assert entries(fleet, acl) == ALLOW_ALL
    assert "deny 203.0.113.7/32 inbound at rule 1" in render_plan(plan)
    with pytest.raises(UsageError, match="overlaps the VPC's own CIDR"):
        engine.plan([instance], "IR-4", options=Options(block_ips=("10.1.1.1",)))


# -- 4: the contract GuardDuty's handler relies on -------------------------------------------------------


def test_guardduty_leaves_unsafe_addresses_out_with_a_note_and_blocks_the_rest(
    engine: Engine, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instance, other = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    acl = acl_of(fleet, fleet.subnets[vpc])
    options = Options(
        evidence=False,
        block_ips=("52.216.1.1", ATTACKER, "0.0.0.0/0", "nonsense"),
        block_ips_skip_unsafe=True,
    )

    report = engine.isolate([instance], "GD-1", options=options)

    assert [r.ok for r in report.results] == [True] and not report.results[0].warnings
    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 1, f"{ATTACKER}/32"),
        deny(True, 1, f"{ATTACKER}/32"),
    }
    acl_notes = [note for note in report.notes if note.startswith("network ACL")]
    assert any("left out 52.216.1.1/32" in note and "S3" in note for note in acl_notes)
    assert any("left out 0.0.0.0/0" in note and "wider than /16" in note for note in acl_notes)
    assert any("left out 'nonsense'" in note for note in acl_notes)
    assert any(note.startswith(f"network ACL {acl} ({vpc}): denied 1 address(es)") for note in acl_notes)
    assert not any(ATTACKER in note for note in acl_notes)  # named only when NOT denied

    # AWS's ranges cannot be had: the address is left out, the instance contained all the same
    monkeypatch.setenv(aws_ranges.ENV, "/nonexistent/ip-ranges.json")
    aws_ranges.clear_cache()
    later = engine.isolate([other], "GD-2", options=replace(options, block_ips=("198.51.100.9",)))

    assert [r.ok for r in later.results] == [True]
    assert any(
        n.startswith("network ACL") and "left out 198.51.100.9/32" in n and "EC2IR_AWS_IP_RANGES" in n
        for n in later.notes
    )
    assert not any(r.cidr == "198.51.100.9/32" for r in nacl_entries.RecordStore(engine.store).of_acl(acl))
    with pytest.raises(UsageError, match="EC2IR_AWS_IP_RANGES"):  # the CLI's way: refused, exit 2
        engine.isolate([other], "GD-2", options=Options(evidence=False, block_ips=("198.51.100.9",)))


# -- 2: a crash between recording and adding, adding and recording, marking and removing ------------------


def crash_on(aws: Aws, event: str) -> None:
    def die(**_: Any) -> None:
        raise Crash(event)

    aws.ec2().meta.events.register(event, die)


def test_crashes_mid_way_are_repaired_by_the_next_run(
    emulator: Emulator, engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    acl = acl_of(fleet, fleet.subnets[vpc])
    engine.isolate([instance], "IR-5", options=Options(evidence=False))

    def fresh() -> Engine:  # a new process: new clients, no hooks
        aws = Aws(AwsSettings(region=DEMO_REGION, endpoint_url=emulator.endpoint_url))
        return Engine(aws, StateStore(aws), concurrency=4)

    recorder_engine = fresh()
    recorder = CallRecorder(recorder_engine.aws)
    # recorded, then the process dies before the entry is added
    crash_on(engine.aws, "before-send.ec2.CreateNetworkAclEntry")
    with pytest.raises(Crash):
        engine.block_ip([ATTACKER], "IR-5")
    assert entries(fleet, acl) == ALLOW_ALL
    assert [r["status"] for r in records(fleet.aws, acl).values()] == ["pending"]

    repaired = recorder_engine.block_ip([ATTACKER], "IR-5")

    assert repaired.ok
    blocked = ALLOW_ALL | {deny(False, 1, f"{ATTACKER}/32"), deny(True, 1, f"{ATTACKER}/32")}
    assert entries(fleet, acl) == blocked
    assert {r["status"] for r in records(fleet.aws, acl).values()} == {"applied"}

    # added, then the process dies before the record says so: found, not added twice
    dying = fresh()
    crash_on(dying.aws, "after-call.ec2.CreateNetworkAclEntry")
    with pytest.raises(Crash):
        dying.block_ip([ATTACKER_V6], "IR-5")
    assert deny(False, 2, ATTACKER_V6) in entries(fleet, acl)
    assert records(fleet.aws, acl)[(False, 2)]["status"] == "pending"

    found = recorder_engine.block_ip([ATTACKER_V6], "IR-5")

    assert found.ok and entries(fleet, acl) == blocked | {
        deny(False, 2, ATTACKER_V6),
        deny(True, 2, ATTACKER_V6),
    }
    assert {r["status"] for r in records(fleet.aws, acl).values()} == {"applied"}

    # release dies right after removing the first entry; releasing again finishes the removal
    dying = fresh()
    crash_on(dying.aws, "after-call.ec2.DeleteNetworkAclEntry")
    with pytest.raises(Crash):
        dying.release([instance], "IR-5")
    assert "removing" in {r["status"] for r in records(fleet.aws, acl).values()}

    again = recorder_engine.release([instance], "IR-5")

    assert again.results[0].error_code == "NotIsolated"  # released already: only the ACL was left
    assert entries(fleet, acl) == ALLOW_ALL
    assert {r["status"] for r in records(fleet.aws, acl).values()} == {"removed"}
    # the printed policy covers every call, and only releasing may delete an entry
    assert recorder.actions() - set(required_actions()) == set()
    assert {"ec2:CreateNetworkAclEntry", "ec2:DeleteNetworkAclEntry", "ec2:DescribeNetworkAcls"} <= (
        recorder.actions()
    )
    assert {"ec2:CreateNetworkAclEntry", "ec2:DescribeNetworkAcls", "ec2:DescribeVpcs"} <= set(
        isolate_actions()
    )
    assert "ec2:DeleteNetworkAclEntry" in set(release_only_actions()) - set(isolate_actions())


# -- the pieces, without the emulator ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cidr"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 2001:db8::1 ", "2001:db8::1/128"),
        ("198.51.100.0/24", "198.51.100.0/24"),
    ],
)
def test_a_bare_address_means_that_one_host(raw: str, cidr: str) -> None:
    blocks, notes = nacl.parse_blocks([raw], skip_unsafe=False)

    assert [str(b) for b in blocks] == [cidr] and notes == []


def test_the_lowest_free_numbers_ahead_of_the_first_entry_that_is_not_ec2irs() -> None:
    taken = {1: "ours", 2: "ours"}  # ec2ir's own entries never count as the first entry

    assert nacl_entries.free_numbers([100], claimed=[], count=2) == [1, 2]
    assert nacl_entries.free_numbers([], claimed=[], count=1) == [1]  # only the default entry: 1..32766
    assert nacl_entries.free_numbers([1, 2, 100], claimed=list(taken), count=2) == [3, 4]
    assert nacl_entries.free_numbers([3], claimed=[1], count=1) == [2]
    assert nacl_entries.free_numbers([3], claimed=[1], count=2) is None  # not enough room: nothing at all
    assert nacl_entries.free_numbers([1], claimed=[], count=1) is None
    assert nacl_entries.free_numbers([5, 2], claimed=[1], count=1) is None  # 2 is someone's: the first entry


def test_guardduty_never_waits_for_the_safety_reads_before_the_cut(
    engine: Engine, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For GuardDuty an unsafe address is left out, not refused, so the cut need not wait for
    what shows an address safe (ip-ranges.json is a download at a cold start): the reads are held
    here until the first swap, which must therefore come first."""
    import threading

    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    acl = acl_of(fleet, fleet.subnets[vpc])
    cut = threading.Event()
    waited_for_the_cut: list[bool] = []
    gather = nacl_screening.gather_safety

    def slow_safety(*args: Any, **kwargs: Any) -> nacl_screening.Safety:
        waited_for_the_cut.append(cut.wait(timeout=20))  # False: the cut waited for these reads
        return gather(*args, **kwargs)

    def on_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        if "Groups" in params:
            cut.set()

    monkeypatch.setattr(nacl, "gather_safety", slow_safety)
    for lane in (engine.aws, engine.lanes_aws, engine.urgent_aws):
        lane.ec2().meta.events.register("before-parameter-build.ec2", on_call)
    options = Options(evidence=False, block_ips=(ATTACKER,), block_ips_skip_unsafe=True)

    report = engine.isolate([instance], "GD-3", options=options)

    assert [r.ok for r in report.results] == [True]
    assert waited_for_the_cut == [True]
    assert deny(False, 1, f"{ATTACKER}/32") in entries(fleet, acl)


# -- the security review: races, partial pairs, addresses that embed IPv4, scoped addresses ------------


def test_a_same_case_run_that_finds_its_number_taken_by_the_entry_it_wanted_keeps_it_recorded(
    emulator: Emulator, engine: Engine, fleet: Fleet
) -> None:
    """Run 1 records rule 1 (pending); run 2 reads it pending and missing and adds it again at the
    same number; run 1's create lands first, so run 2's is refused as already there. Neither may
    leave the deny live with its record ``removed``."""
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    acl = acl_of(fleet, fleet.subnets[vpc])
    engine.isolate([instance], "IR-R", options=Options(evidence=False))
    aws2 = Aws(AwsSettings(region=DEMO_REGION, endpoint_url=emulator.endpoint_url))
    second = Engine(aws2, StateStore(aws2), concurrency=4)
    lands = Aws(AwsSettings(region=DEMO_REGION, endpoint_url=emulator.endpoint_url))  # run 1's create
    inbound: CreateNetworkAclEntryRequestTypeDef = {
        "NetworkAclId": acl, "RuleNumber": 1, "Egress": False, "Protocol": "-1",
        "RuleAction": "deny", "CidrBlock": f"{ATTACKER}/32",
    }  # fmt: skip
    landed: list[bool] = []
    raced: list[nacl.NaclReport] = []

    def run1_create_lands(params: dict[str, Any], **_: Any) -> None:  # just before run 2's create
        if not landed:
            landed.append(True)
            lands.ec2().create_network_acl_entry(**inbound)

    def run2_reads_first(**_: Any) -> Any:  # run 1, about to add its pending inbound entry
        if raced:
            return None
        aws2.ec2().meta.events.register("before-call.ec2.CreateNetworkAclEntry", run1_create_lands)
        raced.append(second.block_ip([ATTACKER], "IR-R"))
        return AWSResponse("https://ec2", 200, HTTPHeaders(), None), {}  # run 1's create (landed above)

    engine.aws.ec2().meta.events.register("before-call.ec2.CreateNetworkAclEntry", run2_reads_first)

    first = engine.block_ip([ATTACKER], "IR-R")

    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 1, f"{ATTACKER}/32"),
        deny(True, 1, f"{ATTACKER}/32"),
    }
    assert {k: r["status"] for k, r in records(fleet.aws, acl).items()} == {
        (False, 1): "applied",
        (True, 1): "applied",
    }
    assert first.ok and raced[0].ok, (first.all_notes(), raced[0].all_notes())
    inbound_results = {
        c.result
        for report in (first, raced[0])
        for c in report.changes
        if not c.egress and c.rule_number == 1
    }
    assert nacl_report.ChangeResult.ALREADY_THERE in inbound_results


def test_a_failure_on_the_second_direction_takes_the_first_out_and_goes_on_with_the_next_address(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    acl = acl_of(fleet, fleet.subnets[vpc])
    engine.isolate([instance], "IR-Q", options=Options(evidence=False))
    calls: list[dict[str, Any]] = []

    def quota(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)
        if len(calls) in (2, 6):  # the outbound entry of the first and of the third address
            error = {"Error": {"Code": nacl_entries.LIMIT_EXCEEDED, "Message": "quota"}}
            raise ClientError(error, "CreateNetworkAclEntry")  # type: ignore[arg-type]

    engine.aws.ec2().meta.events.register("before-parameter-build.ec2.CreateNetworkAclEntry", quota)

    report = engine.block_ip([ATTACKER, "198.51.100.9", "192.0.2.5"], "IR-Q")

    assert entries(fleet, acl) == ALLOW_ALL | {
        deny(False, 2, "198.51.100.9/32"),
        deny(True, 2, "198.51.100.9/32"),
    }, report.all_notes()
    assert {
        (k, r["cidr"], r["status"]) for k, r in records(fleet.aws, acl).items() if r["status"] != "removed"
    } == {
        ((False, 2), "198.51.100.9/32", "applied"),
        ((True, 2), "198.51.100.9/32", "applied"),
    }
    problems = [p.text for p in report.problems]
    assert len(problems) == 2, problems
    assert any(f"{ATTACKER}/32" in p for p in problems) and any("192.0.2.5/32" in p for p in problems)
    assert set(report.denied()) == {"198.51.100.9/32"}


@pytest.mark.parametrize(
    "raw",
    [
        "64:ff9b::a00:1",
        "64:ff9b::/96",
        "64:ff9b:1::5",
        "::ffff:203.0.113.7",
        "::ffff:0:0/96",
        "2002:cb00:7107::1",
    ],
)
def test_addresses_that_embed_ipv4_are_refused(raw: str) -> None:
    with pytest.raises(UsageError, match="embeds IPv4"):
        nacl.parse_blocks([raw], skip_unsafe=False)
    blocks, notes = nacl.parse_blocks([raw, ATTACKER], skip_unsafe=True)
    assert [str(b) for b in blocks] == [f"{ATTACKER}/32"]
    assert len(notes) == 1 and "embeds IPv4" in notes[0]


def test_a_scoped_address_is_refused() -> None:
    with pytest.raises(UsageError, match="scope"):
        nacl.parse_blocks(["2001:db8::1%eth0"], skip_unsafe=False)
    with pytest.raises(UsageError, match="scope"):
        nacl.parse_blocks(["fe80::1%1/128"], skip_unsafe=False, check=False)


def test_the_cli_refuses_nat64_and_scoped_addresses_with_exit_2(run: Cli, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    for raw, says in (("64:ff9b::808:808", "embeds IPv4"), ("2001:db8::1%eth0", "scope")):
        refused = run("isolate", instance, "--case", "IR-6", "--no-evidence", "--block-ip", raw)
        assert refused.code == 2 and says in one_line_error(refused), refused.err
