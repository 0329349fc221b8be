"""Which tests the fast loop leaves to the full run (``bash scripts/slow-tests`` writes the list).

A test over the time budget is slow, unless it is among those chosen to keep the fast loop's line
coverage close to that of every measured test: without those, whole areas (release's restore,
``status --check``, the Step Functions client) would be exercised only by the full run. The
greedy choice takes back, each time, the over-budget test that covers the most lines still missed
per second it costs.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from pathlib import Path

Line = tuple[str, int]  # a source file and a line number in it


UNIT_TESTS = "tests/unit/"  # the loop runs every one: they need no emulator, and some (the
# architecture's checks, this list's own) run no line of ec2ir, so coverage cannot speak for them


def choose_slow(
    seconds: Mapping[str, float],
    lines: Mapping[str, frozenset[Line]],
    budget: float,
    share_kept: float,
) -> tuple[list[str], list[str]]:
    """(slow, kept): the over-budget tests the loop leaves out (never a unit test), and those it
    keeps so that it covers at least ``share_kept`` of the lines every test together covers."""
    over = sorted(
        node for node, taken in seconds.items() if taken > budget and not node.startswith(UNIT_TESTS)
    )
    covered = set().union(*(lines.get(node, frozenset()) for node in seconds if node not in over))
    everything = covered.union(*(lines.get(node, frozenset()) for node in over))
    kept: list[str] = []
    candidates = set(over)
    while candidates and len(covered) < share_kept * len(everything):
        best = max(
            sorted(candidates), key=lambda node: len(lines.get(node, frozenset()) - covered) / seconds[node]
        )
        if not lines.get(best, frozenset()) - covered:
            break
        kept.append(best)
        candidates.discard(best)
        covered |= lines.get(best, frozenset())
    return sorted(candidates), sorted(kept)


def read_times(junit_report: Path) -> dict[str, float]:
    """Each test's setup, call and teardown time, by node id (pytest's ``junit_duration_report=total``)."""
    seconds: dict[str, float] = {}
    for case in ElementTree.parse(junit_report).iter("testcase"):
        module = case.get("classname", "").replace(".", "/")  # the module's dotted path
        seconds[f"{module}.py::{case.get('name')}"] = float(case.get("time", 0))
    return seconds


def read_lines(coverage_file: Path) -> dict[str, frozenset[Line]]:
    """The lines each test ran, from coverage's per-test contexts (pytest-cov's ``--cov-context=test``)."""
    from coverage import CoverageData

    data = CoverageData(str(coverage_file))
    data.read()
    found: dict[str, set[Line]] = {}
    for source in data.measured_files():
        for number, contexts in data.contexts_by_lineno(source).items():
            for context in contexts:
                node = context.rsplit("|", 1)[0]  # "<node id>|setup", "|run" or "|teardown"
                if node:
                    found.setdefault(node, set()).add((source, number))
    return {node: frozenset(ran) for node, ran in found.items()}


HEAD = """\
# The tests the fast loop leaves out: tests/conftest.py marks each `slow`, so that
# `bash scripts/test --fast` skips it; `bash scripts/test` (and CI) runs every one.
# Written by `bash scripts/slow-tests` (the lines below this head), from two runs of the fast loop's
# tests on an idle 2-core machine: an integration test is listed when its setup, call and teardown
# took over {budget:g} s, unless it is among those chosen (greedily) to keep the loop's line coverage
# at {share:g}% of what all those tests cover together (tests/support/budget.py). Run it again after a
# change that moves tests' times.
"""


def main(argv: list[str]) -> int:
    junit_report, coverage_file, listing, budget, share = argv
    seconds = read_times(Path(junit_report))
    slow, kept = choose_slow(seconds, read_lines(Path(coverage_file)), float(budget), float(share))
    head = HEAD.format(budget=float(budget), share=100 * float(share))
    Path(listing).write_text(head + "".join(f"{node}\n" for node in slow), encoding="utf-8")
    fast, total = sum(t for node, t in seconds.items() if node not in slow), sum(seconds.values())
    print(
        f"{len(slow)} of {len(seconds)} tests listed slow in {listing}: over {budget} s, and not among "
        f"the {len(kept)} kept for coverage; the loop's tests take {fast:.0f} s of the {total:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
