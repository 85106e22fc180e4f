"""Cross-encoders: a `*ForSequenceClassification` model over the joint query-document sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from ...core.errors import ModelError
from ..adapters import Stack, encoder_stack
from ..hooks import Hooks, attached
from ..layout import Layout, Place
from ..weights import load_checked
from .base import ModelInput, Ranker, count_truncated, register_kind


@register_kind
class CrossEncoder(Ranker):
    """A `*ForSequenceClassification` model over `[CLS] query [SEP] document [SEP]`.

    One logit is the score; with two labels the score is logit(relevant) - logit(not relevant).
    """

    kind = "cross"

    @classmethod
    def claims(cls, config: Any, is_sentence_transformers: bool) -> bool:
        """Configs whose `architectures` name a `*ForSequenceClassification` model (not sentence-transformers)."""
        architectures = getattr(config, "architectures", None) or []
        return not is_sentence_transformers and any(name.endswith("ForSequenceClassification") for name in architectures)

    @classmethod
    def load_model(cls, source: str, **load: Any) -> nn.Module:
        """The classifier; refused when its head (or any weight) is missing or it has neither 1 nor 2 labels."""
        model = load_checked(AutoModelForSequenceClassification, source, cls.kind, labels=True, **load)
        labels = model.config.num_labels
        if labels not in (1, 2):
            raise ModelError(
                f"{source}: a cross-encoder needs 1 or 2 labels (one relevance logit, or not relevant/relevant), "
                f"but config.json and the checkpoint give {labels}"
            )
        return model

    def _stack(self) -> Stack:
        labels = self.model.config.num_labels
        if labels not in (1, 2):
            raise ModelError(f"{self.name}: a cross-encoder needs 1 or 2 labels, this model has {labels}")
        return encoder_stack(self.model.base_model)

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        tokens = self._encode(list(queries), list(documents), truncation="only_second")
        return ModelInput(tokens, truncated=count_truncated(tokens))

    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        pair = [changed, document] if target == "query" else [query, changed]
        index = 0 if target == "query" else 1
        return Layout(pair, Place(index, 0, len(changed)), Place(1 - index, 0, len(pair[1 - index])))

    def forward(self, inputs: ModelInput, hooks: Hooks | None = None, context: Any = None) -> torch.Tensor:
        inputs = self.place(inputs)
        with attached(self.sites, hooks):
            logits = self.model(**inputs.tokens).logits
        return logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
