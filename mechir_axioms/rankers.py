"""Rankers: bi-encoders, cross-encoders and monoT5, scoring exactly as their Hugging Face models do.

Every ranker tokenizes pairs into a `ModelInput`, runs one real HF forward pass per batch with hooks
attached by canonical name, and turns the output into one relevance score per pair.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from .adapters import Stack, encoder_stack, t5_stack
from .hooks import Hooks, Site, attached, caching_hooks, hook_items, use_hooked_attention

Pooling = Literal["cls", "mean"]
Similarity = Literal["dot", "cosine"]
Side = Literal["document", "query"]


@dataclass
class ModelInput:
    """Tokenized pairs. `tokens` is the hooked sequence: the document side of a bi-encoder, else the joint input."""

    tokens: BatchEncoding
    query_tokens: BatchEncoding | None = None
    truncated: int = 0  # how many texts were cut at max_length

    def __len__(self) -> int:
        return int(self.tokens["input_ids"].shape[0])


def check_pairs(queries: Sequence[str], documents: Sequence[str]) -> None:
    """Raise ValueError unless queries and documents are equally long, non-empty lists of strings."""
    for label, texts in (("queries", queries), ("documents", documents)):
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError(f"{label} must be a list of strings, got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError(f"{label} is empty; give at least one query-document pair")
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise ValueError(f"{label}[{bad}] is {type(texts[bad]).__name__}, not a string")
    if len(queries) != len(documents):
        raise ValueError(
            f"got {len(queries)} queries and {len(documents)} documents; they must pair up one to one"
        )


def count_truncated(encoding: BatchEncoding) -> int:
    """How many sequences of a truncating fast-tokenizer call lost tokens."""
    return sum(bool(item.overflowing) for item in encoding.encodings or [])


class Ranker(ABC):
    """A neural ranker with TransformerLens-style hook points over its real Hugging Face model."""

    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        batch_size: int = 32,
    ):
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        use_hooked_attention(self.model)
        self.stack = self._stack()
        self.sites: dict[str, Site] = self._sites()

    # --- what each kind defines -------------------------------------------------------------
    @abstractmethod
    def _stack(self) -> Stack:
        """The stack that patching addresses (the encoder of the hooked sequence)."""

    def _sites(self) -> dict[str, Site]:
        return self.stack.sites()

    @abstractmethod
    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        """Tokenize pairs with dynamic padding and the original model's truncation."""

    @abstractmethod
    def forward(self, inputs: ModelInput, hooks: Hooks | None = None) -> torch.Tensor:
        """One forward pass over a tokenized batch with hooks attached; returns one score per pair."""

    # --- shared behaviour ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.stack.n_layers

    @property
    def n_heads(self) -> int:
        return self.stack.n_heads

    @property
    def d_head(self) -> int:
        return self.stack.d_head

    @property
    def hook_names(self) -> list[str]:
        """Every canonical hook name this ranker exposes."""
        return list(self.sites)

    def _encode(self, *texts: Sequence[str], truncation: bool | str = True) -> BatchEncoding:
        return self.tokenizer(
            *texts,
            padding=True,
            truncation=truncation,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)

    def score(self, queries: Sequence[str], documents: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        """Score query-document pairs, batched by similar length with padding to each batch's longest input."""
        check_pairs(queries, documents)
        size = batch_size or self.batch_size
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(documents[i]))
        scores = torch.empty(len(queries))
        truncated = 0
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                inputs = self.tokenize([queries[i] for i in chunk], [documents[i] for i in chunk])
                truncated += inputs.truncated
                scores[chunk] = self.forward(inputs).float().cpu()
        self._warn_truncated(truncated, len(queries))
        return scores

    def run_with_hooks(
        self, queries: Sequence[str], documents: Sequence[str], hooks: Hooks, **options: Any
    ) -> torch.Tensor:
        """Score one batch while hooks read or replace activations by canonical name."""
        inputs = self._tokenize_checked(queries, documents)
        with torch.no_grad():
            return self.forward(inputs, hooks, **options)

    def run_with_cache(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        names: Sequence[str] | None = None,
        hooks: Hooks | None = None,
        **options: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Score one batch and return (scores, {name: activation}); all hook points when names is None."""
        inputs = self._tokenize_checked(queries, documents)
        cache: dict[str, torch.Tensor] = {}
        wanted = list(self.sites) if names is None else list(names)
        with torch.no_grad():
            scores = self.forward(inputs, hook_items(hooks) + caching_hooks(wanted, cache), **options)
        return scores, cache

    def _tokenize_checked(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        check_pairs(queries, documents)
        inputs = self.tokenize(queries, documents)
        self._warn_truncated(inputs.truncated, len(inputs))
        return inputs

    def _warn_truncated(self, truncated: int, total: int) -> None:
        if truncated:
            warnings.warn(
                f"{truncated} of {total} inputs were longer than {self.max_length} tokens and were truncated, "
                f"as {self.name} truncates them",
                stacklevel=3,
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, layers={self.n_layers}, heads={self.n_heads}, "
            f"max_length={self.max_length})"
        )


class BiEncoder(Ranker):
    """Query and document encoded apart, pooled (CLS or mean), compared by dot product or cosine.

    Hooks address one side at a time: `side="document"` (the default, what patching changes) or `side="query"`.
    """

    kind = "bi"

    def __init__(self, *args: Any, pooling: Pooling = "cls", similarity: Similarity = "dot", **kwargs: Any):
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r} is not supported; use 'cls' or 'mean'")
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity={similarity!r} is not supported; use 'dot' or 'cosine'")
        self.pooling = pooling
        self.similarity = similarity
        super().__init__(*args, **kwargs)

    def _stack(self) -> Stack:
        return encoder_stack(self.model)

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        query_tokens = self._encode(list(queries))
        tokens = self._encode(list(documents))
        return ModelInput(tokens, query_tokens, count_truncated(query_tokens) + count_truncated(tokens))

    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None) -> torch.Tensor:
        """Pooled (and, for cosine, unit-length) embeddings of one tokenized side."""
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
        side: Side = "document",
        query_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score pairs; hooks go to `side`. Pass `query_embeddings` to reuse a query side computed once."""
        if side not in ("document", "query"):
            raise ValueError(f"side={side!r} is not valid; use 'document' or 'query'")
        if query_embeddings is None:
            query_embeddings = self.embed(inputs.query_tokens, hooks if side == "query" else None)
        document_embeddings = self.embed(inputs.tokens, hooks if side == "document" else None)
        return (query_embeddings * document_embeddings).sum(-1)


class CrossEncoder(Ranker):
    """A `*ForSequenceClassification` model over `[CLS] query [SEP] document [SEP]`.

    One logit is the score; with two labels the score is logit(relevant) - logit(not relevant).
    """

    kind = "cross"

    def _stack(self) -> Stack:
        labels = self.model.config.num_labels
        if labels not in (1, 2):
            raise ValueError(f"{self.name}: a cross-encoder needs 1 or 2 labels, this model has {labels}")
        return encoder_stack(self.model.base_model)

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        tokens = self._encode(list(queries), list(documents), truncation="only_second")
        return ModelInput(tokens, truncated=count_truncated(tokens))

    def forward(self, inputs: ModelInput, hooks: Hooks | None = None) -> torch.Tensor:
        with attached(self.sites, hooks):
            logits = self.model(**inputs.tokens).logits
        return logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]


class MonoT5(Ranker):
    """monoT5: logit("true") - logit("false") at the first decoder step for `Query: q Document: d Relevant:`.

    Encoder hook names are `blocks.{l}...`; decoder ones are `decoder.blocks.{l}...`, plus cross-attention.
    """

    kind = "t5"
    prompt = "Query: {query} Document: {document} Relevant:"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        true_id, false_id = (self.tokenizer.encode(word, add_special_tokens=False)[0] for word in ("true", "false"))
        self.label_ids = torch.tensor([true_id, false_id])

    def _stack(self) -> Stack:
        return t5_stack(self.model.encoder)

    def _sites(self) -> dict[str, Site]:
        return {**self.stack.sites(), **t5_stack(self.model.decoder).sites("decoder.")}

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        prompts = [self.prompt.format(query=q, document=d) for q, d in zip(queries, documents, strict=True)]
        tokens = self._encode(prompts)
        return ModelInput(tokens, truncated=count_truncated(tokens))

    def forward(self, inputs: ModelInput, hooks: Hooks | None = None) -> torch.Tensor:
        batch = len(inputs)
        start = torch.full((batch, 1), self.model.config.decoder_start_token_id, device=self.device)
        with attached(self.sites, hooks):
            logits = self.model(**inputs.tokens, decoder_input_ids=start).logits
        pair = logits[:, 0, self.label_ids.to(self.device)]
        return pair[:, 0] - pair[:, 1]
