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
from ..folder import ModelFolder
from ..hooks import Hooks
from ..weights import load_checked
from .base import Side, register_kind
from .bi import MISSING_OK
from .two_tower import TwoTower

SpladePooling = Literal["max", "sum"]
SPARSE_MODULES = ("MLMTransformer", "SpladePooling")
ACTIVATIONS = {"relu": 1, "log1p_relu": 2}
"""SpladePooling's activation -> how many times log1p is applied after ReLU (as sentence-transformers does)."""


@register_kind
class SparseEncoder(TwoTower):
    """SPLADE: dot product of max-pooled log(1 + ReLU(MLM logits)) vectors; hooks address the document side."""

    kind = "sparse"
    title = "learned sparse ranker (SPLADE)"
    options = TwoTower.options | {"pooling", "activation"}
    architectures = frozenset({"encoder"})

    def __init__(self, *args: Any, pooling: SpladePooling = "max", activation: str = "relu", **kwargs: Any):
        if pooling not in ("max", "sum"):
            raise SettingsError(f"pooling={pooling!r} is not supported for a sparse ranker; use 'max' or 'sum'")
        if activation not in ACTIVATIONS:
            raise SettingsError(f"activation={activation!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
        super().__init__(*args, **kwargs)
        self.pooling, self.activation = pooling, activation

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """A sentence-transformers SparseEncoder folder (MLMTransformer + SpladePooling) or a `*ForMaskedLM`."""
        if folder.modules is not None:
            return folder.module_types == SPARSE_MODULES
        return any(name.endswith("ForMaskedLM") for name in folder.architectures)

    @classmethod
    def folder_options(cls, folder: ModelFolder) -> dict[str, Any]:
        """SpladePooling's strategy and activation, the prompts and max_seq_length of a SparseEncoder folder."""
        if folder.modules is None:
            return {}
        path = folder.module_path("SpladePooling") or ""
        config = folder.read(f"{path}/config.json" if path else "config.json") or {}
        activation = str(config.get("activation_function", "relu"))
        if activation not in ACTIVATIONS:
            raise ModelError(f"{folder.source}/{path}/config.json: SPLADE activation {activation!r} is not supported; "
                             f"supported: {', '.join(ACTIVATIONS)}")
        options: dict[str, Any] = {"pooling": config.get("pooling_strategy", "max"), "activation": activation,
                                   **folder.prompt_options()}
        if folder.max_seq_length():
            options["max_length"] = folder.max_seq_length()
        return options

    @classmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The encoder with its masked-LM head (which SPLADE reads); a missing head is refused."""
        return load_checked(AutoModelForMaskedLM, folder.source, cls.kind, unused_ok=("position_ids", "pooler"),
                            missing_ok=MISSING_OK, **load)

    def _saturate(self, logits: torch.Tensor) -> torch.Tensor:
        values = torch.relu(logits)
        for _ in range(ACTIVATIONS[self.activation]):
            values = torch.log1p(values)
        return values

    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None, side: Side = "document") -> torch.Tensor:
        """[batch, vocabulary]: log(1 + ReLU(MLM logits)) pooled over the tokens the attention mask keeps.

        For max pooling the logits are maxed first (log1p and ReLU never decrease, so the result is the same
        to the bit) and only the [batch, vocabulary] maximum is saturated, in float32."""
        tokens = tokens.to(self.device)
        logits = self.run(tokens, hooks).logits
        kept = tokens["attention_mask"].unsqueeze(-1) > 0
        wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
        if self.pooling == "max":
            return self._saturate(logits.masked_fill(~kept, float("-inf")).amax(1).to(wide))
        return (self._saturate(logits.to(wide)) * kept).sum(1)

    def compare(self, query: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
        return (query * document).sum(-1)
