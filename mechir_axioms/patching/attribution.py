"""Attribution patching: a first-order estimate of every variant's effect from one forward and one backward
pass per batch of pairs, (donor - receiver activation) x d score / d activation at the receiver.

`blocked` gives AtP*'s GradDrop variant (Kramar et al., 2024): the same estimate with the gradient that runs
through one layer's attention (its queries, keys and values) and its MLP stopped, so that an effect whose
direct and indirect paths cancel in the full gradient shows up in one of the blocked ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..models.hooks import HookFn
from ..models.names import act_name
from ..models.rankers import Ranker
from ..features.sae import SparseAutoencoder
from .features import latent_products
from .plan import Plan
from .runs import Runs

Latents = tuple[Sequence[SparseAutoencoder], dict[str, torch.Tensor]]
"""The SAEs of a features plan and their latents' changes per site (patching.features.latent_changes)."""


def blocking_hooks(layer: int) -> list[tuple[str, HookFn]]:
    """Hooks that stop the gradient through layer `layer`'s attention inputs and MLP, leaving values as they are."""
    names = [act_name(site, layer) for site in ("q", "k", "v", "mlp_out")]
    return [(name, lambda activation, name: activation.detach()) for name in names]


def _write(pairs_plan: Plan, products: dict[str, torch.Tensor], runs: Runs, effects: np.ndarray, pair_rows: list[int],
           lengths: torch.Tensor) -> None:
    """Sum each variant's (donor - receiver) x gradient products over what it patches, as a share of the pair's
    score difference, into effects[pair_rows[pair], ...]."""
    denominator = (runs.donor_score - runs.receiver_score).double()
    if pairs_plan.variants and pairs_plan.variants[0][1].latent is not None:  # features: one sum per site
        totals = {site: (product.double().sum(1) / denominator.unsqueeze(1)).cpu().numpy()
                  for site, product in products.items()}
        for position, variant in pairs_plan.variants:
            effects[(pair_rows, *position)] = totals[variant.site][:, variant.latent]
        return
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


def _products(runs: Runs, names: list[str], gradients: list[torch.Tensor | None],
              latents: Latents | None = None) -> dict[str, torch.Tensor]:
    """(donor - receiver activation) x gradient, summed over the last dimension: [pair, pos(, head)]; with
    `latents` (the SAEs and their latents' changes), per latent: [pair, pos, d_sae]."""
    if latents is not None:
        saes, changes = latents
        by_site = {sae.hook_name: sae for sae in saes}
        return {name: latent_products(by_site[name], changes[name], gradient.detach()) if gradient is not None
                else torch.zeros_like(changes[name]) for name, gradient in zip(names, gradients)}
    return {
        name: ((runs.donor_cache[name] - runs.receiver_cache[name]) * gradient.detach()).sum(-1)
        if gradient is not None else torch.zeros_like(runs.receiver_cache[name]).sum(-1)
        for name, gradient in zip(names, gradients)
    }


def attribution_batch(ranker: Ranker, runs: Runs, names: list[str], pairs_plan: Plan, effects: np.ndarray,
                      pair_rows: list[int], lengths: torch.Tensor, blocked: int | None = None,
                      latents: Latents | None = None) -> None:
    """Estimate every variant of `pairs_plan` for the pairs of `runs`, writing effects[pair_rows[pair], ...];
    `lengths` (host) are the pairs' token lengths, past which a position-wise variant has no effect.
    `blocked`: the layer whose attention and MLP the gradient may not pass through (GradDrop's definition, one
    forward and backward pass per blocked layer: the reference for `graddrop_batch`), or None. `latents`: the
    SAEs and their latents' changes, for the features target."""
    grabbed: dict[str, torch.Tensor] = {}

    def grab(activation: torch.Tensor, name: str) -> torch.Tensor:
        if not activation.requires_grad:  # frozen parameters: make the activation itself differentiable
            activation = activation.detach().requires_grad_()
        grabbed[name] = activation
        return activation

    # the blocks come first, so a component that is itself blocked (an MLP's output) keeps its own gradient
    hooks = (blocking_hooks(blocked) if blocked is not None else []) + [(name, grab) for name in names]
    with torch.enable_grad():
        scores = ranker.forward(runs.receiver, hooks, context=runs.context)
        gradients = torch.autograd.grad(scores.sum(), [grabbed[name] for name in names], allow_unused=True)
    _write(pairs_plan, _products(runs, names, list(gradients), latents), runs, effects, pair_rows, lengths)


def _pull(outputs: list[torch.Tensor], inputs: list[torch.Tensor], gradients: list[torch.Tensor | None]) -> list:
    """Pull `gradients` at `outputs` back to `inputs` (None where nothing arrives); outputs without one are skipped."""
    given = [(output, gradient) for output, gradient in zip(outputs, gradients) if gradient is not None]
    if not given:
        return [None] * len(inputs)
    return list(torch.autograd.grad([o for o, _ in given], inputs, [g for _, g in given], retain_graph=True,
                                    allow_unused=True))


def _minus(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    return first if second is None else -second if first is None else first - second


def graddrop_batch(ranker: Ranker, runs: Runs, names: list[str], pairs_plan: Plan, effects: np.ndarray,
                   dropped: np.ndarray, pair_rows: list[int], lengths: torch.Tensor,
                   latents: Latents | None = None) -> None:
    """AtP into `effects` and every GradDrop variant into dropped[:, layer], from one forward pass.

    With layer l blocked, a component keeps the gradient of the paths that avoid l's queries, keys, values and
    MLP. The rest is pulled back from those activations in one partial backward pass: from the MLP's output
    with its whole gradient, and from the queries, keys and values with the part of theirs that does not run
    through the MLP (g - u, where u is the MLP's gradient pulled back to them within the layer), so that no
    path is counted twice. One short and one partial backward pass per layer, instead of a forward and a
    backward pass each."""
    grabbed: dict[str, torch.Tensor] = {}
    held: dict[str, torch.Tensor] = {}
    embed = act_name("embed")

    def grab(activation: torch.Tensor, name: str) -> torch.Tensor:
        activation = activation.detach().requires_grad_() if name == embed else activation.clone()
        grabbed[name] = activation
        return activation

    def hold(activation: torch.Tensor, name: str) -> torch.Tensor:
        held[name] = activation.clone()  # on the path, so the gradient can be pulled back from it
        return held[name]

    holding = [(name, hold) for layer in range(ranker.n_layers) for name, _ in blocking_hooks(layer)]
    with torch.enable_grad():
        scores = ranker.forward(runs.receiver, [(embed, grab)] + holding + [(name, grab) for name in names],
                                context=runs.context)
        nodes, blocked = [grabbed[name] for name in names], list(held)
        full = torch.autograd.grad(scores.sum(), nodes + [held[name] for name in blocked], retain_graph=True,
                                   allow_unused=True)
        gradients, at = list(full[: len(nodes)]), dict(zip(blocked, full[len(nodes):]))
        _write(pairs_plan, _products(runs, names, gradients, latents), runs, effects, pair_rows, lengths)
        for layer in range(ranker.n_layers):
            q_k_v = [act_name(site, layer) for site in ("q", "k", "v")]
            mlp = act_name("mlp_out", layer)
            arriving = _pull([held[mlp]], [held[name] for name in q_k_v], [at[mlp]])  # within the layer only
            rest = [_minus(at[name], u) for name, u in zip(q_k_v, arriving)]
            via = _pull([held[mlp]] + [held[name] for name in q_k_v], nodes, [at[mlp]] + rest)
            left = [_minus(g, v) for g, v in zip(gradients, via)]
            _write(pairs_plan, _products(runs, names, left, latents), runs, dropped[:, layer], pair_rows, lengths)
