"""Figures of saved audits: the models x axioms grid (shared symmetric scale, flag markers, rows of different
shapes), the single panels, the `figure` command's files, and the one-sentence errors."""

from __future__ import annotations

import io
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mechir_axioms import SettingsError, audit, load_ranker, plot
from mechir_axioms.cli import main

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

TINY_TOLERANCE = 1e-7  # the random tiny model moves its scores by ~1e-5


@pytest.fixture(scope="module")
def minilm_heads(minilm, short_frame, tmp_path_factory, one_torch_thread):
    """A MiniLM audit (6 layers x 12 heads) of heads only, by attribution on 12 short pairs per axiom."""
    return audit(minilm, ["TFC1", "TDC"], short_frame, n=12, method="attribution", targets=("heads",), examples=0,
                 stability=0, folder=tmp_path_factory.mktemp("plot") / "minilm", progress=False)


@pytest.fixture(scope="module")
def tiny_everything(tiny, short_frame, tmp_path_factory, one_torch_thread):
    """The tiny BERT bi-encoder (2 layers x 4 heads) in float64: exact heads, block cells and one example pair."""
    ranker = load_ranker(tiny("bert", "bi")[1])
    ranker.model.double()
    return audit(ranker, ["TFC1", "TDC"], short_frame, n=24, method="exact", cell_pairs=4, examples=1, stability=0,
                 tolerance=TINY_TOLERANCE, folder=tmp_path_factory.mktemp("plot") / "tiny", progress=False)


@pytest.fixture
def closing():
    """Close every pyplot figure a test opened."""
    import matplotlib.pyplot as pyplot

    yield
    pyplot.close("all")


def _panels(figure):
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]


def _drawn_texts(figure) -> list:
    """Every non-empty text the figure draws (a tick label only when its tick lies inside its axis's view)."""
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    outside = set()
    for axis in figure.findobj(Axis):
        low, high = sorted(axis.get_view_interval())
        outside |= {id(label) for tick, at in zip(axis.get_major_ticks(), axis.get_majorticklocs())
                    if not low - 1e-9 <= at <= high + 1e-9 for label in (tick.label1, tick.label2)}
    return [text for text in figure.findobj(Text)
            if text.get_visible() and text.get_text().strip() and id(text) not in outside]


def _crowded(figure) -> list[str]:
    """Texts that run off the page or overlap another text (by more than a pixel), once drawn."""
    figure.canvas.draw()
    renderer, page = figure.canvas.get_renderer(), figure.bbox.padded(1)
    texts = [(text.get_text(), text.get_window_extent(renderer)) for text in _drawn_texts(figure)]
    off = [f"{text!r} off the page" for text, box in texts
           if not (page.contains(box.x0, box.y0) and page.contains(box.x1, box.y1))]
    return off + [f"{a!r} on {b!r}" for (a, box_a), (b, box_b) in itertools.combinations(texts, 2)
                  if box_a.padded(-1).overlaps(box_b.padded(-1))]


def _markers(ax, flag: str) -> np.ndarray:
    """(column, layer) of the markers of one flag on one panel."""
    offsets = [collection.get_offsets() for collection in ax.collections if collection.get_label() == flag]
    return np.concatenate(offsets) if offsets else np.empty((0, 2))


def test_grid_shares_one_symmetric_scale_over_rows_of_different_shapes(minilm_heads, tiny_everything, closing):
    figure = plot.grid([minilm_heads, tiny_everything], ["TFC1", "TDC"])
    panels = _panels(figure)
    assert len(panels) == 4 and len(figure.axes) == 5  # 2 models x 2 axioms, and one colour bar
    meshes = [ax.collections[0] for ax in panels]
    assert [mesh.get_array().shape for mesh in meshes] == [(6, 12), (6, 12), (2, 4), (2, 4)]
    largest = max(frame["effect"].abs().max() for frame in (minilm_heads.heads, tiny_everything.heads))
    assert {mesh.get_clim() for mesh in meshes} == {(-largest, largest)}
    assert [ax.get_title() for ax in panels[:2]] == ["TFC1", "TDC"]
    tiny_name = Path(tiny_everything.manifest["model"]["name"]).name
    assert panels[0].get_ylabel() == "all-MiniLM-L6-v2\nlayer" and panels[2].get_ylabel() == f"{tiny_name}\nlayer"
    tfc1 = tiny_everything.heads.query("axiom == 'TFC1'")
    assert np.allclose(meshes[2].get_array().reshape(2, 4), tfc1.pivot(index="layer", columns="head", values="effect"))
    assert min(text.get_fontsize() for text in _drawn_texts(figure)) >= 7
    assert _crowded(figure) == []


def test_flagged_heads_are_marked_by_kind(tiny_everything, closing):
    heads = tiny_everything.heads.copy()
    heads["flag"] = ""
    tfc1 = heads.index[heads["axiom"] == "TFC1"]
    heads.loc[tfc1[[0, 5]], "flag"] = "encodes"
    heads.loc[tfc1[[3]], "flag"] = "violates"
    flagged = replace(tiny_everything, frames={**tiny_everything.frames, "heads": heads})
    tfc1_panel, tdc_panel = _panels(plot.grid([flagged], ["TFC1", "TDC"]))
    for flag in ("encodes", "violates"):
        rows = heads.loc[tfc1].query("flag == @flag")
        assert sorted(map(tuple, _markers(tfc1_panel, flag))) == sorted(zip(rows["head"], rows["layer"]))
        assert len(_markers(tdc_panel, flag)) == 0
    legend = [text.get_text() for text in tfc1_panel.figure.legends[0].get_texts()]
    assert legend[:2] == ["head flagged encodes", "head flagged violates"]
    real = _panels(plot.grid([tiny_everything]))  # as audited: one marker per flagged head, whatever the count
    marked = sum(len(_markers(ax, flag)) for ax in real for flag in ("encodes", "violates"))
    assert marked == (tiny_everything.heads["flag"] != "").sum()


def test_single_panels_draw_heads_cells_and_blocks(tiny_everything, closing):
    import matplotlib.pyplot as pyplot

    figure, axes = pyplot.subplots(1, 3)
    assert plot.heads(tiny_everything, "TFC1", axes[0]) is axes[0]
    assert plot.cells(tiny_everything, "TFC1", axes[1]) is axes[1]
    assert plot.blocks(tiny_everything, "TFC1", axes[2], component="attn_out") is axes[2]
    assert axes[0].collections[0].get_array().shape == (2, 4)
    assert axes[1].collections[0].get_array().shape == (2, 9)  # resid_pre, attn_out, mlp_out x span, doc, special
    groups = axes[1].child_axes[0].get_xticklabels()
    assert [label.get_text() for label in groups] == ["resid_pre", "attn_out", "mlp_out"]
    blocks = tiny_everything.blocks
    example = blocks.query("axiom == 'TFC1' and example == 0 and component == 'attn_out' and layer == 0")
    labels = axes[2].get_xticklabels()
    assert [label.get_text() for label in labels] == list(example["token"])
    changed = list(example["token"] != example["baseline_token"])
    assert any(changed) and [label.get_fontweight() == "bold" for label in labels] == changed
    heads = tiny_everything.heads.copy()
    heads.loc[heads.index[0], "effect"] = np.nan
    heads.loc[heads.index[1], "flag"] = "violates"
    edited = replace(tiny_everything, frames={**tiny_everything.frames, "heads": heads})
    alone = plot.heads(edited, "TFC1")  # a new column-wide figure of its own
    assert alone.figure is not figure and len(alone.figure.axes) == 2  # the map and its colour bar
    legend = [text.get_text() for text in alone.figure.legends[0].get_texts()]
    assert legend == ["head flagged encodes", "head flagged violates", "untested"]
    assert _crowded(alone.figure) == []


def test_missing_axioms_and_frames_are_one_sentence(minilm_heads, tiny_everything, monkeypatch):
    with pytest.raises(SettingsError, match=r"has no axiom LNC1; it audited TFC1, TDC$"):
        plot.heads(minilm_heads, "LNC1")
    with pytest.raises(SettingsError, match=r"has no cells for TFC1: it ran with --steps heads;"):
        plot.cells(minilm_heads, "TFC1")
    with pytest.raises(SettingsError, match=r"has no blocks for TDC"):
        plot.blocks(minilm_heads, "TDC")
    with pytest.raises(SettingsError, match=r"has no axiom STMC1"):
        plot.grid([tiny_everything, minilm_heads], ["TFC1", "STMC1"])
    only_tfc1 = replace(tiny_everything, axioms=tiny_everything.axioms.query("axiom == 'TFC1'"))
    assert plot.common_axioms([minilm_heads, only_tfc1]) == ["TFC1"]
    checkpoints = [replace(minilm_heads, folder=Path("runs") / name) for name in ("step-1000", "step-2000")]
    assert plot.row_labels(checkpoints) == ["step-1000", "step-2000"]  # one model twice: its folders tell rows apart
    assert plot.row_labels([minilm_heads, minilm_heads]) == ["minilm (1)", "minilm (2)"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SettingsError, match=r"pip install 'mechir-axioms\[plot\]'"):
        plot.heads(tiny_everything, "TFC1")


def test_figure_command_writes_pdf_svg_and_png(minilm_heads, tiny_everything, tmp_path, capsys):
    from PIL import Image

    outputs = [tmp_path / "fig.pdf", tmp_path / "fig.svg", tmp_path / "out" / "fig.png"]
    folders = [str(minilm_heads.folder), str(tiny_everything.folder)]
    assert main(["figure", *folders, *itertools.chain(*(["--out", str(path)] for path in outputs))]) == 0
    assert capsys.readouterr().out.splitlines() == [f"figure: {path}" for path in outputs]
    assert outputs[0].read_bytes()[:5] == b"%PDF-"
    assert b"/Subtype /Type3" not in outputs[0].read_bytes()  # TrueType fonts, as publishers ask
    assert "<svg" in outputs[1].read_text()[:500]
    image = Image.open(io.BytesIO(outputs[2].read_bytes()))
    assert image.width == 7 * plot.PNG_DPI and image.height < image.width  # two columns wide, wider than tall
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01, "the PNG is blank"


def test_figure_command_refuses_bad_files_and_frames(minilm_heads, tmp_path, capsys):
    folder = str(minilm_heads.folder)
    assert main(["figure", folder, "--out", str(tmp_path / "fig.jpg")]) == 2
    error = capsys.readouterr().err
    assert "fig.jpg: cannot write a figure as a .jpg file; end the name in .pdf, .svg or .png" in error
    assert not (tmp_path / "fig.jpg").exists()
    assert main(["figure", folder, "--frame", "cells", "--out", str(tmp_path / "fig.png")]) == 2
    assert "has no cells for TFC1" in capsys.readouterr().err
    assert main(["figure", folder, "--frame", "blocks", "--out", str(tmp_path / "fig.png")]) == 2
    assert "frame='blocks' cannot be drawn as a grid; use one of heads, cells" in capsys.readouterr().err
