"""The cells step: the residual stream, attention and MLP outputs per layer and token region, patched exactly on
seeded random pairs (attribution misjudges the residual stream at the changed span)."""

from __future__ import annotations

import pandas as pd

from ..context import AuditContext, AxiomRecord, unit_labels
from ..registry import audit_step

COLUMNS = ("component", "layer", "region")
FIELDS = ("axiom", *COLUMNS, "effect", "ci_low", "ci_high", "p_value", "q_value", "flag", "n")


@audit_step("cells", title="Block cells", unit="block cell", target="regions", method="exact", columns=COLUMNS,
            grid=("layer", "region"), reads=("cell_pairs", "batch_size"), sample="cell_pairs", provenance=("cells",), counts="cells_",
            fields=FIELDS)
def cells(context: AuditContext, records: list[AxiomRecord], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each block cell's share of the score change per axiom on `cell_pairs` seeded pairs, with flags."""
    changes, measured, labels = {}, {}, []
    for record in records:
        rows = context.sample_rows(len(record.pairs), context.settings.cell_pairs)
        with context.timed(record, "cells"):
            changes[record.name], run, _ = context.both_directions(record, "regions", context.job("regions", "exact"),
                                                                   record.pairs.take(rows))
        measured[record.name] = rows
        record.provenance["cells"] = {"pairs": len(rows), "excluded": run.excluded, "delta": context.settings.tolerance}
        labels = unit_labels(run, COLUMNS)
    return context.findings("cells", records, changes, labels, measured)
