"""`intervene`: change heads (models.head_edits) and SAE features for the duration of a `with` block.

A feature is (sae, latent). Through the spliced SAE (features.splice), `ablate` sets the latent to 0 at every
position, `scale` multiplies it by `factor`, and `steer` adds `factor` to it at every position (the latent's
decoder direction times factor, added to the site); the error term and every other latent stay as they are.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch

from ..core.errors import SettingsError
from ..models import head_edits
from ..models.head_edits import HeadLike, Intervention
from ..models.rankers.base import Ranker
from .sae import SparseAutoencoder, feature_name
from .splice import LatentEdit, sae_digest, spliced

FEATURE_OPS = ("ablate", "scale", "steer")
Feature = tuple[SparseAutoencoder, int]


def check_features(features: Sequence[Feature], op: str, factor: float | None) -> None:
    """Refuse an unknown op, a factor it does not take, and latents the SAEs lack, in one sentence each."""
    if op not in FEATURE_OPS:
        raise SettingsError(f"op={op!r} is not valid for features; use one of {', '.join(FEATURE_OPS)}")
    if op in ("scale", "steer") and (factor is None or isinstance(factor, bool) or not isinstance(factor, (int, float))
                                     or factor != factor or abs(factor) == float("inf")):
        raise SettingsError(f"op={op!r} on features needs a finite factor (e.g. factor=2), not {factor!r}")
    if op == "ablate" and factor is not None:
        raise SettingsError(f"factor={factor!r} applies to ops scale and steer only; leave it out for ablate")
    for item in features:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], SparseAutoencoder)):
            raise SettingsError(f"feature {item!r} is not valid; give (sae, latent) pairs")
        sae, latent = item
        try:
            number = operator.index(latent) if not isinstance(latent, bool) else None
        except TypeError:
            number = None
        if number is None:
            raise SettingsError(f"latent {latent!r} is not valid; give a whole number (the latent's index)")
        if not 0 <= number < sae.config.d_sae:
            raise SettingsError(f"latent {number} is not a latent of the SAE at {sae.hook_name} (0 to "
                                f"{sae.config.d_sae - 1})")


def parse_features(text: str | Sequence[str], saes: Sequence[SparseAutoencoder]) -> list[Feature]:
    """Features named as the features step names them ("3.resid_post:17"), by site and latent
    ("blocks.3.hook_resid_post:17"), or by latent alone ("17") when there is one SAE; one sentence per bad name."""
    items = [item.strip() for item in (text.split(",") if isinstance(text, str) else text) if item.strip()]
    if not items:
        raise SettingsError("--features names no feature; write SITE:LATENT[,...] (e.g. 3.resid_post:17)")
    if not saes:
        raise SettingsError(f"features {','.join(items)} need the SAEs they belong to (--saes DIR[,DIR])")
    by_name = {}
    for sae in saes:
        short = feature_name(sae.hook_name, 0).rsplit(":", 1)[0]
        by_name[short] = by_name[sae.hook_name] = sae
    chosen = []
    for item in items:
        site, colon, latent = item.rpartition(":")
        if not colon and len(saes) == 1:
            site = saes[0].hook_name
        sae = by_name.get(site)
        if sae is None or not latent.isdigit():
            raise SettingsError(f"feature {item!r} is not valid; write SITE:LATENT with a site of the SAEs given "
                                f"({', '.join(feature_name(s.hook_name, 0).rsplit(':', 1)[0] for s in saes)}), "
                                "e.g. 3.resid_post:17")
        chosen.append((sae, int(latent)))
    return chosen


def feature_edit(features: Sequence[Feature], op: str, factor: float | None) -> LatentEdit:
    """The latent edit of `op` on `features`, for features.splice."""
    chosen: dict[int, list[int]] = {}
    for sae, latent in features:
        chosen.setdefault(id(sae), []).append(operator.index(latent))

    def edit(sae: SparseAutoencoder, latents: torch.Tensor) -> torch.Tensor:
        mine = chosen.get(id(sae))
        if not mine:
            return latents
        edited = latents.clone()
        if op == "ablate":
            edited[..., mine] = 0
        elif op == "scale":
            edited[..., mine] = latents[..., mine] * factor
        else:
            edited[..., mine] = latents[..., mine] + factor
        return edited

    return edit


def describe_features(features: Sequence[Feature], op: str, factor: float | None) -> dict[str, Any]:
    """Plain JSON facts of a feature intervention: op, features by name, factor, and the SAEs' digests."""
    facts: dict[str, Any] = {"op": op, "features": [feature_name(sae.hook_name, operator.index(latent))
                                                     for sae, latent in features]}
    if factor is not None:
        facts["factor"] = float(factor)
    facts["saes"] = {sae.hook_name: sae_digest(sae) for sae in dict.fromkeys(sae for sae, _ in features)}
    return facts


def feature_label(features: Sequence[Feature], op: str, factor: float | None) -> str:
    """One line in words: "ablate features 3.resid_post:17, 3.resid_post:40", "steer feature 3.resid_post:17 by 4"."""
    names = [feature_name(sae.hook_name, operator.index(latent)) for sae, latent in features]
    by = f" by {factor:g}" if op in ("scale", "steer") else ""
    return f"{op} feature{'s' if len(names) > 1 else ''} {', '.join(names)}{by}"


@contextmanager
def intervene(ranker: Ranker, heads: str | Sequence[HeadLike] = (), op: str = "ablate", factor: float | None = None,
              reference: tuple[Sequence[str], Sequence[str]] | None = None,
              steer: Mapping[str, torch.Tensor] | None = None, batch_size: int | None = None,
              features: Sequence[Feature] = ()) -> Iterator[Intervention | dict[str, Any]]:
    """Within the block, `ranker` runs with the heads' outputs changed by `op` (see models.head_edits.intervene),
    and `features` [(sae, latent), ...] changed by `op` through their spliced SAEs: ablate, scale by `factor`, or
    steer (add `factor` to the latent at every position). Leaving the block restores the plain model. It yields the
    heads' Intervention, or for features alone their facts (op, features, factor, SAE digests)."""
    features = list(features)
    if not features:
        with head_edits.intervene(ranker, heads, op, factor, reference, steer, batch_size) as intervention:
            yield intervention
        return
    check_features(features, op, factor)
    if heads and op == "steer":
        raise SettingsError("op='steer' applies to features only; intervene on heads and features in two blocks")
    saes = list(dict.fromkeys(sae for sae, _ in features))
    facts = describe_features(features, op, factor)
    with ExitStack() as stack:
        intervention = stack.enter_context(
            head_edits.intervene(ranker, heads, op, factor, reference, steer, batch_size)
            if heads or steer else nullcontext(None))
        stack.enter_context(spliced(ranker, saes, feature_edit(features, op, factor), facts))
        yield intervention if intervention is not None else facts
