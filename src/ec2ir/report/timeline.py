"""The case report's timeline: one SVG, one lane per target, one mark per journal entry.

Marks keep the journal's order and gaps grow with the time between entries; each outcome has its
own shape as well as its colour, so that the picture still reads in black and white.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ec2ir.core.models import JournalEntry
from ec2ir.report.model import (
    FAILED,
    NOT_COLLECTED,
    NOT_STARTED,
    OTHER,
    OUTCOMES,
    SKIPPED,
    CaseReport,
    outcome,
)
from ec2ir.report.style import COLOURS, STATUS_COLOURS, escape

WIDTH = 1120
LABEL_W = 200  # the lane names on the left
RIGHT_PAD = 130  # room for the last rotated column labels
HEADER_H = 150  # the rotated column labels above the lanes
LANE_H = 38
AXIS_H = 46
LEGEND_H = 30
MIN_GAP = 18.0  # px between two consecutive marks, so that none hides another
LABEL_MIN_GAP = 13.0  # below this, only every few columns is labelled


def _parse(at: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(at)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def mark_positions(times: list[datetime | None], width: float) -> list[float]:
    """x of each entry, in journal order: a fixed step plus a share proportional to the time
    elapsed since the previous entry. One run writes dozens of entries within a second and a
    release may come hours later, so a purely linear scale would stack every mark of a run on one
    pixel; this keeps each mark visible and still shows the long pauses."""
    if not times:
        return []
    if len(times) == 1:
        return [width / 2]
    elapsed: list[float] = [0.0]
    previous = times[0]
    for stamp in times[1:]:
        if stamp is None:
            elapsed.append(0.0)
            continue
        elapsed.append(max(0.0, (stamp - previous).total_seconds()) if previous else 0.0)
        previous = stamp
    steps = len(times) - 1
    gap = min(MIN_GAP, width / steps)
    span = sum(elapsed)
    scale = (width - gap * steps) / span if span > 0 else 0.0
    xs = [0.0]
    for seconds in elapsed[1:]:
        xs.append(xs[-1] + gap + seconds * scale)
    if span == 0:  # nothing to stretch: centre the marks
        shift = (width - xs[-1]) / 2
        xs = [x + shift for x in xs]
    return xs


def _mark(kind: str, x: float, y: float) -> str:
    colour = COLOURS[kind]
    # Shapes as well as colours, so the picture still reads in black and white.
    if kind == FAILED:
        diamond = f"M{x:.1f} {y - 7:.1f} L{x + 7:.1f} {y:.1f} L{x:.1f} {y + 7:.1f} L{x - 7:.1f} {y:.1f} Z"
        return f'<path d="{diamond}" fill="{colour}" stroke="#fff" stroke-width="1.5"/>'
    if kind == SKIPPED:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#fff" stroke="{colour}" stroke-width="2"/>'
    if kind == NOT_STARTED:
        return (
            f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#fff" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
    if kind == NOT_COLLECTED:
        return (
            f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}" '
            'stroke="#fff" stroke-width="1.5"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}" stroke="#fff" stroke-width="1.5"/>'


def _clock(stamp: datetime, with_date: bool, precise: bool) -> str:
    text = stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    # Within a short case the seconds alone would label every tick the same.
    return text + (f".{stamp.microsecond // 1000:03d}Z" if precise else "Z")


def _pause(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s later"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min later"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h later"
    return f"{seconds / 86400:.1f} days later"


def _axis(times: list[datetime | None], xs: list[float], bottom: int) -> list[str]:
    """The time axis: the first moment, each burst of activity after a pause (with the pause's
    length), and the last moment, as far as their labels fit without overlapping."""
    known = [t for t in times if t is not None]
    precise = bool(known) and (known[-1] - known[0]).total_seconds() < 600
    out = [
        f'<line x1="{LABEL_W}" y1="{bottom + 6}" x2="{WIDTH - RIGHT_PAD + 10}" y2="{bottom + 6}" '
        'stroke="#5d6673" stroke-width="1"/>'
    ]
    last_label_x = -1e9
    last_day = ""
    previous: datetime | None = None
    final = max((i for i, t in enumerate(times) if t is not None), default=-1)
    for index, (stamp, x) in enumerate(zip(times, xs, strict=True)):
        if stamp is None:
            continue
        pause = (stamp - previous).total_seconds() if previous else 0.0
        previous = stamp
        first = not last_day  # no label yet
        wanted = first or pause >= 60 or index == final
        if not wanted or x - last_label_x < 170:
            continue
        day = stamp.astimezone(UTC).date().isoformat()
        anchor = "start" if first else "end" if index == final and pause < 60 else "middle"
        out.append(f'<line x1="{x:.1f}" y1="{bottom + 2}" x2="{x:.1f}" y2="{bottom + 11}" stroke="#5d6673"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 24}" font-size="11" text-anchor="{anchor}" fill="#1d232b">'
            f"{escape(_clock(stamp, day != last_day, precise))}</text>"
        )
        if pause >= 60:
            out.append(
                f'<text x="{x:.1f}" y="{bottom + 37}" font-size="10" text-anchor="middle" fill="#8a8f98">'
                f"{escape(_pause(pause))}</text>"
            )
        last_label_x, last_day = x, day
    return out


@dataclass(frozen=True)
class Layout:
    """Where everything of one timeline goes: the lanes top to bottom, each entry's x."""

    entries: tuple[JournalEntry, ...]
    lanes: list[str]  # each target once, in the order the journal first names it
    times: list[datetime | None]
    xs: list[float]
    top: int
    bottom: int
    height: int

    def lane_y(self, lane: str) -> float:
        return self.top + self.lanes.index(lane) * LANE_H + LANE_H / 2


def _layout(report: CaseReport) -> Layout:
    entries = report.timeline
    lanes: list[str] = []
    for entry in entries:
        if entry.target not in lanes:
            lanes.append(entry.target)
    plot_w = WIDTH - LABEL_W - RIGHT_PAD - 20
    top = HEADER_H
    times = [_parse(e.at) for e in entries]
    return Layout(
        entries=entries,
        lanes=lanes,
        times=times,
        xs=[LABEL_W + 10 + x for x in mark_positions(times, plot_w)],
        top=top,
        bottom=top + len(lanes) * LANE_H,
        height=top + max(1, len(lanes)) * LANE_H + AXIS_H + LEGEND_H,
    )


def timeline_svg(report: CaseReport) -> str:
    layout = _layout(report)
    case = escape(report.summary.case_id)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {layout.height}" width="{WIDTH}" '
        f'height="{layout.height}" role="img" aria-label="Timeline of case {case}" '
        'font-family="-apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif">',
        f"<title>Timeline of case {case}</title>",
    ]
    if not layout.entries:
        out.append(
            f'<text x="{WIDTH / 2}" y="{layout.top / 2}" text-anchor="middle" font-size="13" fill="#5d6673">'
            "The journal of this case is empty.</text></svg>"
        )
        return "\n".join(out)
    status = {i.instance_id: i.status for i in report.instances}
    out += _lanes(layout, status)
    out += _columns(layout)
    out += _marks(layout)
    out += _axis(layout.times, layout.xs, layout.bottom)
    out.append(
        f'<text x="{LABEL_W - 10}" y="{layout.bottom + 24}" font-size="11" text-anchor="end" fill="#5d6673">'
        "time (UTC)</text>"
    )
    out += _legend(layout.bottom + AXIS_H + 12)
    return "\n".join(out)


def _lanes(layout: Layout, status: dict[str, str]) -> list[str]:
    """A band per target with its name; an instance's band also says where it stands now."""
    out = ['<g class="lanes">']
    for index, lane in enumerate(layout.lanes):
        y = layout.top + index * LANE_H
        fill = "#f4f6f9" if index % 2 == 0 else "#ffffff"
        out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{LANE_H}" fill="{fill}"/>')
        name = lane if len(lane) <= 24 else lane[:23] + "…"
        held = status.get(lane, "")
        baseline = y + (LANE_H / 2 - 1 if held else LANE_H / 2 + 4)
        out.append(
            f'<text class="lane" x="12" y="{baseline}" font-size="12" '
            'font-family="Menlo, Consolas, Liberation Mono, monospace" fill="#1d232b">'
            f"<title>{escape(lane)}</title>{escape(name)}</text>"
        )
        if held:  # an instance: where it stands now, under its name
            colour = STATUS_COLOURS.get(held, COLOURS[OTHER])
            out.append(
                f'<text x="12" y="{y + LANE_H / 2 + 11}" font-size="9.5" font-weight="600" '
                f'letter-spacing=".06em" fill="{colour}">{escape(held.upper())}</text>'
            )
        out.append(
            f'<line x1="{LABEL_W}" y1="{y + LANE_H / 2}" x2="{WIDTH - RIGHT_PAD + 10}" y2="{y + LANE_H / 2}" '
            'stroke="#c9d0d9" stroke-width="1"/>'
        )
    out.append("</g>")
    return out


def _columns(layout: Layout) -> list[str]:
    """A thin line down to each mark, and above the lanes its number and action, rotated; where
    the marks stand too close, only every few columns is labelled."""
    xs, top = layout.xs, layout.top
    spacing = (xs[-1] - xs[0]) / max(1, len(xs) - 1) if len(xs) > 1 else MIN_GAP
    every = max(1, round(LABEL_MIN_GAP / spacing)) if spacing < LABEL_MIN_GAP else 1
    out = ['<g class="columns">']
    for number, (entry, x) in enumerate(zip(layout.entries, xs, strict=True), start=1):
        mid = layout.lane_y(entry.target)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{mid:.1f}" stroke="#e3e7ec" stroke-width="1"/>'
        )
        if (number - 1) % every == 0:
            action = entry.action if len(entry.action) <= 30 else entry.action[:29] + "…"
            out.append(
                f'<text class="label" transform="translate({x + 3:.1f},{top - 6}) rotate(-55)" '
                f'font-size="11" fill="#3a424d"><tspan fill="#8a8f98">{number}</tspan> '
                f"{escape(action)}</text>"
            )
    out.append("</g>")
    return out


def _marks(layout: Layout) -> list[str]:
    """Each entry's mark in its target's lane, with the whole entry as its tooltip."""
    out = ['<g class="marks">']
    for number, (entry, x) in enumerate(zip(layout.entries, layout.xs, strict=True), start=1):
        kind = outcome(entry.result)
        tip = f"#{number} {entry.at} {entry.target} {entry.action}: {entry.result}"
        out.append(
            f'<g class="mark" data-outcome="{escape(kind)}"><title>{escape(tip)}</title>'
            f"{_mark(kind, x, layout.lane_y(entry.target))}</g>"
        )
    out.append("</g>")
    return out


def _legend(legend_y: int) -> list[str]:
    x = float(LABEL_W)
    out = ['<g class="legend">']
    for kind in OUTCOMES:
        if kind == OTHER:
            continue
        out.append(_mark(kind, x + 6, legend_y))
        out.append(
            f'<text x="{x + 18}" y="{legend_y + 4}" font-size="12" fill="#1d232b">{escape(kind)}</text>'
        )
        x += 34 + 7 * len(kind) + 20
    out.append("</g></svg>")
    return out
