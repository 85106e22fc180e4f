"""`RayExecutor`: an audit's chunks on the workers of a Ray cluster, one actor per worker holding the model once.

Each actor gets a GPU when the cluster has GPUs (else `threads` CPUs, and as many torch threads) and a copy
of the ranker through Ray's object store. Chunks go to whichever actor is free, two in flight per actor, and
come back through the object store to the driver, which alone writes checkpoints. An actor that dies is restarted by Ray and its
chunks are re-run there (up to RESTARTS times): a chunk's result is the same whichever worker computes it,
and the driver keeps exactly one result per chunk.

On CPUs a worker computes bitwise what one process with the same number of torch threads computes; a different
thread count changes float32 sums in their last bits (about 2e-7 on MiniLM's effects), so `threads` defaults to
this process's count.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..core.defaults import CLEAN_RUN_BYTES
from ..core.errors import MechirError, SettingsError, WorkerError
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult
from ..patching.runs import CleanRuns
from .base import Executor
from .jobs import Job, Task

RESTARTS = 3
"""How often Ray restarts a dead worker, and retries the chunks it held, before the audit stops."""
IN_FLIGHT = 2
"""Chunks queued per worker, so that a worker starts its next chunk while the last result travels."""
CONNECT_TIMEOUT = 30.0
"""Seconds to wait for a Ray cluster at a given address before giving up (Ray itself retries for many minutes)."""


def import_ray() -> Any:
    """The `ray` module, or one sentence on how to install it."""
    try:
        import ray
    except ImportError:
        raise SettingsError("executor='ray' needs Ray, which is not installed; run "
                            "`pip install 'mechir-axioms[ray]'`") from None
    return ray


class Worker:
    """A Ray actor's state: one ranker on the worker's device and its own store of clean runs, which the chunks it
    patches share (a restarted actor starts with an empty one). `run` patches one chunk."""

    def __init__(self, shipped: list[Any], device: str, threads: int | None, clean_run_bytes: int = CLEAN_RUN_BYTES):
        import ray

        self.ranker = ranker = ray.get(shipped[0])  # in a list, so that Ray hands the reference over unresolved
        if threads is not None:
            torch.set_num_threads(threads)
        if device != "cpu":
            ranker.model.to(device)
        self.clean_runs = CleanRuns(clean_run_bytes)

    def run(self, job: Job, pairs: PairSet, direction: str) -> PatchResult:
        return job.run(self.ranker, pairs, direction, self.clean_runs)

    def describe(self) -> dict[str, Any]:
        """The worker's process, device and torch threads, the fingerprint of the ranker it holds, its store's
        bound and how often its chunks reused a stored clean run."""
        return {"pid": os.getpid(), "device": str(self.ranker.device), "threads": torch.get_num_threads(),
                "fingerprint": self.ranker.fingerprint(), "clean_run_bytes": self.clean_runs.max_bytes,
                "clean_run_hits": self.clean_runs.hits}


class RayExecutor(Executor):
    """Chunks on Ray actors. `address` is a running cluster's ("auto", "ray://host:10001"); None joins the
    cluster this process already initialised, or starts a local one. Without GPUs each worker takes `threads`
    CPUs and runs that many torch threads (default: as many as this process); with GPUs each takes one GPU and
    `threads` does not apply. `workers` defaults to the cluster's GPUs, or to its CPUs divided by `threads`.
    Joining a cluster (an `address`, or RAY_ADDRESS) gives up after `connect_timeout` seconds with a WorkerError."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT):
        for name, value in (("workers", workers), ("threads", threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SettingsError(f"{name}={value!r} is not valid; use an integer of at least 1, or leave it out")
        if (isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float))
                or not math.isfinite(connect_timeout) or connect_timeout <= 0):
            raise SettingsError(f"connect_timeout={connect_timeout!r} is not valid; use a number of seconds above 0")
        self.address, self.workers, self.threads = address, workers, threads
        self.connect_timeout = float(connect_timeout)
        self.ray = import_ray()
        self.ranker: Ranker | None = None
        self.clean_run_bytes = CLEAN_RUN_BYTES
        self.actors: list[Any] = []
        self.described: list[dict[str, Any]] = []
        self._fingerprint: dict[str, Any] | None = None
        self._shipped: Any = None
        self._started_ray = False

    def bind(self, ranker: Ranker, clean_run_bytes: int = CLEAN_RUN_BYTES) -> None:
        """Hold `ranker`, each worker with a store of at most `clean_run_bytes` of clean runs; the workers start
        with the first chunk (or `start`), so a resumed audit whose chunks are all saved starts nothing."""
        if ranker is not self.ranker or clean_run_bytes != self.clean_run_bytes or self.clean_runs is None:
            self._stop_actors()
            self.ranker, self.clean_run_bytes = ranker, clean_run_bytes
            self.clean_runs = CleanRuns(clean_run_bytes)

    def start(self) -> None:
        """Start the workers now, each with the bound ranker (again, if its weights changed since)."""
        ranker = self.ranker
        if ranker is None:
            raise SettingsError("bind a ranker to the RayExecutor before starting it")
        expected = ranker.fingerprint()
        if self.actors and expected == self._fingerprint:
            return
        self._stop_actors()
        self.ranker = ranker
        ray = self._connect()
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        threads = self.threads or torch.get_num_threads()
        count = self.workers or max(1, gpus or cpus // threads)
        if gpus and count > gpus:
            raise SettingsError(f"workers={count} is more than the Ray cluster's {gpus} GPU(s); use at most {gpus}")
        if not gpus and count * threads > cpus:
            raise SettingsError(
                f"workers={count} x threads={threads} needs {count * threads} CPUs, but the Ray cluster has {cpus}; "
                "use fewer workers or threads (--workers, --worker-threads)")
        options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": threads}
        shipped = _shipped(ray, ranker)
        actor = ray.remote(Worker).options(max_restarts=RESTARTS, max_task_retries=RESTARTS, **options)
        self.actors = [actor.remote([shipped], "cuda" if gpus else "cpu", None if gpus else threads, self.clean_run_bytes)
                       for _ in range(count)]
        self._shipped = shipped  # the actors' constructor argument: kept alive so that a restarted actor finds it
        try:
            self.described = self.ray.get([worker.describe.remote() for worker in self.actors])
        except self.ray.exceptions.RayError as error:
            self._stop_actors()
            raise WorkerError(f"a Ray worker could not load the model: {error}") from None
        for facts in self.described:
            if facts["fingerprint"] != expected:
                self._stop_actors()
                raise WorkerError(f"a Ray worker (pid {facts['pid']}) holds a different model than this process "
                                  f"({facts['fingerprint']} != {expected}); are the nodes' packages the same?")
        self._fingerprint = expected

    def _connect(self) -> Any:
        """Ray, joined to the cluster at `address` (or the one already joined), or to a new local one."""
        ray = self.ray
        if not ray.is_initialized():
            try:
                options = {"address": self.address, "include_dashboard": False, "logging_level": logging.WARNING,
                           "log_to_driver": False}
                if self.address or os.environ.get("RAY_ADDRESS"):  # joining a cluster: Ray retries for minutes
                    _init_within(ray, options, self.connect_timeout, self.address or os.environ["RAY_ADDRESS"])
                else:
                    ray.init(**options)
            except WorkerError:
                raise
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"at {self.address}" if self.address else "on this machine"
                raise WorkerError(f"cannot start or reach a Ray cluster {where} ({error}); start one with "
                                  "`ray start --head`, or leave the address out for a local cluster") from None
            self._started_ray = True
        return ray

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "workers": len(self.described),
                "devices": sorted({facts["device"] for facts in self.described}),
                "threads": sorted({facts["threads"] for facts in self.described})}

    def run(self, job: Job, tasks: Sequence[Task]) -> Iterator[tuple[int, PatchResult]]:
        if not tasks:
            return
        self.start()
        ray = self.ray
        free = deque(self.actors * IN_FLIGHT)
        pending: dict[Any, tuple[int, Any]] = {}
        upcoming = iter(enumerate(tasks))
        try:
            while True:
                while free:
                    following = next(upcoming, None)
                    if following is None:
                        break
                    index, task = following
                    worker = free.popleft()
                    pending[worker.run.remote(job, task.pairs, task.direction)] = (index, worker)
                if not pending:
                    return
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                index, worker = pending.pop(ready)
                result = self._get(ready)
                free.append(worker)
                yield index, result
        finally:  # stopped early (an error, or the caller gave up): drop the chunks still queued on the workers
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001  (a chunk that finished meanwhile cannot be cancelled)
                    pass

    def _get(self, ref: Any) -> Any:
        """A task's value; a task's own MechirError as itself; a worker dead for good as a WorkerError."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as error:
            if isinstance(error.cause, MechirError):
                raise error.cause from None
            raise
        except exceptions.RayActorError as error:
            self._fingerprint = None  # start afresh next time
            raise WorkerError(
                f"a Ray worker died and was restarted {RESTARTS} times ({error}); an audit with a folder has saved "
                "the chunks finished so far: rerun it with --resume (resume=True) to continue") from None

    def _stop_actors(self) -> None:
        for worker in self.actors:
            self.ray.kill(worker, no_restart=True)
        self.actors, self.described, self._shipped, self._fingerprint = [], [], None, None

    def close(self) -> None:
        if self.clean_runs is not None:
            self.clean_runs.clear()
        if self.ray.is_initialized():
            self._stop_actors()
            if self._started_ray:
                self.ray.shutdown()
        self._started_ray = False


class _NotMainThread(logging.Filter):
    """Drops Ray's warning that ray.init outside the main thread sets no SIGTERM handler (harmless here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _init_within(ray: Any, options: dict[str, Any], timeout: float, address: str) -> None:
    """ray.init(**options), given up after `timeout` seconds with a WorkerError naming the address.

    Ray retries an unreachable cluster for many minutes inside native code, where neither a deadline nor
    SIGTERM reaches it, so the call runs in a daemon thread that this one waits for. Past the deadline the thread
    is abandoned: its attempts are cut to about one per 30 s of the timeout (RAY_gcs_server_port_wait_time_s,
    unless set), and a connection it makes after all is shut down again."""
    done, lock, state = threading.Event(), threading.Lock(), {"connected": False, "abandoned": False}

    def connect() -> None:
        try:
            ray.init(**options)
            with lock:
                state["connected"] = True
                late = state["abandoned"]
            if late:
                ray.shutdown()
        except BaseException as error:  # noqa: BLE001  (handed to the waiting thread)
            state["error"] = error
        finally:
            done.set()

    quiet, logger = _NotMainThread(), logging.getLogger("ray._private.worker")
    attempts = "RAY_gcs_server_port_wait_time_s"
    preset = os.environ.get(attempts)
    if preset is None:
        os.environ[attempts] = str(max(1, math.ceil(timeout / 30)))
    logger.addFilter(quiet)
    try:
        threading.Thread(target=connect, name="ray-connect", daemon=True).start()
        finished = done.wait(timeout)
    finally:
        logger.removeFilter(quiet)
        if preset is None:
            os.environ.pop(attempts, None)
    with lock:
        given_up = not finished and not state["connected"]
        state["abandoned"] = given_up
    if given_up:
        raise WorkerError(f"cannot reach a Ray cluster at {address} within {timeout:g} seconds (connect_timeout, "
                          "--ray-timeout); check the address and that `ray start --head` runs there, or allow longer")
    if "error" in state:
        raise state["error"]
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init in this thread does


def _shipped(ray: Any, ranker: Ranker) -> Any:
    """The ranker in Ray's object store, pickled from the CPU so that a worker without the driver's device can
    load it; the driver's model goes back where it was."""
    device = ranker.device
    if device.type == "cpu":
        return ray.put(ranker)
    ranker.model.to("cpu")
    try:
        return ray.put(ranker)
    finally:
        ranker.model.to(device)
