"""The naive patching reference: one full forward pass per pair and component, no reuse, no batching.

It exists to check the fast paths in `exact.py` and `api.py`; it is slow on purpose and shares only the plan
(which components a target has) and the metric with them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.hooks import caching_hooks
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from .plan import DEFAULT_DELTA, Variant, plan, positions_of, receiver_is_baseline, variants_plan
from .result import PatchResult, included
from .runs import region_rows


def _replace_one(donor: torch.Tensor, variant: Variant, regions: torch.Tensor):
    """A hook that copies the donor's values for exactly this variant's head and positions."""

    def replace(activation: torch.Tensor, name: str) -> torch.Tensor:
        patched = activation.clone()
        where = (slice(None), positions_of(variant, regions))
        if variant.head is not None:
            where = (*where, variant.head)
        patched[where] = donor[where]
        return patched

    return replace


def patch_naive(ranker: Ranker, pairs: PairSet, target: str = "heads", direction: str = "to_low",
                delta: float = DEFAULT_DELTA, heads: list[tuple[int, int]] | None = None,
                variants: list[Variant] | None = None) -> PatchResult:
    """Same contract as `patching.patch(method="exact")` (or `patch_variants`), one full forward at a time."""
    width = int(pairs.tensors["length"].max())
    if variants is not None:
        the_plan = variants_plan(variants)
    else:
        the_plan = plan(target, ranker.n_layers, ranker.n_heads, width, heads, ranker.regions)
    names = sorted({variant.site for _, variant in the_plan.variants})
    effects = np.full((len(pairs), *the_plan.shape), np.nan)
    receiver_score, donor_score = np.zeros(len(pairs)), np.zeros(len(pairs))
    with torch.no_grad():
        for row in range(len(pairs)):
            runs = {}
            for which in ("baseline", "perturbed"):
                inputs = pairs.model_input(which, ranker, [row])
                cache: dict[str, torch.Tensor] = {}
                runs[which] = (inputs, ranker.forward(inputs, caching_hooks(names, cache))[:1], cache)
            to_baseline = bool(receiver_is_baseline(direction, runs["baseline"][1], runs["perturbed"][1])[0])
            receiver, donor = (runs["baseline"], runs["perturbed"]) if to_baseline else (runs["perturbed"], runs["baseline"])
            receiver_score[row], donor_score[row] = float(receiver[1][0]), float(donor[1][0])
            if not included(donor_score[row], receiver_score[row], delta):
                continue
            length, regions = int(pairs.tensors["length"][row]), ranker.place_tensor(region_rows(pairs, [row])[0])
            for position, variant in the_plan.variants:
                if variant.position is not None and variant.position >= length:
                    continue
                hook = _replace_one(donor[2][variant.site], variant, regions)
                score = float(ranker.forward(receiver[0], {variant.site: hook})[0])
                effects[(row, *position)] = (score - receiver_score[row]) / (donor_score[row] - receiver_score[row])
    kept = included(donor_score, receiver_score, delta)
    return PatchResult(target, "naive", effects, the_plan.dims, receiver_score, donor_score,
                       int((~kept).sum()), delta, the_plan.labels, {"model": ranker.name, "direction": direction})
