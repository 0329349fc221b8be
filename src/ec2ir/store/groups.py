"""ec2ir's groups: one item per VPC under ``pk = groups#<region>``, ``sk = vpc#<id>``.

They are keyed by Region alone so that they can be read in the run's first round trip, before the
caller's account is known; each item names its account, and a record of another account is never
used. Those of another place than the table's own (ec2ir.engine.outbreak) are keyed
``groups#<account>:<region>``: two accounts of one outbreak may share a VPC (RAM sharing), and each
keeps its own groups in it.
"""

from __future__ import annotations

from typing import Any

from ec2ir.aws.session import translated
from ec2ir.core.errors import AwsError, StaleRecord
from ec2ir.core.models import GroupRecord, Place
from ec2ir.store.items import CONDITION_FAILED, deserialize, serialize
from ec2ir.store.table import Table

GROUPS = "groups#"
GROUP_ROLES = ("forensic", "isolation", "allow-all")


def groups_pk(region: str, place: Place | None = None) -> str:
    return f"{GROUPS}{place.account}:{region}" if place else f"{GROUPS}{region}"


def groups_key(region: str, vpc_id: str, place: Place | None = None) -> dict[str, Any]:
    return {"pk": {"S": groups_pk(region, place)}, "sk": {"S": f"vpc#{vpc_id}"}}


def role_attribute(role: str) -> str:
    return f"group_{role}"


def group_record_from_item(item: dict[str, Any]) -> GroupRecord:
    data = deserialize(item)
    return GroupRecord(
        vpc_id=str(data["vpc_id"]),
        account=str(data.get("account", "")),
        roles={
            role: str(data[role_attribute(role)]) for role in GROUP_ROLES if data.get(role_attribute(role))
        },
        retired=tuple(str(gid) for gid in data.get("retired", [])),
        office_cidr=str(data.get("office_cidr", "")),
        forensic_source=str(data.get("forensic_source", "")),
        forensic_source_owner=str(data.get("forensic_source_owner", "")),
    )


class GroupRecords:
    """Which groups are ec2ir's in each VPC, and what their forensic side was last set to."""

    def __init__(self, table: Table, place: Place | None = None) -> None:
        self.table = table
        self.place = place

    def in_region(self, region: str) -> dict[str, GroupRecord]:
        """Every VPC's recorded groups in the Region; nothing when the table does not exist yet."""
        records: dict[str, GroupRecord] = {}
        try:
            with translated("dynamodb", "Query"):
                for page in self.table.ddb.get_paginator("query").paginate(
                    TableName=self.table.name,
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": groups_pk(region, self.place)}},
                    ConsistentRead=True,
                ):
                    for item in page.get("Items", []):
                        record = group_record_from_item(item)
                        records[record.vpc_id] = record
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return {}
            raise
        return records

    def record(
        self, region: str, account: str, vpc_id: str, role: str, group_id: str, replacing: str = ""
    ) -> str:
        """Record ``group_id`` as the VPC's group for ``role``, unless another run recorded one
        first (or, with ``replacing``, replaced that one first); returns the id that stands.

        A replaced isolation or allow-all group is kept in ``retired``: an ENI still in it was put
        there by ec2ir, and its groups are never mistaken for its originals."""
        names = {"#role": role_attribute(role)}
        values: dict[str, Any] = {":id": group_id, ":vpc": vpc_id, ":account": account}
        sets = ["#role = :id", "vpc_id = :vpc", "account = :account"]
        if replacing:
            condition = "#role = :old"
            values[":old"] = replacing
            if role != "forensic":
                sets.append("retired = list_append(if_not_exists(retired, :none), :retire)")
                values |= {":none": [], ":retire": [replacing]}
        else:
            condition = "attribute_not_exists(#role)"
        try:
            with translated("dynamodb", "UpdateItem"):
                self.table.ddb.update_item(
                    TableName=self.table.name,
                    Key=groups_key(region, vpc_id, self.place),
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression=(
                        f"(attribute_not_exists(account) OR account = :account) AND {condition}"
                    ),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=serialize(values),
                )
            return group_id
        except AwsError as error:
            if error.code != CONDITION_FAILED:
                raise
        current = self.in_region(region).get(vpc_id)
        standing = current.roles.get(role) if current is not None and current.account == account else None
        if not standing:
            raise StaleRecord(f"the record of ec2ir's {role} group in {vpc_id} belongs to another account")
        return standing

    def note_settings(
        self, region: str, vpc_id: str, office_cidr: str | None, forensic_source: str, owner: str
    ) -> None:
        """Remember what the forensic side was last set to, so that ``status --check`` knows the
        safe set without being told again."""
        sets = ["forensic_source = :source", "forensic_source_owner = :owner"]
        values = {":source": forensic_source, ":owner": owner}
        if office_cidr is not None:
            sets.append("office_cidr = :cidr")
            values[":cidr"] = office_cidr
        with translated("dynamodb", "UpdateItem"):
            self.table.ddb.update_item(
                TableName=self.table.name,
                Key=groups_key(region, vpc_id, self.place),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=serialize(values),
            )
