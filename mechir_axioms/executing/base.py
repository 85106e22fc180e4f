"""`Executor`: runs the tasks of a job and hands back each chunk's result as soon as it is done."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..models.rankers import Ranker
from ..patching.result import PatchResult
from .jobs import Job, Task


class Executor(ABC):
    """Runs chunks of patching for one ranker. `bind` gives it the ranker, `run` yields (task index, result)
    pairs in the order the chunks finish, and `close` frees what it holds. Used as a context manager."""

    name: ClassVar[str]

    @abstractmethod
    def bind(self, ranker: Ranker) -> None:
        """Hold `ranker` for the coming jobs (binding the ranker already held does nothing)."""

    @abstractmethod
    def run(self, job: Job, tasks: Sequence[Task]) -> Iterator[tuple[int, PatchResult]]:
        """Each task's result with its index in `tasks`, as each one finishes."""

    def describe(self) -> dict[str, Any]:
        """What ran the chunks, for the manifest."""
        return {"name": self.name}

    def close(self) -> None:
        """Free the workers, if any."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exception: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """Every chunk in this process, one after the other: the result of one is yielded before the next starts."""

    name = "local"

    def __init__(self) -> None:
        self.ranker: Ranker | None = None

    def bind(self, ranker: Ranker) -> None:
        self.ranker = ranker

    def run(self, job: Job, tasks: Sequence[Task]) -> Iterator[tuple[int, PatchResult]]:
        for index, task in enumerate(tasks):
            yield index, job.run(self.ranker, task.pairs, task.direction)
