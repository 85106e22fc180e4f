"""Feature patching: the latents of SAEs at their sites, patched as components.

Patching latent j of the SAE at a site replaces, in the receiving run, latent j by the donor's at every aligned
position and keeps the receiver's error term and every other latent. Through the spliced SAE (features.splice)
that changes the site's activation by (donor's - receiver's latent j) x W_dec[j] and by nothing else, so the
engines add exactly that change to the plain activation: the spliced ranker with its latents unedited is the
plain ranker, bit for bit, and a latent that is the same on both inputs of a pair carries nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import SettingsError
from ..features.sae import SparseAutoencoder, flattened
from ..features.splice import check_saes
from ..models.hooks import HookFn
from ..models.rankers import Ranker
from .plan import Variant, applied_at


def sae_sites(ranker: Ranker, saes: Sequence[SparseAutoencoder] | None) -> tuple[tuple[str, int], ...]:
    """(site, d_sae) of each SAE, after checking them against the ranker (one SAE per site, d_in = the site's
    width)."""
    if not saes:
        raise SettingsError("target='features' needs saes=[...]: the sparse autoencoders whose latents to patch "
                            "(features.load_sae, or `mechir-axioms sae train`)")
    check_saes(ranker, saes)
    return tuple((sae.hook_name, sae.config.d_sae) for sae in saes)


def latent_changes(saes: Sequence[SparseAutoencoder], donor_cache: dict[str, torch.Tensor],
                   receiver_cache: dict[str, torch.Tensor], regions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per SAE site, the donor's minus the receiver's latents [pair, position, d_sae], zero at padding (region -1)
    where the site runs over the pairs' tokens."""
    changes = {}
    for sae in saes:
        donor, receiver = flattened(donor_cache[sae.hook_name]), flattened(receiver_cache[sae.hook_name])
        change = sae.encode(donor) - sae.encode(receiver)
        if tuple(change.shape[:2]) == tuple(regions.shape):
            change = change * (regions >= 0).unsqueeze(-1).to(change.dtype)
        changes[sae.hook_name] = change
    return changes


def carries_something(changes: dict[str, torch.Tensor], index: torch.Tensor, variants: list[Variant]) -> list[bool]:
    """Per (pair index, latent variant): does the latent differ between donor and receiver anywhere?"""
    result = torch.zeros(len(variants), dtype=torch.bool, device=index.device)
    for site, change in changes.items():
        rows = [row for row, variant in enumerate(variants) if variant.site == site]
        if not rows:
            continue
        moved = (change != 0).any(1)  # [pair, d_sae]
        chosen = index.new_tensor(rows)
        result[chosen] = moved[index[chosen], index.new_tensor([variants[row].latent for row in rows])]
    return result.cpu().tolist()


def adding_hooks(saes: Sequence[SparseAutoencoder], changes: dict[str, torch.Tensor], index: torch.Tensor,
                 variants: list[Variant]) -> list[tuple[str, HookFn]]:
    """Hooks that add, in row r, the change of variant r's latent through its SAE's decoder at variant r's site
    (or the next block's input, see plan.applied_at; rows patching another site get nothing there)."""
    hooks = []
    for sae in saes:
        site = sae.hook_name
        mine = index.new_tensor([variant.site == site for variant in variants], dtype=torch.bool)
        if not bool(mine.any()):
            continue
        latents = index.new_tensor([variant.latent if variant.site == site else 0 for variant in variants])
        change = changes[site]
        coefficient = change[index, :, latents] * mine.unsqueeze(1).to(change.dtype)  # [row, position]
        rows = sae.W_dec.detach()[latents].to(device=change.device, dtype=change.dtype)  # [row, d_in]
        addition = coefficient.unsqueeze(-1) * rows.unsqueeze(1)  # [row, position, d_in], once per pass

        def add(activation: torch.Tensor, name: str, addition=addition) -> torch.Tensor:
            values = flattened(activation)
            return (values + addition.to(values.dtype)).reshape(activation.shape)

        hooks.append((applied_at(next(v for v in variants if v.site == site)), add))
    return hooks


def latent_products(sae: SparseAutoencoder, change: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Attribution per latent and position: the latent's change x the score's gradient along its decoder direction,
    [pair, position, d_sae]."""
    gradient = flattened(gradient)
    return change * (gradient @ sae._weights(gradient)["W_dec"].detach().T)
