"""Bi-encoders: query and document encoded apart, pooled, compared by dot product or cosine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModel, BatchEncoding

from ...core.errors import SettingsError
from ..adapters import Stack, encoder_stack
from ..hooks import Hooks, attached
from ..layout import REGIONS, Layout, Place
from ..weights import load_checked
from .base import ModelInput, Ranker, Side, count_truncated, register_kind

Pooling = Literal["cls", "mean"]
Similarity = Literal["dot", "cosine"]

ENCODER_ARCHITECTURES = ("Model", "ForMaskedLM", "ForPreTraining")
"""Suffixes of the `architectures` names a bi-encoder claims: a plain encoder or a pre-training checkpoint."""
UNUSED_OK = (
    "position_ids", "pooler",  # buffers of older checkpoints; the pooler, which a bi-encoder never reads
    "cls", "lm_head", "vocab_transform", "vocab_layer_norm", "vocab_projector",  # BERT, RoBERTa/MPNet, DistilBERT
    "generator_predictions", "generator_lm_head", "discriminator_predictions", "head", "decoder",  # ELECTRA, ModernBERT
)
"""Weight-name components a bi-encoder may leave unused: pre-training heads, poolers and buffers, not a classifier."""
MISSING_OK = ("position_ids", "pooler")
"""Weight-name components a bi-encoder may lack: the pooler is not on its scoring path."""


@register_kind
class BiEncoder(Ranker):
    """Query and document encoded apart, pooled (CLS or mean), compared by dot product or cosine.

    Hooks address one side at a time: `side="document"` (the default, what patching changes) or `side="query"`.
    """

    kind = "bi"
    options = Ranker.options | {"pooling", "similarity"}
    regions = tuple(region for region in REGIONS if region != "other")  # the document holds no other text
    patchable_sides = ("document",)

    def __init__(self, *args: Any, pooling: Pooling = "cls", similarity: Similarity = "dot", **kwargs: Any):
        if pooling not in ("cls", "mean"):
            raise SettingsError(f"pooling={pooling!r} is not supported; use 'cls' or 'mean'")
        if similarity not in ("dot", "cosine"):
            raise SettingsError(f"similarity={similarity!r} is not supported; use 'dot' or 'cosine'")
        self.pooling = pooling
        self.similarity = similarity
        super().__init__(*args, **kwargs)

    @classmethod
    def claims(cls, config: Any, is_sentence_transformers: bool) -> bool:
        """sentence-transformers models, and configs whose `architectures` name a plain (non-T5) encoder.

        Plain encoders are the `*Model` base classes and the pre-training checkpoints `*ForMaskedLM` and
        `*ForPreTraining` (bert-base-uncased, an ELECTRA discriminator): their encoder is what a bi-encoder
        pools. A config without `architectures` is claimed by no kind, so loading it needs an explicit kind=.
        """
        if is_sentence_transformers:
            return True
        architectures = getattr(config, "architectures", None) or []
        plain = any(name.endswith(ENCODER_ARCHITECTURES) for name in architectures)
        return plain and config.model_type != "t5"

    @classmethod
    def load_model(cls, source: str, **load: Any) -> nn.Module:
        """The base encoder; pooler, position-id buffers and pre-training heads may go unused (see UNUSED_OK)."""
        return load_checked(AutoModel, source, cls.kind, unused_ok=UNUSED_OK, missing_ok=MISSING_OK, **load)

    def _stack(self) -> Stack:
        return encoder_stack(self.model)

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        query_tokens = self._encode(list(queries))
        tokens = self._encode(list(documents))
        return ModelInput(tokens, query_tokens, count_truncated(query_tokens) + count_truncated(tokens))

    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        return Layout([changed], Place(0, 0, len(changed)), None)

    def unchanged_side(self, target: str, items: Sequence[tuple[str, str]]) -> BatchEncoding:
        unchanged = [document if target == "query" else query for query, document in items]
        return self.tokenizer(unchanged, truncation=True, max_length=self.max_length)

    def batch(self, changed: BatchEncoding, other: BatchEncoding | None, target: str) -> ModelInput:
        inputs = ModelInput(other, changed) if target == "query" else ModelInput(changed, other)
        return self.place(inputs)

    def context(self, inputs: ModelInput, target: str = "document") -> torch.Tensor | None:
        """The query embeddings, which a document pair's two inputs share (nothing is reused for query pairs)."""
        return None if target == "query" else self.embed(self.place(inputs).query_tokens)

    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None) -> torch.Tensor:
        """Pooled (and, for cosine, unit-length) embeddings of one tokenized side."""
        tokens = tokens.to(self.device)
        with attached(self.sites, hooks):
            hidden = self.model(**tokens).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.similarity == "cosine":
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def forward(
        self,
        inputs: ModelInput,
        hooks: Hooks | None = None,
        context: torch.Tensor | None = None,
        side: Side = "document",
        query_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score pairs; hooks go to `side`. `context` (or its older name `query_embeddings`) reuses a query
        side computed once by `context(inputs)`."""
        if side not in ("document", "query"):
            raise SettingsError(f"side={side!r} is not valid; use 'document' or 'query'")
        inputs = self.place(inputs)
        query = context if context is not None else query_embeddings
        if query is None:
            query = self.embed(inputs.query_tokens, hooks if side == "query" else None)
        document = self.embed(inputs.tokens, hooks if side == "document" else None)
        return (query * document).sum(-1)
