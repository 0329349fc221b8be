"""Applying and reverting the fidelity fixes in this process: all at once, or a chosen few for
the fidelity tests, and always exactly undone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ec2ir.core.errors import UsageError
from ec2ir.emulator.fixes.catalogue import CATALOGUE, FIXES
from ec2ir.emulator.fixes.speed import SPEEDUPS

_lock = threading.Lock()
_applied: list[tuple[object, str, Any]] = []  # (owner, attribute, what it held), in order applied
_ABSENT = object()  # the attribute was inherited (or missing), not on the owner itself


def require_moto() -> None:
    try:
        import moto  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "the embedded emulator needs moto, which is not installed",
            "pip install 'ec2ir[emulator]'",
        ) from exc


def apply_fidelity_fixes(only: tuple[str, ...] = FIXES) -> None:
    """Correct moto in this process (idempotent). ``only`` picks fixes, for the fidelity tests; the
    speed-ups, which change no answer, always come with them."""
    require_moto()
    with _lock:
        if _applied:
            return
        # Every patch is built before any is applied, so each captures moto's own original.
        chosen = [fix for fix in CATALOGUE if fix.name in only]
        patches = [patch for fix in (*chosen, *SPEEDUPS) for patch in fix.patches()]
        for owner, attribute, replacement in patches:
            _applied.append((owner, attribute, vars(owner).get(attribute, _ABSENT)))
            setattr(owner, attribute, replacement)


def revert_fidelity_fixes() -> None:
    with _lock:
        while _applied:
            owner, attribute, original = _applied.pop()
            if original is _ABSENT:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


@contextmanager
def fidelity(enabled: bool = True) -> Iterator[None]:
    """Plain moto (``enabled=False``) or corrected moto for the block; the prior state returns after."""
    was_applied = bool(_applied)
    revert_fidelity_fixes()
    if enabled:
        apply_fidelity_fixes()
    try:
        yield
    finally:
        revert_fidelity_fixes()
        if was_applied:
            apply_fidelity_fixes()
