"""The incident report, built from a real case journal and holds written by isolate and release."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ec2ir.core.errors import UsageError
from ec2ir.core.models import EvidenceRef, JournalEntry
from ec2ir.engine.facade import Engine
from ec2ir.report.build import build_report
from ec2ir.report.formats import render
from ec2ir.report.model import CaseReport, outcome
from ec2ir.report.timeline import mark_positions
from ec2ir.store.items import now
from ec2ir.store.state import StateStore
from tests.support.fleets import Fleet

pytestmark = pytest.mark.evidence  # about evidence: its runs collect it

CASE = "IR-1"
OFFICE = "198.51.100.0/24"
HOSTILE = "<script>alert(1)</script>"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Case:
    engine: Engine
    held: str  # still isolated
    released: str
    held_originals: dict[str, tuple[str, ...]]  # ENI -> its groups before isolation
    released_originals: dict[str, tuple[str, ...]]


def entry(target: str, action: str, result: str, *evidence: EvidenceRef, actor: str = "") -> JournalEntry:
    return JournalEntry(
        now(), CASE, actor or "arn:aws:sts::123456789012:user/analyst", target, action, result, (), evidence
    )


@pytest.fixture
def case(engine: Engine, fleet: Fleet) -> Case:
    vpc = fleet.vpc(1)
    web, ssh = fleet.group(vpc, "web"), fleet.group(vpc, "ssh")
    held = fleet.instance(vpc, [web, ssh], extra_enis=[[ssh]])
    released = fleet.instance(vpc, [web])
    held_originals = fleet.eni_groups([held])
    released_originals = fleet.eni_groups([released])
    engine.isolate([held, released], CASE, office_cidr=OFFICE)
    engine.release([released], CASE)
    return Case(engine, held, released, held_originals, released_originals)


def with_evidence(case: Case) -> list[JournalEntry]:
    """Journal lines of the shape evidence collection writes, for tests that must not depend on it."""
    lines = [
        entry(
            case.held,
            "evidence:describe-instances",
            f"done: sha256 {SHA}",
            EvidenceRef(
                "metadata:describe-instances",
                f"s3://ec2ir-evidence-123456789012-us-east-1/{CASE}/{case.held}/describe-instances.json",
                SHA,
                2048,
                "v-1",
            ),
        ),
        entry(
            case.held,
            "isolate:snapshots",
            "done: 1 snapshot(s) started",
            EvidenceRef(
                "snapshot", "snap-0123456789abcdef0", details={"volume_id": "vol-1", "device": "/dev/sda1"}
            ),
        ),
        entry(case.held, "evidence:console-output", "not collected: the instance has no console output"),
        entry(case.released, "isolate:memory", "FAILED: ssm: InvalidInstanceId: not managed by SSM"),
        entry(case.released, "collect:avml", "skipped: --memory not given"),
    ]
    case.engine.store.append(lines)
    return lines


def sorted_groups(enis: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {eni: tuple(sorted(groups)) for eni, groups in enis.items()}


# -- what the report says --------------------------------------------------------------------------


def test_timeline_is_every_action_of_the_journal_in_order(case: Case) -> None:
    with_evidence(case)
    journal = case.engine.store.journal(CASE)
    report = build_report(case.engine.store, CASE)

    assert report.timeline == tuple(journal)
    assert [(e.at, e.target, e.action) for e in report.timeline] == sorted(
        (e.at, e.target, e.action) for e in journal
    )
    assert report.summary.actions == len(journal)
    assert report.summary.first_at == journal[0].at and report.summary.last_at == journal[-1].at
    assert report.summary.failures == sum(1 for e in journal if e.result.startswith("FAILED"))

    # Every renderer lists the same entries in the same order.
    data = json.loads(render(report, "json"))
    assert [(e["target"], e["action"], e["result"]) for e in data["timeline"]] == [
        (e.target, e.action, e.result) for e in journal
    ]
    markdown = render(report, "md")
    timeline = markdown.split("## Timeline", 1)[1].split("## Evidence", 1)[0]
    rows = [line for line in timeline.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split(" | ")[3] for row in rows] == [e.action for e in journal]
    page = render(report, "html")
    assert re.findall(r'<span id="e(\d+)">', page) == [str(n) for n in range(1, len(journal) + 1)]
    assert page.count('<g class="mark"') == len(journal)


def test_before_and_after_of_an_isolated_and_a_released_instance(case: Case, fleet: Fleet) -> None:
    report = build_report(case.engine.store, CASE)
    instances = {i.instance_id: i for i in report.instances}

    held = instances[case.held]
    assert held.status == "isolated"
    assert sorted_groups({e.eni_id: e.before for e in held.enis}) == case.held_originals
    assert all(e.after.startswith("isolation group") and not e.after_groups for e in held.enis)
    assert held.isolated_at and not held.released_at
    assert held.after.startswith(f"isolated since {held.isolated_at}")
    assert "protect" in held.step_originals  # the step records kept in the hold
    # What the report calls "isolated" is what EC2 shows: no ENI is left in an original group.
    now_groups = fleet.eni_groups([case.held])
    assert all(set(now_groups[eni]).isdisjoint(before) for eni, before in case.held_originals.items())

    released = instances[case.released]
    assert released.status == "released"
    assert sorted_groups({e.eni_id: e.after_groups for e in released.enis}) == case.released_originals
    assert fleet.eni_groups([case.released]) == case.released_originals
    assert released.released_at and released.released_by

    assert [(s.instance_id, s.status) for s in report.still_isolated] == [(case.held, "isolated")]
    assert (report.summary.instances, report.summary.isolated, report.summary.released) == (2, 1, 1)

    markdown = render(report, "md")
    still = markdown.split("## Still isolated", 1)[1].split("## Instances", 1)[0]
    assert case.held in still and case.released not in still
    assert f"ec2ir release {case.held} --case {CASE}" in still


def test_a_case_with_everything_released_says_so(case: Case) -> None:
    case.engine.release([case.held], CASE)
    report = build_report(case.engine.store, CASE)
    assert report.still_isolated == ()
    assert "None: every instance this case held has been released." in render(report, "md")
    assert "every instance of this case was released" in render(report, "html")


def test_a_terminated_instance_is_released_without_claiming_its_groups_came_back(
    case: Case, fleet: Fleet
) -> None:
    fleet.ec2.modify_instance_attribute(InstanceId=case.held, DisableApiTermination={"Value": False})
    fleet.ec2.terminate_instances(InstanceIds=[case.held])
    case.engine.release([case.held], CASE)
    held = {i.instance_id: i for i in build_report(case.engine.store, CASE).instances}[case.held]
    assert held.status == "released"
    assert all(e.after.startswith("not restored: skipped") and not e.after_groups for e in held.enis)


def test_evidence_list_carries_locations_hashes_and_the_entry_that_produced_it(case: Case) -> None:
    lines = with_evidence(case)
    report = build_report(case.engine.store, CASE)

    by_location = {item.location: item for item in report.evidence}
    metadata_ref, snapshot_ref = lines[0].evidence[0], lines[1].evidence[0]
    metadata = by_location[metadata_ref.location]
    assert (metadata.sha256, metadata.size, metadata.version_id) == (SHA, 2048, "v-1")
    assert (metadata.target, metadata.action, metadata.kind) == (
        case.held,
        "evidence:describe-instances",
        "metadata:describe-instances",
    )
    assert report.timeline[metadata.entry - 1] == lines[0]
    snapshot = by_location["snap-0123456789abcdef0"]
    assert snapshot.details == {"device": "/dev/sda1", "volume_id": "vol-1"}
    assert report.timeline[snapshot.entry - 1].action == "isolate:snapshots"
    assert report.summary.evidence == len(report.evidence) == sum(len(e.evidence) for e in report.timeline)
    assert snapshot_ref.location in by_location

    for fmt in ("md", "html"):
        text = render(report, fmt)
        section = text.split("Evidence</h2>" if fmt == "html" else "## Evidence", 1)[1]
        assert metadata_ref.location in section.replace("\\_", "_")
        assert SHA in section and "v-1" in section and "snap-0123456789abcdef0" in section


def test_json_is_stable_and_round_trips(case: Case) -> None:
    with_evidence(case)
    report = build_report(case.engine.store, CASE)
    text = render(report, "json")
    data = json.loads(text)

    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["schema"] == "ec2ir-report/1"
    assert data["summary"]["case_id"] == CASE
    assert data["summary"]["actors"] == list(report.summary.actors)
    assert data["summary"]["failures"] == report.summary.failures >= 1
    assert [s["instance_id"] for s in data["still_isolated"]] == [case.held]
    assert {i["instance_id"]: i["status"] for i in data["instances"]} == {
        case.held: "isolated",
        case.released: "released",
    }
    assert [(e["location"], e["sha256"]) for e in data["evidence"]] == [
        (e.location, e.sha256) for e in report.evidence
    ]
    # The same report renders to the same text: nothing depends on dict or set order.
    assert render(report, "json") == text


def test_markdown_has_every_section_and_tables(case: Case) -> None:
    with_evidence(case)
    markdown = render(build_report(case.engine.store, CASE), "md")
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings[0] == f"# Incident report: case {CASE}"
    for section in (
        "## Summary",
        "## Still isolated",
        "## Instances: before and after",
        "## Timeline",
        "## Evidence",
    ):
        assert section in headings
    assert f"### {case.held} (isolated)" in headings and f"### {case.released} (released)" in headings
    assert "| # | Time (UTC) | Target | Action | Result | Actor | Request ids |" in markdown


def test_hostile_journal_text_is_escaped(case: Case) -> None:
    target = '"><img src=x onerror=alert(2)>'
    case.engine.store.append(
        [
            entry(case.held, "isolate:tags", f"FAILED: {HOSTILE} | [x](javascript:alert(3))", actor=HOSTILE),
            entry(target, "groups", f"done: {HOSTILE}"),
        ]
    )
    report = build_report(case.engine.store, CASE)

    page = render(report, "html")
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page  # the lane name too

    markdown = render(report, "md")
    assert "<script" not in markdown and "<img" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert "\\[x\\](javascript:alert(3))" in markdown and "\\|" in markdown  # no link, no extra cell
    assert HOSTILE in [e["actor"] for e in json.loads(render(report, "json"))["timeline"]]


def test_unknown_case_and_unknown_format_are_usage_errors(case: Case) -> None:
    with pytest.raises(UsageError, match="no journal entries and no holds"):
        build_report(case.engine.store, "IR-404")
    with pytest.raises(UsageError):
        build_report(case.engine.store, "not a case!")
    with pytest.raises(UsageError, match="does not exist"):
        build_report(StateStore(case.engine.aws, "no-such-table"), CASE)
    with pytest.raises(UsageError, match="unknown report format"):
        render(build_report(case.engine.store, CASE), "pdf")


def test_outcome_follows_the_result_prefix() -> None:
    results = (
        "done: x",
        "FAILED: x",
        "skipped: x",
        "not collected: x",
        "not started: the run was interrupted",
        "?",
    )
    assert [outcome(r) for r in results] == [
        "done",
        "failed",
        "skipped",
        "not collected",
        "not started",  # a Ctrl-C kept it from starting: undone, and not a failure
        "other",
    ]


def test_marks_keep_order_and_spacing_and_show_long_pauses() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    burst = [start + timedelta(milliseconds=ms) for ms in (0, 0, 1, 3)]
    later = [start + timedelta(hours=6), start + timedelta(hours=6, milliseconds=2)]
    xs = mark_positions([*burst, *later], 800)
    gaps = [b - a for a, b in itertools.pairwise(xs)]
    assert xs[0] == 0 and abs(xs[-1] - 800) < 1e-6
    assert all(gap >= 18 for gap in gaps)
    assert gaps[3] > 10 * max(gaps[:3])  # six hours show as a long stretch of the axis
    assert mark_positions([start], 800) == [400]
    assert len(mark_positions([None] * 300, 800)) == 300  # unreadable times still get a place


def test_the_timeline_axis_names_a_later_day_and_the_pause_before_it(case: Case) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1, hours=2)
    later = JournalEntry(
        tomorrow.isoformat(timespec="milliseconds"),
        CASE,
        "arn:aws:sts::1:user/b",
        case.held,
        "isolate:tags",
        "done: x",
    )
    case.engine.store.append([later])
    page = render(build_report(case.engine.store, CASE), "html")
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert tomorrow.strftime("%Y-%m-%d %H:%M:%S") in svg
    assert re.search(r">2[56]\.\d h later<", svg)


# -- a real browser ------------------------------------------------------------------------------


Rgb = tuple[int, int, int]


def png_pixels(path: Path, rows: int) -> tuple[int, int, list[list[Rgb]]]:
    """Width, height and the first ``rows`` decoded scanlines of an 8-bit RGB(A) PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), "only 8-bit RGB and RGBA are decoded here"
    pixel = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * pixel
    lines: list[bytes] = []
    previous = bytearray(stride)
    for y in range(min(rows, height)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - pixel] if i >= pixel else 0
            up, corner = previous[i], previous[i - pixel] if i >= pixel else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        lines.append(bytes(line))
        previous = line
    rgb = [[(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, pixel)] for line in lines]
    return width, height, rgb


def chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *mode,
            f"file://{page}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (scripts/test installs Debian's chromium)")
def test_html_renders_in_a_headless_browser(case: Case, tmp_path: Path) -> None:
    with_evidence(case)
    case.engine.store.append([entry(case.held, "isolate:tags", f"FAILED: {HOSTILE}")])
    report: CaseReport = build_report(case.engine.store, CASE)
    page = tmp_path / "report.html"
    page.write_text(render(report, "html"), encoding="utf-8")
    # Self-contained: nothing to fetch, nothing to run; links only within the page.
    assert not re.search(r"""(?:src|href)=["'](?!#)|url\(|@import|<script""", page.read_text(), re.IGNORECASE)
    shot = tmp_path / "shot.png"

    taken = chromium(page, tmp_path / "shot-profile", f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.exists(), taken.stderr[-2000:]
    width, height, lines = png_pixels(shot, 900)
    assert (width, height) == (1280, 2000)
    pixels = {pixel for line in lines for pixel in line}
    assert len(pixels) > 50, "the top of the page is (nearly) blank"
    # The inline CSS applied (the header band) and the SVG drew marks in the outcome colours.
    assert (0x14, 0x36, 0x5D) in {pixel for line in lines[:60] for pixel in line}
    for rgb in ((0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)):
        assert rgb in pixels, f"no pixel of colour {rgb} in the top 900 rows"

    dumped = chromium(page, tmp_path / "dom-profile", "--dump-dom")
    dom = dumped.stdout
    assert dom.count('class="mark"') == len(report.timeline), dumped.stderr[-2000:]
    assert dom.count('data-outcome="failed"') == report.summary.failures
    for lane in {e.target for e in report.timeline}:
        assert f"</title>{lane}</text>" in dom
    assert "<script" not in dom.lower()


# -- end to end ----------------------------------------------------------------------------------


def test_isolate_release_report_end_to_end(case: Case) -> None:
    """The journal isolate and release write themselves, with evidence collection on (the default)."""
    report = build_report(case.engine.store, CASE)
    actions = {(e.target, e.action) for e in report.timeline}
    for instance in (case.held, case.released):
        assert {(instance, "isolate:record-originals"), (instance, "isolate:network")} <= actions
    assert (case.released, "release:network") in actions
    assert (case.held, "release:network") not in actions
    assert report.summary.failures == 0, [e.result for e in report.timeline if e.result.startswith("FAILED")]

    for instance in (case.held, case.released):
        kept = [item for item in report.evidence if item.target == instance]
        assert any(item.kind == "snapshot" and item.location.startswith("snap-") for item in kept)
        metadata = [item for item in kept if item.kind.startswith("metadata:")]
        assert metadata, f"no metadata evidence for {instance}"
        assert all(
            item.location.startswith("s3://") and re.fullmatch(r"[0-9a-f]{64}", item.sha256)
            for item in metadata
        )
