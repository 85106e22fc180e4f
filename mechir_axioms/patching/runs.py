"""The two clean runs of a batch of pairs (receiver and donor, with cached activations), the replay of
cached early layers that lets a patch at layer l skip recomputing layers 0..l-1, and `CleanRuns`, a bounded store
that lets the patching runs of one ranker share one clean run per batch instead of one per run.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.defaults import CLEAN_RUN_BYTES
from ..core.errors import SettingsError
from ..models.hooks import caching_hooks
from ..models.rankers import ModelInput, Ranker
from ..pairs.pairset import PairSet
from .plan import receiver_is_baseline
from .result import included


@contextmanager
def layer_outputs(ranker: Ranker) -> Iterator[list[Any]]:
    """Record each layer's raw output (tensor or tuple) during a forward pass."""
    outputs: list[Any] = [None] * ranker.n_layers
    handles = [
        block.layer.register_forward_hook(lambda module, args, output, i=i: outputs.__setitem__(i, output))
        for i, block in enumerate(ranker.stack.blocks)
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _select(batch: int, choose: torch.Tensor, first: Any, second: Any) -> Any:
    """Per row, `first` where choose is True else `second`, through tuples; tensors not batched pass as is."""
    if isinstance(first, tuple):
        return tuple(_select(batch, choose, a, b) for a, b in zip(first, second))
    if isinstance(first, torch.Tensor) and first.dim() > 0 and first.shape[0] == batch:
        return torch.where(choose.view((batch,) + (1,) * (first.dim() - 1)), first, second)
    return first


def batch_rows(batch: int, value: Any, index: torch.Tensor) -> Any:
    """Index the batch dimension of a (possibly nested) cached value."""
    if isinstance(value, tuple):
        return tuple(batch_rows(batch, item, index) for item in value)
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[index]
    return value


@dataclass
class Runs:
    """Receiver and donor of a batch of pairs: inputs, scores, activations and the receiver's layer outputs,
    all on the ranker's device."""

    receiver: ModelInput
    receiver_score: torch.Tensor
    donor_score: torch.Tensor
    donor_cache: dict[str, torch.Tensor]
    receiver_cache: dict[str, torch.Tensor]
    layer_outputs: list[Any]
    context: Any  # what both inputs share (a bi-encoder's query embeddings), or None
    regions: torch.Tensor  # [pair, pos]: each token's index into models.layout.REGIONS, -1 for padding

    @property
    def size(self) -> int:
        return len(self.receiver_score)


def _select_input(choose: torch.Tensor, first: ModelInput, second: ModelInput) -> ModelInput:
    def pick(a, b):
        return type(a)({key: torch.where(choose.view(-1, 1), a[key], b[key]) for key in a.keys()})

    return ModelInput(pick(first.tokens, second.tokens), first.query_tokens)


Raw = tuple[tuple[torch.Tensor, dict[str, torch.Tensor], list[Any]], tuple[torch.Tensor, dict[str, torch.Tensor], list[Any]], Any]
"""Both inputs' (score, cached activations, layer outputs), baseline first, and their shared context."""


class CleanRuns:
    """Clean runs already computed for one ranker, by the content of their inputs, at most `max_bytes` of them
    (least recently used dropped first): a direction's runs serve the other direction, and the AtP* screen's serve
    the exact verification, with numbers identical to running them again.

    A store serves one ranker object, the first it is used with, for as long as that object lives; using it with
    another raises a SettingsError (make one store per ranker, or `clear` it). Each entry is keyed by the ranker's
    dtype, device and interventions, so a cast, a move or an intervention never reuses a run; weights changed in
    place are not seen: `clear` the store then. Executors hold one per worker process for the ranker they bind."""

    def __init__(self, max_bytes: int = CLEAN_RUN_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise SettingsError(f"max_bytes={max_bytes!r} is not valid; use a whole number of bytes, 0 or more")
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, tuple[Raw, int]] = OrderedDict()
        self.held = 0
        self.hits = 0
        self._ranker: weakref.ref[Ranker] | None = None

    def check(self, ranker: Ranker) -> None:
        """Refuse a ranker other than the one this store serves; the first (or one after `clear`) is bound."""
        bound = self._ranker() if self._ranker is not None else None
        if bound is ranker:
            return
        if bound is not None:
            raise SettingsError(f"this CleanRuns store holds runs of another ranker object ({bound.name}); use a new "
                                f"CleanRuns for ranker {ranker.name}, or clear() this one first")
        self.clear()  # never used, or its ranker is gone (another may live at its address: nothing carries over)
        self._ranker = weakref.ref(ranker)

    def get(self, key: tuple, names: list[str]) -> Raw | None:
        """The stored runs of `key` with (at least) `names` cached, or None."""
        entry = self.entries.get(key)
        if entry is None or not set(names) <= set(entry[0][0][1]):
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: tuple, raw: Raw) -> None:
        """Keep `raw` under `key` if it fits, dropping the least recently used entries to make room."""
        self._drop(key)
        size = _bytes(raw)
        if size > self.max_bytes:
            return
        self.entries[key] = (raw, size)
        self.held += size
        while self.held > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def clear(self) -> None:
        """Let go of every run and of the ranker they belong to."""
        self.entries.clear()
        self.held = 0
        self._ranker = None

    def _drop(self, key: tuple) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.held -= entry[1]


def _bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, dict):
        return sum(_bytes(item) for item in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_bytes(item) for item in value)
    return 0


def _key(ranker: Ranker, pairs: PairSet, rows: list[int]) -> tuple:
    """What decides a batch's clean runs within one store (one ranker object): the model's dtype, device and
    interventions, and the rows' stored inputs."""
    digest = hashlib.blake2b(digest_size=16)
    index = torch.as_tensor(rows, dtype=torch.long)
    for name in sorted(pairs.tensors):
        digest.update(name.encode())
        digest.update(pairs.tensors[name][index].contiguous().numpy().tobytes())
    model = (str(ranker.dtype), str(ranker.device), json.dumps(ranker.interventions, sort_keys=True))
    return model, pairs.target, digest.hexdigest()


def _run_both(ranker: Ranker, baseline: ModelInput, perturbed: ModelInput, target: str, names: list[str]) -> Raw:
    context = ranker.context(baseline, target)
    runs = []
    for inputs in (baseline, perturbed):
        cache: dict[str, torch.Tensor] = {}
        with layer_outputs(ranker) as outputs:
            score = ranker.forward(inputs, caching_hooks(names, cache), context=context)
        runs.append((score, cache, list(outputs)))
    return runs[0], runs[1], context


def clean_batch(ranker: Ranker, pairs: PairSet, rows: list[int], names: list[str], direction: str,
                store: CleanRuns | None = None) -> Runs:
    """Run both inputs of `rows` once, caching `names` and each layer's output, and pick receiver and donor
    (runs of the same inputs already in `store` are reused, and new ones kept there)."""
    baseline, perturbed = pairs.model_input("baseline", ranker, rows), pairs.model_input("perturbed", ranker, rows)
    key, raw = None, None
    if store is not None:
        store.check(ranker)
        key = _key(ranker, pairs, rows)
        raw = store.get(key, names)
    if raw is None:
        raw = _run_both(ranker, baseline, perturbed, pairs.target, names)
        if store is not None:
            store.put(key, raw)
    (b_score, b_cache, b_out), (p_score, p_cache, p_out), context = raw
    to_baseline = receiver_is_baseline(direction, b_score, p_score)
    batch = len(rows)

    def pick(first: Any, second: Any) -> Any:
        return _select(batch, to_baseline, first, second)

    return Runs(
        receiver=_select_input(to_baseline, baseline, perturbed),
        receiver_score=pick(b_score, p_score),
        donor_score=pick(p_score, b_score),
        donor_cache={name: pick(p_cache[name], b_cache[name]) for name in names},
        receiver_cache={name: pick(b_cache[name], p_cache[name]) for name in names},
        layer_outputs=[pick(b, p) for b, p in zip(b_out, p_out)],
        context=context,
        regions=ranker.place_tensor(region_rows(pairs, rows)),
    )


def batches_of_runs(ranker: Ranker, pairs: PairSet, batch_size: int, names: list[str], direction: str,
                    receiver_score: np.ndarray, donor_score: np.ndarray, delta: float,
                    clean_runs: CleanRuns | None = None) -> Iterator[tuple[list[int], Runs, np.ndarray]]:
    """The pairs in batches of similar length (little padding): each batch's rows, clean runs (from and into
    `clean_runs`, if given) and which of its pairs are patched at all; the receiver's and donor's scores are
    written into the two arrays on the way."""
    order = torch.argsort(pairs.tensors["length"], stable=True).tolist()
    for start in range(0, len(pairs), batch_size):
        rows = order[start : start + batch_size]
        runs = clean_batch(ranker, pairs, rows, names, direction, clean_runs)
        receiver_score[rows] = runs.receiver_score.double().cpu().numpy()
        donor_score[rows] = runs.donor_score.double().cpu().numpy()
        yield rows, runs, included(donor_score[rows], receiver_score[rows], delta)


def region_rows(pairs: PairSet, rows: list[int]) -> torch.Tensor:
    """The region map [row, pos] of some pairs, cut to their longest input (on the host, as stored)."""
    if "region" not in pairs.tensors:
        raise SettingsError("these pairs have no token regions (saved by an older version); build them again")
    return pairs.tensors["region"][rows, : int(pairs.tensors["length"][rows].max())]


class _Replay(nn.Module):
    """Stands in for a layer whose output is already known: returns it without computing anything."""

    def __init__(self, original: nn.Module, output: Any):
        super().__init__()
        self.__dict__["_original"] = original
        self.__dict__["_output"] = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._output

    def __getattr__(self, name: str) -> Any:  # the encoder loop may read layer attributes (attention_type)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_original"], name)


@contextmanager
def replaying(ranker: Ranker, upto: int, outputs: list[Any]) -> Iterator[None]:
    """Swap layers 0..upto-1 for replays of `outputs` for the duration of a forward pass."""
    container = ranker.stack.container
    originals = [container[i] for i in range(upto)]
    try:
        for i in range(upto):
            container[i] = _Replay(originals[i], outputs[i])
        yield
    finally:
        for i, original in enumerate(originals):
            container[i] = original
