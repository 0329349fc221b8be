"""Issue 14 §7: the ARNs ec2ir writes follow the caller's partition (aws, aws-cn, aws-us-gov), and
every S3 call, verify's reads included, names the account the evidence belongs to."""

from __future__ import annotations

from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.engine.facade import Engine
from ec2ir.evidence.bucket_setup import tls_only_policy
from ec2ir.permissions.policy import principal_arn
from tests.support.fleets import Fleet


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_arns_follow_the_callers_partition(partition: str) -> None:
    caller = f"arn:{partition}:sts::123456789012:assumed-role/Responder/alice"

    assert principal_arn(caller) == f"arn:{partition}:iam::123456789012:role/Responder"
    [deny] = tls_only_policy("evidence", partition)["Statement"]
    assert deny["Resource"] == [f"arn:{partition}:s3:::evidence", f"arn:{partition}:s3:::evidence/*"]


@pytest.mark.evidence
def test_every_s3_call_of_isolate_and_verify_names_the_expected_bucket_owner(
    engine: Engine, fleet: Fleet, aws: Aws
) -> None:
    vpc = fleet.vpc(1)
    victim = fleet.instance(vpc, [fleet.group(vpc, "web")])
    calls: list[tuple[str, dict[str, Any]]] = []

    def note(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params))

    for client_of in (engine.aws, engine.evidence_aws):
        client_of.client("s3").meta.events.register("provide-client-params.s3", note)
    account = aws.caller_arn().split(":")[4]

    engine.isolate([victim], "IR-14")
    findings = engine.verify("IR-14")

    assert findings and all(finding.ok for finding in findings if finding.status != "NOT PROVABLE")
    reads = [
        name for name, _ in calls if name in ("GetObject", "HeadObject", "ListObjectVersions", "PutObject")
    ]
    assert {"PutObject", "GetObject"} <= set(reads)
    # CreateBucket takes no expected owner: whoever creates a bucket owns it
    strays = [
        name
        for name, params in calls
        if name != "CreateBucket" and params.get("ExpectedBucketOwner") != account
    ]
    assert strays == [], strays
