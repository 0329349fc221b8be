"""Issue 16, point 2: see it while it happens. Containment is shown live, instance by instance, as
each cut ends (long before the evidence); every table names the instances and groups beside their
ids, escaped; and a table fits the terminal without cutting an id."""

from __future__ import annotations

import io
import json
import sys
import threading
from typing import Any

import pytest

from ec2ir.aws.session import Aws
from ec2ir.cli import app as cli
from ec2ir.core.models import InstanceResult, Phase
from ec2ir.core.text import table
from ec2ir.emulator.server import Emulator
from ec2ir.engine.facade import Engine
from ec2ir.render.terminal import ProgressPrinter
from ec2ir.store.state import StateStore
from tests.support.fleets import Fleet

CASE = "IR-16"
# Calls that end an evidence step: the snapshots, and each object written to the evidence bucket.
EVIDENCE_CALLS = {("ec2", "CreateSnapshots"), ("ec2", "CreateSnapshot"), ("s3", "PutObject")}
# A Name tag written by the attacker: a colour escape (CSI, as one C1 character: the emulator's
# XML cannot carry ESC) and a line of its own.
HOSTILE_NAME = "web-\x9b31mred\nFAKE LINE"
# As every table shows it: escaped, then cut to 24 characters, the last three "..." (ASCII, so
# that a terminal in any encoding prints it).
SHOWN_NAME = "web-\\x9b31mred\\nFAKE ..."


class Timeline:
    """One ordered record, from every thread, of the AWS calls that ended and the lines written
    to standard error: what was shown, relative to what was done."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, what: Any) -> None:
        with self._lock:
            self.events.append((kind, what))

    def hook(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every client ec2ir builds from now on notes each call that ends."""
        make_client = Aws._make_client

        def noting_client(aws: Aws, service: str) -> Any:
            client = make_client(aws, service)

            def ended(model: Any, **_: Any) -> None:
                self.add("call", (service, model.name))

            client.meta.events.register("after-call", ended)
            return client

        monkeypatch.setattr(Aws, "_make_client", noting_client)

    def first_evidence_call(self) -> int:
        return next(
            i for i, (kind, what) in enumerate(self.events) if kind == "call" and what in EVIDENCE_CALLS
        )


class Stream(io.StringIO):
    """Standard error, each write also noted on the timeline."""

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.timeline = timeline

    def write(self, text: str) -> int:
        self.timeline.add("err", text)
        return super().write(text)

    def isatty(self) -> bool:
        return False


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def fleet_of(fleet: Fleet, count: int, names: list[str] | None = None) -> tuple[str, str, list[str]]:
    vpc = fleet.vpc(1)
    web = fleet.group(vpc, "web")
    instances = [fleet.instance(vpc, [web]) for _ in range(count)]
    for instance, name in zip(instances, names or [], strict=False):
        fleet.ec2.create_tags(Resources=[instance], Tags=[{"Key": "Name", "Value": name}])
    return vpc, web, instances


def invoke(emulator: Emulator, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--endpoint-url", emulator.endpoint_url, "--region", "us-east-1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- live progress, phase by phase ---------------------------------------------------------------


def test_the_cli_shows_each_instance_contained_before_any_evidence_step_ends(
    emulator: Emulator, fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, instances = fleet_of(fleet, 5, names=[f"app-{n}" for n in range(5)])
    timeline = Timeline()
    timeline.hook(monkeypatch)
    monkeypatch.setattr(sys, "stderr", Stream(timeline))

    code = cli.main(
        [
            "isolate",
            *instances,
            "--case",
            CASE,
            "--endpoint-url",
            emulator.endpoint_url,
            "--region",
            "us-east-1",
        ]
    )

    assert code == 0, capsys.readouterr().out
    lines = [
        (i, what) for i, (kind, what) in enumerate(timeline.events) if kind == "err" and what.startswith("[")
    ]
    contained = [(i, line) for i, line in lines if " contained " in line]
    done = [(i, line) for i, line in lines if " isolate " in line]
    # every instance shown contained, by name, counted 1 to 5 as the cuts end...
    assert sorted(line.split()[2] for _, line in contained) == sorted(instances)
    assert [line.split()[0] for _, line in contained] == [f"[{n}/5]" for n in range(1, 6)]
    assert all(line.rstrip().endswith(f"(app-{instances.index(line.split()[2])})") for _, line in contained)
    # ...each of them before any evidence step of any instance ended
    first_evidence = timeline.first_evidence_call()
    assert max(i for i, _ in contained) < first_evidence
    # and then each instance's end (evidence and the rest), counted again
    assert [line.split()[0] for _, line in done] == [f"[{n}/5]" for n in range(1, 6)]
    assert min(i for i, _ in done) > first_evidence


@pytest.mark.evidence
def test_the_engine_reports_every_cut_before_any_evidence_and_each_end_after(
    aws: Aws, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, instances = fleet_of(fleet, 3)
    timeline = Timeline()
    timeline.hook(monkeypatch)
    engine = Engine(aws, StateStore(aws), concurrency=4)

    def progress(result: InstanceResult, phase: str = "done") -> None:
        timeline.add(phase, result.instance_id)

    report = engine.isolate([*instances, "i-0123456789abcdef0"], CASE, progress=progress)

    assert [r.ok for r in report.results] == [True, True, True, False]
    first_evidence = timeline.first_evidence_call()
    phases = [(i, kind, what) for i, (kind, what) in enumerate(timeline.events) if kind != "call"]
    contained = [(i, what) for i, kind, what in phases if kind == "contained"]
    ended = [(i, what) for i, kind, what in phases if kind == "done"]
    # each instance once in each phase, the one that does not exist too (it fails at once)
    assert sorted(what for _, what in contained) == sorted(ended_ids := [*instances, "i-0123456789abcdef0"])
    assert sorted(what for _, what in ended) == sorted(ended_ids)
    assert all(i < first_evidence for i, _ in contained)
    assert all(i > first_evidence for i, what in ended if what in instances)


def test_on_a_terminal_each_phase_is_a_bar_and_a_failed_cut_does_not_break_the_one_drawn() -> None:
    stream = TtyStream()
    printer = ProgressPrinter(3, "isolate", stream, quiet_below=3)
    ok = [InstanceResult(f"i-{n}", "isolate", ok=True) for n in range(2)]
    bad = InstanceResult("i-bad", "isolate", ok=False, error_code="InstanceTerminated")

    printer(ok[0], Phase.CONTAINED)
    printer(bad, Phase.CONTAINED)
    printer(bad, Phase.DONE)  # a failed cut ends at once: its DONE waits for the containment bar
    assert "done" not in stream.getvalue()
    printer(ok[1], Phase.CONTAINED)
    printer(ok[0], Phase.DONE)
    printer(ok[1], Phase.DONE)

    lines = stream.getvalue().split("\n")
    last_drawn = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in lines if line]
    assert last_drawn == [
        f"isolate: contained [{'#' * 30}] 3/3, 1 failed",
        f"isolate: done [{'#' * 30}] 3/3, 1 failed",
    ]
    assert stream.getvalue().endswith("\n")


def test_below_the_threshold_only_containment_is_shown() -> None:
    stream = Stream(Timeline())
    printer = ProgressPrinter(2, "isolate", stream)
    result = InstanceResult("i-1", "isolate", ok=True, name=HOSTILE_NAME)

    printer(result, Phase.CONTAINED)
    printer(result, Phase.DONE)

    assert stream.getvalue() == f"[1/2] contained i-1 ({SHOWN_NAME})\n"


def test_a_containment_taken_back_is_its_own_line_and_counts_once() -> None:
    # The check after the cut found an instance already said contained open after all.
    plain, tty = Stream(Timeline()), TtyStream()
    for stream in (plain, tty):
        printer = ProgressPrinter(2, "isolate", stream)
        printer(InstanceResult("i-1", "isolate", ok=True, name="web-1"), Phase.CONTAINED)
        taken_back = InstanceResult(
            "i-1", "isolate", ok=False, error_code="UnauthorizedOperation", name="web-1"
        )
        printer(taken_back, Phase.CONTAINED)
        printer(InstanceResult("i-2", "isolate", ok=True), Phase.CONTAINED)
        assert printer.ended[Phase.CONTAINED] == 2 and printer.failed[Phase.CONTAINED] == 1

    assert plain.getvalue().splitlines() == [
        "[1/2] contained i-1 (web-1)",
        "NOT contained after all: i-1 (web-1): failed UnauthorizedOperation",
        "[2/2] contained i-2",
    ]
    assert "NOT contained after all: i-1 (web-1): failed UnauthorizedOperation\n" in tty.getvalue()
    assert tty.getvalue().rstrip("\n").rsplit("\r", 1)[-1].startswith("isolate: contained [")


# -- names beside ids, escaped -------------------------------------------------------------------


def test_names_are_shown_escaped_in_isolate_status_and_both_plans(
    emulator: Emulator, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _, web, [instance] = fleet_of(fleet, 1, names=[HOSTILE_NAME])

    plan = invoke(emulator, capsys, "isolate", instance, "--case", CASE, "--dry-run")
    isolated = invoke(emulator, capsys, "isolate", instance, "--case", CASE)
    status = invoke(emulator, capsys, "status", "--case", CASE)
    as_json = invoke(emulator, capsys, "status", "--case", CASE, "--output", "json")
    release_plan = invoke(emulator, capsys, "release", instance, "--case", CASE, "--dry-run")

    for code, out, err in (plan, isolated, status, release_plan):
        assert code == 0, (out, err)
        # on the instance's own line, escaped and cut short; never a line of its own, never a colour
        assert SHOWN_NAME in next(line for line in out.splitlines() if instance in line), out
        assert "\x9b" not in out and not any(line.startswith("FAKE") for line in out.splitlines())
    # the isolation group by name in the run table, the original group by name in status
    [isolation] = {group for groups in fleet.eni_groups([instance]).values() for group in groups}
    name = fleet.ec2.describe_security_groups(GroupIds=[isolation])["SecurityGroups"][0]["GroupName"]
    assert f"{isolation} ({name})" in isolated[1]
    assert f"{web} (web)" in status[1]
    # JSON keeps the name as it is, beside the ids: escaping is the terminal's concern
    document = json.loads(as_json[1])
    [hold] = document["holds"] if isinstance(document, dict) else document
    assert hold["name"] == HOSTILE_NAME and hold["group_names"] == {web: "web"}


def test_the_run_table_and_its_json_name_each_instance(
    emulator: Emulator, fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _, web, instances = fleet_of(fleet, 2, names=["db-primary"])

    code, out, _ = invoke(emulator, capsys, "isolate", *instances, "--case", CASE, "--output", "json")
    released = invoke(emulator, capsys, "release", *instances, "--case", CASE)

    assert code == 0
    assert [r["name"] for r in json.loads(out)["results"]] == ["db-primary", ""]
    assert released[0] == 0
    header, _rule, first, *_ = released[1].splitlines()
    assert header.split()[:3] == ["INSTANCE", "NAME", "RESULT"]
    assert first.split()[:3] == [instances[0], "db-primary", "released"]
    assert f"{web} (web)" in first  # the group each ENI is back in, by name


# -- fitting the terminal ------------------------------------------------------------------------


def test_a_table_fits_the_width_by_wrapping_its_free_text_never_cutting_an_id() -> None:
    ids = ["i-0123456789abcdef0", "i-0fedcba9876543210"]
    enis = ["eni-0aaaaaaaaaaaaaaaa: sg-0bbbbbbbbbbbbbbbb", "eni-0cccccccccccccccc: sg-0dddddddddddddddd"]
    detail = "the isolation group sg-0eeeeeeeeeeeeeeee was replaced, as its rules had been changed by someone"
    rows = [[ids[0], "isolated", enis[0], detail], [ids[1], "isolated", enis[1], "1 ENI(s) isolated"]]
    headers = ["INSTANCE", "RESULT", "ENI: GROUPS NOW", "DETAIL"]

    fitted = table(headers, rows, width=100)
    unlimited = table(headers, rows, width=0)

    assert max(len(line) for line in fitted.splitlines()) <= 100
    assert max(len(line) for line in unlimited.splitlines()) > 100
    assert len(unlimited.splitlines()) == 4  # no limit: one line per row, as piped output keeps
    from ec2ir.core.text import table_lines  # new with the fitting: the other tests run without it

    _, _, first, second = table_lines(headers, rows, width=100)
    assert len(first) > 1 and len(second) == 1  # the long DETAIL wrapped under its column
    assert first[0].startswith(f"{ids[0]}  isolated  {enis[0]}")
    column = first[0].index("the isolation")
    wrapped = " ".join(line[column:].strip() for line in first)
    assert wrapped == detail  # every word kept, in order
    assert all(line[:column].strip() == "" for line in first[1:])


def test_at_60_columns_every_id_stays_whole() -> None:
    ids = ["i-0123456789abcdef0", "vol-0123456789abcdef0"]
    rows = [[ids[0], ids[1], "a very long explanation of what happened to this volume's snapshot"]]

    text = table(["INSTANCE", "LOCATION", "DETAIL"], rows, width=60)

    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines)
    assert ids[0] in lines[2] and ids[1] in lines[2]
    assert "explanation" in text and "snapshot" in lines[-1]
