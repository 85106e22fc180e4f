"""Pointwise LLM rerankers: a decoder `*ForCausalLM` that answers "yes" or "no" to a relevance prompt.

The prompt is Qwen3-Reranker's by default and is tokenized as its reference code does: the prefix, the
body (instruction, query, document) and the suffix are tokenized apart without special tokens and joined,
the body is truncated to fit, and a batch is left-padded. The score is logit("yes") - logit("no") at the
last position, the log-odds of the probability the reference reports.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ...core.errors import SettingsError
from ..adapters import Stack, base_stack
from ..folder import ModelFolder
from ..hooks import Hooks, attached
from ..layout import Encoded, Layout, encodings, template_place
from ..weights import load_checked
from .base import ModelInput, Ranker, at_last_kept, register_kind

QWEN3_RERANKER_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
)
"""(prefix, body, suffix) of Qwen3-Reranker's documented prompt."""
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _template(template: Any) -> tuple[str, str, str]:
    """(prefix, body, suffix) from a 3-tuple or a body string; the body must hold {query} and {document}."""
    parts = (("", template, "") if isinstance(template, str) else tuple(template)
             if isinstance(template, (tuple, list)) else None)
    if parts is None or len(parts) != 3 or not all(isinstance(part, str) for part in parts):
        raise SettingsError("template must be a body string or a (prefix, body, suffix) tuple of strings")
    prefix, body, suffix = parts
    missing = [field for field in ("{query}", "{document}") if field not in body]
    if missing:
        raise SettingsError(f"template body {body!r} lacks {' and '.join(missing)}; it may also use {{instruction}}")
    for name, part in (("prefix", prefix), ("suffix", suffix)):
        if "{query}" in part or "{document}" in part:
            raise SettingsError(f"template {name} {part!r} must not hold {{query}} or {{document}}; put them in the body")
    try:
        body.format(query="", document="", instruction="")
    except (KeyError, IndexError, ValueError) as error:
        raise SettingsError(f"template body {body!r} has a field other than query, document, instruction: {error}") from error
    return prefix, body, suffix


@register_kind
class LLMReranker(Ranker):
    """logit(yes) - logit(no) at the last position of a prompt (Qwen3-Reranker's by default)."""

    kind = "llm"
    title = "pointwise LLM reranker"
    published_max_length = 8192  # Qwen3-Reranker's reference max_length
    options = Ranker.options | {"template", "instruction", "tokens"}
    architectures = frozenset({"decoder"})

    def __init__(self, *args: Any, template: Any = QWEN3_RERANKER_TEMPLATE, instruction: str = DEFAULT_INSTRUCTION,
                 tokens: Sequence[str] = ("yes", "no"), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.prefix, self.body, self.suffix = _template(template)
        if not isinstance(instruction, str):
            raise SettingsError(f"instruction must be a string, got {type(instruction).__name__}")
        self.instruction = instruction
        chat_tokens = ("<|im_start|>", "<|im_end|>")
        if template is QWEN3_RERANKER_TEMPLATE and not all(token in self.tokenizer.get_vocab() for token in chat_tokens):
            warnings.warn(f"{self.name}: the default prompt is Qwen3-Reranker's, but <|im_start|> and <|im_end|> are "
                          "not tokens of this tokenizer, so they are read as plain text; pass template= with this "
                          "model's own prompt (its BOS token, if it needs one, at the start of the prefix)",
                          stacklevel=3)
        self.prefix_ids = self.tokenizer.encode(self.prefix, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(self.suffix, add_special_tokens=False)
        if isinstance(tokens, str) or len(tokens) != 2:
            raise SettingsError(f"tokens must be two strings (relevant, not relevant), got {tokens!r}")
        self.label_ids = torch.tensor([self._single_token(word) for word in tokens])
        if self.max_length <= len(self.prefix_ids) + len(self.suffix_ids):
            raise SettingsError(
                f"max_length={self.max_length} leaves no room for a query and document after the template's "
                f"{len(self.prefix_ids) + len(self.suffix_ids)} prompt tokens"
            )

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise SettingsError(f"answer token {word!r} is {len(ids)} tokens {pieces} for this tokenizer; tokens= "
                                "needs two words that are one token each")
        return ids[0]

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """Configs whose `architectures` name a `*ForCausalLM` model."""
        return folder.modules is None and any(name.endswith("ForCausalLM") for name in folder.architectures)

    @classmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The decoder with its language-model head; refused when any weight is missing."""
        return load_checked(AutoModelForCausalLM, folder.source, cls.kind, **load)

    def _stack(self) -> Stack:
        return base_stack(self.model.base_model)

    def _body(self, query: str, document: str) -> str:
        return self.body.format(instruction=self.instruction, query=query, document=document)

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> ModelInput:
        """Prefix + truncated body + suffix, left-padded, as Qwen3-Reranker's reference tokenizes."""
        bodies = [self._body(query, document) for query, document in zip(queries, documents, strict=True)]
        budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        encoded = self.tokenizer(bodies, add_special_tokens=False)["input_ids"]
        rows = [self.prefix_ids + list(ids[:budget]) + self.suffix_ids for ids in encoded]  # the body's tail goes
        tokens = self.tokenizer.pad({"input_ids": rows}, padding=True, padding_side="left", return_tensors="pt")
        return ModelInput(tokens.to(self.device), truncated=sum(len(ids) > budget for ids in encoded))

    def encode_untruncated(self, arguments: Sequence[Sequence[str]]) -> list[Encoded]:
        """Each body tokenized with offsets between the prefix's and the suffix's tokens (which come from no text)."""
        batch = self.tokenizer([body for body, in arguments], add_special_tokens=False, return_offsets_mapping=True)
        return [body.with_tokens(0, self.prefix_ids).with_tokens(len(self.prefix_ids) + len(body.ids), self.suffix_ids)
                for body in encodings(batch, self.input_fields)]

    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        texts = {"query": query, "document": document, target: changed, "instruction": self.instruction}
        other = "query" if target == "document" else "document"
        return Layout([self.body.format(**texts)], template_place(self.body, texts, target),
                      template_place(self.body, texts, other))

    def forward(self, inputs: ModelInput, hooks: Hooks | None = None, context: Any = None) -> torch.Tensor:
        """logit(yes) - logit(no) at each row's last attended position (the last one under left padding).

        Only the two answer rows of the language-model head are applied, in float32 (bfloat16 logits are 0.125
        apart near 20, which would blur the difference patching divides by), with Gemma's final soft-capping."""
        inputs = self.place(inputs)
        tokens = {key: inputs.tokens[key] for key in ("input_ids", "attention_mask")}
        with attached(self.sites, hooks):
            hidden = self.model.base_model(**tokens, use_cache=False).last_hidden_state
        final = at_last_kept(hidden, tokens["attention_mask"])
        wide = torch.float64 if final.dtype == torch.float64 else torch.float32
        head = self.model.get_output_embeddings()
        rows = self.label_ids.to(final.device)
        logits = final.to(wide) @ head.weight[rows].to(wide).T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[rows].to(wide)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits[:, 0] - logits[:, 1]
