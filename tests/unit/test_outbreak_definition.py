"""outbreak.yaml's state machine, read as CloudFormation receives it: a Distributed Map of one shard
per place that tolerates every failure, retries what a retry can cure, records every failure as a
result, and hands all of them to the summary; and the shard event's checks, which need no AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse  # type: ignore[import-untyped]

from ec2ir.cli import stepfunctions
from ec2ir.core.errors import UsageError
from ec2ir.handlers import EXTERNAL_ID_ENV, MEMBER_ROLE_ENV, TABLE_ENV
from ec2ir.handlers import outbreak as handler
from ec2ir.permissions.policy import required_actions

ROOT = Path(__file__).resolve().parents[2]
MEMBER = "222233334444"
ARN = f"arn:aws:ec2:us-east-1:{MEMBER}:instance/i-0123456789abcdef0"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse((ROOT / "outbreak.yaml").read_text())
    return parsed


def _resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][name]["Properties"]
    return properties


def _shards_map(template: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = _resource(template, "OutbreakStateMachine")["Definition"]["States"]["Shards"]
    return state


def test_the_shards_run_in_a_distributed_map_that_tolerates_every_failure(template: dict[str, Any]) -> None:
    shards = _shards_map(template)

    assert shards["Type"] == "Map"
    assert shards["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert shards["ToleratedFailurePercentage"] == 100
    assert 1 <= shards["MaxConcurrency"] <= 1000
    assert shards["ItemsPath"] == "$.shards"
    # each child gets exactly the fields the shard function accepts
    assert {key.removesuffix(".$") for key in shards["ItemSelector"]} == handler.SHARD_FIELDS
    # every child's result goes where the summary function reads it
    assert shards["ResultWriter"]["Parameters"]["Prefix"] + "/" == handler.SHARD_RESULTS_PREFIX
    assert shards["Next"] == "Summary"


def test_the_shard_task_retries_what_a_retry_cures_and_catches_everything_else(
    template: dict[str, Any],
) -> None:
    states = _shards_map(template)["ItemProcessor"]["States"]
    task = states["RunShard"]

    retried = {error for retry in task["Retry"] for error in retry["ErrorEquals"]}
    assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException", "States.Timeout"} <= retried
    assert handler.ShardTransient.__name__ in retried  # Lambda names a raised error by its class
    assert all(retry["MaxAttempts"] <= 6 for retry in task["Retry"])
    assert task["TimeoutSeconds"] > _function(template, "ShardFunction")["Timeout"]
    [catch] = task["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"]
    assert catch["ResultPath"] == "$.caught"
    recorded = states[catch["Next"]]
    assert recorded["Type"] == "Pass" and recorded["End"] is True
    assert recorded["Parameters"]["failed"] is True


def test_a_caught_failure_becomes_a_failure_of_each_instance_it_named(template: dict[str, Any]) -> None:
    recorded = _shards_map(template)["ItemProcessor"]["States"]["RecordShardFailure"]["Parameters"]
    # what the Pass state would output for a shard whose function kept failing
    values = {
        "case_id": "IR-1",
        "action": "isolate",
        "account": MEMBER,
        "region": "us-east-1",
        "instance_arns": [ARN],
        "error": "Lambda.ServiceException",
        "cause": '{"errorMessage": "boom\\u001b[2J"}',
    }
    output = {
        key.removesuffix(".$"): values.get(key.removesuffix(".$"), value) for key, value in recorded.items()
    }

    result = handler.shard_result(output)

    assert not result["ok"]
    assert (result["account"], result["region"]) == (MEMBER, "us-east-1")
    [failed] = result["results"]
    assert failed["instance_id"] == "i-0123456789abcdef0"
    assert failed["error_code"] == "Lambda.ServiceException"
    assert "boom" in failed["detail"] and "\x1b" not in failed["detail"]


def test_the_summary_is_given_the_case_and_the_written_results(template: dict[str, Any]) -> None:
    summary = _resource(template, "OutbreakStateMachine")["Definition"]["States"]["Summary"]
    payload = summary["Parameters"]["Payload"]

    assert payload == {
        "case_id.$": "$$.Execution.Input.case_id",
        "action.$": "$$.Execution.Input.action",
        "execution.$": "$$.Execution.Name",
        "results.$": "$.ResultWriterDetails",
    }
    assert summary["End"] is True


def _function(template: dict[str, Any], name: str) -> dict[str, Any]:
    return _resource(template, name)


def test_the_functions_run_this_package_s_handlers_with_the_variables_they_read(
    template: dict[str, Any],
) -> None:
    shard, summary = _function(template, "ShardFunction"), _function(template, "SummaryFunction")

    assert shard["Handler"] == "ec2ir.handlers.outbreak.shard" and callable(handler.shard)
    assert summary["Handler"] == "ec2ir.handlers.outbreak.summary" and callable(handler.summary)
    assert shard["CodeUri"] == summary["CodeUri"] == "src/"
    assert set(shard["Environment"]["Variables"]) == {
        TABLE_ENV,
        MEMBER_ROLE_ENV,
        EXTERNAL_ID_ENV,
    }
    assert set(summary["Environment"]["Variables"]) == {handler.RESULTS_BUCKET_ENV}
    assert {stepfunctions.STATE_MACHINE_OUTPUT, stepfunctions.RESULTS_BUCKET_OUTPUT} <= set(
        template["Outputs"]
    )


def test_the_shard_role_assumes_only_the_member_role_and_does_at_home_what_a_member_role_may(
    template: dict[str, Any],
) -> None:
    statements = _resource(template, "ShardPolicy")["PolicyDocument"]["Statement"]
    allowed = {
        action
        for statement in statements
        if statement["Effect"] == "Allow"
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    [assume] = [s for s in statements if s.get("Sid") == "AssumeMemberRoles"]

    assert assume["Action"] == "sts:AssumeRole"
    assert assume["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"}
    assert set(required_actions(member=True)) - allowed == set()


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"case_id": "bad case\x1b"}, "malformed case id"),
        ({"action": "terminate"}, "not one of"),
        ({"account": "12345"}, "malformed account id"),
        ({"region": "us-east-1; rm"}, "malformed Region"),
        ({"instance_arns": []}, "non-empty list"),
        ({"instance_arns": "arn"}, "non-empty list"),
        ({"instance_arns": [ARN.replace("us-east-1", "eu-west-1")]}, "not in the shard's place"),
        ({"instance_arns": [ARN.replace(MEMBER, "111122223333")]}, "not in the shard's place"),
        ({"instance_arns": [ARN + "x"]}, "malformed instance ARN"),
        ({"instance_arns": [7]}, "strings only"),
        ({"instance_arns": [ARN] * (handler.MAX_SHARD_INSTANCES + 1)}, "at most"),
        ({"options": {"memory": True}}, "not one isolate takes"),
        ({"options": {"evidence": 1}}, "must be a bool"),
        ({"options": {"office_cidr": "0.0.0.0/0"}}, "refusing office CIDR"),
        ({"surprise": True}, "unknown field"),
    ],
)
def test_a_shard_event_is_checked_field_by_field(change: dict[str, Any], refusal: str) -> None:
    event = {"case_id": "IR-1", "action": "isolate", "account": MEMBER, "region": "us-east-1"}
    event |= {"instance_arns": [ARN], "options": {}} | change

    with pytest.raises(UsageError, match=refusal) as refused:
        handler.parse_shard(event)
    assert "\x1b" not in str(refused.value)


def test_release_takes_only_release_options() -> None:
    event = {"case_id": "IR-1", "action": "release", "account": MEMBER, "region": "us-east-1"}
    assert handler.parse_shard(event | {"instance_arns": [ARN], "options": {"rejoin": True}}).options == {
        "rejoin": True
    }
    with pytest.raises(UsageError, match="not one release takes"):
        handler.parse_shard(event | {"instance_arns": [ARN], "options": {"evidence": True}})


def test_a_shard_answer_always_fits_step_functions_payload_limit() -> None:
    results = [
        {"instance_id": f"i-{n:017x}", "ok": n % 2 == 0, "error_code": "X", "detail": "d" * 300}
        for n in range(500)
    ]
    summary = handler.fit({"results": results, "notes": ["n" * 300] * 20, "trimmed": False}, limit=64 * 1024)

    assert summary["trimmed"] is True
    assert len(str(summary).encode()) < 64 * 1024 * 1.2
    assert [r["instance_id"] for r in summary["results"]] == [r["instance_id"] for r in results]
    # the default limit leaves room under Step Functions' 256 KiB
    assert handler.RESULT_LIMIT < handler.PAYLOAD_LIMIT


def test_a_large_place_is_split_into_shards_each_within_the_limit() -> None:
    from ec2ir.core.models import Place

    place = Place(MEMBER, "us-east-1")
    arns = [f"arn:aws:ec2:us-east-1:{MEMBER}:instance/i-{n:017x}" for n in range(1201)]

    items = handler.shard_items({place: arns})

    assert [len(item["instance_arns"]) for item in items] == [500, 500, 201]
    assert {(item["account"], item["region"]) for item in items} == {(MEMBER, "us-east-1")}
