"""Shared test helpers (moved from tests/integration/test_containment.py)."""

from __future__ import annotations

from typing import Any, ClassVar

from ec2ir.aws.session import Aws


class CallRecorder:
    """Every AWS call ec2ir makes through one Aws, as (IAM action, parameters), in order."""

    PREFIX: ClassVar[dict[str, str]] = {"elbv2": "elasticloadbalancing", "elb": "elasticloadbalancing"}
    # S3 operations whose IAM action has another name (the Service Authorization Reference)
    S3_ACTIONS: ClassVar[dict[str, str]] = {
        "HeadBucket": "s3:ListBucket",
        "ListObjects": "s3:ListBucket",
        "ListObjectsV2": "s3:ListBucket",
        "ListObjectVersions": "s3:ListBucketVersions",
        "HeadObject": "s3:GetObject",
        "GetBucketEncryption": "s3:GetEncryptionConfiguration",
        "PutBucketEncryption": "s3:PutEncryptionConfiguration",
        "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
        "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
        "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
        "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    }

    def __init__(self, *clients_of: Aws) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        for aws in clients_of:
            self._watch(aws)

    def _watch(self, aws: Aws) -> None:
        for service in ("ec2", "dynamodb", "sts", "autoscaling", "elbv2", "elb", "iam", "s3", "ssm", "kms"):
            client = aws.client(service)
            prefix = self.PREFIX.get(service, service)
            client.meta.events.register(
                "before-parameter-build",
                lambda model, params, prefix=prefix, **_: self._record(prefix, model, params),
            )

    def _record(self, prefix: str, model: Any, params: dict[str, Any]) -> None:
        action = f"{prefix}:{model.name}"
        if prefix == "s3":
            action = self.S3_ACTIONS.get(model.name, action)
            if action in ("s3:GetObject", "s3:HeadObject") and params.get("VersionId"):
                action = "s3:GetObjectVersion"
        self.calls.append((action, dict(params)))

    def actions(self) -> set[str]:
        # IAM authorises each put of a DynamoDB transaction as dynamodb:PutItem.
        return {"dynamodb:PutItem" if a == "dynamodb:TransactWriteItems" else a for a, _ in self.calls}
