"""The circuit of one axiom as an SVG layout: flagged heads as nodes in layer columns, the score after the last
layer, and flagged paths (sender head into receiver) as arrows whose width follows the share they carry.

The layout is plain data for the `circuit` macro of circuit.html.j2; `circuit_svg` renders it alone, as a
standalone figure file.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

COLUMN, ROW, NODE_W, NODE_H = 96, 30, 46, 20
LEFT, TOP = 20, 34
MAX_STROKE = 7.0
LEGEND = 22
"""Height of a standalone figure's legend line, below the circuit."""
ENCODES, VIOLATES = "#c62828", "#1565c0"
"""Red for what the axiom expects, blue against it: the report's heatmap colours."""


def _colour(effect: float) -> str:
    return ENCODES if effect >= 0 else VIOLATES


def _hover(row: Any, what: str) -> str:
    selection = getattr(row, "selection", getattr(row, "replication", math.nan))
    return (f"{what}: effect {row.effect:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}], q = {row.q_value:.3g}"
            + (f", {row.flag}" if row.flag else ", not flagged")
            + ("" if selection != selection else f", selected in {selection:.0%} of half samples"))


def circuit(heads: pd.DataFrame, paths: pd.DataFrame, n_layers: int, unflagged: int = 0) -> dict[str, Any] | None:
    """The layout of one axiom's circuit from its heads and paths frames (None when paths were not measured).

    Nodes: the flagged heads and every sender of a drawn edge, by layer; "score" after the last layer.
    Edges: the flagged paths, and the `unflagged` strongest unflagged ones (dashed), width proportional to |effect|
    (the largest drawn at MAX_STROKE)."""
    if paths is None or paths.empty:
        return None
    flagged_paths = paths[paths["flag"] != ""]
    weaker = paths[paths["flag"] == ""]
    weaker = weaker.reindex(weaker["effect"].abs().sort_values(ascending=False).index).head(unflagged)
    drawn = pd.concat([flagged_paths, weaker]) if len(weaker) else flagged_paths
    flagged_heads = heads[heads["flag"] != ""] if len(heads) else heads
    head_rows = {f"{int(row.layer)}.{int(row.head)}": row for row in heads.itertuples()} if len(heads) else {}
    names = {f"{int(row.layer)}.{int(row.head)}": (int(row.layer), int(row.head)) for row in flagged_heads.itertuples()}
    for row in drawn.itertuples():
        names.setdefault(row.sender, (int(row.sender_layer), int(row.sender_head)))
        if row.receiver != "score":
            names.setdefault(row.receiver, (int(row.receiver_layer), int(row.receiver_head)))
    by_layer: dict[int, list[str]] = {}
    for name, (layer, head) in sorted(names.items(), key=lambda item: item[1]):
        by_layer.setdefault(layer, []).append(name)
    tallest = max([len(column) for column in by_layer.values()] + [1])
    height = TOP + tallest * ROW + 16
    position: dict[str, tuple[float, float]] = {}
    nodes = []
    for layer, column in by_layer.items():
        for index, name in enumerate(column):
            x, y = LEFT + layer * COLUMN, TOP + index * ROW + (tallest - len(column)) * ROW / 2
            position[name] = (x, y)
            row = head_rows.get(name)
            flag = row.flag if row is not None else ""
            nodes.append({"x": x, "y": y, "w": NODE_W, "h": NODE_H, "text": name, "flag": flag,
                          "fill": {"encodes": "#ffcdd2", "violates": "#bbdefb"}.get(flag, "#ffffff"),
                          "title": _hover(row, f"head {name}") if row is not None else f"head {name}"})
    score_x, score_y = LEFT + n_layers * COLUMN, TOP + (tallest - 1) * ROW / 2
    position["score"] = (score_x, score_y)
    nodes.append({"x": score_x, "y": score_y, "w": NODE_W, "h": NODE_H, "text": "score", "flag": "score",
                  "fill": "#eeeeee", "title": "the score: the final residual stream where the score reads it"})
    largest = float(drawn["effect"].abs().max()) if len(drawn) else 1.0
    edges = []
    for row in drawn.sort_values("effect", key=abs).itertuples():
        (x1, y1), (x2, y2) = position[row.sender], position[row.receiver]
        start, end = (x1 + NODE_W, y1 + NODE_H / 2), (x2, y2 + NODE_H / 2)
        bend = (end[0] - start[0]) / 2
        edges.append({
            "d": f"M{start[0]:.1f},{start[1]:.1f} C{start[0] + bend:.1f},{start[1]:.1f} {end[0] - bend:.1f},{end[1]:.1f} "
                 f"{end[0]:.1f},{end[1]:.1f}",
            "width": round(max(1.0, MAX_STROKE * abs(row.effect) / largest), 2), "colour": _colour(row.effect),
            "marker": "encodes" if row.effect >= 0 else "violates", "unflagged": not row.flag,
            "title": _hover(row, f"path {row.sender} \u2192 {row.receiver}"),
        })
    layers = [{"x": LEFT + layer * COLUMN + NODE_W / 2, "text": f"layer {layer}"} for layer in range(n_layers)]
    layers.append({"x": score_x + NODE_W / 2, "text": "output"})
    strongest = paths.reindex(paths["effect"].abs().sort_values(ascending=False).index).head(3)
    return {
        "nodes": nodes, "edges": edges, "layers": layers, "width": score_x + NODE_W + LEFT, "height": height,
        "flagged_edges": len(flagged_paths), "edges_measured": len(paths), "unflagged_drawn": len(weaker),
        "pairs": int(paths["n"].iloc[0]),
        "strongest": [f"{row.name} ({row.effect:+.3f})" for row in strongest.itertuples()],
        "table": flagged_paths.reindex(flagged_paths["effect"].abs().sort_values(ascending=False).index)
                              .head(12).to_dict("records"),
    }


def circuit_svg(heads: pd.DataFrame, paths: pd.DataFrame, n_layers: int, label: str, unflagged: int = 0) -> str:
    """One axiom's circuit as a standalone SVG document (for a paper or the README), with a legend; `unflagged`
    adds that many of the strongest unflagged edges, dashed."""
    layout = circuit(heads, paths, n_layers, unflagged)
    if layout is None:
        raise ValueError("no paths were measured: audit with targets heads,paths")
    layout["height"] += LEGEND
    environment = Environment(loader=PackageLoader("mechir_axioms.report", "templates"),
                              autoescape=select_autoescape(["html", "j2"]))
    macro = environment.get_template("circuit.html.j2").module.circuit
    body = str(macro(layout, label, "figure", standalone=True))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body
