"""GuardDuty's sightings: the count each finding had when it contained each instance.

Its items (``pk = guardduty#<case>``, ``sk = instance#<id>``) never match the holds' ``sk = hold``,
so ``ec2ir status`` does not see them. A finding sent again after a responder's release contains
the instance again only when its count grew beyond the one kept here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ec2ir.aws.session import translated
from ec2ir.core.errors import AwsError
from ec2ir.store.items import CONDITION_FAILED, now
from ec2ir.store.table import Table

SEEN_PREFIX, SEEN_SORT_PREFIX = "guardduty#", "instance#"


@dataclass(frozen=True)
class Seen:
    """A finding's containment of an instance, as the state table keeps it."""

    count: int | None
    updated_at: str
    contained_at: str


def sighting_key(case: str, instance_id: str) -> dict[str, Any]:
    return {"pk": {"S": SEEN_PREFIX + case}, "sk": {"S": SEEN_SORT_PREFIX + instance_id}}


class Sightings:
    """The count at containment of each finding (a case) and instance."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def get(self, case: str, instance_id: str) -> Seen | None:
        with translated("dynamodb", "GetItem"):
            item = self.table.ddb.get_item(
                TableName=self.table.name, Key=sighting_key(case, instance_id), ConsistentRead=True
            ).get("Item")
        if not item:
            return None
        count = item.get("count", {}).get("N")
        return Seen(
            int(count) if count is not None else None,
            item.get("updated_at", {}).get("S", ""),
            item.get("contained_at", {}).get("S", ""),
        )

    def keep(
        self, case: str, instance_id: str, finding_id: str, updated_at: str, count: int | None, replace: bool
    ) -> None:
        """Record the finding's count at this containment; only a new episode replaces a record."""
        item = sighting_key(case, instance_id) | {
            "finding_id": {"S": finding_id},
            "updated_at": {"S": updated_at or "-"},
            "contained_at": {"S": now()},
        }
        if count is not None:
            item["count"] = {"N": str(count)}
        condition = {} if replace else {"ConditionExpression": "attribute_not_exists(pk)"}
        try:
            with translated("dynamodb", "PutItem"):
                self.table.ddb.put_item(TableName=self.table.name, Item=item, **condition)
        except AwsError as error:
            if error.code != CONDITION_FAILED:
                raise
