"""The ``ec2ir`` argument parser: one small function per command's sub-parser.

The option groups several commands share (``ec2ir.cli.options``) are built once and handed to each
command that takes them; the order of ``COMMAND_PARSERS`` is the order ``ec2ir --help`` lists.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ec2ir import __version__
from ec2ir.cli.options import (
    TARGETS_HELP,
    case_arguments,
    common_options,
    evidence_options,
    positive_float,
    target_options,
)

if TYPE_CHECKING:  # subscriptable only to the type checker
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


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

COMPLETION_SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes


@dataclass(frozen=True)
class SharedOptions:
    """The parent parsers a command may take its options from."""

    common: argparse.ArgumentParser
    evidence: argparse.ArgumentParser
    targets: argparse.ArgumentParser


def build_parser() -> argparse.ArgumentParser:
    parser = _top_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = SharedOptions(common_options(), evidence_options(), target_options())
    for add_command in COMMAND_PARSERS:
        add_command(commands, shared)
    _describe(commands)
    return parser


def _top_parser() -> argparse.ArgumentParser:
    """``ec2ir`` itself, with the options that go before the command."""
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
    return parser


def _isolate(commands: Commands, shared: SharedOptions) -> None:
    isolate = commands.add_parser(
        "isolate",
        parents=[shared.common, shared.evidence, shared.targets],
        help="contain instances",
        description="Contain instances.",
    )
    isolate.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID", help=TARGETS_HELP)
    isolate.add_argument("--case", required=True, metavar="CASE_ID", help="incident case id")
    _forensic_side_options(isolate)
    _untracking_options(isolate)
    _isolate_extra_options(isolate)
    _via_options(isolate)


def _via_options(command: argparse.ArgumentParser) -> None:
    """Where the run's engine runs: here, or on the outbreak stack's Step Functions (outbreak.yaml)."""
    via = command.add_argument_group("past one machine")
    via.add_argument(
        "--via",
        choices=["local", "stepfunctions"],
        default="local",
        help="local (default): this process runs every place side by side; stepfunctions: the "
        "outbreak stack's state machine runs one shard per account and Region, and this command "
        "follows it and prints its result as a local run's (docs/outbreak-stack.md)",
    )
    via.add_argument(
        "--outbreak-stack",
        metavar="NAME",
        default="",
        help="with --via stepfunctions: the CloudFormation stack deployed from outbreak.yaml",
    )


def _forensic_side_options(isolate: argparse.ArgumentParser) -> None:
    """Who may still reach an isolated instance: SSH from the forensic group only."""
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


def _untracking_options(isolate: argparse.ArgumentParser) -> None:
    """How the swap drops the connections EC2 already tracks, and the metadata service."""
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


def _isolate_extra_options(isolate: argparse.ArgumentParser) -> None:
    """What isolate does besides the cut (or, with --dry-run, instead of it)."""
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


def _release(commands: Commands, shared: SharedOptions) -> None:
    release = commands.add_parser(
        "release",
        parents=[shared.common, shared.targets],
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
    _via_options(release)


def _rejoin(commands: Commands, shared: SharedOptions) -> None:
    rejoin = commands.add_parser(
        "rejoin",
        parents=[shared.common, shared.targets],
        help="put released instances back in service",
        description="Attach released instances to their Auto Scaling group again and register them "
        "with their target groups and Classic ELBs, from their holds' records; what is already back "
        "is left as it is. For a hold still active, use release --rejoin.",
    )
    rejoin.add_argument("instance_ids", nargs="*", metavar="INSTANCE_ID", help=TARGETS_HELP)
    rejoin.add_argument("--case", required=True, metavar="CASE_ID", help="the case that released them")


def _collect(commands: Commands, shared: SharedOptions) -> None:
    collect = commands.add_parser(
        "collect",
        parents=[shared.common, shared.evidence, shared.targets],
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


def _report(commands: Commands, shared: SharedOptions) -> None:
    report = commands.add_parser(
        "report",
        parents=[shared.common],
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


def _verify(commands: Commands, shared: SharedOptions) -> None:
    verify = commands.add_parser(
        "verify",
        parents=[shared.common],
        help="check every piece of evidence against the journal",
        description="Re-read every evidence object and compare its SHA-256 with the case journal; "
        "check every snapshot still exists. Exits 1 on any mismatch or missing piece.",
    )
    case_arguments(verify)


def _forensics(commands: Commands, shared: SharedOptions) -> None:
    forensics = commands.add_parser(
        "forensics", help="attach the case's snapshots to a forensic workstation, or detach them"
    )
    forensic_commands = forensics.add_subparsers(dest="forensics_command", required=True, metavar="ACTION")
    attach = forensic_commands.add_parser(
        "attach",
        parents=[shared.common],
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
        parents=[shared.common],
        help="detach and delete the case's forensic volumes (the snapshots stay)",
    )
    case_arguments(detach)
    detach.add_argument(
        "--dry-run",
        action="store_true",
        help="list each forensic copy that would be detached and deleted, and the calls; change nothing",
    )
    _describe(forensic_commands, "forensics ")


EDGE_COMMANDS = (
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
)


def _edge(commands: Commands, shared: SharedOptions) -> None:
    """block-ip and unblock-ip: the same arguments, each its own words."""
    for name, verb, description in EDGE_COMMANDS:
        edge = commands.add_parser(name, parents=[shared.common], help=verb, description=description)
        edge.add_argument("cidrs", nargs="+", metavar="CIDR")
        edge.add_argument(
            "--case", required=True, metavar="CASE_ID", help="the case that holds the instances"
        )
        edge.add_argument(
            "--dry-run", action="store_true", help="list the entries it would change; change nothing"
        )


def _status(commands: Commands, shared: SharedOptions) -> None:
    status = commands.add_parser("status", parents=[shared.common], help="show what is held")
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


def _preflight(commands: Commands, shared: SharedOptions) -> None:
    commands.add_parser(
        "preflight",
        parents=[shared.common],
        help="check in peacetime that these credentials can run every step",
    )


def _permissions(commands: Commands, shared: SharedOptions) -> None:
    permissions = commands.add_parser(
        "permissions", help="print the minimal IAM policy ec2ir needs", description="Print the IAM policy."
    )
    permissions.add_argument(
        "--member",
        action="store_true",
        help="the policy of the role ec2ir assumes in each other account (--role-name): no state "
        "table, which stays in the responder's account",
    )


def _demo(commands: Commands, shared: SharedOptions) -> None:
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


def _completion(commands: Commands, shared: SharedOptions) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script of SHELL, for commands, options and their choices. It "
        "needs the optional shtab package: pip install 'ec2ir[completion]'.",
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS, metavar="SHELL", help="bash, zsh or tcsh")


def _emulator(commands: Commands, shared: SharedOptions) -> None:
    emulator = commands.add_parser("emulator", help="serve the embedded emulator")
    emulator.add_argument("--port", type=int, default=5000, help="TCP port on 127.0.0.1 (default: 5000)")


# In the order ``ec2ir --help`` lists the commands.
COMMAND_PARSERS: tuple[Callable[[Commands, SharedOptions], None], ...] = (
    _isolate,
    _release,
    _rejoin,
    _collect,
    _report,
    _verify,
    _forensics,
    _edge,
    _status,
    _preflight,
    _permissions,
    _demo,
    _completion,
    _emulator,
)


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
