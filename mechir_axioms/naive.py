"""The naive patching reference: one full forward pass per pair and component, no reuse, no batching.

It exists to check the fast paths in `patching.py`; it is slow on purpose and shares only the plan
(which components a target has) and the metric with them.
"""

from __future__ import annotations

import numpy as np
import torch

from .hooks import caching_hooks
from .pairs import PairSet
from .patch_result import PatchResult
from .patching import DEFAULT_DELTA, Plan, Variant, plan, positions_of, region_rows, regions_of
from .rankers import Ranker


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
        the_plan = Plan([((i,), v) for i, v in enumerate(variants)], (len(variants),), ("pair", "variant"), {})
    else:
        the_plan = plan(target, ranker.n_layers, ranker.n_heads, width, heads, regions_of(ranker.kind))
    names = sorted({variant.site for _, variant in the_plan.variants})
    effects = np.full((len(pairs), *the_plan.shape), np.nan)
    receiver_score, donor_score = np.zeros(len(pairs)), np.zeros(len(pairs))
    with torch.no_grad():
        for row in range(len(pairs)):
            runs = {}
            for which in ("baseline", "perturbed"):
                inputs = pairs.model_input(which, [row])
                cache: dict[str, torch.Tensor] = {}
                runs[which] = (inputs, float(ranker.forward(inputs, caching_hooks(names, cache))[0]), cache)
            low_is_baseline = runs["baseline"][1] <= runs["perturbed"][1]
            to_baseline = low_is_baseline if direction == "to_low" else direction == "to_baseline"
            receiver, donor = (runs["baseline"], runs["perturbed"]) if to_baseline else (runs["perturbed"], runs["baseline"])
            receiver_score[row], donor_score[row] = receiver[1], donor[1]
            if abs(donor[1] - receiver[1]) < delta:
                continue
            length, regions = int(pairs.tensors["length"][row]), region_rows(pairs, [row])[0]
            for position, variant in the_plan.variants:
                if variant.position is not None and variant.position >= length:
                    continue
                hook = _replace_one(donor[2][variant.site], variant, regions)
                score = float(ranker.forward(receiver[0], {variant.site: hook})[0])
                effects[(row, *position)] = (score - receiver[1]) / (donor[1] - receiver[1])
    included = np.abs(donor_score - receiver_score) >= delta
    return PatchResult(target, "naive", effects, the_plan.dims, receiver_score, donor_score,
                       int((~included).sum()), delta, the_plan.labels, {"model": ranker.name, "direction": direction})
