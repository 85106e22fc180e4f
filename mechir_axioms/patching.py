"""Activation patching over a PairSet: exact (batched) and attribution (first-order).

For each pair, the receiving run (by default the lower-scoring input) is re-run with one component
replaced by the donor run's activation. The exact method caches both runs once, replays the receiver's
cached layer outputs in place of every layer before the patched one (a patch at layer l cannot change
layers before l), runs many patched variants as one batch, and chunks rows to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .align import REGIONS
from .hooks import HookFn, caching_hooks
from .pairs import PairSet
from .patch_result import PatchResult
from .rankers import ModelInput, Ranker

TARGETS = ("blocks", "regions", "heads", "heads_by_pos", "mlp")
METHODS = ("exact", "attribution")
DIRECTIONS = ("to_low", "to_baseline", "to_perturbed")
BLOCK_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")
DEFAULT_DELTA = 1e-3
"""Pairs whose two scores differ by less than this are excluded: the metric's denominator is noise there."""


@dataclass(frozen=True)
class Variant:
    """One patched component: the hook `site` at `layer`, one head of hook_z (or all), and one position, or
    every position of one token region (an index into align.REGIONS, which differ pair by pair), or all."""

    layer: int
    site: str
    head: int | None = None
    position: int | None = None
    region: int | None = None


@dataclass(frozen=True)
class Plan:
    """Every variant of a target with its index into the effect array (after the pair axis)."""

    variants: list[tuple[tuple[int, ...], Variant]]
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    labels: dict[str, list[Any]]


def regions_of(kind: str) -> tuple[str, ...]:
    """The token regions a ranker's hooked sequence has: a bi-encoder's document holds no other text."""
    return tuple(region for region in REGIONS if kind != "bi" or region != "other")


def plan(target: str, n_layers: int, n_heads: int, width: int, heads: list[tuple[int, int]] | None = None,
         regions: tuple[str, ...] = REGIONS) -> Plan:
    """The variants of `target` for sequences up to `width` tokens (`regions`: those the "regions" target uses)."""
    if target == "heads":
        variants = [((l, h), Variant(l, f"blocks.{l}.attn.hook_z", head=h)) for l in range(n_layers) for h in range(n_heads)]
        return Plan(variants, (n_layers, n_heads), ("pair", "layer", "head"), {})
    if target == "mlp":
        variants = [((l,), Variant(l, f"blocks.{l}.hook_mlp_out")) for l in range(n_layers)]
        return Plan(variants, (n_layers,), ("pair", "layer"), {})
    if target == "blocks":
        variants = [
            ((c, l, p), Variant(l, f"blocks.{l}.hook_{component}", position=p))
            for c, component in enumerate(BLOCK_COMPONENTS)
            for l in range(n_layers)
            for p in range(width)
        ]
        return Plan(variants, (3, n_layers, width), ("pair", "component", "layer", "position"),
                    {"component": list(BLOCK_COMPONENTS)})
    if target == "regions":
        variants = [
            ((c, l, r), Variant(l, f"blocks.{l}.hook_{component}", region=REGIONS.index(region)))
            for c, component in enumerate(BLOCK_COMPONENTS)
            for l in range(n_layers)
            for r, region in enumerate(regions)
        ]
        return Plan(variants, (3, n_layers, len(regions)), ("pair", "component", "layer", "region"),
                    {"component": list(BLOCK_COMPONENTS), "region": list(regions)})
    if target == "heads_by_pos":
        if not heads:
            raise ValueError("target='heads_by_pos' needs heads=[(layer, head), ...]")
        for layer, head in heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise ValueError(f"head ({layer}, {head}) does not exist: the model has {n_layers} layers x {n_heads} heads")
        variants = [
            ((i, p), Variant(l, f"blocks.{l}.attn.hook_z", head=h, position=p))
            for i, (l, h) in enumerate(heads)
            for p in range(width)
        ]
        return Plan(variants, (len(heads), width), ("pair", "head", "position"),
                    {"head": [f"{l}.{h}" for l, h in heads]})
    raise ValueError(f"target={target!r} is not valid; use one of {', '.join(TARGETS)}")


# --- the two clean runs ------------------------------------------------------------------------------
def _score(ranker: Ranker, inputs: ModelInput, hooks, query_embeddings: torch.Tensor | None) -> torch.Tensor:
    if ranker.kind == "bi":
        return ranker.forward(inputs, hooks, query_embeddings=query_embeddings)
    return ranker.forward(inputs, hooks)


@contextmanager
def _layer_outputs(ranker: Ranker) -> Iterator[list[Any]]:
    """Record each layer's raw output (tensor or tuple) during a forward pass."""
    outputs: list[Any] = [None] * ranker.n_layers
    handles = [
        block.layer.register_forward_hook(lambda module, args, output, i=i: outputs.__setitem__(i, output))
        for i, block in enumerate(ranker.stack.blocks)
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _select(batch: int, choose: torch.Tensor, first: Any, second: Any) -> Any:
    """Per row, `first` where choose is True else `second`, through tuples; tensors not batched pass as is."""
    if isinstance(first, tuple):
        return tuple(_select(batch, choose, a, b) for a, b in zip(first, second))
    if isinstance(first, torch.Tensor) and first.dim() > 0 and first.shape[0] == batch:
        return torch.where(choose.view((batch,) + (1,) * (first.dim() - 1)), first, second)
    return first


def _rows(batch: int, value: Any, index: torch.Tensor) -> Any:
    """Index the batch dimension of a (possibly nested) cached value."""
    if isinstance(value, tuple):
        return tuple(_rows(batch, item, index) for item in value)
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[index]
    return value


@dataclass
class _Runs:
    """Receiver and donor of a batch of pairs: inputs, scores, activations and the receiver's layer outputs."""

    receiver: ModelInput
    receiver_score: torch.Tensor
    donor_score: torch.Tensor
    donor_cache: dict[str, torch.Tensor]
    receiver_cache: dict[str, torch.Tensor]
    layer_outputs: list[Any]
    query_embeddings: torch.Tensor | None
    regions: torch.Tensor  # [pair, pos]: each token's index into align.REGIONS, -1 for padding

    @property
    def size(self) -> int:
        return len(self.receiver_score)


def _select_input(choose: torch.Tensor, first: ModelInput, second: ModelInput) -> ModelInput:
    def pick(a, b):
        return type(a)({key: torch.where(choose.view(-1, 1), a[key], b[key]) for key in a.keys()})

    return ModelInput(pick(first.tokens, second.tokens), first.query_tokens)


def _clean_runs(ranker: Ranker, pairs: PairSet, rows: list[int], names: list[str], direction: str) -> _Runs:
    baseline, perturbed = pairs.model_input("baseline", rows), pairs.model_input("perturbed", rows)
    query = ranker.embed(baseline.query_tokens) if ranker.kind == "bi" else None
    runs = {}
    for which, inputs in (("baseline", baseline), ("perturbed", perturbed)):
        cache: dict[str, torch.Tensor] = {}
        with _layer_outputs(ranker) as outputs:
            score = _score(ranker, inputs, caching_hooks(names, cache), query)
        runs[which] = (score, cache, list(outputs))
    if direction == "to_low":
        receiver_is_baseline = runs["baseline"][0] <= runs["perturbed"][0]
    else:
        receiver_is_baseline = torch.full((len(rows),), direction == "to_baseline")
    batch = len(rows)
    pick = lambda first, second: _select(batch, receiver_is_baseline, first, second)  # noqa: E731
    (b_score, b_cache, b_out), (p_score, p_cache, p_out) = runs["baseline"], runs["perturbed"]
    return _Runs(
        receiver=_select_input(receiver_is_baseline, baseline, perturbed),
        receiver_score=pick(b_score, p_score),
        donor_score=pick(p_score, b_score),
        donor_cache={name: pick(p_cache[name], b_cache[name]) for name in names},
        receiver_cache={name: pick(b_cache[name], p_cache[name]) for name in names},
        layer_outputs=[pick(b, p) for b, p in zip(b_out, p_out)],
        query_embeddings=query,
        regions=region_rows(pairs, rows),
    )


def region_rows(pairs: PairSet, rows: list[int]) -> torch.Tensor:
    """The region map [row, pos] of some pairs, cut to their longest input."""
    if "region" not in pairs.tensors:
        raise ValueError("these pairs have no token regions (saved by an older version); build them again")
    return pairs.tensors["region"][rows, : int(pairs.tensors["length"][rows].max())]


# --- replaying early layers ----------------------------------------------------------------------
class _Replay(nn.Module):
    """Stands in for a layer whose output is already known: returns it without computing anything."""

    def __init__(self, original: nn.Module, output: Any):
        super().__init__()
        self.__dict__["_original"] = original
        self.__dict__["_output"] = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._output

    def __getattr__(self, name: str) -> Any:  # the encoder loop may read layer attributes (attention_type)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_original"], name)


@contextmanager
def _replaying(ranker: Ranker, upto: int, outputs: list[Any]) -> Iterator[None]:
    """Swap layers 0..upto-1 for replays of `outputs` for the duration of a forward pass."""
    container = ranker.stack.container
    originals = [container[i] for i in range(upto)]
    try:
        for i in range(upto):
            container[i] = _Replay(originals[i], outputs[i])
        yield
    finally:
        for i, original in enumerate(originals):
            container[i] = original


# --- exact patching ------------------------------------------------------------------------------
def positions_of(variant: Variant, regions: torch.Tensor) -> slice | int | torch.Tensor:
    """The positions a variant patches in one pair whose region map is `regions` [pos]."""
    if variant.region is not None:
        return regions == variant.region
    return slice(None) if variant.position is None else variant.position


def _masks(variants: list[Variant], regions: torch.Tensor, width: int, n_heads: int) -> dict[str, torch.Tensor]:
    """For each site in a chunk, a boolean mask [row, pos(, head)] of what each row replaces; regions [row, pos]."""
    masks: dict[str, torch.Tensor] = {}
    for row, variant in enumerate(variants):
        is_z = variant.site.endswith("hook_z")
        if variant.site not in masks:
            masks[variant.site] = torch.zeros((len(variants), width, n_heads) if is_z else (len(variants), width), dtype=torch.bool)
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


def _changes_something(runs: _Runs, items: list[tuple[int, tuple[int, ...], Variant]], width: int,
                       n_heads: int) -> list[bool]:
    """Per work item: does the donor differ from the receiver anywhere the variant patches? A variant that
    copies identical values (the unchanged tokens' embeddings, say) leaves the receiver's score as it is."""
    index = torch.tensor([pair for pair, _, _ in items])
    masks = _masks([variant for _, _, variant in items], runs.regions[index], width, n_heads)
    changed = torch.zeros(len(items), dtype=torch.bool)
    for name, mask in masks.items():
        differs = (runs.donor_cache[name] != runs.receiver_cache[name]).any(-1)  # [pair, pos(, head)]
        changed |= (mask & differs[index]).flatten(1).any(1)
    return changed.tolist()


def _exact_batch(ranker: Ranker, runs: _Runs, work: list[tuple[int, tuple[int, ...], Variant]], rows_per_pass: int,
                 effects: np.ndarray, pair_rows: list[int], progress) -> None:
    """Run all (pair-in-batch, index, variant) work items, layer by layer, `rows_per_pass` rows at a time;
    items that patch in nothing new have effect 0 without a run."""
    width = runs.receiver.tokens["input_ids"].shape[1]
    by_layer: dict[int, list[tuple[int, tuple[int, ...], Variant]]] = {}
    for item in work:
        by_layer.setdefault(item[2].layer, []).append(item)
    for layer in sorted(by_layer):
        items = []
        for item, changed in zip(by_layer[layer], _changes_something(runs, by_layer[layer], width, ranker.n_heads)):
            if changed:
                items.append(item)
            else:
                effects[(pair_rows[item[0]], *item[1])] = 0.0
                progress.update(1)
        for start in range(0, len(items), rows_per_pass):
            chunk = items[start : start + rows_per_pass]
            index = torch.tensor([pair for pair, _, _ in chunk])
            inputs = ModelInput(type(runs.receiver.tokens)({k: v[index] for k, v in runs.receiver.tokens.items()}))
            query = runs.query_embeddings[index] if runs.query_embeddings is not None else None
            replays = [_rows(runs.size, output, index) for output in runs.layer_outputs[:layer]]
            masks = _masks([v for _, _, v in chunk], runs.regions[index], width, ranker.n_heads)
            hooks = _replacing(runs.donor_cache, index, masks)
            with _replaying(ranker, layer, replays):
                scores = _score(ranker, inputs, hooks, query)
            receiver, donor = runs.receiver_score[index], runs.donor_score[index]
            values = ((scores - receiver) / (donor - receiver)).double().cpu().numpy()
            for (pair, position, _), value in zip(chunk, values):
                effects[(pair_rows[pair], *position)] = value
            progress.update(len(chunk))


# --- attribution patching ------------------------------------------------------------------------
def _attribution_batch(ranker: Ranker, runs: _Runs, names: list[str], pairs_plan: Plan, effects: np.ndarray,
                       pair_rows: list[int], lengths: torch.Tensor) -> None:
    """(donor - receiver activation) x d score / d activation at the receiver, summed per component."""
    grabbed: dict[str, torch.Tensor] = {}

    def grab(activation: torch.Tensor, name: str) -> torch.Tensor:
        if not activation.requires_grad:  # frozen parameters: make the activation itself differentiable
            activation = activation.detach().requires_grad_()
        grabbed[name] = activation
        return activation

    with torch.enable_grad():
        scores = _score(ranker, runs.receiver, [(name, grab) for name in names], runs.query_embeddings)
        gradients = torch.autograd.grad(scores.sum(), [grabbed[name] for name in names])
    products = {
        name: ((runs.donor_cache[name] - runs.receiver_cache[name]) * gradient.detach()).sum(-1)
        for name, gradient in zip(names, gradients)
    }  # [pair, pos(, head)]
    denominator = (runs.donor_score - runs.receiver_score).double()
    for position, variant in pairs_plan.variants:
        product = products[variant.site].double()
        if variant.head is not None:
            product = product[:, :, variant.head]
        elif product.dim() == 3:
            product = product.sum(-1)
        if variant.region is not None:
            value = (product * (runs.regions == variant.region)).sum(1)
        elif variant.position is None:
            value = product.sum(1)
        elif variant.position < product.shape[1]:
            value = product[:, variant.position]
        else:
            continue
        value = (value / denominator).cpu().numpy()
        for pair, item in enumerate(value):
            if variant.position is None or variant.position < int(lengths[pair]):
                effects[(pair_rows[pair], *position)] = item


# --- the public entry points --------------------------------------------------------------------
def patch(
    ranker: Ranker,
    pairs: PairSet,
    target: str = "heads",
    method: str = "exact",
    batch_size: int = 32,
    direction: str = "to_low",
    delta: float = DEFAULT_DELTA,
    heads: list[tuple[int, int]] | None = None,
    progress: bool = True,
) -> PatchResult:
    """Patch every component of `target` for every pair; see PatchResult for the metric and shapes.

    target: "blocks" (resid_pre, attn_out, mlp_out x layer x position), "regions" (the same components x layer
    x token region: every position of the changed span, the rest of the changed text, the other text of a
    joint input, or the special tokens and prompt words, at once), "heads" (each head's hook_z at all
    positions), "heads_by_pos" (the given `heads` x position) or "mlp" (each layer's mlp_out).
    method="exact" re-runs the model (batched, reusing cached layers); method="attribution" is a first-order
    approximation from one forward and one backward pass per batch of pairs: (donor - receiver) x gradient.
    direction: "to_low" (default, as in Chen et al. 2024 for TFC1: patch the higher-scoring run into the
    lower), "to_baseline" or "to_perturbed" (fixed receivers). batch_size bounds sequences per forward pass.
    """
    width = int(pairs.tensors["length"].max())
    the_plan = plan(target, ranker.n_layers, ranker.n_heads, width, heads, regions_of(ranker.kind))
    return _patch(ranker, pairs, the_plan, target, method, batch_size, direction, delta, progress)


def patch_variants(
    ranker: Ranker,
    pairs: PairSet,
    variants: list[Variant],
    method: str = "exact",
    batch_size: int = 32,
    direction: str = "to_low",
    delta: float = DEFAULT_DELTA,
    progress: bool = False,
) -> PatchResult:
    """Patch a hand-picked list of components; effects have shape [pair, variant]."""
    unknown = sorted({variant.site for variant in variants} - set(ranker.stack.sites()))
    if unknown:
        raise ValueError(f"unknown hook name(s) {unknown} for patching")
    the_plan = Plan([((i,), variant) for i, variant in enumerate(variants)], (len(variants),), ("pair", "variant"),
                    {"variant": [str(variant) for variant in variants]})
    return _patch(ranker, pairs, the_plan, "variants", method, batch_size, direction, delta, progress)


def _count_runs(the_plan: Plan, lengths: torch.Tensor) -> int:
    return sum(
        sum(1 for _, variant in the_plan.variants if variant.position is None or variant.position < int(length))
        for length in lengths
    )


def _patch(ranker: Ranker, pairs: PairSet, the_plan: Plan, target: str, method: str, batch_size: int,
           direction: str, delta: float, progress: bool) -> PatchResult:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; use one of {', '.join(METHODS)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not valid; use one of {', '.join(DIRECTIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not valid; use a positive number of sequences")
    if ranker.kind == "bi" and pairs.provenance.get("target") == "query":
        raise ValueError("patching a bi-encoder's query side is not supported; build pairs with target = 'document'")
    if pairs.provenance.get("tokenizer") not in (None, ranker.tokenizer.name_or_path):
        raise ValueError(
            f"these pairs were tokenized for {pairs.provenance['tokenizer']}, not {ranker.tokenizer.name_or_path}"
        )
    lengths = pairs.tensors["length"]
    names = sorted({variant.site for _, variant in the_plan.variants})
    effects = np.full((len(pairs), *the_plan.shape), np.nan)
    receiver_score = np.zeros(len(pairs))
    donor_score = np.zeros(len(pairs))
    exact = method == "exact"
    bar = tqdm(total=_count_runs(the_plan, lengths) if exact else len(pairs), desc=f"patching {target} ({method})",
               unit="run" if exact else "pair", disable=not progress, leave=False)
    order = torch.argsort(lengths, stable=True).tolist()  # batches of similar length waste little padding
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            rows = order[start : start + batch_size]
            runs = _clean_runs(ranker, pairs, rows, names, direction)
            receiver_score[rows] = runs.receiver_score.double().cpu().numpy()
            donor_score[rows] = runs.donor_score.double().cpu().numpy()
            keep = (runs.donor_score - runs.receiver_score).abs() >= delta
            if not exact:
                _attribution_batch(ranker, runs, names, the_plan, effects, rows, lengths[rows])
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
            _exact_batch(ranker, runs, [item for item in work if keep[item[0]]], batch_size, effects, rows, bar)
    bar.close()
    included = np.abs(donor_score - receiver_score) >= delta
    return PatchResult(
        target=target,
        method=method,
        effects=effects,
        dims=the_plan.dims,
        receiver_score=receiver_score,
        donor_score=donor_score,
        excluded=int((~included).sum()),
        delta=delta,
        labels=the_plan.labels,
        provenance={
            **{key: pairs.provenance.get(key) for key in ("axiom", "spec_hash", "data_hash", "seed", "filler")},
            "model": ranker.name,
            "direction": direction,
            "batch_size": batch_size,
            "n_pairs": len(pairs),
            "package_version": __version__,
        },
    )
