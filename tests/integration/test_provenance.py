"""Release checks what it restores; the case journal proves itself (chained runs, heads kept as
object versions in the evidence bucket)."""

from __future__ import annotations

from typing import Any

import pytest

from ec2ir.containment.steps import Options
from ec2ir.engine.facade import Engine
from ec2ir.evidence.verify import journal_head_key
from tests.support.fleets import Fleet

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it

CASE = "IR-PROV"


def profile(fleet: Fleet, name: str) -> str:
    iam = fleet.aws.client("iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    arn = str(iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"])
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def tamper(engine: Engine, instance: str, eni: str, group: str, profile_arn: str) -> None:
    """The attack: one UpdateItem on the hold."""
    engine.aws.dynamodb().update_item(
        TableName=engine.store.table,
        Key={"pk": {"S": f"instance#{instance}"}, "sk": {"S": "hold"}},
        UpdateExpression="SET originals.#eni = :groups, steps.credentials.profile_arn = :arn",
        ExpressionAttributeNames={"#eni": eni},
        ExpressionAttributeValues={":groups": {"L": [{"S": group}]}, ":arn": {"S": profile_arn}},
    )


def associated(fleet: Fleet, instance: str) -> list[str]:
    answer = fleet.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance]}]
    )
    return [a["IamInstanceProfile"]["Arn"] for a in answer["IamInstanceProfileAssociations"]]


@pytest.mark.parametrize("evidence", [True, False], ids=["evidence", "no-evidence"])
def test_release_refuses_a_hold_rewritten_to_an_open_group_and_an_admin_profile(
    engine: Engine, fleet: Fleet, evidence: bool
) -> None:
    vpc = fleet.vpc(1)
    web, wide_open = fleet.group(vpc, "web"), fleet.group(vpc, "wide-open")
    app, admin = profile(fleet, "app"), profile(fleet, "admin")
    instance, other = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    for each in (instance, other):
        fleet.ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": app}, InstanceId=each)
    engine.isolate([instance, other], CASE, options=Options(evidence=evidence))
    hold = engine.store.get(instance)
    assert hold is not None
    eni = next(iter(hold.originals))
    contained = fleet.eni_groups([instance])
    tamper(engine, instance, eni, wide_open, admin)

    report = engine.release([instance, other], CASE)

    refused, released = report.results
    assert (refused.ok, refused.error_code) == (False, "OriginalsTampered")
    assert wide_open in refused.detail and "admin" in refused.detail and "app" in refused.detail
    assert fleet.eni_groups([instance]) == contained  # nothing changed for it
    assert associated(fleet, instance) == []
    assert engine.store.get(instance).status.value == "isolated"  # type: ignore[union-attr]
    assert released.ok, released.detail  # the other instance is released as recorded
    assert set(fleet.eni_groups([other]).values()) == {(web,)}
    assert associated(fleet, other) == [app]


def test_release_refuses_restoring_an_ec2ir_group_or_a_group_of_another_vpc(
    engine: Engine, fleet: Fleet
) -> None:
    vpc, elsewhere = fleet.vpc(1), fleet.vpc(2)
    web, foreign = fleet.group(vpc, "web"), fleet.group(elsewhere, "foreign")
    first, second = fleet.instance(vpc, [web]), fleet.instance(vpc, [web])
    report = engine.isolate([first, second], CASE, options=Options(evidence=False))
    isolation = report.groups[vpc].isolation_group_id
    for instance, group in ((first, isolation), (second, foreign)):
        hold = engine.store.get(instance)
        assert hold is not None
        engine.aws.dynamodb().update_item(
            TableName=engine.store.table,
            Key={"pk": {"S": f"instance#{instance}"}, "sk": {"S": "hold"}},
            UpdateExpression="SET originals.#eni = :groups",
            ExpressionAttributeNames={"#eni": next(iter(hold.originals))},
            ExpressionAttributeValues={":groups": {"L": [{"S": group}]}},
        )

    results = engine.release([first, second], CASE).results

    assert [r.error_code for r in results] == ["OriginalsTampered", "OriginalsTampered"]
    assert "ec2ir's own groups" in results[0].detail
    assert f"{foreign} is in {elsewhere}" in results[1].detail


# A step record rewritten in the state table into something ec2ir never records, and what the
# refusal says: not a map at all, a tag ec2ir never touched (undo would delete it), a type changed.
MALFORMED = [
    ("#s", {"#s": "tags"}, {"S": "x"}, "its tags record is malformed: not a map"),
    ("#s.previous.#n", {"#s": "tags", "#n": "Name"}, {"NULL": True}, "previous may name only ec2ir:case"),
    ("#s.disable_api_termination", {"#s": "protect"}, {"S": "no"}, "disable_api_termination is a str"),
]


@pytest.mark.parametrize(
    ("path", "names", "value", "said"), MALFORMED, ids=["not-a-map", "other-tag", "type"]
)
def test_release_and_its_dry_run_refuse_a_malformed_step_record_and_change_nothing(
    engine: Engine, fleet: Fleet, path: str, names: dict[str, str], value: dict[str, Any], said: str
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], CASE, options=Options(evidence=False))
    contained = fleet.eni_groups([instance])
    engine.aws.dynamodb().update_item(
        TableName=engine.store.table,
        Key={"pk": {"S": f"instance#{instance}"}, "sk": {"S": "hold"}},
        UpdateExpression=f"SET steps.{path} = :bad",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={":bad": value},
    )

    planned = engine.plan_release([instance], CASE).results[0]
    released = engine.release([instance], CASE).results[0]

    for result in (planned, released):
        assert (result.ok, result.error_code) == (False, "OriginalsTampered")
        assert said in result.detail and "nothing was changed" in result.detail
    assert fleet.eni_groups([instance]) == contained  # nothing changed
    assert engine.store.get(instance).status.value == "isolated"  # type: ignore[union-attr]


def test_the_first_journal_entry_of_a_hold_carries_its_originals_as_data(
    engine: Engine, fleet: Fleet
) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], CASE, options=Options(evidence=False))
    hold = engine.store.get(instance)
    assert hold is not None

    records = [e for e in engine.store.journal(CASE) if e.action == "isolate:record-originals"]

    first = records[0].record  # type: ignore[attr-defined]
    assert first["originals"] == {eni: list(groups) for eni, groups in hold.originals.items()}
    assert first["recorded_at"] == hold.recorded_at and set(first["steps"]) <= set(hold.steps)
    assert records[-1].record["complete"] and records[-1].record["steps"] == hold.steps  # type: ignore[attr-defined]


def journal_items(engine: Engine) -> list[dict[str, Any]]:
    answer = engine.aws.dynamodb().query(
        TableName=engine.store.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :j)",
        ExpressionAttributeValues={":pk": {"S": f"case#{CASE}"}, ":j": {"S": "journal#"}},
    )
    return list(answer["Items"])


def bad(engine: Engine) -> list[tuple[str, str]]:
    return [(f.status, f.detail) for f in engine.verify(CASE) if not f.ok]


def test_verify_catches_a_journal_entry_rewritten_in_place_or_deleted(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], CASE)
    engine.release([instance], CASE)
    assert bad(engine) == []
    bucket = (
        next(
            ref.location
            for e in engine.store.journal(CASE)
            for ref in e.evidence
            if ref.location.startswith("s3://")
        )
        .removeprefix("s3://")
        .partition("/")[0]
    )
    heads = engine.aws.client("s3").list_object_versions(Bucket=bucket, Prefix=journal_head_key(CASE))
    assert len(heads["Versions"]) >= 2  # one per run
    ddb = engine.aws.dynamodb()
    items = journal_items(engine)
    network = next(i for i in items if i["action"]["S"] == "release:network")

    rewritten = dict(network, result={"S": "done: nothing happened"})
    ddb.put_item(TableName=engine.store.table, Item=rewritten)
    assert any(status == "TAMPERED" and "release:network" in detail for status, detail in bad(engine))

    ddb.put_item(TableName=engine.store.table, Item=network)  # put back
    last = max(items, key=lambda i: (i.get("run", {}).get("S", ""), i["sk"]["S"]))
    for item in items:
        if item["action"]["S"] == "release:tags":
            ddb.delete_item(TableName=engine.store.table, Key={"pk": item["pk"], "sk": item["sk"]})
    assert any(status == "MISSING" for status, _ in bad(engine)), last


def test_verify_says_what_it_cannot_prove_without_an_evidence_bucket(engine: Engine, fleet: Fleet) -> None:
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    report = engine.isolate([instance], CASE, options=Options(evidence=False))
    assert any("cannot prove" in note for note in report.notes)

    findings = engine.verify(CASE)

    assert all(f.ok for f in findings)
    assert any(f.status == "not provable" for f in findings)


def test_the_report_flags_an_entry_whose_content_no_longer_matches_its_key(
    engine: Engine, fleet: Fleet
) -> None:
    from ec2ir.report.build import build_report
    from ec2ir.report.formats import render

    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])
    engine.isolate([instance], CASE, options=Options(evidence=False))
    assert build_report(engine.store, CASE).integrity == ()
    item = next(i for i in journal_items(engine) if i["action"]["S"] == "isolate:network")
    engine.aws.dynamodb().put_item(
        TableName=engine.store.table, Item=dict(item, result={"S": "done: nothing"})
    )

    report = build_report(engine.store, CASE)

    assert any(p.startswith("TAMPERED") and "isolate:network" in p for p in report.integrity)
    assert "does not prove itself" in render(report, "md")
