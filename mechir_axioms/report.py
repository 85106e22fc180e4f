"""Render an `Audit` as one self-contained HTML file: inline CSS, SVG, canvas and JS; nothing fetched."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

if TYPE_CHECKING:
    from .auditing import Audit

CELL = 22
FLAGGED_SHOWN = 12


def _pvalue(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("mechir_axioms", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )
    environment.filters["pvalue"] = _pvalue
    return environment


def _fill(value: float, scale: float) -> str:
    """Diverging colour: red for effects the axiom expects, blue for effects against it."""
    if math.isnan(value):
        return "#f0f0f0"
    t = max(-1.0, min(1.0, value / scale))
    fade = round(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def _heads_grid(heads: pd.DataFrame, scale: float) -> dict[str, Any]:
    layers, count = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
    left, top = 56, 22
    cells = [
        {
            "x": left + int(row.head) * CELL, "y": top + int(row.layer) * CELL, "size": CELL - 2,
            "fill": _fill(row.effect, scale), "flag": row.flag,
            "title": (f"layer {row.layer}, head {row.head}: effect {row.effect:+.3f} "
                      f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}], q = {_pvalue(row.q_value)}"
                      + (f", {row.flag}" if row.flag else "")),
        }
        for row in heads.itertuples()
    ]
    return {
        "cells": cells, "width": left + count * CELL + 8, "height": top + layers * CELL + 8,
        "row_labels": [{"x": left - 6, "y": top + layer * CELL + CELL / 2 + 3, "text": f"layer {layer}"} for layer in range(layers)],
        "column_labels": [{"x": left + head * CELL + CELL / 2 - 1, "y": top - 8, "text": str(head)} for head in range(count)],
    }


def _changed(tokens: list[str], baseline: list[str]) -> list[bool]:
    return [a != b for a, b in zip(tokens, baseline)]


def _none_for_nan(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in matrix]


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
                         "delta": float(pair["delta"])})
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


def render(audit: Audit) -> str:
    """The report's HTML for an audit (in memory or loaded from disk)."""
    from .spec import load_axiom

    settings, model = audit.manifest["settings"], audit.manifest["model"]
    effects = audit.heads["effect"].to_numpy(dtype=float)
    finite = np.abs(effects[~np.isnan(effects)])
    scale = float(max(np.quantile(finite, 0.99), 1e-6)) if len(finite) else 1.0
    plot_data: dict[str, Any] = {"scale": scale, "blocks": {}, "attention": {}}
    sections = []
    for row in audit.axioms.itertuples():
        try:
            spec = load_axiom(row.axiom)
            description, citation = spec.description, spec.citation
        except (ValueError, KeyError, FileNotFoundError):  # a user's spec folder that is not on this machine
            description, citation = "", ""
        heads = audit.heads[audit.heads["axiom"] == row.axiom]
        flagged = audit.flagged(row.axiom)
        sections.append({
            "axiom": row.axiom, "title": row.title, "description": description, "citation": citation,
            "heads": _heads_grid(heads, scale) if len(heads) else None,
            "flagged": flagged.head(FLAGGED_SHOWN).to_dict("records"),
            "more_flagged": max(0, len(flagged) - FLAGGED_SHOWN),
            "blocks": _blocks(audit, row.axiom, plot_data),
            "attention": _attention(audit, row.axiom, plot_data),
        })
    provenance = []
    for name, info in audit.manifest["axioms"].items():
        excluded = info.get("excluded")
        provenance.append({
            "axiom": name, "spec_hash": info.get("spec_hash", "")[:12], "data_hash": info.get("data_hash", "")[:12],
            "filler": info.get("filler"), "n_built": info.get("n_built"), "n_requested": info.get("n_requested"),
            "excluded": (f"{excluded['patching']} with |perturbed - baseline| < {excluded['delta']}" if excluded else "not patched"),
            "dropped": ", ".join(f"{reason}: {count}" for reason, count in info.get("dropped", {}).items()) or "none",
        })
    package = resources.files("mechir_axioms") / "templates"
    data = json.dumps(plot_data, separators=(",", ":")).replace("<", "\\u003c")
    return _environment().get_template("report.html.j2").render(
        axioms=audit.axioms.to_dict("records"), sections=sections, settings=settings, model=model,
        manifest=audit.manifest, provenance=provenance, scale=scale, n_tests=int(audit.heads["p_value"].notna().sum()),
        css=Markup((package / "report.css").read_text()), js=Markup((package / "report.js").read_text()),
        plot_data=Markup(data),
    )


def rerender(folder: str | Path) -> Path:
    """Re-render report.html of a saved audit from its results."""
    from .auditing import load_audit
    from .files import write_atomically

    audit = load_audit(folder)
    path = Path(folder) / "report.html"
    write_atomically(path, lambda temporary: temporary.write_text(render(audit), encoding="utf-8"))
    return path
