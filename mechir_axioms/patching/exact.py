"""Exact activation patching, batched: many patched variants of many pairs in one forward pass per chunk.

For each layer, the receiver's cached outputs of the layers before it are replayed instead of recomputed
(a patch at layer l cannot change layers before l), and variants that copy in identical values get effect
0 without a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..features.sae import SparseAutoencoder
from ..models.hooks import HookFn
from ..models.rankers import Ranker
from .features import adding_hooks, carries_something
from .plan import Variant, positions_of
from .runs import Runs, batch_rows, replaying

WorkItem = tuple[int, tuple[int, ...], Variant]
"""(pair within the batch, index into the effect array after the pair axis, variant)."""


def masks_for(variants: list[Variant], regions: torch.Tensor, width: int, n_heads: int) -> dict[str, torch.Tensor]:
    """For each site in a chunk, a boolean mask [row, pos(, head)] of what each row replaces; regions [row, pos].
    The masks live on the region map's device."""
    masks: dict[str, torch.Tensor] = {}
    for row, variant in enumerate(variants):
        is_z = variant.site.endswith("hook_z")
        if variant.site not in masks:
            shape = (len(variants), width, n_heads) if is_z else (len(variants), width)
            masks[variant.site] = regions.new_zeros(shape, dtype=torch.bool)
        positions = positions_of(variant, regions[row])
        if is_z:
            heads = slice(None) if variant.head is None else variant.head
            masks[variant.site][row, positions, heads] = True
        else:
            masks[variant.site][row, positions] = True
    return masks


def _replacing(donor: dict[str, torch.Tensor], index: torch.Tensor, masks: dict[str, torch.Tensor]) -> list[tuple[str, HookFn]]:
    def replace(activation: torch.Tensor, name: str) -> torch.Tensor:
        return torch.where(masks[name].unsqueeze(-1), donor[name][index], activation)

    return [(name, replace) for name in masks]


def _changes_something(ranker: Ranker, runs: Runs, items: list[WorkItem], width: int) -> list[bool]:
    """Per work item: does the donor differ from the receiver anywhere the variant patches? A variant that
    copies identical values (the unchanged tokens' embeddings, say) leaves the receiver's score as it is."""
    index = ranker.place_tensor(torch.tensor([pair for pair, _, _ in items]))
    masks = masks_for([variant for _, _, variant in items], runs.regions[index], width, ranker.n_heads)
    changed = index.new_zeros(len(items), dtype=torch.bool)
    for name, mask in masks.items():
        differs = (runs.donor_cache[name] != runs.receiver_cache[name]).any(-1)  # [pair, pos(, head)]
        changed |= (mask & differs[index]).flatten(1).any(1)
    return changed.cpu().tolist()


def _moving(ranker: Ranker, runs: Runs, items: list[WorkItem], width: int,
            changes: dict[str, torch.Tensor] | None) -> list[bool]:
    """Per work item: could patching it move the score at all?"""
    if changes is None:
        return _changes_something(ranker, runs, items, width)
    index = ranker.place_tensor(torch.tensor([pair for pair, _, _ in items]))
    return carries_something(changes, index, [variant for _, _, variant in items])


def exact_batch(ranker: Ranker, runs: Runs, work: list[WorkItem], rows_per_pass: int, effects: np.ndarray,
                pair_rows: list[int], progress: Any, saes: Sequence[SparseAutoencoder] = (),
                changes: dict[str, torch.Tensor] | None = None) -> None:
    """Run all work items, layer by layer, `rows_per_pass` rows at a time, writing effects[pair_rows[pair], ...];
    items that patch in nothing new have effect 0 without a run. Latent variants (the features target) add their
    latent's change through `saes`' decoders, with `changes` from patching.features.latent_changes."""
    width = runs.receiver.tokens["input_ids"].shape[1]
    by_layer: dict[int, list[WorkItem]] = {}
    for item in work:
        by_layer.setdefault(item[2].layer, []).append(item)
    for layer in sorted(by_layer):
        items = []
        for item, changed in zip(by_layer[layer], _moving(ranker, runs, by_layer[layer], width, changes)):
            if changed:
                items.append(item)
            else:
                effects[(pair_rows[item[0]], *item[1])] = 0.0
                progress.update(1)
        for start in range(0, len(items), rows_per_pass):
            chunk = items[start : start + rows_per_pass]
            index = ranker.place_tensor(torch.tensor([pair for pair, _, _ in chunk]))
            inputs = runs.receiver.rows(index)
            context = batch_rows(runs.size, runs.context, index)
            replays = [batch_rows(runs.size, output, index) for output in runs.layer_outputs[:layer]]
            variants = [v for _, _, v in chunk]
            if changes is not None:
                hooks = adding_hooks(saes, changes, index, variants)
            else:
                hooks = _replacing(runs.donor_cache, index, masks_for(variants, runs.regions[index], width,
                                                                       ranker.n_heads))
            with replaying(ranker, layer, replays):
                scores = ranker.forward(inputs, hooks, context=context)
            receiver, donor = runs.receiver_score[index], runs.donor_score[index]
            values = ((scores - receiver) / (donor - receiver)).double().cpu().numpy()
            for (pair, position, _), value in zip(chunk, values):
                effects[(pair_rows[pair], *position)] = value
            progress.update(len(chunk))
