"""Two-tower rankers: query and document encoded apart by the same model, then compared.

Bi-encoders, SPLADE and ColBERT differ only in what one side's encoding is (a pooled vector, a vocabulary
vector, token vectors) and how two are compared; tokenization, the layout of a pair, the query side computed
once per batch, and the forward pass with hooks on one side are shared here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import BatchEncoding

from ...core.errors import SettingsError
from ..adapters import Stack, base_stack
from ..hooks import Hooks, attached
from ..layout import REGIONS, Encoded, Layout, Place, encodings
from .base import ModelInput, Ranker, Side, count_truncated


class TwoTower(Ranker):
    """Query and document encoded apart (each after its optional text prefix), compared by `compare`.

    Hooks address one side at a time: `side="document"` (the default, what patching changes) or `side="query"`.
    """

    options = Ranker.options | {"query_prefix", "document_prefix"}
    regions: ClassVar[tuple[str, ...]] = tuple(region for region in REGIONS if region != "other")  # one text only
    patchable_sides = ("document",)

    def __init__(self, *args: Any, query_prefix: str = "", document_prefix: str = "", **kwargs: Any):
        for name, prefix in (("query_prefix", query_prefix), ("document_prefix", document_prefix)):
            if not isinstance(prefix, str):
                raise SettingsError(f"{name} must be a string, got {type(prefix).__name__}")
        self.prefixes = {"query": query_prefix, "document": document_prefix}
        super().__init__(*args, **kwargs)

    # --- what each two-tower kind defines ------------------------------------------------------------------
    @abstractmethod
    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None, side: Side = "document") -> Any:
        """One tokenized side's representation (tensors with the batch first, or a tuple of them)."""

    @abstractmethod
    def compare(self, query: Any, document: Any) -> torch.Tensor:
        """One score per pair from the two sides' representations, in float32 or wider."""

    # --- shared -----------------------------------------------------------------------------------------------
    def _stack(self) -> Stack:
        return base_stack(self.model.base_model)

    def encode_side(self, texts: Sequence[str], side: Side) -> BatchEncoding:
        """One side's texts tokenized as the model reads them (its prefix first), padded and truncated."""
        return self._encode([self.prefixes[side] + text for text in texts])

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        query_tokens = self.encode_side(queries, "query")
        tokens = self.encode_side(documents, "document")
        return ModelInput(tokens, query_tokens, count_truncated(query_tokens) + count_truncated(tokens))

    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        prefix = self.prefixes["query" if target == "query" else "document"]
        return Layout([prefix + changed], Place(0, len(prefix), len(prefix) + len(changed)), None)

    def unchanged_side(self, target: str, items: Sequence[tuple[str, str]]) -> list[Encoded]:
        side: Side = "document" if target == "query" else "query"
        texts = [self.prefixes[side] + (document if side == "document" else query) for query, document in items]
        return encodings(self.tokenizer(texts, truncation=True, max_length=self.max_length), self.input_fields)

    def batch(self, changed: BatchEncoding, other: BatchEncoding | None, target: str) -> ModelInput:
        inputs = ModelInput(other, changed) if target == "query" else ModelInput(changed, other)
        return self.place(inputs)

    def context(self, inputs: ModelInput, target: str = "document") -> Any:
        """The query side's representation, which a document pair's two inputs share (nothing for query pairs)."""
        return None if target == "query" else self.embed(self.place(inputs).query_tokens, side="query")

    def run(self, tokens: BatchEncoding, hooks: Hooks | None = None) -> Any:
        """The model's output for one tokenized side, with hooks attached."""
        extra = {"use_cache": False} if self.is_decoder else {}
        with attached(self.sites, hooks):
            return self.model(**tokens.to(self.device), **extra)

    def forward(
        self,
        inputs: ModelInput,
        hooks: Hooks | None = None,
        context: Any = None,
        side: Side = "document",
        query_embeddings: Any = None,
    ) -> torch.Tensor:
        """Score pairs; hooks go to `side`. `context` (or its older name `query_embeddings`) reuses a query
        side computed once by `context(inputs)`."""
        if side not in ("document", "query"):
            raise SettingsError(f"side={side!r} is not valid; use 'document' or 'query'")
        inputs = self.place(inputs)
        query = context if context is not None else query_embeddings
        if query is None:
            query = self.embed(inputs.query_tokens, hooks if side == "query" else None, side="query")
        document = self.embed(inputs.tokens, hooks if side == "document" else None, side="document")
        return self.compare(query, document)
