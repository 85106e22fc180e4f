"""Render an intervention's assessment as one self-contained HTML file: the summary line, the ranking measures
before and after, the per-axiom change, and each query's nDCG@10 change as an inline SVG bar chart."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..results.intervention import InterventionResult
from ..results.pages import page
from ..results.text import percent
from .audit_page import _asset, _environment, _pvalue

CHART_HEIGHT = 180
BAR = 12


def _number(value: float, digits: int = 4, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def query_chart(queries: pd.DataFrame, measure: str) -> dict[str, Any]:
    """Bars of each query's change in `measure` (after - before), sorted from the largest loss to the largest gain."""
    rows = queries[queries["measure"] == measure].sort_values(["difference", "qid"], kind="stable")
    scale = max(float(rows["difference"].abs().max()) if len(rows) else 0.0, 1e-9)
    middle, half, left = CHART_HEIGHT / 2, CHART_HEIGHT / 2 - 10, 48
    bars = []
    for index, row in enumerate(rows.itertuples()):
        height = abs(row.difference) / scale * half
        bars.append({
            "x": left + index * BAR, "y": middle - height if row.difference > 0 else middle, "w": BAR - 2,
            "h": max(height, 0.5), "kind": "gain" if row.difference > 0 else "loss" if row.difference < 0 else "same",
            "title": f"query {row.qid}: {measure} {row.before:.3f} -> {row.after:.3f} ({row.difference:+.3f})",
        })
    return {"bars": bars, "width": left + max(len(bars), 1) * BAR + 8, "height": CHART_HEIGHT, "middle": middle,
            "left": left, "top_label": f"{scale:+.3f}", "bottom_label": f"{-scale:+.3f}",
            "gains": int((rows["difference"] > 0).sum()), "losses": int((rows["difference"] < 0).sum()),
            "same": int((rows["difference"] == 0).sum())}


def _axiom_rows(axioms: pd.DataFrame) -> list[dict[str, str]]:
    return [{
        "axiom": a.axiom, "expect": a.expect, "pairs": str(a.n_pairs),
        "agreement": f"{percent(a.agreement_before)} \u2192 {percent(a.agreement_after)}",
        "agreement_change": f"{percent(a.agreement_change, True)} [{percent(a.agreement_low, True)}, "
                            f"{percent(a.agreement_high, True)}]",
        "agreement_p": _pvalue(a.agreement_p), "significant": a.agreement_low > 0 or a.agreement_high < 0,
        "mean": f"{a.mean_before:+.3g} \u2192 {a.mean_after:+.3g}",
        "mean_change": f"{a.mean_change:+.3g} [{a.mean_low:+.3g}, {a.mean_high:+.3g}]",
        "mean_p": _pvalue(a.mean_p), "verdicts": f"{a.verdict_before} \u2192 {a.verdict_after}",
        "verdict_after": a.verdict_after,
    } for a in axioms.itertuples()]


def _measure_rows(measures: pd.DataFrame, alpha: float) -> list[dict[str, str]]:
    return [{
        "measure": m.measure, "before": _number(m.before), "after": _number(m.after),
        "change": f"{_number(m.difference, signed=True)} [{_number(m.low, signed=True)}, {_number(m.high, signed=True)}]",
        "p": _pvalue(m.p_value), "t_p": _pvalue(m.t_test_p), "significant": m.p_value <= alpha,
    } for m in measures.itertuples()]


@page(InterventionResult)
def render_intervention(result: InterventionResult) -> str:
    """The intervention report's HTML."""
    manifest = result.manifest
    primary = str(result.measures["measure"].iloc[0])
    return _environment().get_template("intervention.html.j2").render(
        result=result, manifest=manifest, settings=manifest["settings"], model=manifest["model"],
        axioms=_axiom_rows(result.axioms), measures=_measure_rows(result.measures, manifest["alpha"]),
        primary=primary, chart=query_chart(result.queries, primary), saved=result.folder is not None,
        css=_asset("report.css"),
    )
