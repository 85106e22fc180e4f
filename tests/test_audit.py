"""Audits end to end: frames, flags, saving and loading, resuming after a kill, errors, calibration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from mechir_axioms import audit, load_audit, load_ranker
from mechir_axioms.cli import main

TINY_TOLERANCE = 1e-7  # random tiny models move their scores by ~1e-5, far below a trained model's 1e-3
HEAD_COLUMNS = ["axiom", "layer", "head", "effect", "ci_low", "ci_high", "p_value", "q_value", "flag"]


@pytest.fixture(scope="module")
def tiny_double(tiny):
    """The tiny BERT bi-encoder in float64: its scores move by ~1e-5, which float32 would blur."""
    ranker = load_ranker(tiny("bert", "bi")[1])
    ranker.model.double()
    return ranker


@pytest.fixture(scope="module")
def tiny_audit(tiny_double, tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit") / "tiny"
    return audit(tiny_double, ["TFC1", "LNC1"], n=24, seed=3, method="exact", examples=1, stability=3,
                 tolerance=TINY_TOLERANCE, folder=folder, progress=False)


def test_audit_frames_have_the_promised_shape(tiny_audit, tiny):
    ranker, _ = tiny("bert", "bi")
    assert list(tiny_audit.axioms["axiom"]) == ["TFC1", "LNC1"]
    for column in ("agreement", "agreement_low", "agreement_high", "verdict", "wilcoxon_p", "encodes", "violates"):
        assert column in tiny_audit.axioms
    row = tiny_audit.axioms.iloc[0]
    assert row.agreement_low <= row.agreement <= row.agreement_high
    assert row.mean_low <= row.mean_delta <= row.mean_high
    assert set(tiny_audit.axioms["verdict"]) <= {"satisfied", "violated", "inconclusive"}
    heads = tiny_audit.heads
    assert list(heads.columns[: 4]) == HEAD_COLUMNS[:4] and set(HEAD_COLUMNS) <= set(heads.columns)
    assert len(heads) == 2 * ranker.n_layers * ranker.n_heads
    assert set(heads["flag"]) <= {"", "encodes", "violates"}
    assert (heads["q_value"] >= heads["p_value"] - 1e-12).all()
    tested = heads.dropna(subset=["ci_low"])
    assert ((tested["ci_low"] <= tested["effect"] + 1e-12) & (tested["effect"] <= tested["ci_high"] + 1e-12)).all()
    blocks = tiny_audit.blocks
    assert set(blocks["component"]) == {"resid_pre", "attn_out", "mlp_out"}
    assert blocks.groupby("axiom")["example"].nunique().to_dict() == {"TFC1": 1, "LNC1": 1}


def test_block_cells_start_where_the_change_is(tiny_audit, tiny):
    """Cells cover component x layer x region; at layer 0 the span's residual stream carries the pairs' whole
    signed change, sum(s * delta) / sum(|delta|), and the identical tokens elsewhere carry nothing."""
    ranker, _ = tiny("bert", "bi")
    cells = tiny_audit.cells
    assert len(cells) == 2 * 3 * ranker.n_layers * 3  # a bi-encoder's document: span, text, markup
    assert set(cells["region"]) == {"span", "text", "markup"} and (cells["n"] > 0).all()
    assert set(cells["flag"]) <= {"", "encodes", "violates"}
    for axiom in ("TFC1", "LNC1"):
        rows = cells[(cells["axiom"] == axiom) & (cells["component"] == "resid_pre") & (cells["layer"] == 0)].set_index("region")
        assert rows.loc["text", "effect"] == 0 and rows.loc["markup", "effect"] == 0
        if axiom == "TFC1":  # LNC1's masked baseline hides its span from attention: patching it in does nothing
            delta = tiny_audit.pairs.loc[tiny_audit.pairs["axiom"] == axiom, "delta"].to_numpy()
            delta = delta[np.abs(delta) >= TINY_TOLERANCE]
            assert rows.loc["span", "effect"] == pytest.approx(delta.sum() / np.abs(delta).sum(), abs=1e-9)
    counts = cells[cells["flag"] == "encodes"].groupby("axiom").size()
    for row in tiny_audit.axioms.itertuples():
        assert row.cells_encodes == counts.get(row.axiom, 0)


def test_flags_follow_the_q_values_and_the_sign(tiny_audit):
    heads = tiny_audit.heads
    significant = heads["q_value"] <= 0.05
    assert (heads.loc[heads["flag"] == "encodes", "effect"] > 0).all()
    assert (heads.loc[heads["flag"] == "violates", "effect"] < 0).all()
    assert ((heads["flag"] != "") == significant).all()
    counts = heads[heads["flag"] == "encodes"].groupby("axiom").size()
    for row in tiny_audit.axioms.itertuples():
        assert row.encodes == counts.get(row.axiom, 0)


def test_resid_pre_at_layer_zero_carries_the_whole_change(tiny_audit):
    """Patching the changed tokens' embeddings moves the score all the way: the blocks plot's sanity anchor."""
    blocks = tiny_audit.blocks
    pairs = tiny_audit.pairs.set_index(["axiom", "pair"])
    for (axiom, example), cells in blocks.groupby(["axiom", "example"]):
        first = cells[(cells["component"] == "resid_pre") & (cells["layer"] == 0)]
        pair = pairs.loc[(axiom, int(cells["pair"].iloc[0]))]
        span = first[(first["position"] >= pair["span_start"]) & (first["position"] < pair["span_end"])]
        outside = first[(first["position"] < pair["span_start"]) | (first["position"] >= pair["span_end"])]
        assert np.allclose(outside["effect"], 0, atol=1e-5)  # identical tokens: nothing to patch
        if len(span) == 1:
            assert abs(span["effect"].iloc[0]) == pytest.approx(1, abs=1e-4)


def test_saved_audit_loads_back_identically(tiny_audit):
    loaded = load_audit(tiny_audit.folder)
    for name in ("axioms", "heads", "cells", "blocks", "pairs"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(tiny_audit, name), check_dtype=False)
    assert loaded.manifest["settings"]["n"] == 24
    assert loaded.manifest["package_version"]
    assert set(loaded.manifest["axioms"]["TFC1"]) >= {"spec_hash", "data_hash", "seed", "filler", "dropped"}


def test_report_is_self_contained_and_rerenders(tiny_audit, tmp_path):
    html = (tiny_audit.folder / "report.html").read_text()
    for needle in ("TFC1", "LNC1", "Provenance", "mechir-axioms audit", "<svg", "<canvas", "Wilson"):
        assert needle in html
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert "src=" not in html  # no external script or image
    (tiny_audit.folder / "report.html").unlink()
    assert main(["report", str(tiny_audit.folder)]) == 0
    assert (tiny_audit.folder / "report.html").read_text() == html


def test_audit_is_deterministic_for_a_seed(tiny_double, tiny_audit):
    again = audit(tiny_double, ["TFC1", "LNC1"], n=24, seed=3, method="exact", examples=1, stability=3,
                  tolerance=TINY_TOLERANCE, progress=False)
    pd.testing.assert_frame_equal(again.heads, tiny_audit.heads)
    pd.testing.assert_frame_equal(again.cells, tiny_audit.cells)
    pd.testing.assert_frame_equal(again.axioms, tiny_audit.axioms)


def test_existing_folder_needs_resume_and_same_settings(tiny, tiny_audit):
    ranker, _ = tiny("bert", "bi")
    with pytest.raises(FileExistsError, match="already holds an audit; pass --resume"):
        audit(ranker, ["TFC1", "LNC1"], n=24, seed=3, folder=tiny_audit.folder, progress=False)
    with pytest.raises(ValueError, match="its settings differ \\(n was 24, now 25"):
        audit(ranker, ["TFC1", "LNC1"], n=25, seed=3, method="exact", examples=1, stability=3,
              tolerance=TINY_TOLERANCE, folder=tiny_audit.folder, resume=True, progress=False)


def test_bad_arguments_get_one_clear_sentence(tiny, capsys, tmp_path):
    ranker, path = tiny("bert", "bi")
    with pytest.raises(ValueError, match="targets=\\['neurons'\\] is not valid; choose from heads, blocks"):
        audit(ranker, ["TFC1"], targets=["neurons"])
    with pytest.raises(ValueError, match="method='fast' is not valid"):
        audit(ranker, ["TFC1"], method="fast")
    assert main(["audit", "--model", str(path), "--axioms", "TFC1,NOPE", "--out", str(tmp_path / "a")]) == 2
    assert "no axiom named 'NOPE'; known axioms:" in capsys.readouterr().err
    assert main(["audit", "--model", str(path), "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "b")]) == 2
    assert "data file" in capsys.readouterr().err
    assert main(["audit", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_more_pairs_than_available_warns_and_uses_all(tiny, tmp_path, capsys):
    _, path = tiny("bert", "bi")
    code = main(["audit", "--model", str(path), "--axioms", "TFC1", "--n", "5000", "--targets", "heads",
                 "--method", "attribution", "--out", str(tmp_path / "all")])
    assert code == 0
    error = capsys.readouterr().err
    assert "warning: TFC1: built 626 of 5000 requested pairs" in error
    assert load_audit(tmp_path / "all").axioms["n_pairs"].iloc[0] == 626


# --- resuming a killed audit ---------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mechir_axioms.cli", "audit", *args]


def test_killed_audit_resumes_to_identical_results(tmp_path, minilm_path):
    options = ["--axioms", "TFC1", "--n", "96", "--method", "attribution", "--examples", "1", "--stability", "2",
               "--cell-pairs", "16"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_cli(*options, "--out", str(whole)), check=True, env=environment, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli(*options, "--out", str(killed)), env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "work" / "TFC1" / "heads-to_baseline" / "chunk-0001" / "result.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (killed / "manifest.json").exists(), "the audit was not killed midway"
    finished = sorted((killed / "work").rglob("result.json"))
    stamps = {path: path.stat().st_mtime_ns for path in finished}

    subprocess.run(_cli(*options, "--out", str(killed), "--resume"), check=True, env=environment, capture_output=True)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items()), "resume recomputed a checkpoint"
    for name in ("axioms", "heads", "cells", "blocks", "pairs"):
        pd.testing.assert_frame_equal(pd.read_parquet(killed / f"{name}.parquet"), pd.read_parquet(whole / f"{name}.parquet"))


# --- calibration on real data ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["attribution", "exact"])
def test_null_axiom_flags_nothing_on_minilm(minilm, method):
    """Two exchangeable neutral words: any flagged head or block cell would be a false positive of the statistics.

    Exact patching of 200 pairs in both directions takes ~5 min here, so the exact check uses 64 pairs; block
    cells (always exact) are checked once, on 64 of the 200 pairs of the attribution run."""
    n = 200 if method == "attribution" else 64
    targets = ("heads", "blocks") if method == "attribution" else ("heads",)
    result = audit(minilm, ["NULL"], n=n, targets=targets, method=method, examples=0, cell_pairs=64, progress=False)
    heads, cells = result.heads, result.cells
    assert result.axioms["n_pairs"].iloc[0] == n
    assert heads["p_value"].notna().sum() == 72  # every head was tested, so "no flag" is not vacuous
    assert (heads["flag"] == "").all(), heads[heads["flag"] != ""][HEAD_COLUMNS].to_string()
    assert heads["q_value"].min() > 0.05
    if "blocks" in targets:
        assert len(cells) == 3 * 6 * 3 and cells["p_value"].notna().all() and (cells["n"] > 40).all()
        assert (cells["flag"] == "").all(), cells[cells["flag"] != ""].to_string()
