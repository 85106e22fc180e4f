"""`patch` and `patch_variants`: activation patching over a PairSet, exact (batched) or by attribution.

For each pair, the receiving run (by default the lower-scoring input) is re-run with one component
replaced by the donor run's activation; the effect is (patched - receiver) / (donor - receiver).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..core.defaults import DEFAULT_BATCH_SIZE, DEFAULT_TOLERANCE
from ..core.errors import SettingsError
from ..features.sae import SparseAutoencoder
from ..features.splice import sae_digest
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from .attribution import attribution_batch, graddrop_batch
from .exact import exact_batch
from .features import latent_changes, sae_sites
from .methods import METHODS, VARIANTS, method_for, methods_for
from .plan import DIRECTIONS, Plan, Variant, patched_layer, plan, variants_plan
from .result import PatchResult, included
from .runs import CleanRuns, batches_of_runs


def patch(
    ranker: Ranker,
    pairs: PairSet,
    target: str = "heads",
    method: str = "exact",
    batch_size: int = DEFAULT_BATCH_SIZE,
    direction: str = "to_low",
    delta: float = DEFAULT_TOLERANCE,
    heads: list[tuple[int, int]] | None = None,
    progress: bool = True,
    clean_runs: CleanRuns | None = None,
    saes: Sequence[SparseAutoencoder] | None = None,
) -> PatchResult:
    """Patch every component of `target` for every pair; see PatchResult for the metric and shapes.

    target: "blocks" (resid_pre, attn_out, mlp_out x layer x position), "regions" (the same components x layer
    x token region: every position of the changed span, the rest of the changed text, the other text of a
    joint input, or the special tokens and prompt words, at once), "heads" (each head's hook_z at all
    positions), "heads_by_pos" (the given `heads` x position), "mlp" (each layer's mlp_out) or "features" (each
    latent of the given `saes` at every position: the receiver's latent replaced by the donor's through the
    spliced SAE, its error term and other latents kept; see patching.features).
    method="exact" re-runs the model (batched, reusing cached layers); method="attribution" (AtP) is a first-order
    approximation from one forward and one backward pass per batch of pairs: (donor - receiver) x gradient, the
    donor's activation taken exactly (for a head, the pattern its patched queries and keys give is recomputed, so
    the estimate is linear only from the head's output onward: AtP*'s QK fix at head granularity).
    method="atp*" adds AtP*'s GradDrop: the estimate again with the gradient through each layer's attention inputs
    and MLP stopped in turn, in `PatchResult.dropped`, which exposes effects whose paths cancel in AtP.
    direction: "to_low" (default, as in Chen et al. 2024 for TFC1: patch the higher-scoring run into the
    lower), "to_baseline" or "to_perturbed" (fixed receivers). batch_size bounds sequences per forward pass.
    patching.methods.METHODS says which method measures which target. clean_runs: a store of clean runs to
    reuse and fill (bit-identical numbers; see patching.runs.CleanRuns), or None to keep none.
    """
    width = int(pairs.tensors["length"].max())
    features = sae_sites(ranker, saes) if target == "features" else ()
    the_plan = plan(target, ranker.n_layers, ranker.n_heads, width, heads, ranker.regions, features)
    return _patch(ranker, pairs, the_plan, target, method, batch_size, direction, delta, progress, clean_runs,
                  list(saes or ()) if features else [])


def patch_variants(
    ranker: Ranker,
    pairs: PairSet,
    variants: list[Variant],
    method: str = "exact",
    batch_size: int = DEFAULT_BATCH_SIZE,
    direction: str = "to_low",
    delta: float = DEFAULT_TOLERANCE,
    progress: bool = False,
    clean_runs: CleanRuns | None = None,
    saes: Sequence[SparseAutoencoder] | None = None,
) -> PatchResult:
    """Patch a hand-picked list of components; effects have shape [pair, variant]. Variants are all components
    (hook sites) or all latents of the given `saes` (Variant.latent). The rest as for `patch`."""
    latent = [variant.latent is not None for variant in variants]
    if any(latent) and not all(latent):
        raise SettingsError(f"patch_variants takes either components or SAE latents, not both in one call; got "
                            f"{sum(latent)} latent and {len(latent) - sum(latent)} component variants")
    # components are patched at the stack's positions; latents at any site an SAE reads (a decoder's too)
    known = set(ranker.sites) if any(latent) else set(ranker.stack.sites())
    unknown = sorted({variant.site for variant in variants} - known)
    if unknown:
        raise SettingsError(f"unknown hook name(s) {unknown} for patching")
    if any(latent):
        sizes = dict(sae_sites(ranker, saes))
        for variant in variants:
            if variant.site not in sizes or not 0 <= variant.latent < sizes[variant.site]:
                raise SettingsError(f"latent {variant.latent} at {variant.site} is not a latent of the SAEs given "
                                    f"({', '.join(f'{site}: {size}' for site, size in sizes.items())})")
        # the layer is the engine's business (the first layer the patch changes), whatever the caller wrote
        variants = [replace(variant, layer=patched_layer(variant.site, ranker.n_layers)) for variant in variants]
    the_plan = variants_plan(variants)
    return _patch(ranker, pairs, the_plan, VARIANTS, method, batch_size, direction, delta, progress, clean_runs,
                  list(saes or ()) if any(latent) else [])


def _count_runs(the_plan: Plan, lengths: torch.Tensor) -> int:
    return sum(
        sum(1 for _, variant in the_plan.variants if variant.position is None or variant.position < int(length))
        for length in lengths
    )


def _patch(ranker: Ranker, pairs: PairSet, the_plan: Plan, target: str, method: str, batch_size: int,
           direction: str, delta: float, progress: bool, clean_runs: CleanRuns | None,
           saes: list[SparseAutoencoder]) -> PatchResult:
    chosen = method_for(method, target)
    if chosen.two_stage:
        single = [name for name in methods_for(target) if not METHODS[name].two_stage]
        raise SettingsError(f"method={method!r} screens with {chosen.screen!r} and verifies with {chosen.verify!r}, "
                            f"which an audit does; patch target {target!r} with one of {', '.join(single)}")
    if direction not in DIRECTIONS:
        raise SettingsError(f"direction={direction!r} is not valid; use one of {', '.join(DIRECTIONS)}")
    if batch_size < 1:
        raise SettingsError(f"batch_size={batch_size} is not valid; use a positive number of sequences")
    ranker.check_side(pairs.target)
    if pairs.provenance.get("tokenizer") not in (None, ranker.tokenizer.name_or_path):
        raise SettingsError(
            f"these pairs were tokenized for {pairs.provenance['tokenizer']}, not {ranker.tokenizer.name_or_path}"
        )
    lengths = pairs.tensors["length"]
    names = sorted({variant.site for _, variant in the_plan.variants})
    saes = [sae.to(ranker.device) for sae in saes if sae.hook_name in names]  # the SAEs of a latent plan
    effects = np.full((len(pairs), *the_plan.shape), np.nan)
    receiver_score = np.zeros(len(pairs))
    donor_score = np.zeros(len(pairs))
    exact = method == "exact"
    dropped = np.full((len(pairs), ranker.n_layers, *the_plan.shape), np.nan) if method == "atp*" else None
    bar = tqdm(total=_count_runs(the_plan, lengths) if exact else len(pairs), desc=f"patching {target} ({method})",
               unit="run" if exact else "pair", disable=not progress, leave=False)
    with torch.no_grad():
        for rows, runs, keep in batches_of_runs(ranker, pairs, batch_size, names, direction, receiver_score,
                                                donor_score, delta, clean_runs):
            changes = latent_changes(saes, runs.donor_cache, runs.receiver_cache, runs.regions) if saes else None
            latents = (saes, changes) if saes else None
            if not exact:
                if dropped is None:
                    attribution_batch(ranker, runs, names, the_plan, effects, rows, lengths[rows], latents=latents)
                else:
                    graddrop_batch(ranker, runs, names, the_plan, effects, dropped, rows, lengths[rows], latents)
                    dropped[[row for row, kept in zip(rows, keep) if not kept]] = np.nan
                effects[[row for row, kept in zip(rows, keep) if not kept]] = np.nan
                bar.update(len(rows))
                continue
            work = [
                (pair, position, variant)
                for pair in range(len(rows))
                for position, variant in the_plan.variants
                if variant.position is None or variant.position < int(lengths[rows[pair]])
            ]
            skipped = [item for item in work if not keep[item[0]]]
            bar.update(len(skipped))
            exact_batch(ranker, runs, [item for item in work if keep[item[0]]], batch_size, effects, rows, bar, saes,
                        changes)
    bar.close()
    kept = included(donor_score, receiver_score, delta)
    return PatchResult(
        target=target,
        method=method,
        effects=effects,
        dims=the_plan.dims,
        receiver_score=receiver_score,
        donor_score=donor_score,
        excluded=int((~kept).sum()),
        delta=delta,
        labels=the_plan.labels,
        provenance={
            **{key: pairs.provenance.get(key) for key in ("axiom", "spec_hash", "data_hash", "seed", "filler")},
            "model": ranker.name,
            "direction": direction,
            "batch_size": batch_size,
            "n_pairs": len(pairs),
            "package_version": __version__,
            **({"saes": {sae.hook_name: sae_digest(sae) for sae in saes}} if saes else {}),
        },
        dropped=dropped,
    )
