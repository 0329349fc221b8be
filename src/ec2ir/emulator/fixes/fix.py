"""One fidelity fix, declared: what moto gets wrong, what AWS does instead, and the patches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Patch(NamedTuple):
    """One attribute of a moto class replaced: ``setattr(owner, attribute, replacement)``."""

    owner: object
    attribute: str
    replacement: Any


@dataclass(frozen=True)
class Fix:
    """A correction of moto. ``moto`` and ``aws`` are its row in the README's table; ``build``
    imports moto and returns the patches, capturing the originals they call."""

    name: str
    moto: str
    aws: str
    why: str
    build: Callable[[], tuple[Patch, ...]]

    def patches(self) -> tuple[Patch, ...]:
        return self.build()
