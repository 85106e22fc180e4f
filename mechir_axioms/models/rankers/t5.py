"""monoT5: an encoder-decoder that answers "true" or "false" to a relevance prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import T5ForConditionalGeneration

from ..adapters import Stack, t5_stack
from ..folder import ModelFolder
from ..hooks import Hooks, Site, attached
from ..layout import Layout, template_place
from ..weights import load_checked
from .base import ModelInput, Ranker, count_truncated, register_kind


@register_kind
class MonoT5(Ranker):
    """monoT5: logit("true") - logit("false") at the first decoder step for `Query: q Document: d Relevant:`.

    Encoder hook names are `blocks.{l}...`; decoder ones are `decoder.blocks.{l}...`, plus cross-attention.
    """

    kind = "t5"
    title = "monoT5 ranker (encoder-decoder)"
    architectures = frozenset({"encoder-decoder"})
    published_max_length = 512  # monoT5's input length; T5 itself has no positional limit
    prompt = "Query: {query} Document: {document} Relevant:"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        true_id, false_id = (self.tokenizer.encode(word, add_special_tokens=False)[0] for word in ("true", "false"))
        self.label_ids = torch.tensor([true_id, false_id])

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        return folder.modules is None and folder.config.model_type == "t5"

    @classmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The encoder-decoder with its LM head; refused when any weight (a decoder, an untied head) is missing."""
        return load_checked(T5ForConditionalGeneration, folder.source, cls.kind, **load)

    def _stack(self) -> Stack:
        return t5_stack(self.model.encoder)

    def _sites(self) -> dict[str, Site]:
        return {**self.stack.sites(), **t5_stack(self.model.decoder).sites("decoder.")}

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        prompts = [self.prompt.format(query=q, document=d) for q, d in zip(queries, documents, strict=True)]
        tokens = self._encode(prompts)
        return ModelInput(tokens, truncated=count_truncated(tokens))

    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        texts = {"query": query, "document": document, target: changed}
        other = "query" if target == "document" else "document"
        return Layout([self.prompt.format(**texts)], template_place(self.prompt, texts, target),
                      template_place(self.prompt, texts, other))

    def forward(self, inputs: ModelInput, hooks: Hooks | None = None, context: Any = None) -> torch.Tensor:
        inputs = self.place(inputs)
        start = torch.full((len(inputs), 1), self.model.config.decoder_start_token_id, device=self.device)
        with attached(self.sites, hooks):
            logits = self.model(**inputs.tokens, decoder_input_ids=start).logits
        pair = logits[:, 0, self.label_ids.to(self.device)]
        return pair[:, 0] - pair[:, 1]
