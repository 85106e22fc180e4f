"""Bi-encoders: query and document encoded apart (an encoder, or a decoder LLM embedder), pooled, compared."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModel, BatchEncoding

from ...core.errors import ModelError, SettingsError
from ..folder import ModelFolder
from ..hooks import Hooks
from ..weights import load_checked
from .base import Side, at_last_kept, register_kind
from .two_tower import TwoTower

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
class BiEncoder(TwoTower):
    """Query and document encoded apart, pooled (CLS, mean, or the last token for decoders), compared by dot
    product or cosine. An optional prompt (Qwen3-Embedding's instruction, E5's "query: ") precedes each side.
    """

    kind = "bi"
    title = "bi-encoder ranker"
    options = TwoTower.options | {"pooling", "similarity"}
    architectures = frozenset({"encoder", "decoder"})

    def __init__(self, *args: Any, pooling: Pooling | None = None, similarity: Similarity = "dot", **kwargs: Any):
        if pooling is not None and pooling not in POOLINGS:
            raise SettingsError(f"pooling={pooling!r} is not supported; use one of {', '.join(POOLINGS)}")
        if similarity not in ("dot", "cosine"):
            raise SettingsError(f"similarity={similarity!r} is not supported; use 'dot' or 'cosine'")
        self.similarity = similarity
        super().__init__(*args, **kwargs)
        self.pooling = pooling or ("last" if self.is_decoder else "cls")

    @property
    def reads_last_token(self) -> bool:
        return self.pooling == "last"

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
        options: dict[str, Any] = {"pooling": "cls", **folder.prompt_options()}
        pooling = folder.module_path("Pooling")
        if pooling is not None:
            options["pooling"] = _pooling(folder, pooling)
        cosine = folder.module_path("Normalize") is not None or folder.st_config.get("similarity_fn_name") == "cosine"
        options["similarity"] = "cosine" if cosine else "dot"
        if folder.max_seq_length():
            options["max_length"] = folder.max_seq_length()
        return options

    @classmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The base encoder; pooler, position-id buffers and pre-training heads may go unused (see UNUSED_OK)."""
        return load_checked(AutoModel, folder.source, cls.kind, unused_ok=UNUSED_OK, missing_ok=MISSING_OK, **load)

    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None, side: Side = "document") -> torch.Tensor:
        """Pooled (and, for cosine, unit-length) embeddings of one tokenized side, in float32 or wider."""
        tokens = tokens.to(self.device)
        hidden = self.run(tokens, hooks).last_hidden_state
        hidden = hidden if hidden.dtype == torch.float64 else hidden.float()  # bfloat16 would blur the scores
        mask = tokens["attention_mask"]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            pooled = at_last_kept(hidden, mask)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.similarity == "cosine":
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def compare(self, query: torch.Tensor, document: torch.Tensor) -> torch.Tensor:
        return (query * document).sum(-1)
