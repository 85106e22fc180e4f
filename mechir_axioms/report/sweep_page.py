"""Render a design sweep as one self-contained HTML file: per axiom, each variant's behaviour and flags, and
which findings hold under every variant and which depend on one choice."""

from __future__ import annotations

from importlib import resources

from markupsafe import Markup

from ..results.pages import page
from ..results.steps import flagged_steps, steps_of
from ..results.sweep import Sweep
from .audit_page import _environment


def sweep_steps(sweep: Sweep) -> tuple[str, ...]:
    """The steps each of the sweep's audits ran (sweeps saved before steps were recorded ran heads and cells)."""
    options = sweep.manifest.get("options", {})
    return steps_of(options) if options.get("steps") or options.get("targets") else ("heads", "cells")


@page(Sweep)
def render_sweep(sweep: Sweep) -> str:
    """The sweep report's HTML."""
    sections = []
    for axiom, variants in sweep.variants.groupby("axiom", sort=False):
        found = sweep.stability[sweep.stability["axiom"] == axiom]
        labels = variants["variant"].tolist()
        rows = []
        for record in found.sort_values(["frame", "holds", "share"], ascending=[False, False, False]).to_dict("records"):
            lost = set(record["lost_under"])
            rows.append({**record, "marks": ["" if label in lost else "✓" for label in labels],
                         "depends_on": ", ".join(record["depends_on"])})
        frames = [(step.title, step.name) for step in flagged_steps(sweep_steps(sweep))]
        sections.append({"axiom": axiom, "variants": variants.to_dict("records"), "labels": labels,
                         "frames": [(title, [row for row in rows if row["frame"] == frame]) for title, frame in frames]})
    package = resources.files("mechir_axioms.report") / "templates"
    return _environment().get_template("sweep.html.j2").render(
        sections=sections, manifest=sweep.manifest, ran=sweep_steps(sweep), css=Markup((package / "report.css").read_text()))
