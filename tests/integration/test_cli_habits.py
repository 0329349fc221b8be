"""The habits of a good CLI (issue 16): a closed pipe exits quietly; the first incident the README
walks through works as written, on a seeded emulator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

import pytest

from ec2ir.cli import app as cli
from ec2ir.cli.parser import build_parser
from ec2ir.emulator.server import Emulator
from tests.support.fleets import Fleet


@pytest.mark.e2e
def test_a_closed_pipe_exits_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before ec2ir writes a byte: `ec2ir permissions | head -0`
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from ec2ir.cli.app import main; raise SystemExit(main(['permissions']))"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.returncode == 0  # the command's own code: the policy was made, the reader left
    assert done.stderr == ""


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_never_hides_a_failure_or_its_exit_code(
    emulator: Emulator, fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    vpc = fleet.vpc(1)
    real = fleet.instance(vpc, [fleet.group(vpc, "web")])
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    argv = ["isolate", real, "i-0123456789abcdef0", "--case", "IR-P", "--office-cidr", "203.0.113.0/24"]
    argv += ["--no-evidence", "--endpoint-url", emulator.endpoint_url]

    code = cli.main(argv)

    assert code not in (0, 141)
    assert "i-0123456789abcdef0" in capsys.readouterr().err  # what failed is still said


def test_seed_only_refuses_anything_but_a_loopback_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    for url in (
        "https://ec2.us-east-1.amazonaws.com",
        "http://10.0.0.5:5000",
        "http://ec2.us-east-1.amazonaws.com\\@127.0.0.1:5000",  # urllib3 would send it to the first host
        "http://127.0.0.1@ec2.us-east-1.amazonaws.com",
        "http://user:pw@127.0.0.1:5000",
        "http://127.0.0.1.nip.io:5000",
        "http://localhost.example.com",
    ):
        assert cli.main(["demo", "--seed-only", "--endpoint-url", url]) == 2
        err = capsys.readouterr().err
        assert "not one on loopback" in err and "ec2ir emulator" in err


def test_the_first_incident_of_the_readme(
    emulator: Emulator, fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's walkthrough, command for command (evidence off to keep the suite fast; the
    demo runs it with evidence)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator.endpoint_url)
    assert cli.main(["demo", "--seed-only"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 3 and all(i.startswith("i-") for i in ids)
    before = fleet.eni_groups(ids)
    office = ["--office-cidr", "203.0.113.0/24", "--no-evidence"]

    def ec2ir(*argv: str) -> tuple[int, Any]:
        code = cli.main(list(argv))
        return code, capsys.readouterr()

    code, said = ec2ir("isolate", *ids, "--case", "IR-1", *office, "--dry-run")
    assert code == 0 and fleet.eni_groups(ids) == before
    code, said = ec2ir("isolate", *ids, "--case", "IR-1", *office)
    assert code == 0, said.err
    assert all(len(groups) == 1 for groups in fleet.eni_groups(ids).values())
    code, said = ec2ir("status", "--check")
    assert code == 0, said.out
    code, said = ec2ir("report", "IR-1")
    assert code == 0 and "IR-1" in said.out
    code, said = ec2ir("release", *ids, "--case", "IR-1")
    assert code == 0, said.err
    assert fleet.eni_groups(ids) == before


def test_every_subcommand_has_a_description_and_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    def subcommands(parser: Any) -> dict[str, Any]:
        return dict(parser._subparsers._group_actions[0].choices)

    commands = subcommands(build_parser())
    parsers: dict[tuple[str, ...], Any] = {(name,): command for name, command in commands.items()}
    parsers |= {("forensics", name): command for name, command in subcommands(commands["forensics"]).items()}
    for argv, command in parsers.items():
        assert command.description, argv
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
        said = " ".join(capsys.readouterr().out.split())
        assert " ".join(command.description.split()) in said, argv
        assert f"example: ec2ir {argv[0]}" in said, argv
