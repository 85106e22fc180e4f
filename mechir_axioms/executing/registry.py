"""`EXECUTORS`: the registry of executors by name, and `running` to use one by name or as given."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..core.errors import SettingsError
from .base import Executor, LocalExecutor
from .cluster import RayExecutor

EXECUTORS: dict[str, type[Executor]] = {LocalExecutor.name: LocalExecutor, RayExecutor.name: RayExecutor}
"""By name; core.defaults.EXECUTORS lists the same names for the CLI, which must not import torch to parse flags."""


@contextmanager
def running(executor: str | Executor) -> Iterator[Executor]:
    """The executor named in EXECUTORS (made here and closed on the way out) or the one given (left open)."""
    if isinstance(executor, Executor):
        yield executor
        return
    if executor not in EXECUTORS:
        raise SettingsError(f"executor={executor!r} is not valid; use one of {', '.join(EXECUTORS)} or an Executor")
    with EXECUTORS[executor]() as made:
        yield made
