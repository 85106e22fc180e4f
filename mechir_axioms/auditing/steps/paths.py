"""The paths step: path patching from every head into each head flagged for an axiom and into the final residual
stream (the score), on seeded random pairs, in both directions.

Its edges get the statistics and flags of heads, so an edge is flagged when it carries a significant share of
the score change; the flagged heads and edges of an axiom are its circuit.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from ...patching.paths import PathSpec, Receiver
from ..context import AuditContext, AxiomRecord
from ..registry import audit_step

SCORE = "score"
"""The receiver name of the final residual stream, where the score reads."""
FIELDS = ("axiom", "sender", "sender_layer", "sender_head", "receiver", "effect", "ci_low", "ci_high", "q_value",
          "flag", "name", "n")


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


def _summary(rows: pd.DataFrame, facts: dict[str, Any], settings: dict[str, Any]) -> str:
    flagged = rows[rows["flag"] != ""] if len(rows) else rows
    measured = facts.get("paths", {}).get("edges", len(rows))
    return (f"paths flagged ({measured} measured): "
            f"{', '.join(f'{edge.sender}>{edge.receiver}' for edge in flagged.itertuples()) or 'none'}")


@audit_step("paths", title="Paths", unit="edge", target="paths", method="exact",
            columns=("sender", "receiver"), reads=("path_pairs", "batch_size"), sample="path_pairs", provenance=("paths",),
            needs=("heads",), fields=FIELDS, summary=_summary)
def paths(context: AuditContext, records: list[AxiomRecord], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every edge of every axiom into its flagged heads and the score, with the statistics and flags of heads."""
    ranker, settings = context.ranker, context.settings
    changes, labels, measured = {}, {}, {}
    for record in records:
        started = time.perf_counter()
        rows = context.sample_rows(len(record.pairs), settings.path_pairs)
        receivers = receivers_of(frames["heads"], record.name)
        specs = edges(receivers, ranker.n_layers, ranker.n_heads)
        name = "paths-" + ("-".join(f"{layer}.{head}" for layer, head in receivers) or SCORE)
        changes[record.name], denoising, _ = context.both_directions(
            record, name, context.job("paths", "exact", paths=tuple(specs)), record.pairs.take(rows))
        labels[record.name], measured[record.name] = edge_labels(specs), rows
        record.provenance["paths"] = {
            "pairs": len(rows), "excluded": denoising.excluded, "delta": settings.tolerance,
            "receivers": [f"{layer}.{head}" for layer, head in receivers] + [SCORE], "edges": len(specs)}
        record.seconds["paths"] = round(time.perf_counter() - started, 1)
    return context.findings("paths", records, changes, labels, measured)
