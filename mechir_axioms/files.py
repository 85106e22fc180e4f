"""Atomic file writes: a result is either complete on disk or absent, never half-written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(temporary path) beside `path`, then move the finished file into place."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    temporary.replace(path)
