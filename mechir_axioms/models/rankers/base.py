"""The Ranker base class: a real Hugging Face model with canonical hook points, and the kind registry.

Every ranker tokenizes pairs into a `ModelInput`, places it on the model's device, runs one real HF forward
pass per batch with hooks attached by canonical name, and turns the output into one score per pair.
Everything that differs between kinds (the input layout, which side a pair changes, what both inputs of a
pair share) is a method here that each kind overrides.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import BatchEncoding, PreTrainedTokenizerBase

from ...core.errors import NonFiniteError, SettingsError
from ..adapters import Architecture, Stack, architecture_of
from ..folder import ModelFolder
from ..hooks import Hooks, Site, caching_hooks, hook_items, use_hooked_attention
from ..layout import ALIGNED_FIELDS, REGIONS, Encoded, Layout, encodings

Side = Literal["document", "query"]


@dataclass
class ModelInput:
    """Tokenized pairs. `tokens` is the hooked sequence: the document side of a bi-encoder, else the joint input."""

    tokens: BatchEncoding
    query_tokens: BatchEncoding | None = None
    truncated: int = 0  # how many texts were cut at max_length

    def __len__(self) -> int:
        return int(self.tokens["input_ids"].shape[0])

    def to(self, device: torch.device) -> ModelInput:
        """The same input with every tensor on `device` (a no-op for tensors already there)."""
        query = self.query_tokens.to(device) if self.query_tokens is not None else None
        return ModelInput(self.tokens.to(device), query, self.truncated)

    def rows(self, index: torch.Tensor) -> ModelInput:
        """The rows `index` of the hooked sequence (the unchanged side, a bi-encoder's query, is not hooked)."""
        return ModelInput(type(self.tokens)({key: value[index] for key, value in self.tokens.items()}))


def check_pairs(queries: Sequence[str], documents: Sequence[str]) -> None:
    """Raise ValueError unless queries and documents are equally long, non-empty lists of strings."""
    for label, texts in (("queries", queries), ("documents", documents)):
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise SettingsError(f"{label} must be a list of strings, got {type(texts).__name__}")
        if len(texts) == 0:
            raise SettingsError(f"{label} is empty; give at least one query-document pair")
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise SettingsError(f"{label}[{bad}] is {type(texts[bad]).__name__}, not a string")
    if len(queries) != len(documents):
        raise SettingsError(
            f"got {len(queries)} queries and {len(documents)} documents; they must pair up one to one"
        )


def count_truncated(encoding: BatchEncoding) -> int:
    """How many sequences of a truncating fast-tokenizer call lost tokens."""
    return sum(bool(item.overflowing) for item in encoding.encodings or [])


class Ranker(ABC):
    """A neural ranker with TransformerLens-style hook points over its real Hugging Face model."""

    kind: ClassVar[str]
    title: ClassVar[str] = "ranker"
    """What the kind is, in words, for reports ("bi-encoder", "pointwise LLM reranker")."""
    options: ClassVar[frozenset[str]] = frozenset({"max_length", "batch_size", "device", "dtype"})
    """The keyword options `load_ranker` accepts for this kind."""
    regions: ClassVar[tuple[str, ...]] = REGIONS
    """The token regions this kind's hooked sequence has (see models.layout.REGIONS)."""
    patchable_sides: ClassVar[tuple[str, ...]] = ("document", "query")
    """Which side of a pair may be perturbed when the pairs are patched."""
    published_max_length: ClassVar[int | None] = None
    """The input length the kind's models were published with: the default max_length when the tokenizer and
    the position embeddings allow more (monoT5's 512, Qwen3-Reranker's 8192)."""
    architectures: ClassVar[frozenset[Architecture]] = frozenset({"encoder"})
    """The kinds of transformer (see models.adapters.ADAPTERS) this kind runs on."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every kind's own `forward` checks that its scores are finite (see finite_scores)."""
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if callable(forward) and not getattr(forward, "__isabstractmethod__", False):
            cls.forward = finite_scores(forward)  # type: ignore[method-assign]

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
        self.input_fields = model_input_fields(self.model)
        self.stack = self._stack()
        self.sites: dict[str, Site] = self._sites()
        self.interventions: list[dict[str, Any]] = []
        """The interventions active on the model (models.head_edits.intervene), as the fingerprint names them."""

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
    def forward(self, inputs: ModelInput, hooks: Hooks | None = None, context: Any = None) -> torch.Tensor:
        """One forward pass over a tokenized batch with hooks attached; returns one score per pair.

        `context` is what `context(inputs)` computed once for inputs that share their unchanged side."""

    @abstractmethod
    def layout(self, target: str, query: str, document: str, changed: str) -> Layout:
        """How one input is tokenized when `target` ("document" or "query") reads `changed`."""

    @classmethod
    @abstractmethod
    def claims(cls, folder: ModelFolder) -> bool:
        """Is this model (its config and sentence-transformers modules, if any) a ranker of this kind?"""

    @classmethod
    def folder_options(cls, folder: ModelFolder) -> dict[str, Any]:
        """Options the model's own files declare (pooling, normalisation, prompts); explicit options win."""
        return {}

    @classmethod
    @abstractmethod
    def load_model(cls, folder: ModelFolder, **load: Any) -> nn.Module:
        """The Hugging Face model of this kind from a folder or Hub id."""

    def encode_untruncated(self, arguments: Sequence[Sequence[str]]) -> list[Encoded]:
        """Each input's tokenizer arguments (a Layout's) tokenized exactly as the model reads them, untruncated."""
        columns = [list(column) for column in zip(*arguments)]
        return encodings(self.tokenizer(*columns, truncation=False, return_offsets_mapping=True), self.input_fields)

    def changed_text_follows_space(self, target: str) -> bool:
        """Does the changed text follow a space in this kind's input (a prompt's "Document: "), so that its first
        word is tokenized as a word inside a text rather than as the opening of one? Read off the layout."""
        layout = self.layout(target, "query", "document", "changed")
        text, start = layout.arguments[layout.changed.sequence], layout.changed.start
        return start > 0 and text[start - 1] == " "  # byte-level BPE marks a word after a space, not after "\n"

    def unchanged_side(self, target: str, items: Sequence[tuple[str, str]]) -> list[Encoded] | None:
        """The separately encoded side that a pair does not change (a bi-encoder's query), or None."""
        return None

    def batch(self, changed: BatchEncoding, other: BatchEncoding | None, target: str) -> ModelInput:
        """A model input from the changed sequence (and the unchanged side, if separate), on the ranker's device."""
        return self.place(ModelInput(changed))

    def context(self, inputs: ModelInput, target: str = "document") -> Any:
        """What inputs that differ only on their `target` side can reuse between forward passes (None: nothing)."""
        return None

    def check_side(self, target: str) -> None:
        """Raise unless pairs that change `target` can be patched on this kind."""
        if target not in self.patchable_sides:
            raise SettingsError(
                f"patching a {self.kind} ranker's {target} side is not supported; build pairs with target = "
                f"{' or '.join(repr(side) for side in self.patchable_sides)}"
            )

    # --- placement --------------------------------------------------------------------------------
    def place(self, inputs: ModelInput) -> ModelInput:
        """The one way a model input reaches the model: every tensor moved to the ranker's device."""
        return inputs.to(self.device)

    def place_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor (a mask, an index, a region map) on the ranker's device."""
        return tensor.to(self.device)

    # --- shared behaviour ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_decoder(self) -> bool:
        """A decoder-only model: causal attention, so the last token is the one that has read the whole input."""
        return architecture_of(self.model.config.model_type) == "decoder"

    @property
    def reads_last_token(self) -> bool:
        """Is the score read at the last token the attention mask keeps (decoders)? Then a masked span must not
        end the input, or the baseline would be read at another token than the perturbed input."""
        return self.is_decoder

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the model being audited: kind, name, a hash of its config, and a digest of every
        parameter's name, shape, dtype and leading values (cheap even for large models; different weights
        of the same architecture give a different digest), and the active interventions, if any."""
        import hashlib

        config = hashlib.sha256(self.model.config.to_json_string(use_diff=False).encode()).hexdigest()[:16]
        digest = hashlib.sha256()
        for name, parameter in self.model.state_dict().items():
            digest.update(f"{name}:{tuple(parameter.shape)}:{parameter.dtype}".encode())
            digest.update(parameter.detach().flatten()[:4096].float().cpu().numpy().tobytes())
        facts = {"name": self.name, "kind": self.kind, "config_hash": config, "weights_digest": digest.hexdigest()[:16],
                 "parameters": sum(p.numel() for p in self.model.parameters())}
        if self.interventions:  # an intervened model is not the plain one (absent otherwise, so old checkpoints match)
            facts["interventions"] = [dict(item) for item in self.interventions]
        return facts

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
        tokens = self.tokenizer(*texts, padding=True, truncation=truncation, max_length=self.max_length,
                                return_tensors="pt")
        return self.fields_only(tokens).to(self.device)

    def fields_only(self, tokens: BatchEncoding) -> BatchEncoding:
        """The tokenizer outputs the model takes (a decoder has no token_type_ids), keeping the encodings."""
        for key in [key for key in tokens if key not in self.input_fields]:
            del tokens[key]
        return tokens

    def score(self, queries: Sequence[str], documents: Sequence[str], batch_size: int | None = None,
              progress: bool = False) -> torch.Tensor:
        """Score query-document pairs, batched by similar length with padding to each batch's longest input;
        `progress` shows a bar counting pairs."""
        check_pairs(queries, documents)
        size = batch_size or self.batch_size
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(documents[i]))
        scores = torch.empty(len(queries))
        truncated = 0
        with torch.inference_mode(), tqdm(total=len(order), desc=self.name, unit="pair", disable=not progress) as bar:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                inputs = self.tokenize([queries[i] for i in chunk], [documents[i] for i in chunk])
                truncated += inputs.truncated
                scores[chunk] = self.forward(inputs).float().cpu()
                bar.update(len(chunk))
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
            f"max_length={self.max_length}, device={self.device}, dtype={self.dtype})"
        )


def finite_scores(forward: Any) -> Any:
    """A kind's `forward` that raises NonFiniteError when any score of the batch is NaN or infinite (one
    isfinite().all() per forward pass), so that scoring, audits, patching and interventions never compare
    non-finite scores."""
    if getattr(forward, "checks_finite", False):
        return forward

    @functools.wraps(forward)
    def checked(self: Ranker, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        scores = forward(self, inputs, *args, **kwargs)
        if isinstance(scores, torch.Tensor) and scores.is_floating_point() and not bool(torch.isfinite(scores).all()):
            hooks = args[0] if args else kwargs.get("hooks")
            raise NonFiniteError(non_finite_message(self, scores, bool(hooks)))
        return scores

    checked.checks_finite = True  # type: ignore[attr-defined]
    return checked


def intervention_words(facts: dict[str, Any]) -> str:
    """An active intervention (Intervention.describe()'s facts) in words: "scale x1e+30 on heads 0.1, 1.2"."""
    parts = []
    if facts.get("heads"):
        factor = f" x{facts['factor']:g}" if facts.get("factor") is not None else ""
        parts.append(f"{facts.get('op')}{factor} on head{'s' if len(facts['heads']) > 1 else ''} "
                     f"{', '.join(facts['heads'])}")
    parts += [f"steer at {site}" for site in facts.get("steer") or {}]
    parts += [f"an SAE spliced at {sae['site']}" for sae in facts.get("saes") or []]
    return " and ".join(parts)


def non_finite_message(ranker: Ranker, scores: torch.Tensor, hooked: bool) -> str:
    """One sentence: how many scores of the batch are not finite, under which intervention, and what to change."""
    finite = torch.isfinite(scores.detach())
    bad, nan = int((~finite).sum()), int(torch.isnan(scores.detach()).sum())
    kinds = "NaN" if nan == bad else "infinite" if nan == 0 else "NaN or infinite"
    count = f"{bad} of {scores.numel()} pairs of a batch"
    if ranker.interventions:
        under = " and ".join(intervention_words(facts) for facts in ranker.interventions)
        return (f"{ranker.name} gave {kinds} scores for {count} under the intervention {under}; its activations "
                f"overflow {str(ranker.dtype).removeprefix('torch.')}, so use a smaller factor or steer vector")
    where = " while hooks patched or read its activations" if hooked else ""
    dtype = str(ranker.dtype).removeprefix("torch.")
    hint = " (float16 overflows easily: load it with dtype float32 or bfloat16)" if dtype == "float16" else ""
    return (f"{ranker.name} gave {kinds} scores for {count}{where}; scores must be finite to be compared, so check "
            f"{'the patched activations and ' if hooked else ''}the model's weights and dtype {dtype}{hint}")


def at_last_kept(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, the hidden state [batch, width] of the last token the attention mask keeps: the last token under
    right padding, position -1 under left padding, and still the last real token when a masked span leaves a hole."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * (mask > 0)).argmax(1)
    return hidden[torch.arange(len(last), device=last.device), last]


def model_input_fields(model: nn.Module) -> tuple[str, ...]:
    """The tokenizer outputs (of input_ids, attention_mask, token_type_ids) that the model's forward takes."""
    parameters = inspect.signature(model.forward).parameters
    return tuple(key for key in ALIGNED_FIELDS if key in parameters)


RANKER_KINDS: dict[str, type[Ranker]] = {}
"""The one ranker-kind registry: kind name -> Ranker subclass, in registration order."""


def register_kind(cls: type[Ranker]) -> type[Ranker]:
    """Class decorator: make a Ranker subclass loadable by its `kind`."""
    if cls.kind in RANKER_KINDS:
        raise ValueError(f"ranker kind {cls.kind!r} is registered twice")
    RANKER_KINDS[cls.kind] = cls
    return cls


