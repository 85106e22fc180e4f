"""Path patching (Wang et al. 2023, appendix B; Goldowsky-Dill et al. 2023): how much of a score change one
sender head passes to chosen receivers, rather than to the score by every route.

For a sender head s and a set R of receivers (the queries, keys or values of later heads, or the final
residual stream), each pair is measured in two passes over its receiving run:

1. the *sender pass*: s's output (hook_z) comes from the donor run; every attention head that is not a
   receiver keeps its receiving-run output (frozen); receiver heads, MLPs and LayerNorms are recomputed.
   The receivers' inputs are recorded: their hook_q/k/v, or the last layer's output (resid_post);
2. the *receiver pass*: a fresh receiving run with only those recorded inputs patched in.

The effect is (patched - receiver) / (donor - receiver), as for `patch`. In post-LayerNorm encoders (BERT,
MiniLM) the path runs through every later LayerNorm, which is recomputed with the other heads frozen: the
definition of Lu, Chen & Eickhoff (2025). The final residual is patched at every position: the score reads
it only there (a pooled or CLS vector, the last token, or monoT5's decoder reading the whole encoder output),
so the receiver pass's score is the sender pass's, and the batched engine takes that score directly.

With R a single head, or the final residual alone, this is Wang et al.'s definition. With R every later head's
queries, keys and values and the final residual ("all"), no head is frozen and the path patch equals plain
activation patching of s; with R empty it is 0. Heads named as receivers are recomputed in the sender pass,
so paths that run from s through one receiver into another count toward the second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..core.defaults import DEFAULT_BATCH_SIZE, DEFAULT_TOLERANCE
from ..core.errors import SettingsError
from ..models.hooks import HookFn
from ..models.names import act_name
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from .methods import PATHS, method_for
from .pathspec import FINAL, PathSpec, Receiver, kv_head, parse_receivers, parse_senders
from .plan import DIRECTIONS
from .result import PatchResult, included
from .runs import CleanRuns, Runs, batch_rows, batches_of_runs, replaying

__all__ = ["PathSpec", "Receiver", "patch_paths", "paths_batch"]  # what a path is lives in pathspec.py


@dataclass(frozen=True)
class _Compiled:
    """What the passes need of one path: which heads stay live in the sender pass, and where the receivers read."""

    sender: tuple[int, int]
    live: frozenset[tuple[int, int]]  # receiver heads that are recomputed in the sender pass and matter there
    reads: dict[str, tuple[int, ...]]  # q/k/v site -> the site's heads to patch in the receiver pass
    final: bool

    @property
    def empty(self) -> bool:
        return not self.final and not self.reads

    @property
    def first_layer(self) -> int:
        """The earliest layer the receiver pass patches."""
        return min(_layer(name) for name in self.reads)

    @property
    def last_layer(self) -> int:
        return max(_layer(name) for name in self.reads)

    @property
    def sender_pass(self) -> tuple[tuple[int, int], frozenset[tuple[int, int]]]:
        """What the sender pass computes depends on the sender and the live heads only: paths that share them share
        one sender pass (every path from one head into a single receiver, and into the score)."""
        return self.sender, self.live


def _layer(name: str) -> int:
    return int(name.split(".")[1])


def _compile(ranker: Ranker, path: PathSpec) -> _Compiled:
    """Keep the receivers the sender can reach (later layers; the final stream); the rest receive nothing. A
    receiver head at or after the last layer the sender pass must reach is left frozen there: its own output is
    computed after its inputs, so whether it is live changes nothing that is recorded."""
    reads: dict[str, set[int]] = {}
    heads, final = set(), False
    for receiver in path.receivers:
        if receiver.is_final:
            final = True
        elif receiver.layer > path.sender[0]:
            heads.add((receiver.layer, receiver.head))
            for which in receiver.inputs:
                name = act_name(which, receiver.layer)
                reads.setdefault(name, set()).add(kv_head(ranker, name, receiver.head))
    reach = ranker.n_layers if final else max((_layer(name) for name in reads), default=0)
    live = frozenset(head for head in heads if head[0] < reach)
    return _Compiled(path.sender, live, {name: tuple(sorted(heads)) for name, heads in reads.items()}, final)


class _Stop(Exception):
    """Ends a sender pass once every receiver input it records is computed."""


def _sender_hooks(ranker: Ranker, runs: Runs, index: torch.Tensor, passes: list[tuple[tuple[int, int], frozenset]],
                  names: list[str], recorded: dict[str, torch.Tensor]) -> list[tuple[str, HookFn]]:
    """hook_z replacements (per row, the sender from the donor and every head that is not live frozen) and
    recorders of the q/k/v sites `names`."""
    rows, heads, first = len(passes), ranker.n_heads, passes[0][0][0]
    hooks: list[tuple[str, HookFn]] = []
    for layer in range(first, ranker.n_layers):
        frozen = torch.ones(rows, heads, dtype=torch.bool)
        donor = torch.zeros(rows, heads, dtype=torch.bool)
        for row, (sender, live) in enumerate(passes):
            for live_layer, head in live:
                if live_layer == layer:
                    frozen[row, head] = False
            if layer == sender[0]:
                donor[row, sender[1]] = True
        frozen_at = ranker.place_tensor(frozen)[:, None, :, None]
        donor_at = ranker.place_tensor(donor)[:, None, :, None]

        def replace(activation: torch.Tensor, name: str, frozen_at=frozen_at, donor_at=donor_at) -> torch.Tensor:
            held = torch.where(frozen_at, runs.receiver_cache[name][index], activation)
            return torch.where(donor_at, runs.donor_cache[name][index], held)

        hooks.append((act_name("z", layer), replace))

    def record(activation: torch.Tensor, name: str) -> None:
        recorded[name] = activation.detach()

    return hooks + [(name, record) for name in names]


def _receiver_hooks(ranker: Ranker, paths: list[_Compiled], recorded: dict[str, torch.Tensor]) -> list[tuple[str, HookFn]]:
    """q/k/v replacements: each row takes its recorded inputs at its receivers' heads only."""
    hooks: list[tuple[str, HookFn]] = []
    for name in sorted({name for path in paths for name in path.reads}):
        count = ranker.sites[name].n_heads or ranker.n_heads
        mask = torch.zeros(len(paths), count, dtype=torch.bool)
        for row, path in enumerate(paths):
            mask[row, list(path.reads.get(name, ()))] = True
        mask_at = ranker.place_tensor(mask)[:, None, :, None]

        def replace(activation: torch.Tensor, name: str, mask_at=mask_at) -> torch.Tensor:
            return torch.where(mask_at, recorded[name], activation)

        hooks.append((name, replace))
    return hooks


def _stopping(ranker: Ranker, layer: int):
    """A pre-hook on layer `layer`'s attention output projection: by then its q, k and v are computed."""
    def stop(module, args):
        raise _Stop

    return ranker.stack.blocks[layer].attn_proj.register_forward_pre_hook(stop)


def _forward(ranker: Ranker, runs: Runs, index: torch.Tensor, upto: int, hooks: list[tuple[str, HookFn]]) -> torch.Tensor:
    """The receiving rows `index` with layers before `upto` replayed from the clean run."""
    inputs = runs.receiver.rows(index)
    context = batch_rows(runs.size, runs.context, index)
    replays = [batch_rows(runs.size, output, index) for output in runs.layer_outputs[:upto]]
    with replaying(ranker, upto, replays):
        return ranker.forward(inputs, hooks, context=context)


WorkItem = tuple[int, int, _Compiled]
"""(pair within the batch, index of the path, the compiled path)."""


def _sender_pass(ranker: Ranker, runs: Runs, groups: list[tuple[int, tuple, list[WorkItem]]]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """One sender pass over a chunk of groups (pair, sender pass, its items), all of one sender layer: the scores
    (None when no item needs the final stream, and the pass stopped at its last receiver) and the recorded inputs."""
    index = ranker.place_tensor(torch.tensor([pair for pair, _, _ in groups]))
    items = [item for _, _, group in groups for item in group]
    names = sorted({name for _, _, path in items for name in path.reads})
    recorded: dict[str, torch.Tensor] = {}
    hooks = _sender_hooks(ranker, runs, index, [key for _, key, _ in groups], names, recorded)
    to_end = any(path.final for _, _, path in items)
    stop = None if to_end else _stopping(ranker, max(path.last_layer for _, _, path in items))
    try:
        return _forward(ranker, runs, index, groups[0][1][0][0], hooks), recorded
    except _Stop:
        return None, recorded
    finally:
        if stop is not None:
            stop.remove()


def paths_batch(ranker: Ranker, runs: Runs, work: list[WorkItem], rows_per_pass: int, effects: np.ndarray,
                pair_rows: list[int], progress: Any) -> None:
    """Measure work items, writing effects[pair_rows[pair], path]: one sender pass per (pair, sender pass) shared
    by every item that needs it, `rows_per_pass` rows at a time, then one receiver pass per item through the heads,
    grouped by the layer it starts at."""
    groups: dict[tuple[int, tuple], list[WorkItem]] = {}
    for item in work:
        if item[2].empty:
            effects[pair_rows[item[0]], item[1]] = 0.0
            progress.update(1)
        else:
            groups.setdefault((item[0], item[2].sender_pass), []).append(item)
    ordered = sorted(groups.items(), key=lambda entry: entry[0][1][0][0])  # by sender layer (stable: pair order)
    by_layer: dict[int, list[tuple[int, tuple, list[WorkItem]]]] = {}
    for (pair, key), items in ordered:
        by_layer.setdefault(key[0][0], []).append((pair, key, items))
    for layer_groups in by_layer.values():
        for start in range(0, len(layer_groups), rows_per_pass):
            chunk = layer_groups[start : start + rows_per_pass]
            scores, recorded = _sender_pass(ranker, runs, chunk)
            through: dict[int, list[tuple[int, WorkItem]]] = {}
            for row, (pair, _, items) in enumerate(chunk):
                for item in items:
                    if item[2].final:
                        _write(runs, effects, pair_rows, item, scores[row])
                    else:
                        through.setdefault(item[2].first_layer, []).append((row, item))
            for first, rows in sorted(through.items()):
                for begin in range(0, len(rows), rows_per_pass):
                    part = rows[begin : begin + rows_per_pass]
                    sender_rows = ranker.place_tensor(torch.tensor([row for row, _ in part]))
                    index = ranker.place_tensor(torch.tensor([item[0] for _, item in part]))
                    hooks = _receiver_hooks(ranker, [item[2] for _, item in part],
                                            {name: value[sender_rows] for name, value in recorded.items()})
                    received = _forward(ranker, runs, index, first, hooks)
                    for (_, item), score in zip(part, received):
                        _write(runs, effects, pair_rows, item, score)
            progress.update(sum(len(items) for _, _, items in chunk))


def _write(runs: Runs, effects: np.ndarray, pair_rows: list[int], item: WorkItem, score: torch.Tensor) -> None:
    """The effect of one item from its patched score: (patched - receiver) / (donor - receiver)."""
    pair = item[0]
    receiver, donor = runs.receiver_score[pair], runs.donor_score[pair]
    effects[pair_rows[pair], item[1]] = float(((score - receiver) / (donor - receiver)).double())


def patch_paths(ranker: Ranker, pairs: PairSet, senders: str | Iterable[Any] = "heads",
                receivers: str | Iterable[Any] | None = None, method: str = "exact",
                batch_size: int = DEFAULT_BATCH_SIZE, direction: str = "to_low", delta: float = DEFAULT_TOLERANCE,
                progress: bool = True, clean_runs: CleanRuns | None = None) -> PatchResult:
    """Path-patch sender heads into receivers (see the module docstring), given in one of two forms.

    senders "heads" or [(layer, head), ...], each into one receiver set: effects [pair, sender]. receivers:
    "final" (the default: the final residual stream, where the score reads), "all" (every later head's queries,
    keys and values and the final residual: equals `patch` of the sender), or a list of (layer, head) (that
    head's q, k and v), (layer, head, "q"|"k"|"v") and "final".
    Or senders a list of PathSpec, each its own sender and receivers (leave `receivers` out): effects [pair, path],
    labelled "sender>receivers"; paths that share a sender pass share its run.
    Receivers at or before a sender's layer receive nothing from it. method, batch_size, direction, delta and
    clean_runs mean what they mean for `patch` (patching.methods.METHODS: paths are measured exactly).
    """
    method_for(method, PATHS)
    chosen = senders if isinstance(senders, str) else list(senders)
    if not isinstance(chosen, str) and any(isinstance(item, PathSpec) for item in chosen):
        if not all(isinstance(item, PathSpec) for item in chosen):
            raise SettingsError("senders mixes PathSpec and (layer, head) items; give a list of one kind")
        if receivers is not None:
            raise SettingsError(f"receivers={receivers!r} is not valid with a list of PathSpec, which name their "
                                "own receivers; leave receivers out")
        return _measure(ranker, pairs, chosen, method, batch_size, direction, delta, progress, clean_runs)
    heads = parse_senders(ranker, chosen)
    receiving = parse_receivers(ranker, FINAL if receivers is None else receivers)
    result = _measure(ranker, pairs, [PathSpec(head, receiving) for head in heads], method, batch_size, direction,
                      delta, progress, clean_runs)
    result.dims = ("pair", "sender")
    result.labels = {"sender": [f"{layer}.{head}" for layer, head in heads],
                     "receivers": [str(receiver) for receiver in receiving]}
    return result


def _measure(ranker: Ranker, pairs: PairSet, paths: list[PathSpec], method: str, batch_size: int, direction: str,
             delta: float, progress: bool, clean_runs: CleanRuns | None) -> PatchResult:
    """Measure each path on every pair: effects [pair, path], labelled "sender>receivers"."""
    if direction not in DIRECTIONS:
        raise SettingsError(f"direction={direction!r} is not valid; use one of {', '.join(DIRECTIONS)}")
    if batch_size < 1:
        raise SettingsError(f"batch_size={batch_size} is not valid; use a positive number of sequences")
    if not paths:
        raise SettingsError("no paths to patch: give at least one sender and one receiver set")
    ranker.check_side(pairs.target)
    compiled = [_compile(ranker, path) for path in paths]
    names = [act_name("z", layer) for layer in range(ranker.n_layers)]
    effects = np.full((len(pairs), len(paths)), np.nan)
    receiver_score, donor_score = np.zeros(len(pairs)), np.zeros(len(pairs))
    bar = tqdm(total=len(pairs) * len(paths), desc=f"path patching ({len(paths)} paths)", unit="run",
               disable=not progress, leave=False)
    with torch.no_grad():
        for rows, runs, keep in batches_of_runs(ranker, pairs, batch_size, names, direction, receiver_score,
                                                donor_score, delta, clean_runs):
            work = [(pair, i, path) for pair in range(len(rows)) if keep[pair] for i, path in enumerate(compiled)]
            bar.update((len(rows) - int(np.count_nonzero(keep))) * len(paths))
            paths_batch(ranker, runs, work, batch_size, effects, rows, bar)
    bar.close()
    kept = included(donor_score, receiver_score, delta)
    return PatchResult(
        target=PATHS, method=method, effects=effects, dims=("pair", "path"), receiver_score=receiver_score,
        donor_score=donor_score, excluded=int((~kept).sum()), delta=delta,
        labels={"path": [path.label for path in paths]},
        provenance={
            **{key: pairs.provenance.get(key) for key in ("axiom", "spec_hash", "data_hash", "seed", "filler")},
            "model": ranker.name, "direction": direction, "batch_size": batch_size, "n_pairs": len(pairs),
            "package_version": __version__,
        },
    )
