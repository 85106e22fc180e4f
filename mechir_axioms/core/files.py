"""Atomic file writes: a result is either complete on disk or absent, never half-written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(temporary path) beside `path`, then move the finished file into place."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    temporary.replace(path)


def write_json(path: Path, value: Any) -> None:
    """JSON with numpy scalars and arrays as plain values, written atomically."""
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(value, indent=2, default=plain)))


def plain(value: Any) -> Any:
    """A JSON-ready version of a numpy value (anything else becomes its string)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
