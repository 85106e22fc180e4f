"""Atomic file writes: a result is either complete on disk or absent, never half-written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError

TEMPORARY = ".mechir-tmp"
"""The suffix of a file being written; one left behind by a killed process is the tool's own (see core.outputs)."""


def write_atomically(path: Path, write: Callable[[Path], object],
                     before_move: Callable[[Path], object] | None = None) -> None:
    """Call write(temporary path) beside `path`, then before_move(temporary path) if given (to record the finished
    file), then move it into place; a failure removes the temporary file and names `path`, the file asked for."""
    temporary = path.with_name(path.name + TEMPORARY)
    try:
        write(temporary)
        if before_move is not None:
            before_move(temporary)
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """JSON with numpy scalars and arrays as plain values, written atomically."""
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(value, indent=2, default=plain)))


def plain(value: Any) -> Any:
    """A JSON-ready version of a numpy value (anything else becomes its string)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
