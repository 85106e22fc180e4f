"""Cross-encoders: a `*ForSequenceClassification` model over the joint query-document sequence (an encoder,
or a decoder such as RankLlama, which scores the last non-pad token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from ...core.errors import ModelError, SettingsError
from ..adapters import Stack, base_stack
from ..folder import ModelFolder
from ..hooks import Hooks, attached
from ..layout import Layout, Place, template_place
from ..weights import load_checked
from .base import ModelInput, Ranker, at_last_kept, count_truncated, register_kind


@register_kind
class CrossEncoder(Ranker):
    """A `*ForSequenceClassification` model over the tokenizer's pair of (query, document), each filled into
    its template: `[CLS] query [SEP] document [SEP]` for encoders, RankLlama's `query: {query}` and
    `document: {document}</s>` for decoders (whose HF head reads the last non-pad token).

    One logit is the score; with two labels the score is logit(relevant) - logit(not relevant).
    """

    kind = "cross"
    title = "cross-encoder ranker"
    options = Ranker.options | {"query_template", "document_template"}
    architectures = frozenset({"encoder", "decoder"})

    def __init__(self, *args: Any, query_template: str | None = None, document_template: str | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        eos = self.tokenizer.eos_token or ""
        defaults = ("query: {query}", "document: {document}" + eos) if self.is_decoder else ("{query}", "{document}")
        self.templates = {"query": query_template or defaults[0], "document": document_template or defaults[1]}
        for side, template in self.templates.items():
            if not isinstance(template, str) or "{" + side + "}" not in template:
                raise SettingsError(f"{side}_template must be a string holding {{{side}}}, got {template!r}")
        ends_with_eos = bool(eos) and self.templates["document"].endswith(eos)
        self.closing_ids = self.tokenizer.encode(eos, add_special_tokens=False) if ends_with_eos else []
        """Token ids the document template ends with (RankLlama's </s>): kept when a long document is cut."""

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """Configs whose `architectures` name a `*ForSequenceClassification` model (not sentence-transformers)."""
        return folder.modules is None and any(name.endswith("ForSequenceClassification") for name in folder.architectures)

    @classmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The classifier; refused when its head (or any weight) is missing or it has neither 1 nor 2 labels."""
        model = load_checked(AutoModelForSequenceClassification, folder.source, cls.kind, labels=True, **load)
        labels = model.config.num_labels
        if labels not in (1, 2):
            raise ModelError(
                f"{folder.source}: a cross-encoder needs 1 or 2 labels (one relevance logit, or not relevant/relevant), "
                f"but config.json and the checkpoint give {labels}"
            )
        return model

    def _stack(self) -> Stack:
        labels = self.model.config.num_labels
        if labels not in (1, 2):
            raise ModelError(f"{self.name}: a cross-encoder needs 1 or 2 labels, this model has {labels}")
        return base_stack(self.model.base_model)

    def _fill(self, side: str, text: str) -> str:
        return self.templates[side].format(**{side: text})

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        """The (query, document) pairs in their templates, the document cut to fit; a template's closing EOS
        is cut off before and put back after truncation, as RankLlama's collator appends it."""
        filled_queries = [self._fill("query", query) for query in queries]
        filled_documents = [self._fill("document", document) for document in documents]
        if not self.closing_ids:
            tokens = self._encode(filled_queries, filled_documents, truncation="only_second")
            return ModelInput(tokens, truncated=count_truncated(tokens))
        closing = len(self.tokenizer.eos_token)
        encoded = self.tokenizer(filled_queries, [text[:-closing] for text in filled_documents],
                                 truncation="only_second", max_length=self.max_length - len(self.closing_ids))
        rows = {key: [list(row) + ([1] * len(self.closing_ids) if key == "attention_mask" else
                                   self.closing_ids if key == "input_ids" else [row[-1]] * len(self.closing_ids))
                      for row in encoded[key]]
                for key in self.input_fields if key in encoded}
        tokens = self.tokenizer.pad(rows, padding=True, return_tensors="pt")
        return ModelInput(tokens.to(self.device), truncated=count_truncated(encoded))

    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        texts = {"query": query, "document": document, target: changed}
        pair = [self._fill(side, texts[side]) for side in ("query", "document")]

        def place(side: str) -> Place:
            inner = template_place(self.templates[side], texts, side)
            return Place(0 if side == "query" else 1, inner.start, inner.end)

        other = "document" if target == "query" else "query"
        return Layout(pair, place(target), place(other))

    def forward(self, inputs: ModelInput, hooks: Hooks | None = None, context: Any = None) -> torch.Tensor:
        """The classifier's logit(s). A decoder's head is applied to the last token the attention mask keeps,
        which is where HF's head reads an unpadded pair (RankLlama's closing </s>); HF's own batched choice goes
        by config.pad_token_id, which misreads a batch whose pad id is EOS or is not the tokenizer's pad."""
        inputs = self.place(inputs)
        with attached(self.sites, hooks):
            if not self.is_decoder:
                logits = self.model(**inputs.tokens).logits
            else:
                hidden = self.model.base_model(**inputs.tokens, use_cache=False).last_hidden_state
                logits = self.model.score(at_last_kept(hidden, inputs.tokens["attention_mask"]))
        return logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
