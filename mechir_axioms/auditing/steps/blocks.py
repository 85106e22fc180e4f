"""The blocks step: per layer and position, each block component patched exactly on the example pairs (the
shortest strongly changed ones), for the report's per-position maps; no statistics, no flags."""

from __future__ import annotations

import pandas as pd

from ...patching.api import patch
from ..context import AuditContext, AxiomRecord
from ..examples import blocks_frame
from ..registry import audit_step

FIELDS = ("axiom", "example", "pair", "component", "layer", "position", "token", "baseline_token", "effect")


@audit_step("blocks", title="Blocks by position", unit="block position", target="blocks", method="exact",
            columns=("component", "layer", "position"), reads=("examples", "batch_size"), flags=False,
            fields=FIELDS)
def blocks(context: AuditContext, records: list[AxiomRecord], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-position effects of resid_pre, attn_out and mlp_out on each axiom's example pairs, to the baseline."""
    settings, found = context.settings, []
    for record in records:
        if not record.examples:
            continue
        with context.timed(record, "blocks"):
            result = context.work.patched(record.name, "blocks", lambda record=record: patch(
                context.ranker, record.pairs.take(record.examples), "blocks", "exact", batch_size=settings.batch_size,
                direction="to_baseline", delta=settings.tolerance, progress=context.progress,
                clean_runs=context.clean_runs))
        found.append(blocks_frame(record.spec, result, record.examples, context.ranker, record.pairs))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame()
