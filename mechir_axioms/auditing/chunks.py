"""Patching an axiom's pairs in checkpointed chunks, both directions at once, on an executor.

Every chunk not yet checkpointed becomes one task; the executor may run them anywhere and in any order, and
each result is checkpointed here, once, as it arrives. The chunks are then put back in pair order.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..analysis.findings import symmetric_change
from ..executing.base import Executor
from ..executing.jobs import Job, Task
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult
from .checkpoints import Checkpoints

CHUNK = 32
"""Pairs per checkpoint: an interrupted audit loses only the chunks it was patching (one locally, at most
IN_FLIGHT per worker on Ray)."""
BOTH_WAYS = ("to_baseline", "to_perturbed")
"""Perturbed activations into the baseline run (denoising), and back (noising)."""


def concatenate(parts: list[PatchResult], n_pairs: int) -> PatchResult:
    """The chunks of one patching run as one result, pairs in order."""
    first = parts[0]
    dropped = None if first.dropped is None else np.concatenate([part.dropped for part in parts])
    return PatchResult(
        first.target, first.method, np.concatenate([part.effects for part in parts]), first.dims,
        np.concatenate([part.receiver_score for part in parts]), np.concatenate([part.donor_score for part in parts]),
        sum(part.excluded for part in parts), first.delta, first.labels, {**first.provenance, "n_pairs": n_pairs},
        dropped,
    )


def chunk_name(name: str, direction: str, start: int) -> str:
    """Where the chunk of pairs from `start` on is checkpointed: `name-direction/chunk-XXXX`."""
    return f"{name}-{direction}/chunk-{start // CHUNK:04d}"


def progress_label(name: str, job: Job) -> str:
    """A short label for a run's progress bar: "heads verify 16", not its checkpoint name with every head listed."""
    if job.variants is not None and "-verify-" in name:
        return f"{name.split('-verify-')[0]} verify {len(job.variants)}"
    return name.replace("-", " ")


def both_directions(pairs: PairSet, axiom: str, expect: str, name: str, job: Job, work: Checkpoints,
                    executor: Executor, progress: bool) -> tuple[tuple[np.ndarray, np.ndarray], PatchResult, PatchResult]:
    """The symmetric change of every component (perturbed into baseline and back), and the two runs."""
    starts = range(0, len(pairs), CHUNK)
    keys = [(direction, start) for start in starts for direction in BOTH_WAYS]  # a chunk's directions share runs
    parts = {key: work.stored(axiom, chunk_name(name, *key)) for key in keys}
    missing = [key for key in keys if parts[key] is None]
    tasks = [Task(pairs.take(range(start, min(start + CHUNK, len(pairs)))), direction) for direction, start in missing]
    with tqdm(total=len(keys), initial=len(keys) - len(missing), desc=f"{axiom} {progress_label(name, job)}",
              unit="chunk", leave=False, disable=not progress) as bar:
        for index, result in executor.run(job, tasks):
            work.store(axiom, chunk_name(name, *missing[index]), result)
            parts[missing[index]] = result
            bar.update()
    denoising, noising = (concatenate([parts[(direction, start)] for start in starts], len(pairs))
                          for direction in BOTH_WAYS)
    return symmetric_change(denoising, noising, expect), denoising, noising
