"""The report's example pairs: which pairs to show, their per-position block effects, and the attention
patterns of the strongest heads on them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..analysis.findings import EXPECTED_SIGN, signed_effects, strongest_first
from ..core.files import plain
from ..models.hooks import caching_hooks
from ..models.names import act_name
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult
from ..specs.axiom import Axiom


def example_rows(scored: pd.DataFrame, lengths: torch.Tensor, axiom: Axiom, count: int, tolerance: float) -> list[int]:
    """Readable, typical example pairs: the shortest of those whose change in the axiom's direction is at least
    the median such change (for no_change axioms: the largest changes)."""
    change = scored["delta"].to_numpy(dtype=float)
    strength = np.abs(change) if axiom.expect == "no_change" else EXPECTED_SIGN[axiom.expect] * change
    moved = np.flatnonzero((np.abs(change) > tolerance) & (strength > 0))
    if not len(moved):
        return []
    strong = moved[strength[moved] >= np.median(strength[moved])]
    return sorted(strong.tolist(), key=lambda row: (int(lengths[row]), -strength[row], row))[:count]


def pair_tokens(ranker: Ranker, pairs: PairSet, row: int) -> tuple[list[str], list[str]]:
    """The baseline and perturbed tokens of one pair's hooked sequence, as the report shows them: a byte-level BPE
    tokenizer's (GPT-2, RoBERTa, Qwen, Llama 3) decoded one by one ("Ġthe" as " the"), others' as they are
    (WordPiece keeps "##ing", so BERT reports are unchanged)."""
    length = int(pairs.tensors["length"][row])
    tokenizer = ranker.tokenizer
    specials = set(tokenizer.all_special_tokens) if byte_level(tokenizer) else None
    baseline, perturbed = (
        [token if specials is None else _shown(tokenizer, token, specials)
         for token in tokenizer.convert_ids_to_tokens(pairs.tensors[f"{which}_input_ids"][row, :length].tolist())]
        for which in ("baseline", "perturbed")
    )
    return baseline, perturbed


def byte_level(tokenizer: Any) -> bool:
    """Does the tokenizer write its tokens as byte-level BPE symbols (a space as "Ġ", a newline as "Ċ")?"""
    if hasattr(tokenizer, "byte_decoder"):  # the slow GPT-2 / RoBERTa / Qwen2 tokenizers
        return True
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False
    try:
        state = json.loads(decoder.__getstate__())
    except (TypeError, ValueError, AttributeError):
        return False
    parts = state.get("decoders", [state]) if state.get("type") == "Sequence" else [state]
    return any(part.get("type") == "ByteLevel" for part in parts)


def _shown(tokenizer: Any, token: str, specials: set[str]) -> str:
    """A byte-level token as text; the token itself when it is special or only part of a character's bytes."""
    if token in specials:
        return token
    text = tokenizer.convert_tokens_to_string([token])
    return token if not text or "\ufffd" in text else text


def blocks_frame(axiom: Axiom, result: PatchResult, rows: list[int], ranker: Ranker, pairs: PairSet) -> pd.DataFrame:
    """Per-position block effects of the example pairs, one row per (example, component, layer, position)."""
    effects = signed_effects(result, axiom.expect)
    frames = []
    for example, row in enumerate(rows):
        baseline, perturbed = pair_tokens(ranker, pairs, row)
        cells = effects[example]  # [component, layer, position]
        components, layers, _ = cells.shape
        for component in range(components):
            for layer in range(layers):
                frames.append(pd.DataFrame({
                    "axiom": axiom.name, "example": example, "pair": row,
                    "component": result.labels["component"][component], "layer": layer,
                    "position": np.arange(len(perturbed)), "token": perturbed, "baseline_token": baseline,
                    "effect": cells[component, layer, : len(perturbed)],
                }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def attention_patterns(ranker: Ranker, pairs: PairSet, row: int, heads: list[tuple[int, int]]) -> list[list[list[float]]]:
    """The perturbed input's attention pattern [query pos, key pos] of each (layer, head)."""
    names = sorted({act_name("pattern", layer) for layer, _ in heads})
    cache: dict[str, torch.Tensor] = {}
    inputs = pairs.model_input("perturbed", ranker, [row])
    with torch.no_grad():
        ranker.forward(inputs, caching_hooks(names, cache), context=ranker.context(inputs, pairs.target))
    length = int(pairs.tensors["length"][row])
    return [
        np.round(cache[act_name("pattern", layer)][0, head, :length, :length].float().cpu().numpy(), 4).tolist()
        for layer, head in heads
    ]


def top_heads(heads: pd.DataFrame, axiom: str, count: int = 2) -> list[dict[str, Any]]:
    """The strongest flagged heads of an axiom, or the strongest heads when none is flagged."""
    rows = heads[heads["axiom"] == axiom]
    flagged = rows[rows["flag"] != ""]
    top = strongest_first(flagged if len(flagged) else rows).head(count)
    return [{key: plain(value) if isinstance(value, np.generic) else value for key, value in row.items()}
            for row in top[["layer", "head", "name", "effect", "flag", "q_value"]].to_dict("records")]
