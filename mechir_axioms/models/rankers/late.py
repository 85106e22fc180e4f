"""Late interaction (ColBERT): token vectors per side, scored by MaxSim.

Each token's last hidden state goes through the checkpoint's linear projection and is L2-normalised; the
score is the sum over query vectors of the best cosine with any document vector. Inputs are built as PyLate
builds them: a marker token ("[Q] " or "[D] ") after [CLS], queries padded to `query_length` with [MASK]
(expansion tokens that are encoded, scored, and by default not attended to), and documents whose padding
and punctuation (the skiplist) are left out of the scoring but not out of the encoder's input.

Two checkpoint layouts are read: PyLate's (a sentence-transformers folder with a Dense module) and the
Stanford `colbert-ir` one (`HF_ColBERT` in config.json, `bert.*` and `linear.weight` in one weights file,
settings in artifact.metadata). Stanford's tokenizer writes its marker over the "." of ". " + text at
position 1, which gives the same tokens as PyLate's insertion after [CLS].
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModel, BatchEncoding

from ...core.errors import ModelError, SettingsError
from ..files import model_file
from ..folder import ModelFolder
from ..hooks import Hooks
from ..layout import Encoded, encodings
from ..weights import load_checked
from .base import Ranker, Side, register_kind
from .bi import MISSING_OK, UNUSED_OK
from .two_tower import TwoTower

LATE_MODULES = ("Transformer", "Dense")
PROJECTION = "colbert_projection"
"""The name under which the checkpoint's projection is attached to the HF model (so it moves and casts with it)."""
_PYLATE_OPTIONS = {
    "query_prefix": "query_marker", "document_prefix": "document_marker", "query_length": "query_length",
    "document_length": "max_length", "do_query_expansion": "query_expansion",
    "attend_to_expansion_tokens": "attend_to_expansion", "skiplist_words": "skiplist",
}
"""config_sentence_transformers.json key of a PyLate checkpoint -> this kind's option."""


STANFORD_ARCHITECTURE = "HF_ColBERT"
_STANFORD_OPTIONS = {
    "query_token_id": "query_marker", "doc_token_id": "document_marker", "query_maxlen": "query_length",
    "doc_maxlen": "max_length", "attend_to_mask_tokens": "attend_to_expansion",
}
"""artifact.metadata key of a Stanford ColBERT checkpoint -> this kind's option."""


def _projection(folder: ModelFolder, path: str) -> nn.Linear:
    """The projection as a bias-free nn.Linear: PyLate's Dense module in `path`, or (path "") the `linear`
    weights of a Stanford checkpoint."""
    source = folder.source
    config = (folder.read(f"{path}/config.json") or {}) if path else {}
    activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
    if not str(activation).endswith("Identity") or config.get("use_residual"):
        raise ModelError(f"{source}/{path}/config.json: a ColBERT projection with activation {activation!r} or a "
                         "residual is not supported; PyLate's default is a plain linear map")
    prefix = f"{path}/" if path else ""
    weights_file = model_file(source, f"{prefix}model.safetensors") or model_file(source, f"{prefix}pytorch_model.bin")
    if weights_file is None:
        raise ModelError(f"{source}/{path}: the ColBERT projection has no weights (model.safetensors)")
    if weights_file.endswith(".safetensors"):
        with safe_open(weights_file, framework="pt") as weights:  # read the projection only, not the encoder
            names = set(weights.keys())
            weight = weights.get_tensor("linear.weight") if "linear.weight" in names else None
    else:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        names, weight = set(state), state.get("linear.weight")
    if weight is None:
        shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ModelError(f"{weights_file}: expected the ColBERT projection's 'linear.weight', found {shown}")
    if config.get("bias") or "linear.bias" in names:
        raise ModelError(f"{weights_file}: a ColBERT projection with a bias is not supported")
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight.data.copy_(weight)
    return linear


@register_kind
class LateInteraction(TwoTower):
    """ColBERT: sum over query tokens of the max over document tokens of the cosine of projected token vectors.

    Hooks address the document encoder, as for a bi-encoder; the query side is computed once per batch.
    """

    kind = "late"
    title = "late-interaction ranker (ColBERT)"
    options = Ranker.options | set(_PYLATE_OPTIONS.values())
    architectures = frozenset({"encoder"})

    def __init__(self, *args: Any, query_marker: str = "[Q] ", document_marker: str = "[D] ", query_length: int = 32,
                 query_expansion: bool = True, attend_to_expansion: bool = False,
                 skiplist: Sequence[str] = tuple(string.punctuation), **kwargs: Any):
        """The document length is `max_length` (the checkpoint's document_length or doc_maxlen by default)."""
        super().__init__(*args, **kwargs)
        if PROJECTION not in dict(self.model.named_children()):
            raise ModelError(f"{self.name}: a late-interaction ranker needs its projection; load it with load_ranker")
        self.markers = {"query": self._marker_id(query_marker), "document": self._marker_id(document_marker)}
        for name, value in (("query_length", query_length), ("max_length", self.max_length)):
            if not isinstance(value, int) or value < 3:
                raise SettingsError(f"{name} must be an integer of at least 3 (CLS, marker, SEP), got {value!r}")
        self.query_length = query_length
        self.query_expansion, self.attend_to_expansion = bool(query_expansion), bool(attend_to_expansion)
        skip = {word: self.tokenizer.convert_tokens_to_ids(word) for word in skiplist}
        self.skiplist = torch.tensor(sorted({i for i in skip.values() if i != self.tokenizer.unk_token_id}),
                                     dtype=torch.long)

    def _marker_id(self, marker: str) -> int:
        ids = self.tokenizer.convert_tokens_to_ids([marker])
        if not ids or ids[0] is None or ids[0] == self.tokenizer.unk_token_id:
            raise SettingsError(f"marker {marker!r} is not a token of this tokenizer; ColBERT checkpoints add their "
                                "query and document markers to the vocabulary")
        return ids[0]

    @classmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """A PyLate folder (a Transformer and a Dense projection, with ColBERT's query/document settings) or a
        Stanford ColBERT checkpoint (`HF_ColBERT`)."""
        if folder.modules is None:
            return STANFORD_ARCHITECTURE in folder.architectures
        declared = "query_length" in folder.st_config or folder.st_config.get("similarity_fn_name") == "MaxSim"
        return folder.module_types == LATE_MODULES and declared

    @classmethod
    def folder_options(cls, folder: ModelFolder) -> dict[str, Any]:
        """The markers, lengths, query expansion and skiplist the checkpoint declares (PyLate's
        config_sentence_transformers.json, or Stanford's artifact.metadata)."""
        if folder.modules is not None:
            return {option: folder.st_config[key] for key, option in _PYLATE_OPTIONS.items() if key in folder.st_config}
        metadata = folder.read("artifact.metadata") or {}
        options = {option: metadata[key] for key, option in _STANFORD_OPTIONS.items() if key in metadata}
        if "mask_punctuation" in metadata:
            options["skiplist"] = list(string.punctuation) if metadata["mask_punctuation"] else []
        if metadata.get("similarity", "cosine") != "cosine":
            raise ModelError(f"{folder.source}/artifact.metadata: similarity {metadata['similarity']!r} is not "
                             "supported; ColBERT's MaxSim here is over cosines")
        return options

    @classmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The encoder, with the checkpoint's projection attached as a child module."""
        dense = folder.module_path("Dense") if folder.modules is not None else ""
        if dense is None:
            raise ModelError(f"{folder.source}: a late-interaction (ColBERT) model needs a PyLate folder with a "
                             "Dense module")
        unused = UNUSED_OK if dense else (*UNUSED_OK, "linear")  # Stanford keeps the projection beside the encoder
        model = load_checked(AutoModel, folder.source, cls.kind, unused_ok=unused, missing_ok=MISSING_OK, **load)
        projection = _projection(folder, dense).to(model.dtype)
        model.add_module(PROJECTION, projection)
        return model

    # --- tokenization, as PyLate builds ColBERT inputs ------------------------------------------------------
    def encode_side(self, texts: Sequence[str], side: Side) -> BatchEncoding:
        """[CLS] marker text [SEP], truncated to the side's length; queries padded with [MASK] to query_length."""
        expand = side == "query" and self.query_expansion
        length = self.query_length if side == "query" else self.max_length
        tokens = self.tokenizer(list(texts), padding="max_length" if expand else True, truncation=True,
                                max_length=length - 1, return_tensors="pt")
        tokens = self.fields_only(tokens)
        for key in list(tokens.keys()):
            fill = self.markers[side] if key == "input_ids" else int(key == "attention_mask")
            column = torch.full_like(tokens[key][:, :1], fill)
            tokens[key] = torch.cat([tokens[key][:, :1], column, tokens[key][:, 1:]], dim=1)
        if expand:
            padding = tokens["input_ids"] == self.tokenizer.pad_token_id
            tokens["input_ids"] = tokens["input_ids"].masked_fill(padding, self.tokenizer.mask_token_id)
            if self.attend_to_expansion:
                tokens["attention_mask"] = torch.ones_like(tokens["attention_mask"])
        return tokens.to(self.device)

    def encode_untruncated(self, arguments: Sequence[Sequence[str]]) -> list[Encoded]:
        """Documents with the marker after [CLS] (a token from no text), untruncated, with offsets."""
        batch = self.tokenizer([text for text, in arguments], truncation=False, return_offsets_mapping=True)
        return [document.with_tokens(1, [self.markers["document"]]) for document in encodings(batch, self.input_fields)]

    def unchanged_side(self, target: str, items: Sequence[tuple[str, str]]) -> list[Encoded]:
        """The queries, expanded as the model reads them (pairs of a late ranker change the document)."""
        tokens = self.encode_side([query for query, _ in items], "query").to("cpu")
        rows = [{key: value[index].tolist() for key, value in tokens.items()} for index in range(len(items))]
        return [Encoded(row["input_ids"], [], [], row) for row in rows]

    # --- scoring --------------------------------------------------------------------------------------------
    def embed(self, tokens: BatchEncoding, hooks: Hooks | None = None, side: Side = "document") -> Any:
        """(unit token vectors [batch, pos, dim] in float32 or wider, which of them are scored [batch, pos])."""
        tokens = tokens.to(self.device)
        projected = getattr(self.model, PROJECTION)(self.run(tokens, hooks).last_hidden_state)
        projected = projected if projected.dtype == torch.float64 else projected.float()  # bf16 would blur MaxSim
        vectors = nn.functional.normalize(projected, p=2, dim=-1)
        attended = tokens["attention_mask"] > 0
        if side == "query":
            scored = torch.ones_like(attended) if self.query_expansion else attended
        else:
            skip = torch.isin(tokens["input_ids"], self.skiplist.to(attended.device))
            scored = attended & ~skip
        return vectors, scored

    def compare(self, query: Any, document: Any) -> torch.Tensor:
        """MaxSim: per query vector the best cosine over scored document vectors, summed over scored query vectors."""
        (q_vectors, q_scored), (d_vectors, d_scored) = query, document
        similarity = torch.einsum("bqd,bkd->bqk", q_vectors, d_vectors)
        similarity = similarity.masked_fill(~d_scored.unsqueeze(1), float("-inf"))
        best = similarity.amax(-1).masked_fill(~q_scored, 0.0)
        return best.sum(-1)

