"""`Job` and `Task`: what one chunk of an audit's patching is, in a form a worker in another process can run."""

from __future__ import annotations

from dataclasses import dataclass

from ..features.sae import SparseAutoencoder
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from ..patching.api import patch, patch_variants
from ..patching.paths import PathSpec, patch_paths
from ..patching.plan import Variant
from ..patching.result import PatchResult
from ..patching.runs import CleanRuns


@dataclass(frozen=True)
class Job:
    """How every chunk of one patching run is patched: a target with a method, hand-picked `variants`, or `paths`
    (sender heads into receivers, exact).

    It holds no ranker, so it pickles to a few bytes (plus its SAEs' weights, if any); each worker runs it on its
    own copy of the ranker.
    """

    target: str
    method: str
    batch_size: int
    delta: float
    variants: tuple[Variant, ...] | None = None
    paths: tuple[PathSpec, ...] | None = None
    saes: tuple[SparseAutoencoder, ...] = ()
    """The SAEs whose latents the features target (or latent variants) patch; shipped with the job."""

    def run(self, ranker: Ranker, pairs: PairSet, direction: str,
            clean_runs: CleanRuns | None = None) -> PatchResult:
        """Patch `pairs` in `direction` ("to_baseline" or "to_perturbed") on `ranker`, reusing and filling the
        worker's `clean_runs` store if given."""
        if self.paths is not None:
            return patch_paths(ranker, pairs, list(self.paths), method=self.method, batch_size=self.batch_size,
                               direction=direction, delta=self.delta, progress=False, clean_runs=clean_runs)
        if self.variants is not None:
            return patch_variants(ranker, pairs, list(self.variants), self.method, batch_size=self.batch_size,
                                  direction=direction, delta=self.delta, clean_runs=clean_runs,
                                  saes=list(self.saes) or None)
        return patch(ranker, pairs, self.target, self.method, batch_size=self.batch_size, direction=direction,
                     delta=self.delta, progress=False, clean_runs=clean_runs, saes=list(self.saes) or None)


@dataclass(frozen=True)
class Task:
    """One chunk: some pairs, patched in one direction."""

    pairs: PairSet
    direction: str
