"""What a patching run changes: variants (one patched component each), plans (every variant of a target),
the registry of patching targets, and the receiver choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import SettingsError
from ..features.sae import feature_name
from ..models.layout import REGIONS
from ..models.names import act_name, layer_of

DIRECTIONS = ("to_low", "to_baseline", "to_perturbed")
BLOCK_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")


@dataclass(frozen=True)
class Variant:
    """One patched component: the hook `site` at `layer`, one head of hook_z (or all), and one position, or
    every position of one token region (an index into models.layout.REGIONS, which differ pair by pair), or all;
    or one `latent` of the SAE at `site`, at every position (the features target)."""

    layer: int
    site: str
    head: int | None = None
    position: int | None = None
    region: int | None = None
    latent: int | None = None


@dataclass(frozen=True)
class Plan:
    """Every variant of a target with its index into the effect array (after the pair axis)."""

    variants: list[tuple[tuple[int, ...], Variant]]
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    labels: dict[str, list[Any]]


@dataclass(frozen=True)
class Shape:
    """What a plan needs to know of the model and the pairs: layers, heads, the longest input, the regions."""

    n_layers: int
    n_heads: int
    width: int
    regions: tuple[str, ...] = REGIONS
    heads: tuple[tuple[int, int], ...] | None = None
    features: tuple[tuple[str, int], ...] = ()
    """(site, d_sae) of each SAE the features target patches the latents of."""


@dataclass(frozen=True)
class Target:
    """A registered patching target: how it lays out its variants, and what it patches, in a line."""

    name: str
    build: Callable[[Shape], Plan]
    description: str


TARGETS: dict[str, Target] = {}
"""The one patching-target registry: name -> Target, in registration order."""


def target(name: str, description: str) -> Callable[[Callable[[Shape], Plan]], Callable[[Shape], Plan]]:
    """Register `build(shape) -> Plan` as the patching target `name`."""
    def register(build: Callable[[Shape], Plan]) -> Callable[[Shape], Plan]:
        if name in TARGETS:
            raise ValueError(f"patching target {name!r} is registered twice")
        TARGETS[name] = Target(name, build, description)
        return build

    return register


@target("blocks", "resid_pre, attn_out and mlp_out of every layer, one position at a time")
def _blocks(shape: Shape) -> Plan:
    variants = [
        ((c, l, p), Variant(l, act_name(component, l), position=p))
        for c, component in enumerate(BLOCK_COMPONENTS)
        for l in range(shape.n_layers)
        for p in range(shape.width)
    ]
    return Plan(variants, (3, shape.n_layers, shape.width), ("pair", "component", "layer", "position"),
                {"component": list(BLOCK_COMPONENTS)})


@target("regions", "the same components per layer over every token of one region (span, text, other, markup) at once")
def _regions(shape: Shape) -> Plan:
    variants = [
        ((c, l, r), Variant(l, act_name(component, l), region=REGIONS.index(region)))
        for c, component in enumerate(BLOCK_COMPONENTS)
        for l in range(shape.n_layers)
        for r, region in enumerate(shape.regions)
    ]
    return Plan(variants, (3, shape.n_layers, len(shape.regions)), ("pair", "component", "layer", "region"),
                {"component": list(BLOCK_COMPONENTS), "region": list(shape.regions)})


@target("heads", "each attention head's output (hook_z) at every position")
def _heads(shape: Shape) -> Plan:
    variants = [((l, h), Variant(l, act_name("z", l), head=h)) for l in range(shape.n_layers) for h in range(shape.n_heads)]
    return Plan(variants, (shape.n_layers, shape.n_heads), ("pair", "layer", "head"), {})


@target("heads_by_pos", "the given heads=[(layer, head), ...], one position at a time")
def _heads_by_pos(shape: Shape) -> Plan:
    if not shape.heads:
        raise SettingsError("target='heads_by_pos' needs heads=[(layer, head), ...]")
    for layer, head in shape.heads:
        if not (0 <= layer < shape.n_layers and 0 <= head < shape.n_heads):
            raise SettingsError(
                f"head ({layer}, {head}) does not exist: the model has {shape.n_layers} layers x {shape.n_heads} heads")
    variants = [
        ((i, p), Variant(l, act_name("z", l), head=h, position=p))
        for i, (l, h) in enumerate(shape.heads)
        for p in range(shape.width)
    ]
    return Plan(variants, (len(shape.heads), shape.width), ("pair", "head", "position"),
                {"head": [f"{l}.{h}" for l, h in shape.heads]})


@target("mlp", "each layer's MLP output (hook_mlp_out) at every position")
def _mlp(shape: Shape) -> Plan:
    variants = [((l,), Variant(l, act_name("mlp_out", l))) for l in range(shape.n_layers)]
    return Plan(variants, (shape.n_layers,), ("pair", "layer"), {})


@target("features", "each latent of the given SAEs at every position, through the spliced SAE (error term kept)")
def _features(shape: Shape) -> Plan:
    if not shape.features:
        raise SettingsError("target='features' needs saes=[...]: the sparse autoencoders whose latents to patch")
    variants: list[tuple[tuple[int, ...], Variant]] = []
    for site, d_sae in shape.features:
        layer = patched_layer(site, shape.n_layers)
        start = len(variants)
        variants += [((start + j,), Variant(layer, site, latent=j)) for j in range(d_sae)]
    return Plan(variants, (len(variants),), ("pair", "feature"),
                {"feature": [feature_name(variant.site, variant.latent) for _, variant in variants]})


def patched_layer(site: str, n_layers: int) -> int:
    """The first layer a patch at `site` can change: its own, or for a block's output (hook_resid_post) the next
    block, whose input it is, so that exact patching replays the block that wrote it too."""
    layer = layer_of(site) or 0
    moves = site.startswith("blocks.") and site.endswith(".hook_resid_post") and layer + 1 < n_layers
    return layer + 1 if moves else layer  # a decoder's blocks are not the replayed stack's: left where they are


def applied_at(variant: Variant) -> str:
    """The hook a latent variant's change is added at: its site, or the next block's input (hook_resid_pre), the same
    tensor, when patched_layer moved it there."""
    if (variant.site.startswith("blocks.") and variant.site.endswith(".hook_resid_post")
            and variant.layer == (layer_of(variant.site) or 0) + 1):
        return variant.site.replace(f"blocks.{variant.layer - 1}.hook_resid_post", f"blocks.{variant.layer}.hook_resid_pre")
    return variant.site


def plan(target: str, n_layers: int, n_heads: int, width: int, heads: list[tuple[int, int]] | None = None,
         regions: tuple[str, ...] = REGIONS, features: tuple[tuple[str, int], ...] = ()) -> Plan:
    """The variants of `target` for sequences up to `width` tokens (`regions`: those the "regions" target uses;
    `features`: (site, d_sae) of the SAEs the "features" target patches)."""
    if target not in TARGETS:
        raise SettingsError(f"target={target!r} is not valid; use one of {', '.join(TARGETS)}")
    return TARGETS[target].build(Shape(n_layers, n_heads, width, regions, tuple(heads) if heads else None,
                                       tuple(features)))


def variants_plan(variants: list[Variant]) -> Plan:
    """A plan of hand-picked variants: effects [pair, variant]."""
    return Plan([((i,), variant) for i, variant in enumerate(variants)], (len(variants),), ("pair", "variant"),
                {"variant": [str(variant) for variant in variants]})


def receiver_is_baseline(direction: str, baseline_score: torch.Tensor, perturbed_score: torch.Tensor) -> torch.Tensor:
    """The receiver choice, in one place: per pair, is the baseline the run that receives the patch?
    "to_low" picks the lower-scoring input (ties: the baseline); the others fix the receiver."""
    if direction == "to_low":
        return baseline_score <= perturbed_score
    return torch.full_like(baseline_score, direction == "to_baseline", dtype=torch.bool)


def positions_of(variant: Variant, regions: torch.Tensor) -> slice | int | torch.Tensor:
    """The positions a variant patches in one pair whose region map is `regions` [pos]."""
    if variant.region is not None:
        return regions == variant.region
    return slice(None) if variant.position is None else variant.position
