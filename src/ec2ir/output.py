"""Rendering for people (aligned tables, live progress) and for machines (JSON)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from ec2ir.engine import RunReport
from ec2ir.models import Hold, InstanceResult

# Below this many instances a run is quick enough that progress lines would only be noise.
PROGRESS_THRESHOLD = 5


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def eni_lines(enis: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{eni}: {','.join(groups) or '-'}" for eni, groups in enis.items())


def render_run(report: RunReport) -> str:
    verb = {"isolate": "isolated", "release": "released"}[report.action]
    rows = [
        [
            r.instance_id,
            verb if r.ok else f"FAILED {r.error_code}",
            eni_lines(r.enis) if r.ok else "",
            r.detail,
        ]
        for r in report.results
    ]
    parts = [table(["INSTANCE", "RESULT", "ENI: GROUPS NOW", "DETAIL"], rows)]
    if report.groups:
        parts.append(
            table(
                ["VPC", "ISOLATION GROUP", "FORENSIC GROUP"],
                [[v, g.isolation_group_id, g.forensic_group_id] for v, g in sorted(report.groups.items())],
            )
        )
    if report.notes:
        parts.append("\n".join(f"note: {note}" for note in report.notes))
    ok = len(report.results) - len(report.failed)
    parts.append(
        f"case {report.case_id}: {ok} {verb}, {len(report.failed)} failed (acting as {report.actor})"
    )
    return "\n\n".join(parts)


def render_status(holds: Sequence[Hold]) -> str:
    if not holds:
        return "nothing is isolated"
    rows: list[list[str]] = []
    for hold in holds:
        enis = list(hold.originals.items()) or [("-", ())]
        for index, (eni, groups) in enumerate(enis):
            first = index == 0
            rows.append(
                [
                    hold.instance_id if first else "",
                    hold.case_id if first else "",
                    hold.status.value if first else "",
                    (hold.isolated_at or hold.recorded_at) if first else "",
                    hold.recorded_by if first else "",
                    eni,
                    ",".join(groups) or "-",
                ]
            )
    return table(["INSTANCE", "CASE", "STATUS", "SINCE", "BY", "ENI", "ORIGINAL GROUPS"], rows)


def hold_as_dict(hold: Hold) -> dict[str, object]:
    return {
        "instance_id": hold.instance_id,
        "case_id": hold.case_id,
        "status": hold.status.value,
        "recorded_at": hold.recorded_at,
        "recorded_by": hold.recorded_by,
        "isolated_at": hold.isolated_at,
        "released_at": hold.released_at,
        "released_by": hold.released_by,
        "originals": {eni: list(groups) for eni, groups in hold.originals.items()},
        "eni_vpcs": hold.eni_vpcs,
    }


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


class ProgressPrinter:
    """Live progress on a terminal; plain lines when the stream is not a TTY."""

    def __init__(self, total: int, action: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.action = action
        self.stream = stream or sys.stderr
        self.done = 0
        self.failed = 0
        self.live = self.stream.isatty()
        self._lock = threading.Lock()

    def __call__(self, result: InstanceResult) -> None:
        with self._lock:
            self.done += 1
            self.failed += not result.ok
            if self.live:
                self.stream.write(
                    f"\r{self.action}: {self.done}/{self.total} done, {self.failed} failed\x1b[K"
                )
                if self.done == self.total:
                    self.stream.write("\n")
            else:
                outcome = "ok" if result.ok else f"failed {result.error_code}"
                self.stream.write(
                    f"[{self.done}/{self.total}] {self.action} {result.instance_id}: {outcome}\n"
                )
            self.stream.flush()
