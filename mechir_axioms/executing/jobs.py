"""`Job` and `Task`: what one chunk of an audit's patching is, in a form a worker in another process can run."""

from __future__ import annotations

from dataclasses import dataclass

from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from ..patching.api import patch, patch_variants
from ..patching.paths import PathSpec, patch_paths
from ..patching.plan import Variant
from ..patching.result import PatchResult


@dataclass(frozen=True)
class Job:
    """How every chunk of one patching run is patched: a target with a method, hand-picked `variants`, or `paths`
    (sender heads into receivers, exact).

    It holds no ranker, so it pickles to a few bytes; each worker runs it on its own copy of the ranker.
    """

    target: str
    method: str
    batch_size: int
    delta: float
    variants: tuple[Variant, ...] | None = None
    paths: tuple[PathSpec, ...] | None = None

    def run(self, ranker: Ranker, pairs: PairSet, direction: str) -> PatchResult:
        """Patch `pairs` in `direction` ("to_baseline" or "to_perturbed") on `ranker`."""
        if self.paths is not None:
            return patch_paths(ranker, pairs, list(self.paths), batch_size=self.batch_size, direction=direction,
                               delta=self.delta, progress=False)
        if self.variants is not None:
            return patch_variants(ranker, pairs, list(self.variants), self.method, batch_size=self.batch_size,
                                  direction=direction, delta=self.delta)
        return patch(ranker, pairs, self.target, self.method, batch_size=self.batch_size, direction=direction,
                     delta=self.delta, progress=False)


@dataclass(frozen=True)
class Task:
    """One chunk: some pairs, patched in one direction."""

    pairs: PairSet
    direction: str
