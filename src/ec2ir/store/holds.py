"""The holds: one item per instance (``pk = instance#<id>``, ``sk = hold``) with the case, the
status and every ENI's original groups. An instance of another account or Region than the table's
is keyed ``instance#<account>:<region>:<id>`` and its item names its place.

The originals are written once, with a condition, and never overwritten while the hold is active.
When a released instance is isolated again, the released hold is first archived under
``sk = hold#<recorded_at>`` in the same transaction, so the audit trail keeps every episode. Every
later write names the episode it belongs to (``same_episode``), so that a run never changes a hold
another run has replaced meanwhile.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from ec2ir.aws.session import PATIENT_ATTEMPTS, translated
from ec2ir.core.errors import AwsError, HoldElsewhere, OriginalsTampered, StaleRecord
from ec2ir.core.models import ACTIVE_STATUSES, Hold, HoldStatus, InstanceFacts, Place
from ec2ir.core.text import printable
from ec2ir.store.items import CONDITION_FAILED, CURRENT, deserialize, instance_key, now, plain, serialize
from ec2ir.store.table import Table

BATCH_GET = 100  # BatchGetItem's most
# A hold's place is read back from the table, which is hostile input: it decides which account's
# instance a release changes, and it is printed.
ACCOUNT = re.compile(r"^[0-9]{12}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")


def hold_from_item(item: dict[str, Any]) -> Hold:
    data = deserialize(item)
    hold = _hold_from(data)
    if hold.place and not (ACCOUNT.fullmatch(hold.place.account) and REGION.fullmatch(hold.place.region)):
        raise OriginalsTampered(f"the hold on {printable(hold.instance_id)} names no real account and Region")
    if "pk" in data and data["pk"] != instance_key(hold.instance_id, place=hold.place)["pk"]["S"]:
        # the place decides which account's instance a release changes: it must be the key's
        raise OriginalsTampered(
            f"the hold item {printable(str(data['pk']))} names another instance or place than its key"
        )
    return hold


def _hold_from(data: dict[str, Any]) -> Hold:
    return Hold(
        instance_id=data["instance_id"],
        case_id=data["case_id"],
        status=HoldStatus(data["status"]),
        originals={eni: tuple(groups) for eni, groups in data.get("originals", {}).items()},
        eni_vpcs=dict(data.get("eni_vpcs", {})),
        recorded_at=data.get("recorded_at", ""),
        recorded_by=data.get("recorded_by", ""),
        isolated_at=data.get("isolated_at", ""),
        released_at=data.get("released_at", ""),
        released_by=data.get("released_by", ""),
        steps={name: plain(record) for name, record in data.get("steps", {}).items()},
        unknown_originals=tuple(data.get("unknown_originals", [])),
        place=Place(str(data["account"]), str(data["region"])) if "region" in data else None,
        recorded_in=str(data.get("recorded_in", "")),
    )


def hold_item(hold: Hold) -> dict[str, Any]:
    data: dict[str, Any] = {
        "instance_id": hold.instance_id,
        "case_id": hold.case_id,
        "status": hold.status.value,
        "originals": {eni: list(groups) for eni, groups in hold.originals.items()},
        "eni_vpcs": dict(hold.eni_vpcs),
        "recorded_at": hold.recorded_at,
        "recorded_by": hold.recorded_by,
        "steps": hold.steps,
    }
    if hold.unknown_originals:
        data["unknown_originals"] = list(hold.unknown_originals)
    for optional in ("isolated_at", "released_at", "released_by"):
        if getattr(hold, optional):
            data[optional] = getattr(hold, optional)
    if hold.place:
        data |= {"account": hold.place.account, "region": hold.place.region}
    if hold.recorded_in:
        data["recorded_in"] = hold.recorded_in
    return serialize(data) | instance_key(hold.instance_id, place=hold.place)


def same_episode(hold: Hold) -> tuple[str, dict[str, Any]]:
    """The condition that the stored hold is still this episode of this case (a release and a new
    isolate make another episode, with another ``recorded_at``), and its values."""
    return "case_id = :case AND recorded_at = :at", {":case": hold.case_id, ":at": hold.recorded_at}


class Holds:
    """Reading the holds of one place (the table's own when ``place`` is None), and their
    lifecycle: originals recorded, added to, moved between statuses."""

    def __init__(self, table: Table, place: Place | None = None) -> None:
        self.table = table
        self.place = place

    def _key(self, instance_id: str, sk: str = CURRENT) -> dict[str, Any]:
        return instance_key(instance_id, sk, self.place)

    def get(self, instance_id: str) -> Hold | None:
        with translated("dynamodb", "GetItem"):
            item = self.table.ddb.get_item(
                TableName=self.table.name, Key=self._key(instance_id), ConsistentRead=True
            ).get("Item")
        return self._here_only(hold_from_item(item)) if item else None

    def _here(self) -> str:
        return f"{self.table.aws.account()}/{self.table.aws.region()}"

    def _here_only(self, hold: Hold) -> Hold:
        """A hold of the table's own place is acted on only from the account and Region it was
        recorded in: reached from elsewhere, the run would look for its instance in the wrong place."""
        if self.place is None and hold.recorded_in and hold.recorded_in != self._here():
            raise HoldElsewhere(
                printable(
                    f"the hold on {hold.instance_id} was recorded in {hold.recorded_in}; this run acts "
                    f"in {self._here()}: nothing was changed"
                ),
                "run the command with that account's credentials and --region",
            )
        return hold

    def all(self, case_id: str | None = None) -> list[Hold]:
        """Every current hold (active or released) of this place, optionally for one case."""
        return [hold for hold in self.everywhere(case_id) if hold.place == self.place]

    def everywhere(self, case_id: str | None = None) -> list[Hold]:
        """Every current hold (active or released) of every place, optionally for one case."""
        expression = "sk = :current" + (" AND case_id = :case" if case_id else "")
        values: dict[str, Any] = {":current": {"S": CURRENT}}
        if case_id:
            values[":case"] = {"S": case_id}
        holds: list[Hold] = []
        with translated("dynamodb", "Scan"):
            for page in self.table.ddb.get_paginator("scan").paginate(
                TableName=self.table.name,
                FilterExpression=expression,
                ExpressionAttributeValues=values,
                ConsistentRead=True,
            ):
                holds.extend(hold_from_item(item) for item in page.get("Items", []))
        return sorted(holds, key=lambda hold: (hold.case_id, hold.place or Place("", ""), hold.instance_id))

    def get_many(self, instance_ids: list[str]) -> dict[str, Hold]:
        """The current holds of many instances, 100 to a BatchGetItem; an instance never held is
        absent."""
        holds: dict[str, Hold] = {}
        unique = list(dict.fromkeys(instance_ids))
        for start in range(0, len(unique), BATCH_GET):
            keys = [self._key(i) for i in unique[start : start + BATCH_GET]]
            for attempt in range(PATIENT_ATTEMPTS):
                with translated("dynamodb", "BatchGetItem"):
                    answer = self.table.ddb.batch_get_item(
                        RequestItems={self.table.name: {"Keys": keys, "ConsistentRead": True}}
                    )
                holds.update(
                    (hold.instance_id, hold)
                    for hold in map(hold_from_item, answer.get("Responses", {}).get(self.table.name, []))
                )
                keys = answer.get("UnprocessedKeys", {}).get(self.table.name, {}).get("Keys", [])
                if not keys:
                    break
                self.table.aws.sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
        return holds

    def record_originals(
        self,
        facts: InstanceFacts,
        case_id: str,
        actor: str,
        steps: Mapping[str, Mapping[str, object]] | None = None,
        unknown: frozenset[str] = frozenset(),
    ) -> tuple[Hold, bool]:
        """Write the instance's originals before anything changes, or return the hold that wins.

        The put only succeeds where no active hold exists, so the first originals are never
        replaced: a second isolate, or a racing one, gets the stored hold back instead. The flag
        says whether this call wrote the hold.
        """
        hold = Hold(
            instance_id=facts.instance_id,
            case_id=case_id,
            status=HoldStatus.ISOLATING,
            place=self.place,
            recorded_in="" if self.place else self._here(),
            originals={eni.eni_id: eni.group_ids for eni in facts.enis if eni.eni_id not in unknown},
            eni_vpcs={eni.eni_id: eni.vpc_id for eni in facts.enis},
            recorded_at=now(),
            recorded_by=actor,
            steps={name: dict(record) for name, record in (steps or {}).items()},
            unknown_originals=tuple(sorted(unknown)),
        )
        item = hold_item(hold)
        try:
            with translated("dynamodb", "PutItem"):
                self.table.ddb.put_item(
                    TableName=self.table.name,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk)",
                )
            return hold, True
        except AwsError as error:
            if error.code != CONDITION_FAILED:
                raise
        existing = self.get(facts.instance_id)
        if existing is None:
            raise StaleRecord(f"the hold on {facts.instance_id} vanished while it was read")
        if existing.status in ACTIVE_STATUSES:
            return existing, False
        self._archive_and_replace(existing, item)
        return hold, True

    def _archive_and_replace(self, released: Hold, item: dict[str, Any]) -> None:
        archive = hold_item(released) | self._key(released.instance_id, f"hold#{released.recorded_at}")
        try:
            # IAM authorises each put of a transaction as dynamodb:PutItem.
            with translated("dynamodb", "PutItem"):
                self.table.ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table.name,
                                "Item": archive,
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table.name,
                                "Item": item,
                                "ConditionExpression": "#s = :released AND recorded_at = :at",
                                "ExpressionAttributeNames": {"#s": "status"},
                                "ExpressionAttributeValues": {
                                    ":released": {"S": HoldStatus.RELEASED.value},
                                    ":at": {"S": released.recorded_at},
                                },
                            }
                        },
                    ]
                )
        except AwsError as error:
            if error.code == "TransactionCanceledException":
                raise StaleRecord(
                    f"another run changed the hold on {released.instance_id} at the same moment"
                ) from error
            raise

    def add_eni_originals(self, hold: Hold, eni_id: str, group_ids: tuple[str, ...], vpc_id: str) -> bool:
        """Record an ENI attached after the hold began; False if it was already recorded."""
        return self._set_if_absent(
            hold,
            "originals.#eni = :groups, eni_vpcs.#eni = :vpc",
            absent="originals.#eni",
            names={"#eni": eni_id},
            values={":groups": list(group_ids), ":vpc": vpc_id},
        )

    def add_unknown_eni(self, hold: Hold, eni_id: str, vpc_id: str) -> bool:
        """Record an ENI whose original groups cannot be known; False if it was recorded already."""
        return self._set_if_absent(
            hold,
            "unknown_originals = list_append(if_not_exists(unknown_originals, :none), :eni), "
            "eni_vpcs.#eni = :vpc",
            absent="eni_vpcs.#eni",
            names={"#eni": eni_id},
            values={":none": [], ":eni": [eni_id], ":vpc": vpc_id},
        )

    def add_step_record(self, hold: Hold, step: str, record: Mapping[str, object]) -> bool:
        """Record a step's originals if this hold has none yet; False if one was already there."""
        return self._set_if_absent(
            hold,
            "steps.#step = :record",
            absent="steps.#step",
            names={"#step": step},
            values={":record": record},
        )

    def _set_if_absent(
        self, hold: Hold, assignments: str, absent: str, names: dict[str, str], values: dict[str, Any]
    ) -> bool:
        """Add to this very episode of an active hold what it lacks; False if it had it already.

        The first value written always stays: this is how originals are never overwritten."""
        episode, episode_values = same_episode(hold)
        try:
            with translated("dynamodb", "UpdateItem"):
                self.table.ddb.update_item(
                    TableName=self.table.name,
                    Key=self._key(hold.instance_id),
                    UpdateExpression=f"SET {assignments}",
                    ConditionExpression=(
                        f"{episode} AND #s IN (:isolating, :isolated) AND attribute_not_exists({absent})"
                    ),
                    ExpressionAttributeNames={"#s": "status", **names},
                    ExpressionAttributeValues=serialize(
                        {
                            **episode_values,
                            ":isolating": HoldStatus.ISOLATING.value,
                            ":isolated": HoldStatus.ISOLATED.value,
                            **values,
                        }
                    ),
                )
            return True
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                return False
            raise

    def transition(
        self,
        hold: Hold,
        allowed_from: tuple[HoldStatus, ...],
        to: HoldStatus,
        **stamps: str,
    ) -> Hold:
        """Move a hold to ``to`` only if it is still this episode, this case and an allowed status;
        returns the hold as the move left it, step records written meanwhile included."""
        episode, episode_values = same_episode(hold)
        names = {"#s": "status"}
        values: dict[str, Any] = {":to": to.value, **episode_values}
        allowed = []
        for index, status in enumerate(allowed_from):
            values[f":from{index}"] = status.value
            allowed.append(f":from{index}")
        sets = ["#s = :to"]
        for index, (name, value) in enumerate(sorted(stamps.items())):
            names[f"#a{index}"] = name
            values[f":a{index}"] = value
            sets.append(f"#a{index} = :a{index}")
        try:
            with translated("dynamodb", "UpdateItem"):
                answer = self.table.ddb.update_item(
                    TableName=self.table.name,
                    Key=self._key(hold.instance_id),
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression=f"{episode} AND #s IN ({', '.join(allowed)})",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=serialize(values),
                    ReturnValues="ALL_NEW",
                )
        except AwsError as error:
            if error.code == CONDITION_FAILED:
                raise StaleRecord(
                    f"the hold on {hold.instance_id} changed under this run (another responder acted on it)",
                    "run `ec2ir status` and try again",
                ) from error
            raise
        return hold_from_item(answer["Attributes"])
