"""Figures of saved audits with matplotlib (the `plot` extra): head maps, block cells, per-position blocks, and
the grid of models x axioms of MechIR's Figure 2, all on one diverging colour scale symmetric about 0.

Red is an effect in the direction the axiom expects, blue one against it; a triangle marks a flagged component
(up: encodes, down: violates). matplotlib is imported on first use, so the package does not need it otherwise.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .core.errors import SettingsError
from .core.outputs import check_file, write_file
from .report.audit_page import region_names
from .results.audit import Audit, load_audit
from .results.steps import STEPS, Step, with_built_in_steps

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import QuadMesh
    from matplotlib.figure import Figure

FORMATS = ("pdf", "svg", "png")
COLORMAP = "RdBu_r"
UNTESTED = "#bdbdbd"  # darker than the scale's pale middle, so untested never reads as 0
TICK_PT, LABEL_PT = 7, 8
FLAG_MARKERS = {"encodes": ("^", "black", "white"), "violates": ("v", "white", "black")}
"""flag -> (marker, face colour, edge colour): visible on deep red, deep blue and pale cells alike."""
PNG_DPI = 300


def grid_frames() -> list[str]:
    """The frames a grid can draw: every registered step with a (layer, column) map (the built-in ones registered
    in a process that has not audited)."""
    return [name for name, step in with_built_in_steps().items() if step.grid is not None]


def _makes(frame: str) -> str:
    """The audit settings that fill a frame, for the error when it is empty."""
    return STEPS[frame].option() + (" and --examples 1 or more" if frame == "blocks" else "")


@dataclass(frozen=True)
class Panel:
    """One map: effects [layer, column] (NaN where untested), flags of the same shape, and column labels."""

    effects: np.ndarray
    flags: np.ndarray
    columns: list[str]
    """Each column's label, or [] for numbered columns (heads), whose ticks are thinned to fit."""
    xlabel: str
    groups: list[tuple[str, int, int]] = field(default_factory=list)
    """(label, first column, last column) spans named above the map, e.g. the components of block cells."""
    bold: list[bool] = field(default_factory=list)
    """Columns whose label is set in bold, e.g. the changed tokens of an example pair."""


def _matplotlib() -> Any:
    """matplotlib, imported on first use (it is an optional extra), or a SettingsError saying how to install it."""
    try:
        import matplotlib
    except ImportError as error:
        raise SettingsError("plotting needs matplotlib, which is not installed: pip install 'mechir-axioms[plot]'") \
            from error
    return matplotlib


def _figure(size: tuple[float, float], shown: bool) -> Figure:
    """A constrained-layout figure: through pyplot (the user's backend, shown in notebooks; with no display
    matplotlib picks Agg by itself) or, for writing files, a bare Figure that needs no backend and leaves
    pyplot's state alone."""
    _matplotlib()
    if shown:
        import matplotlib.pyplot as pyplot

        return pyplot.figure(figsize=size, layout="constrained")
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


# --- the frames, checked ---------------------------------------------------------------------------------
def _where(audit: Audit) -> str:
    return f"the audit in {audit.folder}" if audit.folder else f"the audit of {audit.manifest['model']['name']}"


def _audited(audit: Audit) -> list[str]:
    return [str(name) for name in audit.axioms["axiom"]] if "axiom" in audit.axioms else []


def _rows(audit: Audit, frame: str, axiom: str) -> pd.DataFrame:
    """The rows of one axiom in one frame, or a SettingsError naming the axiom and what the audit has."""
    audited = _audited(audit)
    if axiom not in audited:
        raise SettingsError(f"{_where(audit)} has no axiom {axiom}; it audited {', '.join(audited) or 'none'}")
    every: pd.DataFrame = getattr(audit, frame)
    if every.empty or "axiom" not in every:
        settings = audit.manifest.get("settings", {})
        ran = f"--steps {','.join(audit.steps)}"
        ran += f" and --examples {settings.get('examples')}" if frame == "blocks" else ""
        raise SettingsError(f"{_where(audit)} has no {frame} for {axiom}: it ran with {ran}; audit with "
                            f"{_makes(frame)} to plot {frame}")
    rows = every[every["axiom"] == axiom]
    if rows.empty:  # only blocks can miss an audited axiom: none of its pairs moved enough to be an example
        raise SettingsError(f"{_where(audit)} has no {frame} for {axiom}, only for "
                            f"{', '.join(dict.fromkeys(every['axiom']))}: no pair of {axiom} changed its score enough")
    return rows


def _grid_of(rows: pd.DataFrame, columns: pd.Series, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(effects, flags) as [layer, column] arrays, given each row's column index."""
    layers = int(rows["layer"].max()) + 1
    effects, flags = np.full((layers, count), np.nan), np.full((layers, count), "", dtype=object)
    at = (rows["layer"].to_numpy(dtype=int), columns.to_numpy(dtype=int))
    effects[at] = rows["effect"].to_numpy(dtype=float)
    if "flag" in rows:
        flags[at] = rows["flag"].fillna("").to_numpy()
    return effects, flags


def _heads_panel(audit: Audit, axiom: str) -> Panel:
    rows = _rows(audit, "heads", axiom)
    count = int(rows["head"].max()) + 1
    return Panel(*_grid_of(rows, rows["head"], count), [], "head")


def _cells_panel(audit: Audit, axiom: str) -> Panel:
    """Columns: each component's token regions side by side, the components named above them."""
    rows = _rows(audit, "cells", axiom)
    components, regions = list(dict.fromkeys(rows["component"])), list(dict.fromkeys(rows["region"]))
    names = region_names(audit.manifest.get("axioms", {}).get(axiom, {}).get("target", "document"))
    column = rows["component"].map(components.index) * len(regions) + rows["region"].map(regions.index)
    effects, flags = _grid_of(rows, column, len(components) * len(regions))
    groups = [(component, c * len(regions), (c + 1) * len(regions) - 1) for c, component in enumerate(components)]
    labels = [names.get(region, region) for region in regions] * len(components)
    return Panel(effects, flags, labels, "token region", groups)


def _step_panel(audit: Audit, axiom: str, step: Step) -> Panel:
    """Any other step's map: rows are layers, columns the values of its grid column in their order."""
    rows = _rows(audit, step.name, axiom)
    values = list(dict.fromkeys(rows[step.grid[1]]))
    effects, flags = _grid_of(rows, rows[step.grid[1]].map(values.index), len(values))
    return Panel(effects, flags, [str(value) for value in values], step.grid[1])


def panel_of(audit: Audit, axiom: str, frame: str) -> Panel:
    """The map of one step's frame for one axiom: heads and cells as drawn above, any other step by its grid."""
    if frame == "heads":
        return _heads_panel(audit, axiom)
    if frame == "cells":
        return _cells_panel(audit, axiom)
    return _step_panel(audit, axiom, STEPS[frame])


def _blocks_panel(audit: Audit, axiom: str, example: int, component: str) -> Panel:
    """One example pair's per-position effects of one component: columns are the perturbed input's tokens."""
    rows = _rows(audit, "blocks", axiom)
    examples, components = sorted(set(rows["example"])), list(dict.fromkeys(rows["component"]))
    if example not in examples:
        raise SettingsError(f"{_where(audit)} has example pairs {', '.join(map(str, examples))} of {axiom} in its "
                            f"blocks, not example={example}")
    if component not in components:
        raise SettingsError(f"{_where(audit)} has blocks of {', '.join(components)} for {axiom}, "
                            f"not component={component!r}")
    rows = rows[(rows["example"] == example) & (rows["component"] == component)]
    tokens = rows[rows["layer"] == 0].sort_values("position")
    effects, _ = _grid_of(rows, rows["position"], len(tokens))
    changed = [token != baseline for token, baseline in zip(tokens["token"], tokens["baseline_token"])]
    return Panel(effects, np.full(effects.shape, "", dtype=object), list(tokens["token"]), f"{component} at position",
                 bold=changed)


# --- drawing -----------------------------------------------------------------------------------------------
def symmetric_limit(panels: Sequence[Panel]) -> float:
    """The colour scale's end, shared by every panel: the largest |effect| (1 when nothing was tested)."""
    finite = np.concatenate([np.abs(panel.effects[np.isfinite(panel.effects)]) for panel in panels])
    return float(max(finite.max(), 1e-6)) if len(finite) else 1.0


def _draw(ax: Axes, panel: Panel, limit: float, *, layer_labels: bool = True) -> QuadMesh:
    """The map as vector cells (crisp in PDF and SVG), layer 0 on top, flagged cells marked by FLAG_MARKERS."""
    from matplotlib.ticker import MaxNLocator

    layers, columns = panel.effects.shape
    colormap = _matplotlib().colormaps[COLORMAP].with_extremes(bad=UNTESTED)
    mesh = ax.pcolormesh(np.arange(columns + 1) - 0.5, np.arange(layers + 1) - 0.5, np.ma.masked_invalid(panel.effects),
                         cmap=colormap, vmin=-limit, vmax=limit, edgecolors="white", linewidth=0.3)
    ax.set_xlim(-0.5, columns - 0.5)
    ax.set_ylim(layers - 0.5, -0.5)
    for flag, (marker, face, edge) in FLAG_MARKERS.items():
        layer, column = np.nonzero(panel.flags == flag)
        if len(layer):
            ax.scatter(column, layer, marker=marker, s=22, c=face, edgecolors=edge, linewidths=0.6, label=flag,
                       zorder=3)
    ax.yaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    if not panel.columns:
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    else:  # named columns: every one labelled, upright text would collide
        ax.set_xticks(range(columns), panel.columns, rotation=90)
        for label, bold in zip(ax.get_xticklabels(), panel.bold):
            label.set_fontweight("bold" if bold else "normal")
    for _, first, last in panel.groups[1:]:
        ax.axvline(first - 0.5, color="black", linewidth=0.8)
    if panel.groups:
        top = ax.secondary_xaxis("top")
        top.set_xticks([(first + last) / 2 for _, first, last in panel.groups], [label for label, _, _ in panel.groups])
        top.tick_params(length=0, labelsize=TICK_PT)
    ax.tick_params(labelsize=TICK_PT, length=2, labelleft=layer_labels)
    ax.set_xlabel(panel.xlabel, fontsize=LABEL_PT)
    if layer_labels:
        ax.set_ylabel("layer", fontsize=LABEL_PT)
    return mesh


def _legend(figure: Figure, frame: str, panels: Sequence[Panel]) -> None:
    """Below the maps: what the flag markers mean, and the colour of untested components if there are any."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kind = STEPS[frame].unit if frame in STEPS else frame
    handles = [Line2D([], [], linestyle="none", marker=marker, markersize=5, markerfacecolor=face, markeredgecolor=edge,
                      markeredgewidth=0.6, label=f"{kind} flagged {flag}")
               for flag, (marker, face, edge) in FLAG_MARKERS.items()]
    if any(np.isnan(panel.effects).any() for panel in panels):
        handles.append(Patch(facecolor=UNTESTED, label="untested"))
    columns = len(handles) if figure.get_figwidth() >= 5 else 2  # a column-wide figure wraps the third entry
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=TICK_PT, frameon=False)


def _colorbar(figure: Figure, mesh: QuadMesh, axes: Any) -> None:
    """One colour bar beside `axes`; its label is shortened on figures too low for the whole phrase."""
    bar = figure.colorbar(mesh, ax=axes, aspect=30, pad=0.02)
    long_enough = figure.get_figheight() >= 2.8
    bar.set_label("effect (share of the score change)" if long_enough else "effect", fontsize=LABEL_PT)
    bar.ax.tick_params(labelsize=TICK_PT)


def _panel_figure(panel: Panel, title: str, frame: str, ax: Axes | None, width: float = 3.4) -> Axes:
    """Draw one panel on `ax`, or on a new column-wide figure with its colour bar and, if any, the flag legend."""
    limit = symmetric_limit([panel])
    if ax is not None:
        _draw(ax, panel, limit)
        ax.set_title(title, fontsize=LABEL_PT)
        return ax
    layers, columns = panel.effects.shape
    height = min(max(1.6, width * 0.8 * layers / max(columns, 1) + (1.3 if frame != "heads" else 0.8)), 8.0)
    figure = _figure((width, height), shown=True)
    ax = figure.add_subplot()
    mesh = _draw(ax, panel, limit)
    ax.set_title(title, fontsize=LABEL_PT)
    _colorbar(figure, mesh, ax)
    if (panel.flags != "").any() or np.isnan(panel.effects).any():
        _legend(figure, frame, [panel])
    return ax


def heads(audit: Audit, axiom: str, ax: Axes | None = None) -> Axes:
    """One axiom's layer x head map of effects, flagged heads marked; on `ax`, else a new one-column figure."""
    return _panel_figure(_heads_panel(audit, axiom), axiom, "heads", ax)


def cells(audit: Audit, axiom: str, ax: Axes | None = None) -> Axes:
    """One axiom's block cells (layer x component x token region), flagged cells marked; on `ax` or a new figure."""
    return _panel_figure(_cells_panel(audit, axiom), axiom, "cells", ax)


def blocks(audit: Audit, axiom: str, ax: Axes | None = None, *, example: int = 0, component: str = "resid_pre") -> Axes:
    """One example pair's per-position effects of one block component (changed tokens in bold): where in the input
    and at which layer the axiom's signal travels."""
    panel = _blocks_panel(audit, axiom, example, component)
    width = min(max(3.4, 0.16 * len(panel.columns) + 1.2), 7.0)  # room for each token's label, up to a page
    return _panel_figure(panel, f"{axiom}, example {example}", "blocks", ax, width)


# --- the grid: models x axioms ---------------------------------------------------------------------------------
def row_labels(audits: Sequence[Audit]) -> list[str]:
    """Each audit's model name (its last path part); when two rows would read the same, their folder names
    (checkpoints of one model), and failing that their row numbers."""
    names = [Path(str(audit.manifest.get("model", {}).get("name") or audit.folder or f"audit {i + 1}")).name
             for i, audit in enumerate(audits)]
    if len(set(names)) < len(names):
        names = [audit.folder.name if audit.folder else name for audit, name in zip(audits, names)]
    if len(set(names)) < len(names):
        names = [f"{name} ({i + 1})" for i, name in enumerate(names)]
    return names


def common_axioms(audits: Sequence[Audit]) -> list[str]:
    """The axioms every audit has, in the first audit's order."""
    shared = [axiom for axiom in _audited(audits[0]) if all(axiom in _audited(audit) for audit in audits[1:])]
    if not shared:
        raise SettingsError("the audits share no axiom: " + "; ".join(
            f"{_where(audit)} has {', '.join(_audited(audit)) or 'none'}" for audit in audits))
    return shared


def grid(audits: Sequence[Audit | str | Path], axioms: Sequence[str] | None = None, *, frame: str = "heads",
         width: float = 7.0, shown: bool = True) -> Figure:
    """MechIR's Figure 2: one row per model or checkpoint, one column per axiom (default: those all audits have),
    each panel a layer x head (or block cell) map on one shared colour scale, with one colour bar and a legend of
    the flag markers; rows of different shapes each keep their own. `width` in inches (7: a two-column page);
    `shown=False` builds a figure outside pyplot, for writing files only."""
    if frame not in grid_frames():
        raise SettingsError(f"frame={frame!r} cannot be drawn as a grid; use one of {', '.join(grid_frames())}"
                            + (", or features (bars)" if frame != "features" else "; features draw as bars "
                               "(feature_bars, or `mechir-axioms figure --frame features`)"))
    loaded = [audit if isinstance(audit, Audit) else load_audit(audit) for audit in audits]
    if not loaded:
        raise SettingsError("grid needs at least one audit")
    names = list(axioms) if axioms else common_axioms(loaded)
    panels = [[panel_of(audit, axiom, frame) for axiom in names] for audit in loaded]
    limit = symmetric_limit([panel for row in panels for panel in row])
    panel_width = (width - 1.2) / len(names)
    heights = [panel_width * row[0].effects.shape[0] / max(row[0].effects.shape[1], 4) for row in panels]
    overhead = 0.95 if frame == "cells" else 0.45  # tick labels and axis label per row (plus group names for cells)
    figure = _figure((width, sum(heights) + overhead * len(loaded) + 0.55), shown)
    axes = figure.subplots(len(loaded), len(names), squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (row, label) in enumerate(zip(panels, row_labels(loaded))):
        for c, (panel, axiom) in enumerate(zip(row, names)):
            ax = axes[r, c]
            mesh = _draw(ax, panel, limit, layer_labels=c == 0)
            if r == 0:
                ax.set_title(axiom, fontsize=LABEL_PT, fontweight="bold")
            if r < len(loaded) - 1:
                ax.set_xlabel("")
        axes[r, 0].set_ylabel(f"{textwrap.fill(label, 28)}\nlayer", fontsize=LABEL_PT)
    _colorbar(figure, mesh, axes)
    _legend(figure, frame, [panel for row in panels for panel in row])
    return figure


# --- features: the strongest features per axiom, as bars --------------------------------------------------------
FEATURES_SHOWN = 12
"""Features drawn per panel: the strongest by |effect|, flagged ones first."""
FLAG_COLOURS = {"encodes": "#b2182b", "violates": "#2166ac", "": "#bdbdbd"}


def feature_bars(audits: Sequence[Audit | str | Path], axioms: Sequence[str] | None = None, *, width: float = 7.0,
                 shown: bool = True, count: int = FEATURES_SHOWN) -> Figure:
    """One row per audit, one column per axiom: each panel the `count` strongest SAE features of the features step
    (flagged first), their effects as bars with 95% intervals, coloured by flag (red encodes, blue violates, grey
    not flagged)."""
    loaded = [audit if isinstance(audit, Audit) else load_audit(audit) for audit in audits]
    if not loaded:
        raise SettingsError("a feature figure needs at least one audit")
    for audit in loaded:
        if audit.frames.get("features", pd.DataFrame()).empty:
            raise SettingsError(f"{_where(audit)}: this audit measured no features; audit with "
                                f"{STEPS['features'].option()} --saes DIR")
    names = list(axioms) if axioms else common_axioms(loaded)
    height = 0.18 * count + 0.7
    figure = _figure((width, height * len(loaded) + 0.5), shown)
    axes = figure.subplots(len(loaded), len(names), squeeze=False)
    for r, (audit, label) in enumerate(zip(loaded, row_labels(loaded))):
        for c, axiom in enumerate(names):
            ax = axes[r, c]
            rows = _rows(audit, "features", axiom)
            rows = rows.assign(strength=rows["effect"].abs(), flagged=rows["flag"] != "")
            rows = rows.sort_values(["flagged", "strength"], ascending=False).head(count).iloc[::-1]
            low, high = rows["effect"] - rows["ci_low"], rows["ci_high"] - rows["effect"]
            ax.barh(range(len(rows)), rows["effect"], xerr=[low.clip(lower=0), high.clip(lower=0)],
                    color=[FLAG_COLOURS.get(flag, FLAG_COLOURS[""]) for flag in rows["flag"]], height=0.7,
                    error_kw={"linewidth": 0.6, "capsize": 1.5})
            ax.axvline(0, color="black", linewidth=0.6)
            ax.set_yticks(range(len(rows)), rows["name"])
            ax.tick_params(labelsize=TICK_PT, length=2)
            if r == 0:
                ax.set_title(axiom, fontsize=LABEL_PT, fontweight="bold")
            if r == len(loaded) - 1:
                ax.set_xlabel("effect (share of the score change)", fontsize=LABEL_PT)
        axes[r, 0].set_ylabel(textwrap.fill(label, 28), fontsize=LABEL_PT)
    return figure


# --- files -----------------------------------------------------------------------------------------------------------
def figure_format(path: str | Path) -> str:
    """The format a figure file's extension asks for (pdf, svg, png), or a SettingsError naming it."""
    extension = Path(path).suffix.lower().removeprefix(".")
    if extension not in FORMATS:
        shown = f"a .{extension} file" if extension else "a file without an extension"
        raise SettingsError(f"{path}: cannot write a figure as {shown}; end the name in "
                            f"{', '.join('.' + name for name in FORMATS[:-1])} or .{FORMATS[-1]}")
    return extension


def save(figure: Figure, path: str | Path) -> Path:
    """Write `figure` in the format its extension names, fonts embedded as TrueType (Type 3 fonts fail
    many publishers' PDF checks), PNG at 300 dpi."""
    extension = figure_format(path)

    def draw(temporary: Path) -> None:
        with _matplotlib().rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
            figure.savefig(temporary, format=extension, dpi=PNG_DPI if extension == "png" else "figure")

    return write_file(path, "figure", draw)


def write_circuit(folder: str | Path, axiom: str, outputs: Sequence[str | Path], unflagged: int = 0) -> list[Path]:
    """One saved audit's circuit for `axiom` (flagged heads and paths) as standalone SVG files; `unflagged` also
    draws that many of the strongest unflagged edges, dashed. With no flagged edge there is no circuit: refused
    (naming the strongest edges) unless `unflagged` asks for them."""
    from .report.circuit import circuit_svg

    for path in outputs:
        if figure_format(path) != "svg":
            raise SettingsError(f"{path}: a circuit is drawn as SVG only; end the name in .svg")
        check_file(path, "figure")
    audit = load_audit(folder)
    if audit.paths.empty:
        raise SettingsError(f"{folder}: this audit measured no paths; audit with {STEPS['paths'].option()}")
    if axiom not in set(audit.paths["axiom"]):
        raise SettingsError(f"{folder}: no paths for axiom {axiom!r}; it has {', '.join(dict.fromkeys(audit.paths['axiom']))}")
    heads, paths = audit.heads[audit.heads["axiom"] == axiom], audit.paths[audit.paths["axiom"] == axiom]
    if not (paths["flag"] != "").any() and not unflagged:
        strongest = paths.reindex(paths["effect"].abs().sort_values(ascending=False).index).head(3)
        raise SettingsError(f"{folder}: no edge of {axiom} is flagged, so there is no circuit to draw; its strongest "
                            f"edges are {', '.join(f'{row.name} ({row.effect:+.3f})' for row in strongest.itertuples())}"
                            "; ask for the strongest unflagged edges (--unflagged N) to draw them, marked as unflagged")
    text = circuit_svg(heads, paths, int(audit.manifest["model"]["layers"]), f"{axiom} circuit", unflagged)
    return [write_file(path, "figure", lambda temporary: temporary.write_text(text, encoding="utf-8"))
            for path in outputs]


def write_grid(folders: Sequence[str | Path], outputs: Sequence[str | Path], axioms: Sequence[str] | None = None,
               frame: str = "heads", unflagged: int = 0) -> list[Path]:
    """The grid of saved audits written to each of `outputs` (their extensions checked before any work);
    frame="circuit" writes one audit's circuit of one axiom as SVG instead (with `unflagged` of its strongest
    unflagged edges, see write_circuit), frame="features" the strongest SAE features per axiom as bars."""
    if frame == "circuit":
        if len(folders) != 1 or not axioms or len(axioms) != 1:
            raise SettingsError("a circuit figure takes one audit folder and one axiom (--axioms TFC1)")
        return write_circuit(folders[0], axioms[0], outputs, unflagged)
    for path in outputs:
        figure_format(path)
        check_file(path, "figure")
    if frame == "features":
        figure = feature_bars(folders, axioms, shown=False)
    else:
        figure = grid(folders, axioms, frame=frame, shown=False)
    return [save(figure, path) for path in outputs]

