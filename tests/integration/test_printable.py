"""Nothing an instance controls reaches a terminal raw: console and script output, tags, and whatever
the state table holds are shown with their control characters as visible escapes, in every table,
progress line, note and report, so none of it can clear the screen, ring, rub out or add a line."""

from __future__ import annotations

import io
import json

import pytest

from ec2ir.aws.session import Aws
from ec2ir.core.models import EvidenceRef, Hold, HoldStatus, InstanceResult, JournalEntry
from ec2ir.core.text import printable, table
from ec2ir.engine.results import RunReport
from ec2ir.render.terminal import ProgressPrinter, progress_bar, render_run, render_status
from ec2ir.report.build import build_report
from ec2ir.report.formats import render
from ec2ir.store.items import now
from ec2ir.store.state import StateStore

CASE = "IR-TTY"
INSTANCE = "i-0123456789abcdef0"
# Clear the screen, ring the bell, rub out the last character, and start a line of one's own.
HOSTILE = "ok\x1b[2J\x07\x08\nFAKE: all evidence intact"
SHOWN = "ok\\x1b[2J\\x07\\x08\\nFAKE: all evidence intact"
RAW = ("\x1b", "\x07", "\x08", "\x9b", "\u202e")


def assert_inert(text: str) -> None:
    assert not any(control in text for control in RAW), repr(text)
    assert not any(line.startswith("FAKE") for line in text.splitlines()), text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE, SHOWN),
        ("plain text, unchanged: é, 日本, tab-free", "plain text, unchanged: é, 日本, tab-free"),
        ("a\tb\rc", "a\\tb\\rc"),
        ("\x9b2J", "\\x9b2J"),  # the one-byte CSI
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # right-to-left override
        ("\x00\x7f", "\\x00\\x7f"),
    ],
)
def test_printable_shows_every_control_character_as_an_escape(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(printable(raw)) == shown  # escaping twice changes nothing


def test_a_hostile_journal_entry_reaches_no_terminal_through_the_markdown_report(aws: Aws) -> None:
    store = StateStore(aws)
    store.ensure_table()
    ref = EvidenceRef("metadata:console-output", f"s3://b/{CASE}/{HOSTILE}", details={"output": HOSTILE})
    store.append(
        [JournalEntry(now(), CASE, HOSTILE, INSTANCE, "isolate:tags", f"FAILED: {HOSTILE}", (), (ref,))]
    )
    report = build_report(store, CASE)

    markdown = render(report, "md")
    page = render(report, "html")

    assert_inert(markdown)
    # Markdown escapes the escapes' backslashes and the bracket, so that it renders as SHOWN does;
    # a cell is one line, so the newline became a space.
    assert "ok\\\\x1b\\[2J\\\\x07\\\\x08 FAKE: all evidence intact" in markdown
    assert not any(control in page for control in RAW)
    assert SHOWN in page
    assert json.loads(render(report, "json"))["timeline"][0]["result"] == f"FAILED: {HOSTILE}"  # kept as is


def test_tables_progress_and_notes_show_hostile_text_escaped() -> None:
    hold = Hold(INSTANCE, CASE, HoldStatus.ISOLATED, {"eni-1": (HOSTILE,)}, now(), HOSTILE)
    result = InstanceResult(INSTANCE, "isolate", ok=False, detail=HOSTILE, error_code="Failed", steps={})
    run = RunReport("isolate", CASE, HOSTILE, results=[result])
    run.notes.append(HOSTILE)

    for text in (
        table(["HEADER"], [[HOSTILE]]),
        render_status([hold]),
        render_run(run),
    ):
        assert_inert(text)
        assert SHOWN in text

    for tty in (False, True):
        stream = TtyStringIO(tty)
        ProgressPrinter(1, HOSTILE, stream)(result)
        progress_bar(stream, HOSTILE, 1, 1)
        written = stream.getvalue().replace("\x1b[K", "")  # the printer's own line clearing
        assert_inert(written)


class TtyStringIO(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty
