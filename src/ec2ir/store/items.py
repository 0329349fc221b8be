"""The state table's item vocabulary: its keys, its timestamps and its type codec.

Every part of the store (holds, the case journal, ec2ir's groups, the request ledger) writes items
of one table; they share the key shapes and the conversion between plain values and DynamoDB's
typed attribute values defined here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ec2ir.aws.session import from_dynamodb, to_dynamodb
from ec2ir.core.models import Place

# The sort key of an instance's current hold (an archived one is ``hold#<recorded_at>``).
CURRENT = "hold"
CONDITION_FAILED = "ConditionalCheckFailedException"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def instance_key(instance_id: str, sk: str = CURRENT, place: Place | None = None) -> dict[str, Any]:
    """An instance's hold. An instance of the table's own account and Region is keyed by its id
    alone, as every hold was before runs spanned places; one elsewhere by its account and Region
    too, so that a case's holds across accounts can never share a key."""
    where = f"{place.account}:{place.region}:" if place else ""
    return {"pk": {"S": f"instance#{where}{instance_id}"}, "sk": {"S": sk}}


def case_key(case_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"case#{case_id}"}}


def serialize(value: dict[str, Any]) -> dict[str, Any]:
    return to_dynamodb(value)


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return from_dynamodb(item)


def plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; step records only ever hold whole numbers."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, Decimal):
        return int(value)
    return value
