"""Each error class's exit code, through ``main``: an error that stops a command exits with its
class's own ``exit_code``, and 2 keeps meaning that nothing was changed (README, exit codes)."""

from __future__ import annotations

import argparse

import pytest

from ec2ir.aws.ranges import RangesUnavailable
from ec2ir.cli import commands
from ec2ir.cli.app import main
from ec2ir.core import errors
from ec2ir.core.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USAGE, Ec2irError
from ec2ir.handlers.outbreak import NoShardResult, ShardTransient

# Decided one class at a time: 2 for what is raised before the first change, 1 for what ends one
# instance's or one step's work (a run reports it as that instance's failure), 130 for Ctrl-C.
EXIT_CODES: dict[type[Ec2irError], int] = {
    errors.Ec2irError: EXIT_PARTIAL,
    errors.UsageError: EXIT_USAGE,
    errors.CredentialsError: EXIT_USAGE,
    errors.StateTableError: EXIT_USAGE,
    RangesUnavailable: EXIT_USAGE,
    ShardTransient: EXIT_PARTIAL,  # raised in a shard's Lambda only, for Step Functions to retry
    NoShardResult: EXIT_PARTIAL,  # an instance of a --via stepfunctions run that no shard answered
    errors.AwsError: EXIT_USAGE,
    errors.PermissionDenied: EXIT_USAGE,
    errors.Throttled: EXIT_USAGE,
    errors.SeveralFailed: EXIT_PARTIAL,
    errors.InstanceNotFound: EXIT_PARTIAL,
    errors.InstanceTerminated: EXIT_PARTIAL,
    errors.NotIsolated: EXIT_PARTIAL,
    errors.HeldByOtherCase: EXIT_PARTIAL,
    errors.ReleaseInProgress: EXIT_PARTIAL,
    errors.OriginalsUnknown: EXIT_PARTIAL,
    errors.AllowAllWindowExceeded: EXIT_PARTIAL,
    errors.UnsafeIsolationGroup: EXIT_PARTIAL,
    errors.StaleRecord: EXIT_PARTIAL,
    errors.EvidenceBucketUnusable: EXIT_PARTIAL,
    errors.EvidenceNotCollected: EXIT_PARTIAL,
    errors.Unexpected: EXIT_PARTIAL,
    errors.OriginalsTampered: EXIT_PARTIAL,
    errors.HoldElsewhere: EXIT_PARTIAL,
    errors.OriginalGroupMissing: EXIT_PARTIAL,
    errors.StillHeld: EXIT_PARTIAL,
    errors.NotReleased: EXIT_PARTIAL,
    errors.InstanceNotRunning: EXIT_PARTIAL,
    errors.Interrupted: EXIT_INTERRUPTED,
}


def ec2ir_classes(base: type[Ec2irError]) -> set[type[Ec2irError]]:
    found = {base}
    for sub in base.__subclasses__():
        if sub.__module__.startswith("ec2ir."):
            found |= ec2ir_classes(sub)
    return found


def an_instance(cls: type[Ec2irError]) -> Ec2irError:
    if issubclass(cls, errors.AwsError):
        return cls("AccessDenied", "not allowed", "ec2:DescribeInstances")
    if issubclass(cls, errors.SeveralFailed):
        return cls([("network", Ec2irError("one failed"))])
    if issubclass(cls, errors.Unexpected):
        return cls(RuntimeError("a bug"))
    return cls("it stopped", "a hint")


def test_every_error_class_has_a_decided_exit_code() -> None:
    assert ec2ir_classes(Ec2irError) == set(EXIT_CODES)


@pytest.mark.parametrize("cls", list(EXIT_CODES), ids=lambda cls: cls.__name__)
def test_main_exits_with_the_error_class_own_code(
    cls: type[Ec2irError], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    error = an_instance(cls)

    def fails(_: argparse.Namespace) -> int:
        raise error

    monkeypatch.setitem(commands.STANDALONE, "permissions", fails)

    code = main(["permissions"])

    assert code == EXIT_CODES[cls] == cls.exit_code
    said = capsys.readouterr()
    assert said.out == "" and said.err == f"ec2ir: error: {error}\n"
