"""``ec2ir demo`` writes its HTML report where nothing planted in the shared temporary directory can
redirect it: it once wrote to a fixed name there, through any symlink someone had put in its place."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs the demo in a process of its own

OLD_FIXED_NAME = "ec2ir-demo-report.html"


def test_the_demo_report_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("the responder's own file\n")
    shared = tmp_path / "tmp"  # stands for /tmp: the demo's temporary directory
    shared.mkdir()
    (shared / OLD_FIXED_NAME).symlink_to(victim)

    demo = subprocess.run(
        [sys.executable, "-m", "ec2ir.cli.app", "demo"],
        env={**os.environ, "TMPDIR": str(shared)},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert demo.returncode == 0, demo.stderr
    assert victim.read_text() == "the responder's own file\n"
    [written] = [line for line in demo.stderr.splitlines() if "wrote the html report" in line]
    report = Path(written.rsplit(" to ", 1)[1])
    assert report.parent.parent == shared and report.parent.name.startswith("ec2ir-demo-")
    assert not report.is_symlink() and report.read_text().startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(report.parent.stat().st_mode) == 0o700  # nobody else can plant anything in it
