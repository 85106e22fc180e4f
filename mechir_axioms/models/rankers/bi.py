"""Bi-encoders: query and document encoded apart (an encoder, or a decoder LLM embedder), pooled, compared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModel, BatchEncoding

from ...core.errors import ModelError, SettingsError
from ..adapters import Stack, base_stack
from ..folder import ModelFolder
from ..hooks import Hooks, attached
from ..layout import REGIONS, Encoded, Layout, Place, encodings
from ..weights import load_checked
from .base import ModelInput, Ranker, Side, count_truncated, register_kind

Pooling = Literal["cls", "mean", "last"]
Similarity = Literal["dot", "cosine"]
POOLINGS = ("cls", "mean", "last")
BI_MODULES = {"Transformer", "Pooling", "Normalize"}
"""The sentence-transformers modules a bi-encoder folder may chain."""
_ST_POOLING = {"cls_token": "cls", "cls": "cls", "mean_tokens": "mean", "mean": "mean", "lasttoken": "last"}

ENCODER_ARCHITECTURES = ("Model", "ForPreTraining")
"""Suffixes of the `architectures` names a bi-encoder claims: a plain encoder or decoder, or an ELECTRA-style
pre-training checkpoint (a `*ForMaskedLM` checkpoint is claimed by the SPLADE kind, "sparse")."""
UNUSED_OK = (
    "position_ids", "pooler",  # buffers of older checkpoints; the pooler, which a bi-encoder never reads
    "cls", "lm_head", "vocab_transform", "vocab_layer_norm", "vocab_projector",  # BERT, RoBERTa/MPNet, DistilBERT
    "generator_predictions", "generator_lm_head", "discriminator_predictions", "head", "decoder",  # ELECTRA, ModernBERT
)
"""Weight-name components a bi-encoder may leave unused: pre-training heads, poolers and buffers, not a classifier."""
MISSING_OK = ("position_ids", "pooler")
"""Weight-name components a bi-encoder may lack: the pooler is not on its scoring path."""


def _pooling(folder: ModelFolder, path: str) -> str:
    """Pooling from a sentence-transformers Pooling config (the old boolean or the new string form)."""
    config = folder.read(f"{path}/config.json") or {}
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [key[len("pooling_mode_") :] for key, on in config.items() if key.startswith("pooling_mode_") and on]
        mode = modes[0] if len(modes) == 1 else "+".join(modes)
    if mode not in _ST_POOLING:
        raise ModelError(f"{folder.source}/{path}/config.json: pooling {mode!r} is not supported; use cls, mean or "
                         "lasttoken pooling")
    if config.get("include_prompt") is False and _ST_POOLING[mode] == "mean":
        raise ModelError(f"{folder.source}/{path}/config.json: mean pooling without the prompt tokens "
                         "(include_prompt false) is not supported")
    return _ST_POOLING[mode]


@register_kind
class BiEncoder(Ranker):
    """Query and document encoded apart, pooled (CLS, mean, or the last token for decoders), compared by dot
    product or cosine. An optional prompt (Qwen3-Embedding's instruction, E5's "query: ") precedes each side.

    Hooks address one side at a time: `side="document"` (the default, what patching changes) or `side="query"`.
    """

    kind = "bi"
    title = "bi-encoder"
    options = Ranker.options | {"pooling", "similarity", "query_prefix", "document_prefix"}
    regions = tuple(region for region in REGIONS if region != "other")  # the document holds no other text
    patchable_sides = ("document",)
    architectures = frozenset({"encoder", "decoder"})

    def __init__(self, *args: Any, pooling: Pooling | None = None, similarity: Similarity = "dot",
                 query_prefix: str = "", document_prefix: str = "", **kwargs: Any):
        if pooling is not None and pooling not in POOLINGS:
            raise SettingsError(f"pooling={pooling!r} is not supported; use one of {', '.join(POOLINGS)}")
        if similarity not in ("dot", "cosine"):
            raise SettingsError(f"similarity={similarity!r} is not supported; use 'dot' or 'cosine'")
        for name, prefix in (("query_prefix", query_prefix), ("document_prefix", document_prefix)):
            if not isinstance(prefix, str):
                raise SettingsError(f"{name} must be a string, got {type(prefix).__name__}")
        self.similarity = similarity
        self.prefixes = {"query": query_prefix, "document": document_prefix}
        super().__init__(*args, **kwargs)
        self.pooling = pooling or ("last" if self.is_decoder else "cls")

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """sentence-transformers folders of Transformer, Pooling and Normalize modules, and configs whose
        `architectures` name a plain encoder or decoder (`*Model`) or an ELECTRA-style `*ForPreTraining`.

        A config without `architectures` is claimed by no kind, so loading it needs an explicit kind=.
        """
        if folder.modules is not None:
            return set(folder.module_types or ()) <= BI_MODULES and "Transformer" in (folder.module_types or ())
        plain = any(name.endswith(ENCODER_ARCHITECTURES) for name in folder.architectures)
        return plain and folder.config.model_type != "t5"

    @classmethod
    def folder_options(cls, folder: ModelFolder) -> dict[str, Any]:
        """Pooling, normalisation, prompts and max_seq_length as a sentence-transformers folder declares them."""
        if folder.modules is None:
            return {}
        options: dict[str, Any] = {"pooling": "cls"}
        pooling = folder.module_path("Pooling")
        if pooling is not None:
            options["pooling"] = _pooling(folder, pooling)
        cosine = folder.module_path("Normalize") is not None or folder.st_config.get("similarity_fn_name") == "cosine"
        options["similarity"] = "cosine" if cosine else "dot"
        prompts = folder.st_config.get("prompts") or {}
        for side in ("query", "document"):
            if prompts.get(side):
                options[f"{side}_prefix"] = prompts[side]
        prefix = f"{folder.subfolder}/" if folder.subfolder else ""
        max_length = (folder.read(f"{prefix}sentence_bert_config.json") or {}).get("max_seq_length")
        if max_length:
            options["max_length"] = int(max_length)
        return options

    @classmethod
    def load_model(cls, source: str, **load: Any) -> nn.Module:
        """The base encoder; pooler, position-id buffers and pre-training heads may go unused (see UNUSED_OK)."""
        return load_checked(AutoModel, source, cls.kind, unused_ok=UNUSED_OK, missing_ok=MISSING_OK, **load)

    def _stack(self) -> Stack:
        return base_stack(self.model)

    def encode_side(self, texts: Sequence[str], side: Side) -> BatchEncoding:
        """One side's texts tokenized as the model reads them (its prompt first), padded and truncated."""
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

    def hidden(self, tokens: BatchEncoding, hooks: Hooks | None = None) -> torch.Tensor:
        """The last hidden states of one tokenized side, with hooks attached."""
        extra = {"use_cache": False} if self.is_decoder else {}
        with attached(self.sites, hooks):
            return self.model(**tokens.to(self.device), **extra).last_hidden_state

    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None, side: Side = "document") -> Any:
        """Pooled (and, for cosine, unit-length) embeddings of one tokenized side."""
        tokens = tokens.to(self.device)
        hidden = self.hidden(tokens, hooks)
        mask = tokens["attention_mask"]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            pooled = hidden[torch.arange(len(hidden), device=hidden.device), last_attended(mask)]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.similarity == "cosine":
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def compare(self, query: Any, document: Any) -> torch.Tensor:
        """One score per pair from the two sides' representations."""
        return (query * document).sum(-1)

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


def last_attended(mask: torch.Tensor) -> torch.Tensor:
    """Per row, the position of the last token the attention mask keeps: the last token under right padding,
    position -1 under left padding, and still the last real token when a masked span leaves a hole."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (positions * (mask > 0)).argmax(1)
