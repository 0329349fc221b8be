"""Text for a terminal: every string an attacker may have written (a tag, a name, console output)
escaped before it is shown, names cut short beside ids, and aligned tables fitted to the terminal.

Below every layer that prints, so that none of them prints raw text."""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import TextIO

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` on one line with every character a terminal could act on shown as an escape:
    ESC as ``\\x1b``, BEL as ``\\x07``, a newline as ``\\n``, bidirectional and zero-width
    controls as ``\\u202e``. What counts is Python's ``str.isprintable``, which also covers the C1
    controls (a lone CSI is ``\\x9b``) and line and paragraph separators."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(character if character.isprintable() else _escape(character) for character in value)


def _escape(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# Names are set by whoever can tag a resource: shown beside ids, escaped and cut to this length.
NAME_WIDTH = 24
ELLIPSIS = "..."  # ASCII: a terminal in any encoding prints it (U+2026 fails in Latin-1)
# Columns of free text: the ones a table narrows (wrapping it) to fit the terminal. Every other
# column holds ids or short words, and is never cut.
FREE_TEXT = frozenset({"DETAIL", "NAME", "HOW", "NEEDED FOR"})
# A free-text column is never narrowed below this.
MIN_FREE_WIDTH = 12


def short(text: object, limit: int = NAME_WIDTH) -> str:
    """``text`` escaped (``printable``) and cut to ``limit`` characters, the last three "..."."""
    value = printable(text)
    return value if len(value) <= limit else value[: limit - len(ELLIPSIS)] + ELLIPSIS


def named(resource_id: str, name: str) -> str:
    """``sg-0abc (web)``: an id with its name (escaped, cut short) beside it, or the id alone."""
    return f"{resource_id} ({short(name)})" if name else resource_id


def groups_named(group_ids: Sequence[str], names: dict[str, str]) -> str:
    return ",".join(named(group_id, names.get(group_id, "")) for group_id in group_ids) or "-"


def terminal_width(stream: TextIO | None = None) -> int:
    """The terminal's width when ``stream`` (standard output) is one; 0 (no limit) otherwise, so
    that what is piped or redirected keeps every line whole."""
    stream = stream or sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed, or no stream at all
        return 0
    return shutil.get_terminal_size().columns if tty else 0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None) -> str:
    """An aligned table, fitted to ``width`` columns (the terminal's when None; 0 for no limit)."""
    return "\n".join(line for lines in table_lines(headers, rows, width) for line in lines)


def table_lines(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None
) -> list[list[str]]:
    """The table's header, rule and each row, each as its lines. To fit ``width``, the widest
    free-text column (FREE_TEXT) is narrowed first and its cells wrapped onto more lines; ids are
    never cut, so a table too wide even then is left wider than ``width``."""
    head = [printable(header) for header in headers]
    body = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in head]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    limit = terminal_width() if width is None else width
    free = [i for i, header in enumerate(headers) if header in FREE_TEXT]
    excess = sum(widths) + 2 * (len(widths) - 1) - limit if limit > 0 else 0
    while excess > 0:
        narrowable = [i for i in free if widths[i] > max(MIN_FREE_WIDTH, len(head[i]))]
        if not narrowable:
            break
        widest = max(narrowable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    wrapped = [
        [_wrap(cell, w) if i in free else [cell] for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        for row in body
    ]

    def joined(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [[joined(head)], [joined(["-" * w for w in widths])]]
    for cells in wrapped:
        depth = max(len(cell) for cell in cells)
        lines.append([joined([cell[n] if n < len(cell) else "" for cell in cells]) for n in range(depth)])
    return lines


def _wrap(cell: str, width: int) -> list[str]:
    """A free-text cell on lines of at most ``width``; a word longer than that (an id quoted in the
    text) is never broken or cut: it keeps a line of its own, wider than the column."""
    if len(cell) <= width:
        return [cell]
    return textwrap.wrap(cell, width, break_long_words=False, break_on_hyphens=False) or [""]


def eni_lines(enis: dict[str, tuple[str, ...]], names: dict[str, str] | None = None) -> str:
    return "; ".join(f"{eni}: {groups_named(groups, names or {})}" for eni, groups in enis.items())
