"""The audit's paths step: path patching from every head into each head flagged for an axiom and into the
final residual stream (the score), on the same seeded pairs as block cells, in both directions.

Its edges get the statistics and flags of heads, so an edge is flagged when it carries a significant share of
the score change; the flagged heads and edges of an axiom are its circuit.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.findings import Changes
from ..executing.base import Executor
from ..executing.jobs import Job
from ..pairs.pairset import PairSet
from ..patching.paths import PathSpec, Receiver
from ..specs.axiom import Axiom
from .checkpoints import Checkpoints
from .chunks import both_directions
from .settings import Settings

SCORE = "score"
"""The receiver name of the final residual stream, where the score reads."""


def receivers_of(heads: pd.DataFrame, axiom: str) -> list[tuple[int, int]]:
    """The heads flagged for `axiom` (encoding or violating), layer by layer."""
    rows = heads[(heads["axiom"] == axiom) & (heads["flag"] != "")] if len(heads) else heads
    return sorted((int(row.layer), int(row.head)) for row in rows.itertuples())


def edges(receivers: list[tuple[int, int]], n_layers: int, n_heads: int) -> list[PathSpec]:
    """Every head into the final residual, then every earlier head into each receiver head."""
    senders = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    paths = [PathSpec(sender, (Receiver(n_layers),)) for sender in senders]
    for layer, head in receivers:
        paths += [PathSpec(sender, (Receiver(layer, head),)) for sender in senders if sender[0] < layer]
    return paths


def edge_labels(paths: list[PathSpec]) -> list[dict[str, Any]]:
    """One label per edge: sender and receiver by name and position ("score" sits after the last layer)."""
    labels = []
    for path in paths:
        (layer, head), receiver = path.sender, path.receivers[0]
        target = SCORE if receiver.is_final else f"{receiver.layer}.{receiver.head}"
        labels.append({"sender": f"{layer}.{head}", "sender_layer": layer, "sender_head": head, "receiver": target,
                       "receiver_layer": receiver.layer, "receiver_head": -1 if receiver.is_final else receiver.head,
                       "name": f"{layer}.{head}>{target}"})
    return labels


def audit_paths(pairs: PairSet, spec: Axiom, heads: pd.DataFrame, rows: list[int], n_layers: int, n_heads: int,
                settings: Settings, work: Checkpoints, executor: Executor,
                progress: bool) -> tuple[tuple[np.ndarray, np.ndarray], list[dict[str, Any]], dict[str, Any]]:
    """The symmetric change of every edge of one axiom on the pairs `rows`, its labels and its provenance."""
    started = time.perf_counter()
    receivers = receivers_of(heads, spec.name)
    paths = edges(receivers, n_layers, n_heads)
    job = Job("paths", "exact", settings.batch_size, settings.tolerance, paths=tuple(paths))
    name = "paths-" + ("-".join(f"{layer}.{head}" for layer, head in receivers) or SCORE)
    change, denoising, _ = both_directions(pairs.take(rows), spec.name, spec.expect, name, job, work, executor,
                                           progress)
    facts = {"pairs": len(rows), "excluded": denoising.excluded, "delta": settings.tolerance,
             "receivers": [f"{layer}.{head}" for layer, head in receivers] + [SCORE], "edges": len(paths),
             "seconds": round(time.perf_counter() - started, 1)}
    return change, edge_labels(paths), facts


def path_changes(pair_sets: dict[str, PairSet], specs: list[Axiom], heads: pd.DataFrame, rows_of: dict[str, list[int]],
                 n_layers: int, n_heads: int, settings: Settings, work: Checkpoints, executor: Executor,
                 progress: bool) -> tuple[Changes, dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Every axiom's edges: (changes, labels per axiom, provenance per axiom)."""
    changes, labels, facts = {}, {}, {}
    for spec in specs:
        changes[spec.name], labels[spec.name], facts[spec.name] = audit_paths(
            pair_sets[spec.name], spec, heads, rows_of[spec.name], n_layers, n_heads, settings, work, executor, progress)
    return changes, labels, facts
