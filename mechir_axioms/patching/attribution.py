"""Attribution patching: a first-order estimate of every variant's effect from one forward and one backward
pass per batch of pairs, (donor - receiver activation) x d score / d activation at the receiver."""

from __future__ import annotations

import numpy as np
import torch

from ..models.rankers import Ranker
from .plan import Plan
from .runs import Runs


def attribution_batch(ranker: Ranker, runs: Runs, names: list[str], pairs_plan: Plan, effects: np.ndarray,
                      pair_rows: list[int], lengths: torch.Tensor) -> None:
    """Estimate every variant of `pairs_plan` for the pairs of `runs`, writing effects[pair_rows[pair], ...];
    `lengths` (host) are the pairs' token lengths, past which a position-wise variant has no effect."""
    grabbed: dict[str, torch.Tensor] = {}

    def grab(activation: torch.Tensor, name: str) -> torch.Tensor:
        if not activation.requires_grad:  # frozen parameters: make the activation itself differentiable
            activation = activation.detach().requires_grad_()
        grabbed[name] = activation
        return activation

    with torch.enable_grad():
        scores = ranker.forward(runs.receiver, [(name, grab) for name in names], context=runs.context)
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
