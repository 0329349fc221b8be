"""The request ledger: the answer sent to each CloudFormation request, beside the holds.

Its items (``pk = cfn-request#<RequestId>``, ``sk = answer``) never match the holds' ``sk = hold``,
so ``ec2ir status`` does not see them; they stay as the record of what CloudFormation asked. A
retried request (the same RequestId) is answered from here and changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ec2ir.aws.session import translated
from ec2ir.core.errors import AwsError
from ec2ir.store.items import CONDITION_FAILED
from ec2ir.store.table import Table

LEDGER_PREFIX = "cfn-request#"
LEDGER_SORT_KEY = "answer"


@dataclass(frozen=True)
class AnsweredRequest:
    """One CloudFormation request and the answer it was sent."""

    request_id: str
    status: str
    reason: str
    data: dict[str, str] = field(default_factory=dict)
    request_type: str = ""
    stack_id: str = ""
    logical_id: str = ""
    physical_id: str = ""


def ledger_key(request_id: str) -> dict[str, Any]:
    return {"pk": {"S": LEDGER_PREFIX + request_id}, "sk": {"S": LEDGER_SORT_KEY}}


class RequestLedger:
    """The answers sent, one per RequestId; the first one recorded stands."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def find(self, request_id: str) -> AnsweredRequest | None:
        """The answer this request was sent before; None if it never was (or there is no table)."""
        try:
            with translated("dynamodb", "GetItem"):
                item = self.table.ddb.get_item(
                    TableName=self.table.name, Key=ledger_key(request_id), ConsistentRead=True
                ).get("Item")
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return None  # no table, so no request was ever answered from it
            raise
        if not item:
            return None

        def text(name: str) -> str:
            return str(item.get(name, {}).get("S", ""))

        return AnsweredRequest(
            request_id=request_id,
            status=item["status"]["S"],
            reason=item["reason"]["S"],
            data=dict(json.loads(item["data"]["S"])),
            request_type=text("request_type"),
            stack_id=text("stack_id"),
            logical_id=text("logical_id"),
            physical_id=text("physical_id"),
        )

    def keep(self, answered: AnsweredRequest) -> None:
        """Record the answer; the first one recorded for a RequestId stands."""
        item = ledger_key(answered.request_id) | {
            "request_type": {"S": answered.request_type},
            "stack_id": {"S": answered.stack_id},
            "logical_id": {"S": answered.logical_id},
            "physical_id": {"S": answered.physical_id},
            "status": {"S": answered.status},
            "reason": {"S": answered.reason or "-"},
            "data": {"S": json.dumps(answered.data, sort_keys=True)},
            "answered_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        }
        try:
            with translated("dynamodb", "PutItem"):
                self.table.ddb.put_item(
                    TableName=self.table.name, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
        except AwsError as error:
            if error.code not in (CONDITION_FAILED, "ResourceNotFoundException"):
                raise
