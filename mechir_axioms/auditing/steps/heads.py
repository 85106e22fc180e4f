"""The heads step: every attention head patched on every pair, both ways, by the audit's method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ...patching.methods import method_for
from ...results.text import shown_bound
from ..context import AuditContext, AxiomRecord, unit_labels
from ..registry import audit_step
from ..verified import verified_heads

FIELDS = ("axiom", "layer", "head", "name", "effect", "ci_low", "ci_high", "p_value", "q_value", "flag")


def verified_summary(unit: str, key: str) -> Callable[[pd.DataFrame, dict[str, Any], dict[str, Any]], str]:
    """A step's summary line: its units' flag counts, and for the verified method which units were measured exactly
    and the missed-flag bound (kept under `key` in each axiom's provenance)."""
    def summary(rows: pd.DataFrame, facts: dict[str, Any], settings: dict[str, Any]) -> str:
        flags = rows["flag"] if "flag" in rows else pd.Series(dtype=str)
        line = f"{unit}s encoding {int((flags == 'encodes').sum())}, violating {int((flags == 'violates').sum())}"
        checked = facts.get(key)
        if checked:
            below = "below" if checked["bound_below_threshold"] else "NOT below"
            line += (f"; verified exactly: {', '.join(checked['verified']) or 'none'}; missed-flag bound "
                     f"{shown_bound(checked['missed_flag_bound'], settings['threshold'])}, {below} the threshold "
                     f"{settings['threshold']}")
            if not checked["bound_below_threshold"] and len(checked["verified"]) >= checked["budget"]:
                line += f" (the budget of {checked['budget']} is spent: a larger verify patches more)"
        return line

    return summary


@audit_step("heads", title="Heads", unit="head", target="heads", method=None, columns=("layer", "head"),
            grid=("layer", "head"), reads=("method", "verify", "margin", "batch_size"),
            provenance=("verification", "excluded"), counts="", fields=FIELDS, summary=verified_summary("head", "verification"))
def heads(context: AuditContext, records: list[AxiomRecord], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each head's share of the score change per axiom, with flags; a head only a screen measured is not flagged."""
    settings = context.settings
    method = method_for(settings.method, "heads")
    changes, labels = {}, []
    for record in records:
        if method.screen:
            changes[record.name], run, verification = verified_heads(record, context, method.name)
            record.provenance["verification"] = verification
            record.seconds.update({f"heads {step}": value for step, value in verification.pop("seconds").items()})
        else:
            with context.timed(record, "heads"):
                changes[record.name], run, _ = context.both_directions(record, "heads", context.job("heads", method.name))
        record.provenance["excluded"] = {"patching": run.excluded, "delta": settings.tolerance}
        labels = unit_labels(run, ("layer", "head"))
    frame = context.findings("heads", records, changes, labels)
    mark_measured(frame, records, method.verify if method.screen else method.name)
    return frame


def mark_measured(frame: pd.DataFrame, records: list[AxiomRecord], method: str, key: str = "verification") -> None:
    """Say how each unit's effect was measured; a unit that only the screen measured carries no test flag and no
    flag (`key`: where the step keeps its verification in each axiom's provenance)."""
    if frame.empty:
        frame["measured"] = pd.Series(dtype=str)
        return
    measured = np.full(len(frame), method, dtype=object)
    for record in records:
        if key in record.provenance:
            rows = (frame["axiom"] == record.name).to_numpy()
            exact = np.asarray(record.provenance[key]["measured"], dtype=bool).reshape(-1)
            measured[rows] = np.where(exact, "exact", "screened")
    frame["measured"] = measured
    frame.loc[frame["measured"] == "screened", ["test", "flag"]] = ""
