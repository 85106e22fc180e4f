"""`EXECUTORS`: the registry of executors by name, and `executor_of` to turn a name into one."""

from __future__ import annotations

from ..core.errors import SettingsError
from .base import Executor, LocalExecutor
from .cluster import RayExecutor

EXECUTORS: dict[str, type[Executor]] = {LocalExecutor.name: LocalExecutor, RayExecutor.name: RayExecutor}
"""By name; core.defaults.EXECUTORS lists the same names for the CLI, which must not import torch to parse flags."""


def executor_of(executor: str | Executor) -> tuple[Executor, bool]:
    """(the executor, whether the caller made it and must close it) from a name in EXECUTORS or an instance."""
    if isinstance(executor, Executor):
        return executor, False
    if executor not in EXECUTORS:
        raise SettingsError(f"executor={executor!r} is not valid; use one of {', '.join(EXECUTORS)} or an Executor")
    return EXECUTORS[executor](), True
