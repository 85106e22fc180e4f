"""Render a comparison of two audits as one self-contained HTML file: per axiom both head maps and, when their
shapes match, the map of their difference, beside the agreement change, the flags gained and lost and the verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..results.audit import Audit
from ..results.comparison import Comparison, legend
from ..results.intervention import intervention_label
from ..results.pages import page
from ..results.steps import STEPS
from ..results.text import percent
from .audit_page import _asset, _environment, _heads_grid, _scale

DIFFERENCE_MARKS = {"gained": "+", "lost": "\u2212", "changed": "\u00b1"}
"""The letter on a difference-map cell whose flag changed: gained, lost, or changed from one flag to the other."""


def head_map_shape(heads: pd.DataFrame) -> tuple[int, int] | None:
    """The layer x head shape of one axiom's heads frame (None when its heads were not patched)."""
    return (int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1) if len(heads) else None


def _flag_change(old: str, new: str) -> str:
    """How a head's flag moved from the old audit to the new: "", "gained", "lost" or "changed"."""
    if old == new:
        return ""
    return "gained" if not old else "lost" if not new else "changed"


def difference_frame(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One axiom's heads in both audits: effect = new - old, flag = how the head's flag changed."""
    both = old.merge(new, on=["layer", "head"], suffixes=("_old", "_new"))
    return pd.DataFrame({
        "layer": both["layer"], "head": both["head"],
        "effect_old": both["effect_old"], "effect_new": both["effect_new"],
        "effect": both["effect_new"] - both["effect_old"],
        "flag_old": both["flag_old"], "flag_new": both["flag_new"],
        "flag": [_flag_change(a, b) for a, b in zip(both["flag_old"], both["flag_new"])],
    })


def _difference_title(row: Any) -> str:
    """A difference-map cell's hover text: both effects, their change, and how the flag moved."""
    flag = {"gained": f", flag gained ({row.flag_new})", "lost": f", flag lost ({row.flag_old})",
            "changed": f", flag changed ({row.flag_old} to {row.flag_new})"}.get(row.flag, "")
    return (f"layer {row.layer}, head {row.head}: effect {row.effect_old:+.3f} (old) to {row.effect_new:+.3f} (new), "
            f"change {row.effect:+.3f}{flag}")


def _heads_of(audit: Audit, axiom: str) -> pd.DataFrame:
    return audit.heads[audit.heads["axiom"] == axiom]


def _maps(axiom: str, old: Audit, new: Audit, scale: float, difference_scale: float) -> dict[str, Any]:
    """One axiom's head maps: old and new on one colour scale, and their difference when the shapes match."""
    heads_old, heads_new = _heads_of(old, axiom), _heads_of(new, axiom)
    shape_old, shape_new = head_map_shape(heads_old), head_map_shape(heads_new)
    maps = [{"label": label, "shape": shape, "grid": _heads_grid(heads, scale) if shape else None}
            for label, heads, shape in (("old", heads_old, shape_old), ("new", heads_new, shape_new))]
    difference, reason = None, ""
    if axiom not in set(new.axioms["axiom"]):
        reason = "The axiom is missing from the new audit, so no difference map is drawn"
    elif shape_old is None or shape_new is None:
        where = "either audit" if shape_old == shape_new else "the old audit" if shape_old is None else "the new audit"
        reason = f"The heads were not patched in {where}, so no difference map is drawn"
    elif shape_old != shape_new:
        reason = (f"The two head maps differ in shape ({shape_old[0]} \u00d7 {shape_old[1]} vs "
                  f"{shape_new[0]} \u00d7 {shape_new[1]} layers \u00d7 heads), so no difference map is drawn")
    else:
        difference = _heads_grid(difference_frame(heads_old, heads_new), difference_scale, title=_difference_title)
    return {"maps": maps, "difference": difference, "no_difference": reason}


def _difference_scale(axioms: Sequence[str], old: Audit, new: Audit) -> float:
    """The colour scale shared by every difference map: the 99th percentile of |new - old| over all axioms."""
    changes = []
    for name in axioms:
        heads_old, heads_new = _heads_of(old, name), _heads_of(new, name)
        if head_map_shape(heads_old) is not None and head_map_shape(heads_old) == head_map_shape(heads_new):
            changes.append(difference_frame(heads_old, heads_new)["effect"].to_numpy(dtype=float))
    return _scale(np.concatenate(changes)) if changes else 1.0


@page(Comparison)
def render_comparison(comparison: Comparison) -> str:
    """The comparison report's HTML, from the comparison and the two audits it holds."""
    old, new = comparison.old_audit, comparison.new_audit
    names = [row.axiom for row in comparison.axioms]
    scale = max(_scale(old.heads["effect"].to_numpy(dtype=float)), _scale(new.heads["effect"].to_numpy(dtype=float)))
    difference_scale = _difference_scale(names, old, new)
    titles = dict(zip(old.axioms["axiom"], old.axioms["title"]))
    sections = [{
        "row": row, "title": titles.get(row.axiom, ""), "status": "FAIL" if row.failures else "ok",
        "agreement_old": percent(row.agreement_old), "agreement_new": percent(row.agreement_new),
        "change": percent(row.change, signed=True), "low": percent(row.difference_low, signed=True),
        "high": percent(row.difference_high, signed=True),
        "correlation": "n/a" if math.isnan(row.correlation) else f"{row.correlation:.3f}",
        **_maps(row.axiom, old, new, scale, difference_scale),
    } for row in comparison.axioms]
    return _environment().get_template("comparison.html.j2").render(
        comparison=comparison, sections=sections,
        names=[audit.manifest["model"]["name"] + (f" with {label}" if (label := intervention_label(audit.manifest)) else "")
               for audit in (old, new)],
        settings=old.manifest["settings"], scale=scale, difference_scale=difference_scale,
        marks=DIFFERENCE_MARKS, legend=[line for line in legend(comparison.axioms) if line], css=_asset("report.css"), units={name: step.unit.capitalize() for name, step in STEPS.items()},
    )
