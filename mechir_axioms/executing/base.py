"""`Executor`: runs the tasks of a job and hands back each chunk's result as soon as it is done."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..core.defaults import CLEAN_RUN_BYTES
from ..core.errors import SettingsError
from ..models.rankers import Ranker
from ..patching.result import PatchResult
from ..patching.runs import CleanRuns
from .jobs import Job, Task


class Executor(ABC):
    """Runs chunks of patching for one ranker. `bind` gives it the ranker, `run` yields (task index, result)
    pairs in the order the chunks finish, and `close` frees what it holds. Used as a context manager.

    Every worker process holds one CleanRuns store of the bound size for the bound ranker and passes it to each
    chunk, so chunks on the same pairs (the two directions, a screen and its verification) share clean runs.
    `clean_runs` is this process's store, for patching the driver does itself (None until a ranker is bound)."""

    name: ClassVar[str]
    clean_runs: CleanRuns | None = None

    @abstractmethod
    def bind(self, ranker: Ranker, clean_run_bytes: int = CLEAN_RUN_BYTES) -> None:
        """Hold `ranker` for the coming jobs, with stores of at most `clean_run_bytes` of clean runs per worker
        (binding the ranker and size already held keeps what the stores hold)."""

    @abstractmethod
    def run(self, job: Job, tasks: Sequence[Task]) -> Iterator[tuple[int, PatchResult]]:
        """Each task's result with its index in `tasks`, as each one finishes."""

    def describe(self) -> dict[str, Any]:
        """What ran the chunks, for the manifest."""
        return {"name": self.name}

    def close(self) -> None:
        """Free the workers and the clean runs held, if any."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exception: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """Every chunk in this process, one after the other: the result of one is yielded before the next starts."""

    name = "local"

    def __init__(self) -> None:
        self.ranker: Ranker | None = None

    def bind(self, ranker: Ranker, clean_run_bytes: int = CLEAN_RUN_BYTES) -> None:
        if ranker is not self.ranker or self.clean_runs is None or self.clean_runs.max_bytes != clean_run_bytes:
            self.clean_runs = CleanRuns(clean_run_bytes)
        self.ranker = ranker

    def run(self, job: Job, tasks: Sequence[Task]) -> Iterator[tuple[int, PatchResult]]:
        if self.ranker is None:
            raise SettingsError("bind a ranker to the LocalExecutor before running a job")
        for index, task in enumerate(tasks):
            yield index, job.run(self.ranker, task.pairs, task.direction, self.clean_runs)

    def close(self) -> None:
        if self.clean_runs is not None:
            self.clean_runs.clear()
