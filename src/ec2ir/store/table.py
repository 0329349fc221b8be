"""The state table itself: where it is, whether it exists, and its creation.

Every other part of the store reaches DynamoDB through one ``Table``, which asks the caller's
session for a client on each call (tests and fault injection swap that client underneath).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ec2ir.aws.session import Aws, translated
from ec2ir.core.errors import AwsError, StateTableError

DEFAULT_TABLE = "ec2ir-state"
KEY_SCHEMA = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]


@dataclass(frozen=True)
class Table:
    """The state table of one session: its name and the client that reaches it."""

    aws: Aws
    name: str

    @property
    def ddb(self) -> Any:
        return self.aws.dynamodb()

    def exists(self) -> bool:
        """Whether the table is there, without creating it (for plans)."""
        try:
            with translated("dynamodb", "DescribeTable"):
                self.ddb.describe_table(TableName=self.name)
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return False
            raise StateTableError(f"cannot use state table {self.name!r}: {error}") from error
        return True

    def require(self) -> None:
        """Refuse, for a command that only reads, a table that does not exist: creating one would
        answer "nothing is isolated" from an empty table, and a responder would believe it."""
        if not self.exists():
            raise StateTableError(
                f"state table {self.name!r} does not exist in {self.aws.region()}: nothing was read",
                "check the table's name (--table, or EC2IR_TABLE; the stack names its table in its "
                "outputs) and the Region",
            )

    def ensure(self) -> None:
        """Create the table if it is missing (on-demand, encrypted) and wait until it is active."""
        try:
            with translated("dynamodb", "DescribeTable"):
                table = self.ddb.describe_table(TableName=self.name)["Table"]
        except AwsError as error:
            if error.code != "ResourceNotFoundException":
                raise StateTableError(f"cannot use state table {self.name!r}: {error}") from error
            table = self._create()
        if [dict(k) for k in table.get("KeySchema", [])] != KEY_SCHEMA:
            raise StateTableError(
                f"table {self.name!r} exists but is not an ec2ir state table (its key schema is not pk/sk)",
                "pass --table with another name, or let ec2ir create its own",
            )
        if table.get("TableStatus") != "ACTIVE":
            self._wait_active()

    def _create(self) -> dict[str, Any]:
        try:
            with translated("dynamodb", "CreateTable"):
                return dict(
                    self.ddb.create_table(
                        TableName=self.name,
                        KeySchema=KEY_SCHEMA,
                        AttributeDefinitions=[
                            {"AttributeName": "pk", "AttributeType": "S"},
                            {"AttributeName": "sk", "AttributeType": "S"},
                        ],
                        BillingMode="PAY_PER_REQUEST",
                        SSESpecification={"Enabled": True, "SSEType": "KMS"},
                        Tags=[{"Key": "ec2ir:role", "Value": "state"}],
                    )["TableDescription"]
                )
        except AwsError as error:
            if error.code == "ResourceInUseException":  # a racing run created it first
                with translated("dynamodb", "DescribeTable"):
                    return dict(self.ddb.describe_table(TableName=self.name)["Table"])
            raise StateTableError(f"cannot create state table {self.name!r}: {error}") from error

    def _wait_active(self) -> None:
        with translated("dynamodb", "DescribeTable"):
            self.ddb.get_waiter("table_exists").wait(
                TableName=self.name, WaiterConfig={"Delay": 2, "MaxAttempts": 60}
            )
