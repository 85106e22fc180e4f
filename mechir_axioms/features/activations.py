"""A ranker's activations at one site over a data set's texts: the rows an SAE trains and is evaluated on.

The texts are read as the ranker reads them: a cross-encoder (or an LLM reranker, a monoT5) sees each query with
its passage, so its rows come from the joint inputs; a two-tower ranker encodes each side alone, so its rows
come from the passages and, separately, from the distinct queries. Padding positions are left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..models.hooks import caching_hooks
from ..models.rankers.base import Ranker
from .sae import flattened


def _kept(activation: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows [tokens, width] of an activation [batch, position, ...] at its unpadded positions."""
    flat = flattened(activation)
    if mask is not None and tuple(mask.shape) == tuple(flat.shape[:2]):
        return flat[mask.to(flat.device).bool()]
    return flat.reshape(-1, flat.shape[-1])


def site_rows(ranker: Ranker, site: str, queries: Sequence[str], documents: Sequence[str],
              batch_size: int = 16, progress: bool = False, desc: str = "activations") -> Iterator[torch.Tensor]:
    """Batches of rows [tokens, d_in] (float32, on the CPU) of `site` over the pairs, in the pairs' order."""
    two_tower = ranker.tokenize(queries[:1], documents[:1]).query_tokens is not None
    sides: list[tuple[str, Sequence[str], Sequence[str]]] = [("document", queries, documents)]
    if two_tower:
        distinct = list(dict.fromkeys(queries))
        sides.append(("query", distinct, [""] * len(distinct)))
    total = sum(len(texts) for _, texts, _ in sides)
    with torch.inference_mode(), tqdm(total=total, desc=desc, unit="text", disable=not progress) as bar:
        for side, side_queries, side_documents in sides:
            for start in range(0, len(side_queries), batch_size):
                inputs = ranker.tokenize(side_queries[start : start + batch_size],
                                         side_documents[start : start + batch_size])
                cache: dict[str, torch.Tensor] = {}
                options = {"side": side} if two_tower else {}
                ranker.forward(inputs, caching_hooks([site], cache), **options)
                tokens = inputs.query_tokens if side == "query" else inputs.tokens
                yield _kept(cache[site], tokens.get("attention_mask")).float().cpu()
                bar.update(len(side_queries[start : start + batch_size]))
