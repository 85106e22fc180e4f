"""Compact HTML summaries of an audit, a comparison and a sweep, for Jupyter's `_repr_html_`: a line naming the
model, one small table, and where the results were saved; every text is escaped."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..results.audit import Audit
from ..results.comparison import Comparison
from ..results.pages import page
from ..results.steps import STEPS, steps_of
from ..results.sweep import Sweep
from ..results.text import percent
from .audit_page import kind_title
from .sweep_page import sweep_steps


def _interval(value: float, low: float, high: float, signed: bool = False) -> str:
    return f"{percent(value, signed)} [{percent(low, signed)}, {percent(high, signed)}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table of escaped cells."""
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _saved(folder: Path | None, report: Path | None) -> str:
    """Where the results lie, or that they were not saved."""
    if folder is None:
        return _paragraph("not saved")
    return _paragraph(f"saved in {folder}" + (f"; report: {report}" if report is not None else ""))


def _wrap(*parts: str) -> str:
    return '<div class="mechir-axioms-summary">' + "".join(parts) + "</div>"


@page(Audit, "summary")
def audit_summary(audit: Audit) -> str:
    """Per axiom its verdict, agreement with its 95% Wilson interval and the flag counts of every counted step it
    ran; the model and the folder."""
    model, settings = audit.manifest["model"], audit.manifest["settings"]
    ran = steps_of(settings)
    counted = [step for name, step in STEPS.items() if step.counts is not None and name in ran
               and f"{step.counts}encodes" in audit.axioms]
    header = ["axiom", "verdict", "pairs", "agreement [95% CI]"]
    header += [f"{step.unit}s encoding / violating" for step in counted]
    rows = []
    for row in audit.axioms.to_dict("records"):
        cells = [row["axiom"], row["verdict"], row["n_pairs"],
                 _interval(row["agreement"], row["agreement_low"], row["agreement_high"])]
        cells += [f"{row[step.counts + 'encodes']} / {row[step.counts + 'violates']}" for step in counted]
        rows.append(cells)
    title = (f"Audit of {model['name']} ({kind_title(model.get('kind'))}, {model.get('layers')} layers \u00d7 "
             f"{model.get('heads')} heads): {settings.get('n')} pairs requested per axiom, heads by the "
             f"{settings.get('method')} method")
    return _wrap(_paragraph(title), _table(header, rows), _saved(audit.folder, audit.report_path))


@page(Comparison, "summary")
def comparison_summary(comparison: Comparison) -> str:
    """Per axiom the agreement change with its interval (paired or Newcombe), head-map rho and flags gained and lost; the verdict."""
    header = ["axiom", "agreement old \u2192 new", "change [95% CI]", "head-map rho", "flags gained", "flags lost", "status"]
    rows = [[row.axiom, f"{percent(row.agreement_old)} \u2192 {percent(row.agreement_new)}",
             _interval(row.change, row.difference_low, row.difference_high, signed=True) + (" *" if row.significant else ""),
             "n/a" if math.isnan(row.correlation) else f"{row.correlation:.3f}", len(row.gained), len(row.lost),
             "FAIL" if row.failures else "ok"] for row in comparison.axioms]
    failures = "".join(f"<li>{html.escape(failure)}</li>" for failure in comparison.failures)
    return _wrap(_paragraph(f"old: {comparison.old}"), _paragraph(f"new: {comparison.new}"), _table(header, rows),
                 f"<ul>{failures}</ul>" if failures else "", f"<p><b>result: {html.escape(comparison.verdict)}</b></p>")


@page(Sweep, "summary")
def sweep_summary(sweep: Sweep) -> str:
    """Per axiom and variant its verdict, agreement and flag counts, and how many flags hold under every variant."""
    header = ["axiom", "variant", "verdict", "pairs", "agreement [95% CI]", "heads encoding / violating"]
    heads = "heads" in sweep_steps(sweep)
    rows = [[row.axiom, row.variant, row.verdict, row.n_pairs,
             _interval(row.agreement, row.agreement_low, row.agreement_high),
             f"{row.encodes} / {row.violates}" if heads else "not run"] for row in sweep.variants.itertuples()]
    holding = [f"{axiom}: {int(found['holds'].sum())} of {len(found)} flagged component(s) hold under every variant"
               for axiom, found in sweep.stability.groupby("axiom", sort=False)]
    title = f"Design sweep of {sweep.manifest.get('model')} ({kind_title(sweep.manifest.get('kind'))})"
    return _wrap(_paragraph(title), _table(header, rows), *map(_paragraph, holding),
                 _saved(sweep.folder, sweep.report_path))
