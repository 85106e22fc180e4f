"""SAEs spliced into a ranker's forward pass: the activation at each SAE's site becomes decode(encode(x)) + error.

The error, x - decode(encode(x)), is kept as its own term, so the spliced ranker scores as the plain one (up to
float rounding) while an edit of the latents (patching, ablating, steering a feature) changes only what the
SAE explains. Sites are the ranker's canonical hook names; an SAE of `hook_z` reads the heads flattened, as
SAELens's reshape_activations "hook_z" does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..models.hooks import HookFn, attached
from ..models.rankers.base import Ranker
from .files import SaeError
from .sae import SparseAutoencoder, flattened

LatentEdit = Callable[[SparseAutoencoder, torch.Tensor], torch.Tensor]
"""edit(sae, latents [batch, position, d_sae]) -> latents: what a splice changes in the SAE's code."""
_PROBE = ("what is a query", "a passage about a query")


def site_width(ranker: Ranker, hook_name: str) -> int:
    """The width an SAE at `hook_name` reads: the activation's last dimension (heads flattened for hook_z)."""
    if hook_name.endswith("hook_pattern"):
        raise SaeError(f"site {hook_name!r} is an attention pattern; an SAE reads an activation such as "
                       "blocks.3.hook_resid_post or blocks.3.attn.hook_z")
    if hook_name not in ranker.sites:
        shown = ", ".join(name for name in ranker.hook_names if ".hook_resid" in name)[:200]
        raise SaeError(f"site {hook_name!r} is not a hook of {ranker.name} (a {ranker.kind} ranker); its sites "
                       f"include {shown}, ... (see ranker.hook_names)")
    _, cache = ranker.run_with_cache([_PROBE[0]], [_PROBE[1]], names=[hook_name])
    activation = cache[hook_name]
    heads = ranker.sites[hook_name].n_heads
    return int(activation.shape[-1] * (heads if heads and activation.shape[-2] == heads else 1))


def check_saes(ranker: Ranker, saes: Sequence[SparseAutoencoder]) -> None:
    """Refuse SAEs whose site the ranker lacks, whose d_in is not the site's width, or that share a site."""
    seen: set[str] = set()
    for sae in saes:
        site = sae.hook_name
        if site in seen:
            raise SaeError(f"two SAEs read site {site}; splice one SAE per site")
        seen.add(site)
        width = site_width(ranker, site)
        if width != sae.config.d_in:
            raise SaeError(f"the SAE at {site} has d_in {sae.config.d_in}, but {ranker.name}'s {site} is {width} "
                           "wide: it was trained on another model or site")


def splice_hooks(saes: Sequence[SparseAutoencoder], edit: LatentEdit | None = None) -> list[tuple[str, HookFn]]:
    """Hooks that route each SAE's site through it, keeping the error term; `edit` changes the latents first."""

    def hook_for(sae: SparseAutoencoder) -> HookFn:
        def spliced(activation: torch.Tensor, name: str) -> torch.Tensor:
            flat = flattened(activation)
            latents = sae.encode(flat)
            edited = edit(sae, latents) if edit is not None else latents
            # decode(edited) + error, with error = x - decode(latents): written as x plus the change of the code
            # through the decoder, so unchanged latents give x itself, bit for bit, and a one-latent edit adds only
            # that latent's row (no difference of two whole reconstructions, which rounds in low precision)
            change = (edited - latents) @ sae._weights(flat)["W_dec"]
            return (flat + change).reshape(activation.shape)

        return spliced

    return [(sae.hook_name, hook_for(sae)) for sae in saes]


def reconstruction_hooks(saes: Sequence[SparseAutoencoder]) -> list[tuple[str, HookFn]]:
    """Hooks that replace each SAE's site by its reconstruction alone (the error dropped): what splicing costs the
    ranker when the SAE is all there is."""

    def hook_for(sae: SparseAutoencoder) -> HookFn:
        def reconstructed(activation: torch.Tensor, name: str) -> torch.Tensor:
            flat = flattened(activation)
            return sae(flat).reshape(activation.shape)

        return reconstructed

    return [(sae.hook_name, hook_for(sae)) for sae in saes]


@contextmanager
def spliced(ranker: Ranker, saes: Sequence[SparseAutoencoder], edit: LatentEdit | None = None,
            describe: dict[str, Any] | None = None) -> Iterator[None]:
    """Within the block every run of `ranker` (score, patching, both towers of a two-tower ranker) goes through
    the SAEs, each at its site; leaving it (also by an exception) restores the plain model. The ranker's
    fingerprint names the SAEs meanwhile (and `describe`, what the edit does), so a checkpoint of the spliced
    model is not taken for the plain one."""
    check_saes(ranker, saes)
    for sae in saes:
        sae.to(ranker.device)  # once, rather than a copy of its weights at every hooked call
    facts = {"saes": [{"site": sae.hook_name, "d_sae": sae.config.d_sae, "digest": sae_digest(sae)} for sae in saes]}
    if edit is not None:
        facts["edit"] = describe if describe is not None else getattr(edit, "__name__", "edit")
    with attached(ranker.sites, splice_hooks(saes, edit)):
        ranker.interventions.append(facts)
        try:
            yield
        finally:
            ranker.interventions.remove(facts)


def sae_digest(sae: SparseAutoencoder) -> str:
    """A short digest of an SAE's weights and site, to tell SAEs apart in fingerprints and results."""
    digest = hashlib.sha256(sae.hook_name.encode())
    for _, value in sorted(sae.named_parameters()):
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def spliced_scores(ranker: Ranker, saes: Sequence[SparseAutoencoder], queries: Sequence[str],
                   documents: Sequence[str], edit: LatentEdit | None = None) -> torch.Tensor:
    """Scores of the pairs with the SAEs spliced in (checked against the ranker first)."""
    with spliced(ranker, saes, edit):
        return ranker.score(queries, documents)
