"""The ``ec2ir`` command: a thin adapter that parses arguments, calls the engine and prints.

Exit codes: 0 when everything asked for is done; 1 when some instances failed (each is named with
its error code and message); 2 for bad input or usage, and for any refusal before the first
change, so that 2 always means nothing was changed; 130 when Ctrl-C interrupted the run
(``InterruptHandler``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ec2ir import __version__
from ec2ir.aws import targets
from ec2ir.core.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, Ec2irError, UsageError
from ec2ir.core.interrupt import Interrupt
from ec2ir.render.terminal import printable

# The same variables the stack's functions read, so that a responder's shell can point at the stack's
# table and bucket once.
TABLE_ENV = "EC2IR_TABLE"
EVIDENCE_BUCKET_ENV = "EC2IR_EVIDENCE_BUCKET"

DESCRIPTION = """\
Contain compromised EC2 instances, and release them back to their exact original state.

isolate  records the originals of everything it will change, then protects the evidence
         (termination protection, stop on shutdown, keep volumes), detaches the instance from its
         Auto Scaling group, moves every ENI through an allow-all group into its VPC's isolation
         group (SSH from the forensic group only, no egress) so tracked connections drop,
         deregisters it from load balancers, disassociates its instance profile, and tags it.
         Then it snapshots every volume (crash-consistent), and writes the instance's metadata to
         the hardened evidence bucket, each object's SHA-256 in the case journal (--no-evidence
         skips this; --memory first acquires RAM through SSM, bounded by --memory-timeout).
release  undoes every recorded step exactly and keeps the record as the audit trail. The Auto
         Scaling group and load balancers are rejoined only with --rejoin. Snapshots are kept.
rejoin   puts released instances back in their Auto Scaling group and load balancers.
collect  collects the evidence alone, without isolating.
report   builds the case report (md, html or json) from the case journal; verify re-reads every
         piece of evidence and checks it against the journal's hashes.
forensics attaches volumes made from the case's snapshots to a forensic workstation, read-only.
status   shows what is held, by which case, since when, by whom, and the originals.
block-ip denies an attacker's addresses in the network ACLs of a case's subnets (isolate
         --block-ip does it in the same run); unblock-ip removes them; release of a case's last
         instance in those subnets removes them too.
preflight checks that the current credentials may run every step; permissions prints the policy.
demo     runs the whole cycle on the embedded emulator: no AWS account needed.
emulator serves that emulator, so that any boto3 tool can be pointed at it.
completion prints a bash, zsh or tcsh completion script (pip install 'ec2ir[completion]').
"""


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    aws = parent.add_argument_group("AWS")
    aws.add_argument("--profile", help="named profile from the shared AWS config")
    aws.add_argument("--region", help="AWS Region (default: the profile's or AWS_REGION)")
    aws.add_argument(
        "--endpoint-url",
        help="AWS-compatible endpoint for every call (default: AWS_ENDPOINT_URL, else AWS)",
    )
    aws.add_argument(
        "--role-arn",
        help="act in another account by assuming this role (e.g. from the security account into a "
        "member account); its credentials renew themselves during long runs",
    )
    aws.add_argument("--external-id", help="the external id the role's trust policy requires")
    aws.add_argument(
        "--retry-mode",
        choices=["adaptive", "standard"],
        default="adaptive",
        help="botocore retry mode for throttled calls (default: adaptive)",
    )
    parent.add_argument(
        "--table",
        default=os.environ.get(TABLE_ENV) or "ec2ir-state",
        help=f"DynamoDB state table (default: ${TABLE_ENV}, else ec2ir-state)",
    )
    parent.add_argument(
        "--output",
        choices=["table", "json"],
        default="table",
        help="output format (default: table); json is one object whose schema field names its shape "
        "(docs/json.md)",
    )
    parent.add_argument(
        "--concurrency",
        type=positive_int,
        default=16,
        help="instances worked on at once (default: 16)",
    )
    return parent


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return whole_number


positive_int = at_least(1)
non_negative_int = at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def evidence_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    evidence = parent.add_argument_group("evidence")
    evidence.add_argument(
        "--evidence-bucket",
        metavar="BUCKET",
        default=os.environ.get(EVIDENCE_BUCKET_ENV, ""),
        help=f"where captured metadata (and memory) go (default: ${EVIDENCE_BUCKET_ENV}, else "
        "ec2ir-evidence-<account>-<region>, "
        "created versioned, KMS-encrypted, public access blocked and TLS-only if missing)",
    )
    evidence.add_argument(
        "--object-lock-days",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="when ec2ir creates the evidence bucket, enable Object Lock in compliance mode for N days: "
        "nobody, root included, can delete or overwrite evidence before then",
    )
    evidence.add_argument(
        "--wait",
        action="store_true",
        help="wait until every snapshot is completed, with a progress bar",
    )
    evidence.add_argument(
        "--memory",
        action="store_true",
        help="acquire RAM with AVML through SSM Run Command before anything else (the instance stays "
        "connected until then, at most --memory-timeout); unmanaged instances are noted and skipped",
    )
    evidence.add_argument(
        "--memory-timeout",
        type=positive_int,
        default=600,
        metavar="SECONDS",
        help="after this, isolation goes ahead with or without the memory (default: 600)",
    )
    return parent


TARGETS_HELP = "an instance id or ARN; - reads them from standard input (whitespace separated)"


def target_options() -> argparse.ArgumentParser:
    """--filters and --max-instances, for the commands that take instances (ec2ir.aws.targets)."""
    parent = argparse.ArgumentParser(add_help=False)
    chosen = parent.add_argument_group("selecting instances")
    chosen.add_argument(
        "--filters",
        action="extend",
        nargs="+",
        default=[],
        metavar="Name=NAME,Values=V1,V2",
        help="(repeatable) select instances as the AWS CLI does (e.g. Name=tag:env,Values=prod "
        "Name=vpc-id,Values=vpc-1; an instance must match every filter), besides those named; "
        "terminated and shutting-down ones are left out",
    )
    chosen.add_argument(
        "--max-instances",
        type=positive_int,
        default=25,
        metavar="N",
        help="refuse, changing nothing, when --filters or stdin select over N instances (default: 25)",
    )
    return parent


def case_arguments(command: argparse.ArgumentParser) -> None:
    """The case, as CASE_ID or as --case (ec2ir.aws.targets.settle takes either)."""
    command.add_argument("case", nargs="?", metavar="CASE_ID")
    command.add_argument("--case", dest="case_option", metavar="CASE_ID", help="the case, instead of CASE_ID")


COMPLETION_SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes
COMPLETION_INSTALL = "pip install 'ec2ir[completion]'"


def print_completion(shell: str) -> int:
    """``ec2ir completion SHELL``: shtab is optional, so it is imported here and only here."""
    try:
        import shtab
    except ImportError:
        raise UsageError(
            "shell completion needs the optional shtab package, which is not installed",
            f"install it with: {COMPLETION_INSTALL}",
        ) from None
    print(shtab.complete(build_parser(), shell=shell))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ec2ir", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"ec2ir {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log every AWS call on the wire (botocore's debug log) to stderr, with credentials, "
        "signatures and pre-signed URLs redacted; before the command, e.g. ec2ir --debug status",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say each step of each instance on stderr as it starts and ends, with its time; before "
        "the command, e.g. ec2ir -v isolate ...",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()

    evidence = evidence_options()
    targets = target_options()
    isolate = commands.add_parser(
        "isolate",
        parents=[common, evidence, targets],
        help="contain instances",
        description="Contain instances.",
    )
    isolate.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID", help=TARGETS_HELP)
    isolate.add_argument("--case", required=True, metavar="CASE_ID", help="incident case id")
    isolate.add_argument(
        "--office-cidr",
        metavar="CIDR",
        help="the only source allowed to SSH to the forensic group (IPv4 or IPv6; one address "
        "means that host)",
    )
    isolate.add_argument(
        "--allow-any-source",
        action="store_true",
        help="accept 0.0.0.0/0 or ::/0 as --office-cidr (exposes the forensic group to the internet)",
    )
    isolate.add_argument(
        "--forensic-group-id",
        metavar="SG_ID",
        default="",
        help="admit SSH into the isolation group from this forensic group (for example the security "
        "account's, over peering) instead of a forensic group ec2ir creates; ec2ir does not change it",
    )
    isolate.add_argument(
        "--forensic-group-owner",
        metavar="ACCOUNT_ID",
        default="",
        help="the account that owns --forensic-group-id, when it is another account",
    )
    isolate.add_argument(
        "--no-untrack",
        action="store_true",
        help="swap straight into the isolation group, skipping the allow-all group. RISK: flows EC2 "
        "already tracks (an attacker's open shell) then survive the swap",
    )
    isolate.add_argument(
        "--untrack-deadline",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="the longest an ENI may stay in the allow-all group; past it, or on an error that "
        "retrying will not fix, it goes back to its groups and the instance is reported failed "
        "(default: 5)",
    )
    isolate.add_argument(
        "--keep-metadata",
        action="store_true",
        help="leave the instance metadata service (IMDS) on; by default ec2ir disables it (and "
        "release restores its options), so that code on the instance reads no credentials, user "
        "data or identity document from it",
    )
    isolate.add_argument(
        "--block-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="(repeatable) once the instances are cut off, deny all traffic from and to CIDR (one "
        "address means that host) in the network ACL of every subnet where the case has an instance: "
        "it stops tracked connections at once, for EVERY instance in the subnets those ACLs serve. "
        "Refused if wider than /16 (IPv4) or /48 (IPv6), or if it overlaps the VPC, the office, a "
        "forensic workstation or AWS's own service ranges (README: Blocking the attacker's address)",
    )
    isolate.add_argument(
        "--revoke-sessions",
        action="store_true",
        help="also add an inline deny-all policy, for sessions issued before now, to the role of each "
        "instance's profile: the only way to invalidate credentials already stolen. It affects "
        "EVERY instance and person using that role",
    )
    isolate.add_argument(
        "--no-evidence",
        action="store_true",
        help="contain only: take no snapshots and capture no metadata",
    )
    isolate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (steps, API calls, resources) and check permissions with EC2 DryRun and "
        "IAM's simulator; change nothing",
    )

    release = commands.add_parser(
        "release",
        parents=[common, targets],
        help="put instances back exactly",
        description="Restore every ENI's recorded original groups; the record is kept.",
    )
    release.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID", help=TARGETS_HELP)
    release.add_argument("--case", required=True, metavar="CASE_ID", help="the case that holds them")
    release.add_argument(
        "--rejoin",
        action="store_true",
        help="also attach the instance to its Auto Scaling group again (which grows its desired "
        "capacity by one, as the group already replaced it) and register it with its target groups "
        "and Classic ELBs. Without it, the instance is released but left out of service (`ec2ir "
        "rejoin` puts it back later)",
    )
    release.add_argument(
        "--replace-group",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="(repeatable) an original group deleted since isolation: put NEW, a group of the ENI's "
        "VPC, in its place. Only a group that is really gone is replaced; each one is journaled",
    )
    release.add_argument(
        "--skip-missing-groups",
        action="store_true",
        help="restore the original groups that still exist, leaving out those deleted since "
        "isolation (journaled); an ENI that would be left in no group is refused and stays isolated",
    )
    release.add_argument(
        "--dry-run",
        action="store_true",
        help="list what release would restore (each ENI's groups, each step's undo) or refuse; "
        "change nothing",
    )

    rejoin = commands.add_parser(
        "rejoin",
        parents=[common, targets],
        help="put released instances back in service",
        description="Attach released instances to their Auto Scaling group again and register them "
        "with their target groups and Classic ELBs, from their holds' records; what is already back "
        "is left as it is. For a hold still active, use release --rejoin.",
    )
    rejoin.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID", help=TARGETS_HELP)
    rejoin.add_argument("--case", required=True, metavar="CASE_ID", help="the case that released them")

    collect = commands.add_parser(
        "collect",
        parents=[common, evidence, targets],
        help="collect evidence without isolating",
        description="Snapshot every volume and capture the metadata of instances, without isolating "
        "them; every object's SHA-256 goes into the case journal.",
    )
    case_arguments(collect)
    collect.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID", help=TARGETS_HELP)
    collect.add_argument(
        "--dry-run",
        action="store_true",
        help="list what collect would take of each instance (the volumes CreateSnapshots would "
        "snapshot, the evidence bucket and each object's key) and check permissions; change nothing",
    )

    report = commands.add_parser(
        "report",
        parents=[common],
        help="the case report, from the case journal",
        description="Case summary, timeline, each instance's before and after, the evidence with its "
        "SHA-256, and what is still isolated.",
    )
    case_arguments(report)
    report.add_argument(
        "--format",
        choices=["md", "html", "json"],
        help="(default: md; json with --output json, which is the same as --format json)",
    )
    report.add_argument("-o", dest="out", metavar="FILE", help="write to FILE instead of standard output")

    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="check every piece of evidence against the journal",
        description="Re-read every evidence object and compare its SHA-256 with the case journal; "
        "check every snapshot still exists. Exits 1 on any mismatch or missing piece.",
    )
    case_arguments(verify)

    forensics = commands.add_parser(
        "forensics", help="attach the case's snapshots to a forensic workstation, or detach them"
    )
    forensic_commands = forensics.add_subparsers(dest="forensics_command", required=True, metavar="ACTION")
    attach = forensic_commands.add_parser(
        "attach",
        parents=[common],
        help="volumes from the case's snapshots, attached to the workstation",
        description="Create a volume from each of the case's snapshots in the workstation's AZ, attach "
        "them at free device names, and print the read-only mount commands.",
    )
    case_arguments(attach)
    attach.add_argument("--to", required=True, metavar="WORKSTATION_INSTANCE_ID", dest="workstation")
    attach.add_argument(
        "--dry-run",
        action="store_true",
        help="make every check, then list each snapshot's volume and device and the calls that would "
        "create and attach it; change nothing",
    )
    detach = forensic_commands.add_parser(
        "detach",
        parents=[common],
        help="detach and delete the case's forensic volumes (the snapshots stay)",
    )
    case_arguments(detach)
    detach.add_argument(
        "--dry-run",
        action="store_true",
        help="list each forensic copy that would be detached and deleted, and the calls; change nothing",
    )

    for name, verb, description in (
        (
            "block-ip",
            "deny addresses at the subnet edge of a case's instances",
            "Add, to the network ACL of every subnet where the case holds an instance, deny entries for "
            "all traffic from and to each CIDR, ahead of every entry that is not ec2ir's. Every instance "
            "in the subnets those ACLs serve loses the address. Each entry is recorded before it is "
            "added; release of the case's last instance in those subnets, or unblock-ip, removes it.",
        ),
        (
            "unblock-ip",
            "remove a case's deny entries for addresses",
            "Remove the case's deny entries for each CIDR from every network ACL they are in; an entry "
            "someone changed since ec2ir added it is left as it is and reported.",
        ),
    ):
        edge = commands.add_parser(name, parents=[common], help=verb, description=description)
        edge.add_argument("cidrs", nargs="+", metavar="CIDR")
        edge.add_argument(
            "--case", required=True, metavar="CASE_ID", help="the case that holds the instances"
        )
        edge.add_argument(
            "--dry-run", action="store_true", help="list the entries it would change; change nothing"
        )

    status = commands.add_parser("status", parents=[common], help="show what is held")
    status.add_argument("--case", metavar="CASE_ID", help="only this case")
    status.add_argument("--all", action="store_true", help="include released instances")
    status.add_argument(
        "--check",
        action="store_true",
        help="compare every held instance with the live state (each ENI's groups, the isolation and "
        "forensic groups' rules, the instance profile, the case's network ACL deny entries); print "
        "each breach and exit 1 on any",
    )
    status.add_argument(
        "--repair",
        action="store_true",
        help="with --check: re-harden the groups, re-contain what is in breach and add again the deny "
        "entries that are missing (journaled like isolate), then check again; exit 1 if any breach "
        "remains",
    )

    commands.add_parser(
        "preflight",
        parents=[common],
        help="check in peacetime that these credentials can run every step",
    )
    commands.add_parser(
        "permissions", help="print the minimal IAM policy ec2ir needs", description="Print the IAM policy."
    )

    demo = commands.add_parser(
        "demo",
        help="run isolate, status and release on the embedded emulator",
        description="Run the whole cycle on an emulator of its own; or, with --seed-only, seed the "
        "demo's compromised fleet into a running emulator (ec2ir emulator) and print its instance ids, "
        "one a line, for a first incident by hand (README: A first incident).",
    )
    demo.add_argument("--output", choices=["table"], default="table", help=argparse.SUPPRESS)
    demo.add_argument(
        "--seed-only",
        action="store_true",
        help="seed the fleet into the emulator at --endpoint-url (default: $AWS_ENDPOINT_URL), which "
        "must be on loopback: never an AWS account",
    )
    demo.add_argument("--endpoint-url", help="the running emulator (default: $AWS_ENDPOINT_URL)")

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script of SHELL, for commands, options and their choices. It "
        "needs the optional shtab package: pip install 'ec2ir[completion]'.",
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS, metavar="SHELL", help="bash, zsh or tcsh")

    emulator = commands.add_parser("emulator", help="serve the embedded emulator")
    emulator.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default: 5000)")
    _describe(commands)
    _describe(forensic_commands, "forensics ")
    return parser


# One example a command, shown at the end of its --help.
EXAMPLES = {
    "isolate": "ec2ir isolate i-0abc1234def567890 --case IR-2026-042 --office-cidr 203.0.113.0/24 --dry-run",
    "release": "ec2ir release i-0abc1234def567890 --case IR-2026-042 --dry-run",
    "rejoin": "ec2ir rejoin i-0abc1234def567890 --case IR-2026-042",
    "collect": "ec2ir collect IR-2026-042 i-0abc1234def567890 --memory",
    "report": "ec2ir report IR-2026-042 --format html -o IR-2026-042.html",
    "verify": "ec2ir verify IR-2026-042",
    "forensics": "ec2ir forensics attach IR-2026-042 --to i-0f0e0d0c0b0a09080",
    "attach": "ec2ir forensics attach IR-2026-042 --to i-0f0e0d0c0b0a09080",
    "detach": "ec2ir forensics detach IR-2026-042",
    "block-ip": "ec2ir block-ip 198.51.100.23 --case IR-2026-042 --dry-run",
    "unblock-ip": "ec2ir unblock-ip 198.51.100.23 --case IR-2026-042",
    "status": "ec2ir status --case IR-2026-042 --check",
    "preflight": "ec2ir preflight --region eu-west-1",
    "permissions": "ec2ir permissions > ec2ir-policy.json",
    "demo": "ec2ir demo",
    "completion": "ec2ir completion bash > ~/.local/share/bash-completion/completions/ec2ir",
    "emulator": "ec2ir emulator --port 5000 &  # then: ids=$(ec2ir demo --seed-only --endpoint-url http://127.0.0.1:5000)",
}


def _describe(commands: argparse._SubParsersAction[argparse.ArgumentParser], prefix: str = "") -> None:
    """Every subcommand gets a description (its help, where it has none of its own) and an example."""
    helps = {action.dest: action.help for action in commands._choices_actions}
    for name, command in commands.choices.items():
        if not command.description:
            command.description = (helps.get(name) or name).capitalize() + "."
        command.epilog = f"example: {EXAMPLES[name]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    try:
        targets.settle(args, extras)  # ids after an option, CASE_ID or --case, no target at all
    except UsageError as error:
        parser.error(printable(str(error)))
    guard = _ClosedPipeGuard(sys.stdout)
    sys.stdout = guard
    # standard error too: `2>&1 | tee log` dies with the same Ctrl-C the run must still finish
    error_guard = _ClosedPipeGuard(sys.stderr)
    sys.stderr = error_guard
    debug = None
    if args.debug or args.verbose:
        import logging

        from ec2ir.aws import debuglog

        debug = debuglog.enable() if args.debug else debuglog.enable(level=logging.INFO, loggers=("ec2ir",))
    try:
        return _dispatch(args)
    finally:
        sys.stdout = guard.stream
        sys.stderr = error_guard.stream
        if debug is not None:
            from ec2ir.aws import debuglog

            debuglog.disable(debug)


class _ClosedPipeGuard:
    """stdout, for a reader that may go away (`ec2ir permissions | head -1`): once the pipe is
    closed, what is left to print is dropped quietly, and the command goes on to finish its work,
    say on stderr what failed and exit with its own code. The process's real stdout then points
    at /dev/null, so that Python's last flush at exit cannot fail again."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return int(self.stream.write(text))
            except BrokenPipeError:
                self._closed()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._closed()

    def _closed(self) -> None:
        self.closed_pipe = True
        if self.stream is not None and self.stream in (sys.__stdout__, sys.__stderr__):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)


FIRST_INTERRUPT = "ec2ir: interrupt: finishing the swaps in flight; Ctrl-C again to abort at once"
# The second Ctrl-C's line; os._exit, as the run's workers are not daemons and would be waited for.
ABORTED = (
    "ec2ir: aborted at once: an ENI whose swap was under way may be left in the allow-all group "
    "(open both ways) or half restored; run `ec2ir {command}` again now with the same arguments: it "
    "finishes from the originals recorded before the first change (`ec2ir status --check` shows "
    "what is left)"
)
_abort: Callable[[int], Any] = os._exit  # the second Ctrl-C's exit (tests replace it)


class InterruptHandler:
    """SIGINT while a command changes things. The first sets the run's Interrupt: no new
    instance or step starts, the swaps and steps in flight finish, and the run returns its
    partial results (exit 130). The second exits at once, without waiting for anything: the
    state table holds every original from before the first change, and the next run of the same
    command finishes (an ENI left in the allow-all group included)."""

    def __init__(self, interrupt: Interrupt, command: str) -> None:
        self.interrupt = interrupt
        self.command = command
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        # A plain flag first: a second SIGINT landing inside Event.set (which holds a lock the
        # nested handler would wait on for ever) sees it and aborts instead.
        if not self.seen:
            self.seen = True
            self.interrupt.set()
            _say(FIRST_INTERRUPT)
            return
        _say(ABORTED.format(command=self.command))
        _abort(EXIT_INTERRUPTED)


def _say(line: str) -> None:
    """One line on standard error from a signal handler, which may have interrupted a write to
    it: a buffered write reentered that way raises, so it goes to the descriptor instead."""
    try:
        print(line, file=sys.stderr, flush=True)
    except Exception:  # reentered (RuntimeError), or a reader gone with the same Ctrl-C (EPIPE)
        with contextlib.suppress(OSError):
            os.write(2, (line + "\n").encode())


@contextlib.contextmanager
def interruptible(interrupt: Interrupt, command: str) -> Iterator[InterruptHandler]:
    """SIGINT handled by an InterruptHandler inside the block, the previous handler back after
    it; from a thread other than the main one (where no handler can be set) the block runs as is."""
    handler = InterruptHandler(interrupt, command)
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:  # None: a handler not set from Python; Python's own is the nearest to put back
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            from ec2ir.emulator.demo import run_demo, seed_only

            return seed_only(args.endpoint_url) if args.seed_only else run_demo(main)
        if args.command == "emulator":
            from ec2ir.emulator.demo import serve_emulator

            return serve_emulator(args.port)
        if args.command == "completion":
            return print_completion(args.shell)
        if args.command == "permissions":
            from ec2ir.permissions.policy import policy_document
            from ec2ir.render.terminal import to_json

            print(to_json(policy_document()))
            return EXIT_OK
        return run_command(args)
    except Ec2irError as error:
        print(f"ec2ir: error: {printable(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # a bug: still one line, and the state table still holds the truth
        if os.environ.get("EC2IR_DEBUG"):
            raise
        print(
            f"ec2ir: internal error: {error!r} (every change made so far is recorded; "
            "run again, or set EC2IR_DEBUG=1 for a traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        print(
            "ec2ir: interrupted; every change made so far is recorded in the state table. "
            "Run the same command again to finish it.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def run_command(args: argparse.Namespace) -> int:
    from ec2ir.aws.session import Aws, AwsSettings
    from ec2ir.containment.steps import Options
    from ec2ir.engine.facade import Engine
    from ec2ir.permissions.policy import DENIED, preflight
    from ec2ir.render.terminal import (
        PROGRESS_THRESHOLD,
        Names,
        ProgressPrinter,
        Schema,
        check_as_dict,
        document,
        hold_as_dict,
        render_findings,
        render_plan,
        render_preflight,
        render_run,
        render_status,
    )
    from ec2ir.store.state import StateStore

    if args.command == "report":  # before any work: never Markdown when JSON was asked for
        args.format = report_format(args.format, args.output)
    aws = Aws(
        AwsSettings(
            profile=args.profile,
            region=args.region,
            endpoint_url=args.endpoint_url,
            retry_mode=args.retry_mode,
            max_pool_connections=max(10, args.concurrency * 2),
            role_arn=args.role_arn,
            external_id=args.external_id,
        )
    )
    engine = Engine(aws, StateStore(aws, args.table), concurrency=args.concurrency)
    chosen = targets.Targets([])
    if args.command in targets.COMMANDS:  # before anything else: stdin, ARNs, --filters
        chosen = targets.resolve(aws, args.instance_ids, args.filters, args.max_instances, sys.stdin)
        args.instance_ids = chosen.instance_ids
        if chosen.filters and not getattr(args, "dry_run", False):
            print(f"ec2ir: {chosen.describe()}", file=sys.stderr)

    if args.command == "status" and (args.check or args.repair):
        if not args.check:
            raise UsageError("--repair goes with --check", "run `ec2ir status --check --repair`")
        from ec2ir.containment.check import lines

        checked = engine.check(args.case, repair=args.repair)
        print(
            document(Schema.CHECK, checked.as_dict()) if args.output == "json" else "\n".join(lines(checked))
        )
        return EXIT_OK if checked.ok else EXIT_PARTIAL
    if args.command == "status":
        holds = engine.status(args.case, include_released=args.all)
        names = Names(*engine.names(holds))  # display only, read after the holds
        print(
            document(Schema.STATUS, {"holds": [hold_as_dict(h, names) for h in holds]})
            if args.output == "json"
            else render_status(holds, names)
        )
        return EXIT_OK
    if args.command == "preflight":
        caller, rows = preflight(aws)
        checks = [check for _, _, check in rows]
        purposes: dict[str, list[str]] = {}  # each action once, with everything it is needed for
        for action, purpose, _ in rows:
            purposes.setdefault(action, []).append(purpose)
        by_action = {check.action: check for check in checks}
        print(
            document(
                Schema.PREFLIGHT,
                {
                    "caller": caller,
                    "ok": not any(c.verdict == DENIED for c in checks),
                    "actions": [
                        {**check_as_dict(by_action[a]), "purposes": needed} for a, needed in purposes.items()
                    ],
                },
            )
            if args.output == "json"
            else render_preflight(caller, rows)
        )
        return EXIT_PARTIAL if any(c.verdict == DENIED for c in checks) else EXIT_OK

    if args.command == "report":
        from ec2ir.report.case import build_report, render

        text = render(build_report(engine.store, args.case), args.format)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as out:
                out.write(text)
            print(f"ec2ir: wrote the {args.format} report of case {args.case} to {args.out}", file=sys.stderr)
        else:
            print(text)
        return EXIT_OK
    if args.command == "verify":
        findings = engine.verify(args.case)
        print(
            document(
                Schema.VERIFY,
                {
                    "case_id": args.case,
                    "ok": all(f.ok for f in findings),
                    "findings": [f.as_dict() for f in findings],
                },
            )
            if args.output == "json"
            else render_findings(findings)
        )
        return EXIT_PARTIAL if any(not f.ok for f in findings) else EXIT_OK
    if args.command == "forensics":
        return run_forensics(args, engine)
    if args.command in ("block-ip", "unblock-ip"):
        from ec2ir.containment.nacl import render as render_edge

        act = engine.block_ip if args.command == "block-ip" else engine.unblock_ip
        edge = act(args.cidrs, args.case, dry_run=args.dry_run)
        print(document(Schema.EDGE, edge.as_dict()) if args.output == "json" else render_edge(edge))
        return EXIT_OK if edge.ok else EXIT_PARTIAL

    options = Options(
        untrack=not getattr(args, "no_untrack", False),
        revoke_sessions=getattr(args, "revoke_sessions", False),
        evidence=not getattr(args, "no_evidence", False),
        evidence_bucket=getattr(args, "evidence_bucket", ""),
        object_lock_days=getattr(args, "object_lock_days", 0),
        memory=getattr(args, "memory", False),
        memory_timeout=float(getattr(args, "memory_timeout", 600)),
        untrack_deadline=getattr(args, "untrack_deadline", 5.0),
        keep_metadata=getattr(args, "keep_metadata", False),
        forensic_group=getattr(args, "forensic_group_id", ""),
        forensic_group_owner=getattr(args, "forensic_group_owner", ""),
        block_ips=tuple(getattr(args, "block_ip", None) or ()),
    )
    if args.command == "isolate" and args.dry_run:
        plan = engine.plan(
            args.instance_ids,
            args.case,
            args.office_cidr,
            allow_any_source=args.allow_any_source,
            options=options,
        )
        shown, text = plan.as_dict(), render_plan(plan)
        if chosen.filters:  # which instances the filters selected, right under the plan's heading
            shown["selected_by_filters"] = chosen.as_dict()
            head, _, steps = text.partition("\n\n")
            text = f"{head}\n\n{chosen.describe()}\n\n{steps}"
        print(document(Schema.PLAN, shown) if args.output == "json" else text)
        return EXIT_PARTIAL if plan.would_fail else EXIT_OK
    if args.command == "collect" and args.dry_run:  # the same plan's shape; its "action" is collect
        plan = engine.plan_collect(args.instance_ids, args.case, options=options)
        print(document(Schema.PLAN, plan.as_dict()) if args.output == "json" else render_plan(plan))
        return EXIT_PARTIAL if plan.would_fail else EXIT_OK

    fixes: dict[str, Any] = {
        "replace_groups": getattr(args, "replace_group", []),
        "skip_missing_groups": getattr(args, "skip_missing_groups", False),
    }
    if args.command == "release" and args.dry_run:
        from ec2ir.containment.restore import render_plan as render_release_plan

        planned = engine.plan_release(args.instance_ids, args.case, rejoin=args.rejoin, **fixes)
        print(
            document(Schema.RELEASE_PLAN, {**planned.as_dict(), "dry_run": True})
            if args.output == "json"
            else render_release_plan(planned.results, planned.case_id, planned.notes)
        )
        return EXIT_PARTIAL if planned.failed else EXIT_OK

    count = len(set(args.instance_ids))
    # isolate's containment is shown for any run of more than one instance; the rest of each run,
    # and every other run, from PROGRESS_THRESHOLD instances (ProgressPrinter)
    progress = ProgressPrinter(count, args.command, quiet_below=PROGRESS_THRESHOLD) if count > 1 else None
    # Ctrl-C: the first stops new work and the run returns what it did; the second aborts at once
    with interruptible(engine.interrupt, args.command):
        if args.command == "isolate":
            report = engine.isolate(
                args.instance_ids,
                args.case,
                office_cidr=args.office_cidr,
                allow_any_source=args.allow_any_source,
                options=options,
                progress=progress,
            )
        elif args.command == "collect":
            report = engine.collect(args.instance_ids, args.case, options=options, progress=progress)
        elif args.command == "rejoin":
            report = engine.rejoin(args.instance_ids, args.case, progress=progress)
        else:
            report = engine.release(
                args.instance_ids, args.case, rejoin=args.rejoin, progress=progress, **fixes
            )
    interrupted = engine.interrupt.is_set()
    if interrupted:
        report.notes.append(
            "interrupted (Ctrl-C): no instance or step started after it; those in flight finished. "
            f"Run `ec2ir {args.command}` again to finish what was not done"
        )
    print(document(Schema.RUN, report.as_dict()) if args.output == "json" else render_run(report))
    if getattr(args, "wait", False) and options.evidence and not interrupted:
        wait_for_evidence(aws, [s for result in report.results for s in result.snapshot_ids])
    for failed in report.failed:
        print(
            printable(f"ec2ir: {failed.instance_id}: {failed.error_code}: {failed.detail}"), file=sys.stderr
        )
    from ec2ir.render.terminal import run_warnings

    # one WARNING line for each thing asked for and not done: a failed step, evidence not
    # collected (a contained instance's too), a step skipped for a reason, a result's warning
    for line in run_warnings(report):
        print(line, file=sys.stderr)
    if interrupted:
        from ec2ir.render.terminal import interrupt_lines

        for line in interrupt_lines(report, engine.interrupt.skipped):
            print(line, file=sys.stderr)
        return EXIT_INTERRUPTED
    incomplete = [r for r in report.results if r.ok and r.evidence_failed]
    warned = [r for r in report.results if r.warnings]
    return EXIT_PARTIAL if report.failed or incomplete or warned else EXIT_OK


def report_format(chosen: str | None, output: str) -> str:
    """``report``'s format: ``--output json`` means ``--format json``, and goes with no other."""
    if output != "json":
        return chosen or "md"
    if chosen not in (None, "json"):
        raise UsageError(
            f"--output json asks for the JSON report, --format {chosen} for another",
            "drop one of them (--output json is the same as --format json)",
        )
    return "json"


def wait_for_evidence(aws: Any, snapshot_ids: list[str]) -> None:
    """--wait: a progress bar on standard error until every snapshot is completed."""
    from ec2ir.evidence.collect import wait_for_snapshots
    from ec2ir.render.terminal import progress_bar

    if not snapshot_ids:
        return
    states = wait_for_snapshots(
        aws, snapshot_ids, lambda done, total: progress_bar(sys.stderr, "snapshots", done, total)
    )
    failed = sorted(s for s, state in states.items() if state != "completed")
    print(
        f"ec2ir: {len(snapshot_ids) - len(failed)} of {len(snapshot_ids)} snapshot(s) completed"
        + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )


def run_forensics(args: argparse.Namespace, engine: Any) -> int:
    from ec2ir.evidence import forensics
    from ec2ir.render.terminal import Schema, document

    engine.store.require()  # the case's snapshots are known from its journal, never from tags
    actor = engine.aws.caller_arn()
    if args.forensics_command == "attach":
        workstation = targets.workstation(engine.aws, args.workstation)  # an id or its ARN
        attached = forensics.attach(
            engine.aws, engine.store, args.case, workstation, actor, dry_run=args.dry_run
        )
        print(
            document(Schema.FORENSICS_ATTACH, attached.as_dict())
            if args.output == "json"
            else forensics.render_attach(attached)
        )
        return EXIT_OK if attached.ok else EXIT_PARTIAL
    detached = forensics.detach(engine.aws, engine.store, args.case, actor, dry_run=args.dry_run)
    print(
        document(Schema.FORENSICS_DETACH, detached.as_dict())
        if args.output == "json"
        else forensics.render_detach(detached)
    )
    return EXIT_OK if detached.ok else EXIT_PARTIAL


if __name__ == "__main__":
    sys.exit(main())
