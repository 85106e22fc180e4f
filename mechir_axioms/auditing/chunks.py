"""Patching an axiom's pairs in checkpointed chunks, in one direction or in both."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from ..analysis.findings import symmetric_change
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult
from .checkpoints import Checkpoints

CHUNK = 32
"""Pairs per checkpoint: an interrupted audit loses at most one chunk of patching."""

Patcher = Callable[[PairSet, str], PatchResult]
"""Patch some pairs in one direction ("to_baseline" or "to_perturbed")."""


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


def in_chunks(pairs: PairSet, axiom: str, name: str, direction: str, patcher: Patcher, work: Checkpoints,
              progress: bool) -> PatchResult:
    """Patch every pair in one direction, CHUNK pairs at a time, each chunk checkpointed as `name-direction`."""
    parts = []
    bar = tqdm(total=len(pairs), desc=f"{axiom} {name} {direction}", unit="pair", leave=False, disable=not progress)
    for start in range(0, len(pairs), CHUNK):
        rows = list(range(start, min(start + CHUNK, len(pairs))))
        parts.append(work.patched(axiom, f"{name}-{direction}/chunk-{start // CHUNK:04d}",
                                  lambda rows=rows: patcher(pairs.take(rows), direction)))
        bar.update(len(rows))
    bar.close()
    return concatenate(parts, len(pairs))


def both_directions(pairs: PairSet, axiom: str, expect: str, name: str, patcher: Patcher, work: Checkpoints,
                    progress: bool) -> tuple[tuple[np.ndarray, np.ndarray], PatchResult, PatchResult]:
    """The symmetric change of every component (perturbed into baseline and back), and the two runs."""
    denoising, noising = (in_chunks(pairs, axiom, name, direction, patcher, work, progress)
                          for direction in ("to_baseline", "to_perturbed"))
    return symmetric_change(denoising, noising, expect), denoising, noising
