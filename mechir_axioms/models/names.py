"""Canonical hook names, from one helper (like TransformerLens's `utils.get_act_name`).

Every module that addresses an activation by name builds it here, so the naming scheme lives in one place.
"""

from __future__ import annotations

BLOCK_SITES = ("resid_pre", "attn_out", "mlp_out", "resid_post", "cross_attn_out")
"""Per-layer activations named `blocks.{l}.hook_{site}`."""
ATTENTION_SITES = ("q", "k", "v", "z", "pattern")
"""Per-layer attention activations named `blocks.{l}.attn.hook_{site}` (and `cross_attn.` for T5's decoder's z and
pattern)."""


def act_name(site: str, layer: int | None = None, prefix: str = "", cross: bool = False) -> str:
    """The canonical name of an activation: `act_name("z", 3)` is `blocks.3.attn.hook_z`.

    site: "embed", one of BLOCK_SITES, or one of ATTENTION_SITES; layer: the block index (None for embed);
    prefix: "decoder." for a T5 decoder; cross: the decoder's cross-attention (for "z" and "pattern").
    """
    if site == "embed":
        if layer is not None:
            raise ValueError("hook_embed has no layer")
        return f"{prefix}hook_embed"
    if layer is None:
        raise ValueError(f"site {site!r} needs a layer")
    if site in ATTENTION_SITES:
        return f"{prefix}blocks.{layer}.{'cross_attn' if cross else 'attn'}.hook_{site}"
    if site in BLOCK_SITES:
        return f"{prefix}blocks.{layer}.hook_{site}"
    raise ValueError(f"unknown site {site!r}; sites are embed, {', '.join(BLOCK_SITES + ATTENTION_SITES)}")


def layer_of(name: str) -> int | None:
    """The block index of a canonical name (None for hook_embed)."""
    parts = name.split(".")
    return int(parts[parts.index("blocks") + 1]) if "blocks" in parts else None
