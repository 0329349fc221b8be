"""Whose evidence bucket is it? ec2ir changes the settings, policy and tags of a bucket it created
itself, and finishes one it was creating when a run was interrupted, recognised by its own record
in the state table; any other bucket is used as it is and only checked, whatever its name or tags."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ec2ir.aws.session import Aws, AwsSettings
from ec2ir.engine.facade import Engine
from ec2ir.evidence.bucket import EvidenceBucket, default_bucket
from ec2ir.evidence.bucket_setup import BUCKET_RECORD, BUCKET_RECORD_SORT
from ec2ir.store.state import StateStore
from tests.support.faults import Crash
from tests.support.fleets import Fleet

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it

ACCOUNT = "123456789012"  # moto's
BUCKET = default_bucket(ACCOUNT, "us-east-1")
CASE = "IR-BUCKET"
LEGAL_HOLD = [{"Key": "legal-hold", "Value": "case-2026-17"}, {"Key": "owner", "Value": "security"}]


def organisation_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OrganisationNeverDeletes",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:DeleteBucket", "s3:DeleteObjectVersion"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


def make_it_the_organisations(s3: Any, bucket: str = BUCKET) -> None:
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(organisation_policy(bucket)))
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": LEGAL_HOLD})


def policy_and_tags(s3: Any, bucket: str = BUCKET) -> tuple[dict[str, Any], list[dict[str, str]]]:
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    tags = sorted(s3.get_bucket_tagging(Bucket=bucket)["TagSet"], key=lambda tag: tag["Key"])
    return policy, tags


def record_status(store: StateStore, bucket: str = BUCKET) -> str:
    item = store.aws.dynamodb().get_item(
        TableName=store.table,
        Key={"pk": {"S": f"{BUCKET_RECORD}{bucket}"}, "sk": {"S": BUCKET_RECORD_SORT}},
        ConsistentRead=True,
    )
    return str(item.get("Item", {}).get("status", {}).get("S", ""))


def another_aws(aws: Aws) -> Aws:
    """A second process's clients, on the same emulator."""
    return Aws(AwsSettings(region=aws.region(), endpoint_url=aws.settings.endpoint_url))


@pytest.mark.parametrize("verb", ["isolate", "collect"])
def test_a_default_named_bucket_ec2ir_did_not_create_keeps_its_policy_and_tags(
    engine: Engine, fleet: Fleet, verb: str
) -> None:
    s3 = engine.aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    make_it_the_organisations(s3)
    before = policy_and_tags(s3)
    vpc = fleet.vpc(1)
    instance = fleet.instance(vpc, [fleet.group(vpc, "web")])

    report = getattr(engine, verb)([instance], CASE)

    assert report.results[0].ok, report.results[0].steps
    assert policy_and_tags(s3) == before
    assert s3.get_bucket_versioning(Bucket=BUCKET).get("Status") != "Enabled"  # not turned on either
    assert not any("created evidence bucket" in note for note in report.notes), report.notes
    warnings = [
        note for note in report.notes if note.startswith("WARNING: evidence bucket") and BUCKET in note
    ]
    assert any("does not keep versions" in note for note in warnings), report.notes
    assert any("no default encryption" in note for note in warnings), report.notes
    assert any("does not block public access" in note for note in warnings), report.notes
    assert any("ec2ir did not create it" in note for note in report.notes), report.notes
    assert report.results[0].evidence  # the evidence still went in, and says where
    assert all(
        BUCKET in ref.location for ref in report.results[0].evidence if ref.location.startswith("s3://")
    )


def test_a_bare_bucket_without_ec2ir_s_record_is_only_checked(aws: Aws) -> None:
    store = StateStore(aws)
    store.ensure_table()
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)  # anyone's: nothing says ec2ir began it

    bucket = EvidenceBucket(aws, BUCKET, ACCOUNT, store=store)
    bucket.ensure()

    assert s3.get_bucket_versioning(Bucket=BUCKET).get("Status") != "Enabled"
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=BUCKET)
    assert any("does not keep versions" in note for note in bucket.notes)
    assert record_status(store) == ""


def test_a_bucket_ec2ir_created_keeps_the_organisation_s_later_policy_and_tags(aws: Aws) -> None:
    """ec2ir's own tag is no licence either way: once ec2ir has finished a bucket, the tags and
    policy the organisation puts on it later are left alone, even with ec2ir's tag gone."""
    store = StateStore(aws)
    store.ensure_table()
    EvidenceBucket(aws, BUCKET, ACCOUNT, store=store).ensure()
    assert record_status(store) == "created"
    s3 = aws.client("s3")
    make_it_the_organisations(s3)
    before = policy_and_tags(s3)

    later = EvidenceBucket(another_aws(aws), BUCKET, ACCOUNT, store=store)
    later.ensure()

    assert policy_and_tags(s3) == before
    assert not any("created" in note or "finished" in note for note in later.notes), later.notes


def test_a_bucket_ec2ir_was_creating_when_the_run_died_is_finished_by_the_next_run(aws: Aws) -> None:
    store = StateStore(aws)
    store.ensure_table()
    dying = another_aws(aws)

    def die(**_: Any) -> None:
        raise Crash("the process died right after CreateBucket")

    dying.client("s3").meta.events.register("after-call.s3.CreateBucket", die)
    with pytest.raises(Crash):
        EvidenceBucket(dying, BUCKET, ACCOUNT, object_lock_days=7, store=store).ensure()
    s3 = aws.client("s3")
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):  # made, not hardened
        s3.get_bucket_policy(Bucket=BUCKET)
    assert record_status(store) == "creating"

    rerun = EvidenceBucket(aws, BUCKET, ACCOUNT, store=store)  # without --object-lock-days this time
    rerun.ensure()

    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    policy, tags = policy_and_tags(s3)
    assert policy["Statement"][0]["Sid"] == "DenyInsecureTransport"
    assert {"Key": "ec2ir:role", "Value": "evidence"} in tags
    retention = s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]["Rule"]
    default = retention["DefaultRetention"]
    assert (default["Mode"], default["Days"]) == ("COMPLIANCE", 7)  # as the first run meant it
    assert any(note.startswith(f"finished hardening evidence bucket s3://{BUCKET}") for note in rerun.notes)
    assert record_status(store) == "created"


def test_without_a_state_table_only_the_run_that_creates_a_bucket_changes_it(aws: Aws) -> None:
    EvidenceBucket(aws, BUCKET, ACCOUNT).ensure()
    s3 = aws.client("s3")
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    make_it_the_organisations(s3)
    before = policy_and_tags(s3)

    EvidenceBucket(another_aws(aws), BUCKET, ACCOUNT).ensure()

    assert policy_and_tags(s3) == before
