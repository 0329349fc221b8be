"""The one error hierarchy of ec2ir.

Every failure a user can see is an ``Ec2irError``: it carries a one-line message, a hint that says
what to do, and the exit code the CLI uses. Adapters print ``str(error)`` and never a traceback.
"""

from __future__ import annotations

# An error that stops a command exits with its class's ``exit_code``: EXIT_USAGE (2, "nothing was
# changed") for every error raised before the first change (bad input, missing credentials, a
# refusal, a failed AWS call outside any instance's steps), EXIT_PARTIAL (1) for what fails one
# instance's or one step's work, which a run reports as that instance's failure.
EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class Ec2irError(Exception):
    """Base of every error ec2ir raises on purpose."""

    exit_code = EXIT_PARTIAL
    code = "Ec2irError"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(Ec2irError):
    """Bad input: nothing was changed, and the caller must fix the command."""

    exit_code = EXIT_USAGE
    code = "InvalidInput"


class CredentialsError(UsageError):
    code = "NoCredentials"


class StateTableError(UsageError):
    """The state table cannot be used, so no originals could be recorded: refuse before acting."""

    code = "StateTableUnusable"


class AwsError(Ec2irError):
    """An AWS call failed; ``code`` is AWS's error code and ``action`` the IAM action it needed.

    One that stops a command was made outside every instance's steps (which report their own
    failures): resolving the targets, reading the state table, discovery, the read-only commands.
    Nothing was changed then, and the README and the tests document 2 for a missing permission."""

    exit_code = EXIT_USAGE

    def __init__(self, code: str, message: str, action: str, request_id: str = "") -> None:
        super().__init__(f"{action}: {code}: {message}")
        self.code = code
        self.action = action
        self.request_id = request_id


class PermissionDenied(AwsError):
    def __str__(self) -> str:
        return (
            f"missing IAM permission {self.action} ({self.code}); "
            "grant it to the caller (see README, IAM permissions)"
        )


class Throttled(AwsError):
    """Still throttled after botocore's retries ran out."""


class SeveralFailed(Ec2irError):
    """Some of a step's independent calls failed; the others were still made."""

    def __init__(self, failures: list[tuple[str, Ec2irError]]) -> None:
        super().__init__("; ".join(f"{what}: {error}" for what, error in failures))
        self.code = failures[0][1].code
        self.failures = failures


class InstanceNotFound(Ec2irError):
    code = "InvalidInstanceID.NotFound"


class InstanceTerminated(Ec2irError):
    code = "InstanceTerminated"


class NotIsolated(Ec2irError):
    code = "NotIsolated"


class HeldByOtherCase(Ec2irError):
    code = "HeldByOtherCase"


class ReleaseInProgress(Ec2irError):
    code = "ReleaseInProgress"


class OriginalsUnknown(Ec2irError):
    """An ENI already sits in an ec2ir group but no record holds its originals."""

    code = "OriginalsUnknown"


class AllowAllWindowExceeded(Ec2irError):
    """An ENI could not leave the allow-all group in time: it went back to its groups before the
    run (or, if even that failed, the message says it is still there)."""

    code = "AllowAllWindowExceeded"


class UnsafeIsolationGroup(Ec2irError):
    """The isolation group's rules are not the safe set and could not be repaired."""

    code = "UnsafeIsolationGroup"


class StaleRecord(Ec2irError):
    """The state record changed under us (a racing responder); re-read and decide again."""

    code = "StaleRecord"


class EvidenceBucketUnusable(Ec2irError):
    """The evidence bucket belongs to someone else: evidence is never written there."""

    code = "EvidenceBucketUnusable"


class EvidenceNotCollected(Ec2irError):
    """Evidence asked for (the memory) that could not be collected: the run is incomplete."""

    code = "EvidenceNotCollected"


class Unexpected(Ec2irError):
    """A bug of ec2ir's own inside one step: reported as that step's failure, with its type."""

    def __init__(self, error: Exception) -> None:
        super().__init__(
            f"internal error {type(error).__name__}: {error}",
            "the other steps still ran; set EC2IR_DEBUG=1 and report it",
        )
        self.code = type(error).__name__


class HoldElsewhere(Ec2irError):
    """The hold was recorded for another account or Region than the one this run acts in (the
    same table reached from elsewhere): acting here would act on the wrong instance."""

    code = "HoldElsewhere"


class OriginalsTampered(Ec2irError):
    """A hold's originals differ from what isolation captured and the journal or the evidence
    proves, or would restore one of ec2ir's own groups: release refuses that instance."""

    code = "OriginalsTampered"


class OriginalGroupMissing(Ec2irError):
    """An original security group of a hold was deleted since isolation: release refuses to guess
    what to put in its place (``--replace-group``, ``--skip-missing-groups``). AWS's own code."""

    code = "InvalidGroup.NotFound"


class StillHeld(Ec2irError):
    """``rejoin`` is for released holds: an active one is released (with ``--rejoin``) first."""

    code = "StillHeld"


class NotReleased(Ec2irError):
    """``rejoin`` of an instance ec2ir never held: there is no record of what it was in."""

    code = "NotReleased"


class InstanceNotRunning(Ec2irError):
    """Auto Scaling attaches only a running instance."""

    code = "IncorrectInstanceState"


class Interrupted(Ec2irError):
    """A step (or a whole instance) that did not start because the run was interrupted (Ctrl-C);
    the next run of the same command does it (ec2ir.core.interrupt)."""

    exit_code = EXIT_INTERRUPTED
    code = "Interrupted"
