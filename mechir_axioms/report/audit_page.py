"""Render an `Audit` as one self-contained HTML file: inline CSS, SVG, canvas and JS; nothing fetched.

Heads, block cells, blocks and paths have views of their own; any other registered step is shown by the generic
view: its map over (layer, its grid column) when it declares one, and its flagged units."""

from __future__ import annotations

import json
import math
from importlib import resources
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ..analysis.findings import strongest_first
from ..core.errors import SpecError
from ..models.rankers import RANKER_KINDS
from ..results.audit import Audit
from ..results.intervention import intervention_label
from ..results.pages import page
from ..results.settings import screen_name
from ..results.text import shown_bound
from ..results.steps import STEPS, Step, steps_of
from ..specs.axiom import Axiom, parse_axiom
from .circuit import circuit
from .inference import axiom_lines, fragile, rule_text, selected

OWN_VIEWS = ("heads", "cells", "blocks", "paths")
"""The steps the report shows in views of their own; every other step gets the generic view."""

CELL = 22
FLAGGED_SHOWN = 12


def kind_title(kind: str | None) -> str:
    """The ranker kind in words ("bi-encoder ranker", "pointwise LLM reranker"); "<kind> ranker" if unregistered."""
    ranker = RANKER_KINDS.get(kind or "")
    return ranker.title if ranker is not None else f"{kind} ranker"


def _pvalue(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("mechir_axioms.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )
    environment.filters["pvalue"] = _pvalue
    environment.filters["selected"] = selected
    environment.filters["shown_bound"] = shown_bound
    return environment


def _fill(value: float, scale: float) -> str:
    """Diverging colour: red for effects the axiom expects, blue for effects against it."""
    if math.isnan(value):
        return "#f0f0f0"
    t = max(-1.0, min(1.0, value / scale))
    fade = round(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def _effect_title(row: Any, describe: Callable[[Any], str]) -> str:
    """A cell's hover text in an audit's map: what it is, its effect with CI and q-value, its flag."""
    return (f"{describe(row)}: effect {row.effect:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}], "
            f"q = {_pvalue(row.q_value)}" + (f", {row.flag}" if row.flag else "")
            + (", screened (an estimate), not verified" if getattr(row, "measured", "") == "screened" else ""))


def _grid(rows: pd.DataFrame, columns: list[str], column_of: Callable[[Any], int], describe: Callable[[Any], str],
          scale: float, cell_width: int = CELL, groups: Sequence[tuple[str, int, int]] = (),
          title: Callable[[Any], str] | None = None) -> dict[str, Any]:
    """An SVG heatmap, one row per layer: cells coloured by effect, flagged ones outlined, a title to hover.

    column_of(row) gives a row's column; `groups` are (label, first column, last column) spans above them;
    title(row) replaces the default hover text (what describe(row) names, its effect, CI, q-value and flag).
    """
    layers = int(rows["layer"].max()) + 1
    left, top = 56, 22 + (14 if groups else 0)
    cells = [
        {
            "x": left + column_of(row) * cell_width, "y": top + int(row.layer) * CELL, "w": cell_width - 2, "h": CELL - 2,
            "fill": _fill(row.effect, scale), "flag": row.flag,
            "title": title(row) if title is not None else _effect_title(row, describe),
        }
        for row in rows.itertuples()
    ]
    return {
        "cells": cells, "width": left + len(columns) * cell_width + 8, "height": top + layers * CELL + 8,
        "row_labels": [{"x": left - 6, "y": top + layer * CELL + CELL / 2 + 3, "text": f"layer {layer}"} for layer in range(layers)],
        "column_labels": [{"x": left + (index + 0.5) * cell_width - 1, "y": top - 8, "text": text} for index, text in enumerate(columns)],
        "group_labels": [{"x": left + (first + last + 1) * cell_width / 2, "y": 12, "text": text} for text, first, last in groups],
    }


def _heads_grid(heads: pd.DataFrame, scale: float, title: Callable[[Any], str] | None = None) -> dict[str, Any]:
    """The layer x head map of one axiom's heads frame (columns layer, head, effect, flag, ...)."""
    count = int(heads["head"].max()) + 1
    return _grid(heads, [str(head) for head in range(count)], lambda row: int(row.head),
                 lambda row: f"layer {row.layer}, head {row.head}", scale, title=title)


def _asset(name: str) -> Markup:
    """A file of the templates folder (a stylesheet or script), to inline into a page."""
    return Markup((resources.files("mechir_axioms.report") / "templates" / name).read_text())


def region_names(target: str) -> dict[str, str]:
    """Short column labels of the token regions, for pairs that change the `target` text."""
    other = "query" if target == "document" else "doc"
    return {"span": "span", "text": "doc" if target == "document" else "query", "other": other, "markup": "special"}


def _cells_grid(cells: pd.DataFrame, target: str, scale: float) -> dict[str, Any]:
    """Columns: for each component (resid_pre, attn_out, mlp_out) its regions, a blank column between."""
    components = list(dict.fromkeys(cells["component"]))
    regions = list(dict.fromkeys(cells["region"]))
    names = region_names(target)
    width = len(regions) + 1
    columns = [(names[regions[index]] if index < len(regions) else "") for _ in components for index in range(width)][:-1]
    groups = [(component, c * width, c * width + len(regions) - 1) for c, component in enumerate(components)]
    return _grid(cells, columns, lambda row: components.index(row.component) * width + regions.index(row.region),
                 lambda row: f"{row.component}, layer {row.layer}, {names[row.region]} tokens", scale, 2 * CELL, groups)


def _changed(tokens: list[str], baseline: list[str]) -> list[bool]:
    return [a != b for a, b in zip(tokens, baseline)]


def _none_for_nan(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in matrix]


def _scale(effects: np.ndarray) -> float:
    """The colour scale of a heatmap: the 99th percentile of |effect|, so one extreme cell does not wash it out."""
    finite = np.abs(effects[~np.isnan(effects)])
    return float(max(np.quantile(finite, 0.99), 1e-6)) if len(finite) else 1.0


def _blocks(audit: Audit, axiom: str, plot_data: dict[str, Any]) -> list[dict[str, Any]]:
    if audit.blocks.empty:
        return []
    sections = []
    frame = audit.blocks[audit.blocks["axiom"] == axiom]
    pairs = audit.pairs[audit.pairs["axiom"] == axiom].set_index("pair")
    for example, cells in frame.groupby("example", sort=True):
        key = f"{axiom}-{example}"
        layers = int(cells["layer"].max()) + 1
        first = cells[(cells["component"] == cells["component"].iloc[0]) & (cells["layer"] == 0)].sort_values("position")
        tokens, baseline = first["token"].tolist(), first["baseline_token"].tolist()
        components = list(dict.fromkeys(cells["component"]))
        plot_data["blocks"][key] = {
            "tokens": tokens, "baseline": baseline, "changed": _changed(tokens, baseline),
            "scale": _scale(cells["effect"].to_numpy(dtype=float)),
            "components": {
                component: _none_for_nan(
                    cells[cells["component"] == component].pivot(index="layer", columns="position", values="effect")
                    .reindex(range(layers)).to_numpy(dtype=float)
                )
                for component in components
            },
        }
        pair = pairs.loc[int(cells["pair"].iloc[0])]
        sections.append({"key": key, "components": components, "qid": pair["qid"], "docno": pair["docno"],
                         "delta": float(pair["delta"]), "scale": plot_data["blocks"][key]["scale"]})
    return sections


def _attention(audit: Audit, axiom: str, plot_data: dict[str, Any]) -> dict[str, Any] | None:
    example = audit.attention.get(axiom)
    if not example or not example["heads"]:
        return None
    plot_data["attention"][axiom] = {
        "tokens": example["tokens"], "changed": _changed(example["tokens"], example["baseline_tokens"]),
        "heads": [{"pattern": head["pattern"]} for head in example["heads"]],
    }
    return {"heads": example["heads"], "flagged": any(head["flag"] for head in example["heads"])}


def saved_spec(manifest: dict[str, Any], axiom: str) -> Axiom | None:
    """The spec an axiom was audited with, from the text saved in the manifest (None if none was saved)."""
    raw = manifest.get("axioms", {}).get(axiom, {}).get("spec")
    if not raw:
        return None
    try:
        return parse_axiom(raw, f"the spec of {axiom} saved with the audit")
    except SpecError:  # saved by a version whose spec fields differ: describe the axiom by its frames alone
        return None


def _verification(facts: dict[str, Any] | None, heads: int) -> dict[str, Any] | None:
    """What method "verified" measured exactly for one axiom, for the report (None for other methods)."""
    return None if not facts else {**facts, "heads": heads}


def _flagged(rows: pd.DataFrame) -> pd.DataFrame:
    return strongest_first(rows[rows["flag"] != ""])


def _generic_view(step: Step, rows: pd.DataFrame, scale: float) -> dict[str, Any]:
    """A step without a view of its own: its map over (layer, grid column) if it declares one, and its flagged
    units (the first FLAGGED_SHOWN, strongest first) with their label columns."""
    grid = None
    if step.grid is not None and len(rows) and all(column in rows for column in step.grid):
        values = list(dict.fromkeys(rows[step.grid[1]]))
        grid = _grid(rows, [str(value) for value in values], lambda row: values.index(getattr(row, step.grid[1])),
                     lambda row: ", ".join(f"{column} {getattr(row, column)}" for column in step.columns), scale)
    flagged = _flagged(rows) if step.flags and len(rows) else rows.iloc[0:0]
    return {"step": step.name, "title": step.title, "unit": step.unit, "columns": list(step.columns), "grid": grid,
            "flags": step.flags, "rows": len(rows), "flagged": flagged.head(FLAGGED_SHOWN).to_dict("records"),
            "more_flagged": max(0, len(flagged) - FLAGGED_SHOWN), "fragile": fragile(rows) if step.flags else [],
            "dashboards": dashboards(rows)}


def dashboards(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The units that carry top-activating contexts (the features step's flagged and strongest features), flagged
    first, strongest first: each with its contexts, the focus token apart from the tokens around it."""
    if "contexts" not in rows or rows.empty:
        return []
    shown = rows[rows["contexts"].fillna("") != ""]
    shown = pd.concat([_flagged(shown), strongest_first(shown[shown["flag"] == ""])])
    cards = []
    for unit in shown.to_dict("records"):
        lines = []
        for context in json.loads(unit["contexts"]):
            focus, tokens = context["focus"], context["tokens"]
            lines.append({"before": " ".join(tokens[:focus]), "token": tokens[focus] if focus < len(tokens) else "",
                          "after": " ".join(tokens[focus + 1:]), "activation": context["activation"],
                          "input": context["input"], "pair": context["pair"]})
        fires = unit.get("fires")
        cards.append({**unit, "lines": lines,
                      "fires_percent": None if fires is None or fires != fires else 100 * float(fires)})
    return cards


def _other_views(audit: Audit, axiom: str) -> list[dict[str, Any]]:
    """The generic views of one axiom: every step that ran and has no view of its own."""
    views = []
    for name, frame in audit.frames.items():
        if name in OWN_VIEWS or name not in STEPS or frame.empty:
            continue
        rows = frame[frame["axiom"] == axiom]
        effects = frame["effect"].to_numpy(dtype=float) if "effect" in frame else np.array([])
        views.append(_generic_view(STEPS[name], rows, _scale(effects)))
    return views


def counted_steps(audit: Audit) -> list[dict[str, str]]:
    """The counted steps other than heads and cells (which the summary table always shows), with the prefix of
    their count columns."""
    return [{"title": step.title, "unit": step.unit, "counts": step.counts} for name, step in STEPS.items()
            if step.counts is not None and name not in ("heads", "cells") and name in audit.frames
            and f"{step.counts}encodes" in audit.axioms]


@page(Audit)
def render(audit: Audit) -> str:
    """The report's HTML for an audit (in memory or loaded from disk); each axiom is described by the spec
    text saved with the audit, never by whatever spec of that name the catalogue holds today. An audit made under
    an intervention (the "after" audit of `intervene`) names it in its title, header and reproduce section."""
    settings, model = audit.manifest["settings"], audit.manifest["model"]
    scale = _scale(audit.heads["effect"].to_numpy(dtype=float))
    cell_scale = _scale(audit.cells["effect"].to_numpy(dtype=float))
    plot_data: dict[str, Any] = {"blocks": {}, "attention": {}}
    sections = []
    for row in audit.axioms.itertuples():
        spec = saved_spec(audit.manifest, row.axiom)
        description, citation = (spec.description, spec.citation) if spec else ("", "")
        masked = spec is not None and spec.baseline.fill == "mask"
        heads = audit.heads[audit.heads["axiom"] == row.axiom]
        cells = audit.cells[audit.cells["axiom"] == row.axiom]
        target = audit.manifest["axioms"][row.axiom].get("target", "document")
        flagged, flagged_cells = _flagged(heads), _flagged(cells)
        paths = audit.paths[audit.paths["axiom"] == row.axiom] if len(audit.paths) else audit.paths
        sections.append({
            "axiom": row.axiom, "title": row.title, "description": description, "citation": citation, "masked": masked,
            "heads": _heads_grid(heads, scale) if len(heads) else None,
            "flagged": flagged.head(FLAGGED_SHOWN).to_dict("records"),
            "more_flagged": max(0, len(flagged) - FLAGGED_SHOWN),
            "cells": _cells_grid(cells, target, cell_scale) if len(cells) else None,
            "cell_pairs": int(cells["n"].iloc[0]) if len(cells) else 0,
            "flagged_cells": [{**cell, "region": region_names(target)[cell["region"]]}
                              for cell in flagged_cells.head(FLAGGED_SHOWN).to_dict("records")],
            "more_flagged_cells": max(0, len(flagged_cells) - FLAGGED_SHOWN),
            "fragile": fragile(heads), "fragile_cells": [{**cell, "name": f"{cell['component']} {cell['layer']} "
                                                          f"{region_names(target)[cell['region']]}"}
                                                         for cell in fragile(cells)],
            "inference": axiom_lines(audit.manifest["axioms"][row.axiom], settings,
                                     {name: step.title for name, step in STEPS.items()}),
            "blocks": _blocks(audit, row.axiom, plot_data),
            "attention": _attention(audit, row.axiom, plot_data),
            "verification": _verification(audit.manifest["axioms"][row.axiom].get("verification"), len(heads)),
            "circuit": circuit(heads, paths, int(model["layers"])),
            "views": _other_views(audit, row.axiom),
        })
    provenance = []
    for name, info in audit.manifest["axioms"].items():
        excluded, cells = info.get("excluded"), info.get("cells")
        provenance.append({
            "axiom": name, "spec_hash": info.get("spec_hash", "")[:12], "data_hash": info.get("data_hash", "")[:12],
            "filler": info.get("filler"), "n_built": info.get("n_built"), "n_requested": info.get("n_requested"),
            "excluded": (f"{excluded['patching']} with |perturbed - baseline| < {excluded['delta']}" if excluded else "not patched"),
            "cells": (f"{cells['pairs']} random pairs, {cells['excluded']} of them excluded" if cells else "not patched"),
            "dropped": ", ".join(f"{reason}: {count}" for reason, count in info.get("dropped", {}).items()) or "none",
        })
    package = resources.files("mechir_axioms.report") / "templates"
    data = json.dumps(plot_data, separators=(",", ":")).replace("<", "\\u003c")
    return _environment().get_template("report.html.j2").render(
        axioms=audit.axioms.to_dict("records"), sections=sections, settings=settings, steps=list(steps_of(settings)),
        counted=counted_steps(audit), model=model,
        cell_counts=", ".join(f"{section['axiom']} {section['cell_pairs']}" for section in sections if section["cells"]), model_title=kind_title(model.get("kind")),
        manifest=audit.manifest, intervention=intervention_label(audit.manifest), screen=screen_name(settings), provenance=provenance, scale=scale, cell_scale=cell_scale,
        inference=Markup(rule_text(settings)), n_tests=int(audit.heads["p_value"].notna().sum()), n_cell_tests=int(audit.cells["p_value"].notna().sum()),
        css=Markup((package / "report.css").read_text()), js=Markup((package / "report.js").read_text()),
        plot_data=Markup(data),
    )
