"""Learned sparse retrievers (SPLADE): each side is a vocabulary-sized vector read off the masked-LM head.

A side's vector is the max (or sum) over its tokens of log(1 + ReLU(MLM logits)), with padding and masked
tokens left out; the score is the dot product of the two vectors, as sentence-transformers' SparseEncoder
(MLMTransformer plus SpladePooling) computes it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModelForMaskedLM, BatchEncoding

from ...core.errors import ModelError, SettingsError
from ..adapters import Stack, base_stack
from ..folder import ModelFolder
from ..hooks import Hooks, attached
from ..weights import load_checked
from .base import Ranker, Side, register_kind
from .bi import MISSING_OK, BiEncoder

SpladePooling = Literal["max", "sum"]
SPARSE_MODULES = ("MLMTransformer", "SpladePooling")


@register_kind
class SparseEncoder(BiEncoder):
    """SPLADE: dot product of max-pooled log(1 + ReLU(MLM logits)) vectors; hooks address the document side."""

    kind = "sparse"
    title = "learned sparse (SPLADE)"
    options = Ranker.options | {"pooling", "query_prefix", "document_prefix"}
    architectures = frozenset({"encoder"})

    def __init__(self, *args: Any, pooling: SpladePooling = "max", query_prefix: str = "", document_prefix: str = "",
                 **kwargs: Any):
        if pooling not in ("max", "sum"):
            raise SettingsError(f"pooling={pooling!r} is not supported for a sparse ranker; use 'max' or 'sum'")
        super().__init__(*args, query_prefix=query_prefix, document_prefix=document_prefix, **kwargs)
        self.pooling = pooling

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """A sentence-transformers SparseEncoder folder (MLMTransformer + SpladePooling) or a `*ForMaskedLM`."""
        if folder.modules is not None:
            return folder.module_types == SPARSE_MODULES
        return any(name.endswith("ForMaskedLM") for name in folder.architectures)

    @classmethod
    def folder_options(cls, folder: ModelFolder) -> dict[str, Any]:
        """SpladePooling's strategy, the prompts and max_seq_length of a SparseEncoder folder."""
        if folder.modules is None:
            return {}
        path = folder.module_path("SpladePooling") or ""
        config = folder.read(f"{path}/config.json" if path else "config.json") or {}
        activation = str(config.get("activation_function", "relu")).lower()
        if "relu" not in activation:
            raise ModelError(f"{folder.source}/{path}/config.json: SPLADE activation {activation!r} is not supported; "
                             "only relu (log(1 + ReLU(logits)))")
        options: dict[str, Any] = {"pooling": config.get("pooling_strategy", "max")}
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
        """The encoder with its masked-LM head (which SPLADE reads); a missing head is refused."""
        return load_checked(AutoModelForMaskedLM, source, cls.kind, unused_ok=("position_ids", "pooler"),
                            missing_ok=MISSING_OK, **load)

    def _stack(self) -> Stack:
        return base_stack(self.model.base_model)

    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None, side: Side = "document") -> torch.Tensor:
        """[batch, vocabulary]: log(1 + ReLU(MLM logits)) pooled over the tokens the attention mask keeps."""
        tokens = tokens.to(self.device)
        with attached(self.sites, hooks):
            logits = self.model(**tokens).logits
        values = torch.log1p(torch.relu(logits)) * tokens["attention_mask"].unsqueeze(-1).to(logits.dtype)
        return values.amax(1) if self.pooling == "max" else values.sum(1)

    def compare(self, query: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
        return (query * document).sum(-1)
