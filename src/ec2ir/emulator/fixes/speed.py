"""Shortcuts through moto's per-request overhead: the same answers, found without redoing work.

Unlike the fidelity fixes these change no answer, so they have no row in the README's table (AWS
has nothing to compare them with). They are applied with the fidelity fixes, and measured: on
moto 5.2.5, about a third of the CPU of one simple call through the in-process emulator went to
the two lookups below, repeated on every request for answers that never change while the
process runs.
"""

from __future__ import annotations

import functools
from typing import Any

from ec2ir.emulator.fixes.fix import Fix, Patch


def _moto_modules_once() -> tuple[Patch, ...]:
    import moto.backends

    listed = tuple(moto.backends.list_of_moto_modules())

    def list_of_moto_modules() -> tuple[str, ...]:
        return listed

    return (Patch(moto.backends, "list_of_moto_modules", list_of_moto_modules),)


MOTO_MODULES_ONCE = Fix(
    name="moto-modules-once",
    moto="lists its own package directory (a stat for each of 150 entries) to route every request",
    aws="(no difference: the listing is read once, since installed packages do not change)",
    why="The server's host routing asks whether the host names one of moto's service packages, "
    "and moto answers by listing its package directory again for each request.",
    build=_moto_modules_once,
)


def _method_names_once() -> tuple[Patch, ...]:
    import moto.core.responses

    responses: Any = moto.core.responses  # moto imports the function there without re-exporting it
    original = responses.method_names_from_class

    @functools.cache
    def names_of(response_class: type) -> frozenset[str]:
        return frozenset(original(response_class))

    def method_names_from_class(response_class: Any) -> frozenset[str]:
        # moto only asks whether an action is among them; classes are not changed while serving
        return names_of(response_class)

    return (Patch(responses, "method_names_from_class", method_names_from_class),)


METHOD_NAMES_ONCE = Fix(
    name="method-names-once",
    moto="inspects the whole response class (inspect.getmembers) on every request to find its action",
    aws="(no difference: each class's methods are listed once)",
    why="moto's dispatch checks that the requested action is a method of the response class, by "
    "listing every member of that class anew for each request.",
    build=_method_names_once,
)

SPEEDUPS: tuple[Fix, ...] = (MOTO_MODULES_ONCE, METHOD_NAMES_ONCE)
