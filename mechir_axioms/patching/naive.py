"""The naive patching reference: one full forward pass per pair and component, no reuse, no batching.

It exists to check the fast paths in `exact.py`, `api.py` and `paths.py`; it is slow on purpose and shares only
the plan (which components a target has), the parsing of senders and receivers, and the metric with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.defaults import DEFAULT_TOLERANCE
from ..features.sae import SparseAutoencoder, feature_name, flattened
from ..features.splice import splice_hooks
from ..models.hooks import caching_hooks
from ..models.names import act_name
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from .pathspec import kv_head, parse_receivers, parse_senders
from .plan import Variant, plan, positions_of, receiver_is_baseline, variants_plan
from .result import PatchResult, included
from .runs import region_rows


def _one_pair(ranker: Ranker, pairs: PairSet, row: int, names: list[str], direction: str) -> tuple[tuple, tuple]:
    """The receiving and the donor run of one pair, each (input, score [1], cache of `names`), one forward each."""
    runs = {}
    for which in ("baseline", "perturbed"):
        inputs = pairs.model_input(which, ranker, [row])
        cache: dict[str, torch.Tensor] = {}
        runs[which] = (inputs, ranker.forward(inputs, caching_hooks(names, cache))[:1], cache)
    to_baseline = bool(receiver_is_baseline(direction, runs["baseline"][1], runs["perturbed"][1])[0])
    return (runs["baseline"], runs["perturbed"]) if to_baseline else (runs["perturbed"], runs["baseline"])


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
                delta: float = DEFAULT_TOLERANCE, heads: list[tuple[int, int]] | None = None,
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
            receiver, donor = _one_pair(ranker, pairs, row, names, direction)
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


def patch_features_naive(ranker: Ranker, pairs: PairSet, saes: Sequence[SparseAutoencoder], direction: str = "to_low",
                         delta: float = DEFAULT_TOLERANCE) -> PatchResult:
    """Same contract as `patching.patch(target="features", method="exact")`, literally: per pair and latent, one
    full forward pass of the receiving input with every SAE spliced in (features.splice) and that latent's code
    replaced by the donor's at every position of the pair's tokens."""
    sites = [sae.hook_name for sae in saes]
    variants = [(sae, j) for sae in saes for j in range(sae.config.d_sae)]
    effects = np.full((len(pairs), len(variants)), np.nan)
    receiver_score, donor_score = np.zeros(len(pairs)), np.zeros(len(pairs))
    with torch.no_grad():
        for row in range(len(pairs)):
            receiver, donor = _one_pair(ranker, pairs, row, sites, direction)
            receiver_score[row], donor_score[row] = float(receiver[1][0]), float(donor[1][0])
            if not included(donor_score[row], receiver_score[row], delta):
                continue
            length = int(pairs.tensors["length"][row])
            donor_latents = {sae.hook_name: sae.encode(flattened(donor[2][sae.hook_name])) for sae in saes}
            for column, (patched_sae, latent) in enumerate(variants):
                def edit(sae: SparseAutoencoder, latents: torch.Tensor, patched_sae=patched_sae,
                         latent=latent) -> torch.Tensor:
                    if sae is not patched_sae:
                        return latents
                    edited = latents.clone()
                    given = donor_latents[sae.hook_name]
                    edited[:, :length, latent] = given[:, :length, latent]  # the pair's tokens, not padding
                    return edited

                score = float(ranker.forward(receiver[0], splice_hooks(saes, edit))[0])
                effects[row, column] = (score - receiver_score[row]) / (donor_score[row] - receiver_score[row])
    kept = included(donor_score, receiver_score, delta)
    names = [feature_name(sae.hook_name, j) for sae, j in variants]
    return PatchResult("features", "naive", effects, ("pair", "feature"), receiver_score, donor_score,
                       int((~kept).sum()), delta, {"feature": names}, {"model": ranker.name, "direction": direction})


def patch_paths_naive(ranker: Ranker, pairs: PairSet, senders: Any = "heads", receivers: Any = "final",
                      direction: str = "to_low", delta: float = DEFAULT_TOLERANCE) -> PatchResult:
    """Same contract as `patching.paths.patch_paths` given senders and receivers, literally: per pair and sender,
    one full sender pass (every non-receiver head held at the receiving run, the sender from the donor) recording
    every receiver's inputs and the last layer's output, then one full receiver pass with exactly those inputs
    patched in."""
    heads = parse_senders(ranker, senders)
    receiving = parse_receivers(ranker, receivers)
    z_names = [act_name("z", layer) for layer in range(ranker.n_layers)]
    last = act_name("resid_post", ranker.n_layers - 1)
    reads = [(act_name(which, r.layer), r.head, which) for r in receiving if not r.is_final for which in r.inputs]
    live = {(r.layer, r.head) for r in receiving if not r.is_final}
    final = any(r.is_final for r in receiving)
    effects = np.full((len(pairs), len(heads)), np.nan)
    receiver_score, donor_score = np.zeros(len(pairs)), np.zeros(len(pairs))
    with torch.no_grad():
        for row in range(len(pairs)):
            receiver, donor = _one_pair(ranker, pairs, row, z_names, direction)
            receiver_score[row], donor_score[row] = float(receiver[1][0]), float(donor[1][0])
            if not included(donor_score[row], receiver_score[row], delta):
                continue
            for column, sender in enumerate(heads):
                recorded: dict[str, torch.Tensor] = {}
                hooks = [(name, _held(receiver[2][name], donor[2][name], layer, sender, live))
                         for layer, name in enumerate(z_names)]
                hooks += caching_hooks(sorted({name for name, _, _ in reads} | {last}), recorded)
                ranker.forward(receiver[0], hooks)
                patches = [(name, _one_head(recorded[name], kv_head(ranker, name, head))) for name, head, _ in reads]
                if final:
                    patches.append((last, lambda activation, name: recorded[last]))
                score = float(ranker.forward(receiver[0], patches)[0])
                effects[row, column] = (score - receiver_score[row]) / (donor_score[row] - receiver_score[row])
    kept = included(donor_score, receiver_score, delta)
    return PatchResult("paths", "naive", effects, ("pair", "sender"), receiver_score, donor_score, int((~kept).sum()),
                       delta, {"sender": [f"{l}.{h}" for l, h in heads]}, {"model": ranker.name, "direction": direction})


def _held(receiving: torch.Tensor, donor: torch.Tensor, layer: int, sender: tuple[int, int], live: set):
    """A hook_z function for the sender pass: the sender from the donor, receiver heads live, every other head
    at its receiving-run output."""
    def hold(activation: torch.Tensor, name: str) -> torch.Tensor:
        held = receiving.clone()
        for head in range(held.shape[-2]):
            if (layer, head) in live:
                held[..., head, :] = activation[..., head, :]
        if layer == sender[0]:
            held[..., sender[1], :] = donor[..., sender[1], :]
        return held

    return hold


def _one_head(recorded: torch.Tensor, head: int):
    """A q/k/v hook that takes the recorded values of one head and leaves the others as they are."""
    def replace(activation: torch.Tensor, name: str) -> torch.Tensor:
        patched = activation.clone()
        patched[..., head, :] = recorded[..., head, :]
        return patched

    return replace
