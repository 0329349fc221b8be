"""The fixes outside EC2 and SSM: IAM's policy simulator, S3's bucket-policy conditions, and the
server's one-request-at-a-time atomicity."""

from __future__ import annotations

import json
import threading
from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch

# One lock for the whole process: every dispatcher (the served one and the in-process one) shares
# moto's global backends, so every request goes through this one lock.
_request_lock = threading.Lock()


def _simulate_principal_policy(response: Any) -> Any:
    from moto.core.responses import ActionResult

    actions = response._get_param("ActionNames", [])
    return ActionResult(
        {
            "EvaluationResults": [
                {"EvalActionName": action, "EvalResourceName": "*", "EvalDecision": "allowed"}
                for action in actions
            ],
            "IsTruncated": False,
        }
    )


def _simulate_principal_policy_patches() -> tuple[Patch, ...]:
    from moto.iam.responses import IamResponse

    return (Patch(IamResponse, "simulate_principal_policy", _simulate_principal_policy),)


SIMULATE_PRINCIPAL_POLICY = Fix(
    name="simulate-principal-policy",
    moto="`SimulatePrincipalPolicy` not implemented (HTTP 500)",
    aws='every action "allowed", which is how moto authorises calls',
    why="moto has no IAM policy simulator (it answers HTTP 500). moto authorises every call, so the "
    'corrected emulator answers "allowed" for every action, which is exactly what its callers will '
    "then experience.",
    build=_simulate_principal_policy_patches,
)


def _atomic_requests() -> tuple[Patch, ...]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_dispatch = DomainDispatcherApplication.__call__

    def atomic_dispatch(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
        with _request_lock:
            # Flask builds the whole response inside the call, so the lock covers the change.
            return list(original_dispatch(app, environ, start_response))

    return (Patch(DomainDispatcherApplication, "__call__", atomic_dispatch),)


ATOMIC_REQUESTS = Fix(
    name="atomic-requests",
    moto="requests run side by side, so two racing requests can both pass a check AWS makes atomically",
    aws="requests applied one at a time, so a DynamoDB condition or a unique group name holds",
    why="moto's threaded server runs requests side by side with no atomicity, so two racing "
    "requests can both pass a check that AWS applies atomically (a DynamoDB condition, a "
    "security-group name that must be unique in its VPC). Requests are applied one at a time.",
    build=_atomic_requests,
)


def _kept_statements(policy: dict[str, Any]) -> list[Any]:
    """The statements that hold for a TLS request: unconditional, or conditional on TLS alone."""
    statements = policy.get("Statement", [])
    return [
        statement
        for statement in (statements if isinstance(statements, list) else [statements])
        if "Condition" not in statement or statement["Condition"] == {"Bool": {"aws:SecureTransport": "true"}}
    ]


def _bucket_policy_conditions() -> tuple[Patch, ...]:
    from moto.s3.models import FakeBucket

    original_get_permission = FakeBucket.get_permission

    def get_permission(bucket: Any, action: str, resource: str) -> Any:
        if bucket.policy is None:
            return original_get_permission(bucket, action, resource)
        policy = json.loads(bucket.policy)
        kept = _kept_statements(policy)
        original_policy = bucket.policy
        bucket.policy = json.dumps({**policy, "Statement": kept}).encode() if kept else None
        try:
            return original_get_permission(bucket, action, resource)
        finally:
            bucket.policy = original_policy

    return (Patch(FakeBucket, "get_permission", get_permission),)


BUCKET_POLICY_CONDITIONS = Fix(
    name="bucket-policy-conditions",
    moto="a bucket policy's `Condition` is ignored, so the TLS-only Deny refuses every request",
    aws="the condition is evaluated as for a TLS request, as every AWS endpoint is",
    why="moto ignores a bucket policy's ``Condition``, so the evidence bucket's TLS-only Deny "
    "(``aws:SecureTransport`` false) refuses every request. AWS's endpoints are all TLS, so the "
    "emulator evaluates that condition as a TLS request would; a statement with any other "
    "condition, which it cannot evaluate, is left out rather than applied unconditionally.",
    build=_bucket_policy_conditions,
)
