"""Audits end to end: frames, flags, saving and loading, errors, calibration (a killed audit's resume: the
plugin's tests and tests/test_distributed.py)."""

from __future__ import annotations

import json

import warnings

import numpy as np
import pandas as pd
import pytest

from mechir_axioms import SettingsError, Variant, audit, load_audit, load_axiom, load_ranker, make_pairs, patch_variants
from mechir_axioms.cli import main
from mechir_axioms.core.ledger import digest
from mechir_axioms.models.layout import REGIONS

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

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
    for flag in ("encodes", "violates"):
        counts = cells[cells["flag"] == flag].groupby("axiom").size()
        for row in tiny_audit.axioms.itertuples():
            assert getattr(row, "cells_" + flag) == counts.get(row.axiom, 0), (row.axiom, flag)
    assert tiny_audit.axioms.set_index("axiom").loc["TFC1", "cells_encodes"] > 0  # so the counts above compare something


@pytest.fixture(scope="module")
def mirrored_audit(tiny_double):
    """The tiny audit's heads again, with TFC1 expecting the opposite (a decrease): the same pairs and p-values."""
    return audit(tiny_double, [load_axiom("TFC1", expect="decrease"), "LNC1"], n=24, seed=3, targets=("heads",),
                 method="exact", examples=0, stability=3, tolerance=TINY_TOLERANCE, progress=False)


def _check_flags(result, flag: str) -> None:
    """Tests are exactly the significant heads, `flag` tests exist, their effects have its sign, flags are the tests
    that stability selection keeps, and the per-axiom counts in the axioms frame agree with the heads frame."""
    heads = result.heads
    assert ((heads["test"] != "") == (heads["q_value"] <= 0.05)).all()
    assert (heads["test"] == flag).any(), f"no head is tested {flag!r}: the sign checks would pass on nothing"
    assert (heads.loc[heads["test"] == "encodes", "effect"] > 0.05).all()
    assert (heads.loc[heads["test"] == "violates", "effect"] < -0.05).all()
    kept = heads["selection"].to_numpy() >= result.manifest["settings"]["selection"] - 1e-12
    assert list(heads["flag"]) == list(np.where(kept, heads["test"], ""))
    for kind in ("encodes", "violates"):
        counts = heads[heads["flag"] == kind].groupby("axiom").size()
        for row in result.axioms.itertuples():
            assert getattr(row, kind) == counts.get(row.axiom, 0), (row.axiom, kind)


def test_flags_follow_the_q_values_and_the_sign(tiny_audit, mirrored_audit):
    _check_flags(tiny_audit, "encodes")
    _check_flags(mirrored_audit, "violates")
    # expecting the opposite negates every effect and swaps encodes and violates, with the same p- and q-values
    original, mirrored = tiny_audit.heads, mirrored_audit.heads
    tfc1 = (original["axiom"] == "TFC1").to_numpy()
    assert np.allclose(mirrored["effect"][tfc1], -original["effect"][tfc1], atol=1e-12)
    assert np.allclose(mirrored["effect"][~tfc1], original["effect"][~tfc1], atol=1e-12)
    assert np.array_equal(mirrored["q_value"], original["q_value"], equal_nan=True)
    swapped = original["flag"].where(~tfc1, original["flag"].map({"": "", "encodes": "violates", "violates": "encodes"}))
    assert list(mirrored["flag"]) == list(swapped)
    assert (mirrored.loc[tfc1, "test"] == "violates").sum() == (original.loc[tfc1, "test"] == "encodes").sum() > 0


def test_resid_pre_at_layer_zero_carries_the_whole_change(tiny_audit, tiny_double):
    """Patching the changed tokens' embeddings into the baseline moves its score all the way to the perturbed
    score, +1 in the axiom's direction for these example pairs (chosen to move the way the axiom expects),
    unless the baseline hides the slot from attention (LNC1's masked slot), where it does nothing; the
    identical tokens elsewhere carry nothing. The blocks plot's sanity anchor."""
    blocks = tiny_audit.blocks
    pairs = tiny_audit.pairs.set_index(["axiom", "pair"])
    carries = {"TFC1": 1.0, "LNC1": 0.0}
    single = 0
    for (axiom, example), cells in blocks.groupby(["axiom", "example"]):
        first = cells[(cells["component"] == "resid_pre") & (cells["layer"] == 0)]
        row = int(cells["pair"].iloc[0])
        pair = pairs.loc[(axiom, row)]
        span = first[(first["position"] >= pair["span_start"]) & (first["position"] < pair["span_end"])]
        outside = first[(first["position"] < pair["span_start"]) | (first["position"] >= pair["span_end"])]
        assert len(span) == pair["span_end"] - pair["span_start"] >= 1
        assert len(outside) > 0 and np.allclose(outside["effect"], 0, atol=1e-9)  # identical tokens: nothing to patch
        if len(span) == 1:  # the one position is the whole span
            single += 1
            assert span["effect"].iloc[0] == pytest.approx(carries[axiom], abs=1e-6)
        if axiom == "LNC1":  # hidden from attention: no position of the slot carries anything
            assert np.allclose(span["effect"], 0, atol=1e-9)
        # any span length: every span position at once, by the signed metric the blocks frame uses
        rebuilt = make_pairs(axiom, None, tiny_double, n=24, seed=3).take([row])
        assert (rebuilt.frame[["qid", "docno", "span_start", "span_end"]].iloc[0] == pair[["qid", "docno", "span_start", "span_end"]]).all()
        whole = patch_variants(tiny_double, rebuilt, [Variant(0, "blocks.0.hook_resid_pre", region=REGIONS.index("span"))],
                               direction="to_baseline", delta=TINY_TOLERANCE)
        sign = np.sign(pair["delta"]) * (1 if axiom == "TFC1" else -1)  # TFC1 expects a rise, LNC1 no rise
        assert sign > 0  # an example pair moves the way its axiom expects
        assert sign * whole.effects[0, 0] == pytest.approx(carries[axiom], abs=1e-6)
    assert single > 0, "no example has a one-token span, so no position was checked against the whole change"


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
    with pytest.raises(SettingsError, match="already holds an audit; pass --resume"):
        audit(ranker, ["TFC1", "LNC1"], n=24, seed=3, folder=tiny_audit.folder, progress=False)
    with pytest.raises(ValueError, match="its settings differ \\(n was 24, now 25"):
        audit(ranker, ["TFC1", "LNC1"], n=25, seed=3, method="exact", examples=1, stability=3,
              tolerance=TINY_TOLERANCE, folder=tiny_audit.folder, resume=True, progress=False)


def test_bad_arguments_get_one_clear_sentence(tiny, capsys, tmp_path):
    ranker, path = tiny("bert", "bi")
    with pytest.raises(ValueError, match="steps=\\['neurons'\\] is not valid; choose from heads, cells, blocks"):
        audit(ranker, ["TFC1"], steps=["neurons"])
    with pytest.raises(ValueError, match="targets=\\['neurons'\\] is not valid; targets are heads, blocks, paths"):
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
                 "--method", "attribution", "--stability", "0", "--out", str(tmp_path / "all")])
    assert code == 0
    error = capsys.readouterr().err
    assert "warning: TFC1: built 626 of 5000 requested pairs" in error
    assert load_audit(tmp_path / "all").axioms["n_pairs"].iloc[0] == 626


# --- calibration on real data ----------------------------------------------------------------------------
def test_null_axiom_flags_nothing_on_minilm(minilm):
    """Two exchangeable neutral words: any flagged head or block cell would be a false positive of the statistics.

    Heads are verified (every head that could reach a flag is patched exactly on all 100 pairs, in both
    directions); block cells, always exact, on 32 of the pairs."""
    n, targets, method = 100, ("heads", "blocks"), "verified"
    result = audit(minilm, ["NULL"], n=n, targets=targets, method=method, examples=0, cell_pairs=32, progress=False)
    heads, cells = result.heads, result.cells
    assert result.axioms["n_pairs"].iloc[0] == n
    assert heads["p_value"].notna().sum() == 72  # every head was tested, so "no flag" is not vacuous
    assert (heads["flag"] == "").all(), heads[heads["flag"] != ""][HEAD_COLUMNS].to_string()
    assert heads["q_value"].min() > 0.05
    assert (heads["measured"] == "exact").any(), "the screen sent some head to exact patching"
    assert len(cells) == 3 * 6 * 3 and cells["p_value"].notna().all() and (cells["n"] > 20).all()
    assert (cells["flag"] == "").all(), cells[cells["flag"] != ""].to_string()


def test_fail_on_gates_the_audit_by_verdict(tiny, tmp_path, capsys):
    """--fail-on VERDICTS exits 1 when an axiom's verdict is one of them, after writing the report; 0 otherwise.
    A random tiny model moves its scores below the tolerance, so TFC1 is violated and LNC1 satisfied."""
    _, path = tiny("bert", "bi")
    common = ["audit", "--model", str(path), "--axioms", "TFC1,LNC1", "--n", "8", "--targets", "heads",
              "--method", "attribution", "--stability", "0", "--out", str(tmp_path / "a")]
    assert main([*common, "--fail-on", "violated"]) == 1
    out = capsys.readouterr().out
    assert "fail: TFC1 (violated); --fail-on violated asks for exit status 1" in out and "LNC1 (" not in out
    assert (tmp_path / "a" / "report.html").is_file()
    assert main([*common, "--resume", "--fail-on", "inconclusive"]) == 0
    assert main([*common, "--resume"]) == 0
    with pytest.raises(SystemExit) as stopped:
        main([*common, "--fail-on", "violated,broken"])
    assert stopped.value.code == 2
    assert "broken is not a verdict; choose from satisfied, violated, inconclusive" in capsys.readouterr().err


def test_resume_with_the_folder_alone_continues_with_the_audits_own_settings(tiny, tmp_path, capsys):
    """`audit --out DIR --resume` alone continues the audit in DIR, model and all, with the settings it started
    with; a setting flag given and different is refused, naming the flag, before any model loads."""
    _, path = tiny("bert", "bi")
    out = str(tmp_path / "a")
    assert main(["audit", "--model", str(path), "--axioms", "TFC1", "--n", "8", "--targets", "heads",
                 "--method", "attribution", "--stability", "0", "--seed", "4", "--out", out]) == 0
    first = load_audit(out)
    assert f"checkpoints: {out}/work (" in capsys.readouterr().out  # why work/ stays, and that it may go
    assert main(["audit", "--out", out, "--resume"]) == 0
    again = load_audit(out)
    assert again.manifest["settings"] == first.manifest["settings"]
    assert "runs" not in first.manifest and again.manifest["runs"] == 2  # the header counts every run's time
    assert again.manifest["seconds_all_runs"] > again.manifest["seconds"]
    assert "over 2 runs (the last, which resumed the audit, took" in (tmp_path / "a" / "report.html").read_text()
    pd.testing.assert_frame_equal(again.heads, first.heads)
    assert main(["audit", "--out", out, "--resume", "--n", "8", "--seed", "4"]) == 0  # agreeing flags are fine
    capsys.readouterr()
    assert main(["audit", "--out", out, "--model", "another-model"]) == 2  # refused before loading, saying whose
    assert f"(it holds the audit of {path} on TFC1: --resume continues that audit" in capsys.readouterr().err
    assert main(["audit", "--out", out, "--resume", "--n", "200", "--model", "elsewhere"]) == 2
    error = capsys.readouterr().err
    assert f"cannot resume the audit in {out} with other settings" in error
    assert "--model elsewhere (the audit has " in error and "--n 200 (the audit has 8)" in error


def test_an_audit_saved_before_the_screen_setting_resumes_with_the_screen_it_used(tiny, tmp_path, capsys):
    """Audits saved before `screen` existed screened with AtP*: resumed from the folder alone they go on with it,
    and the API refuses to resume them with another screen, naming it."""
    _, path = tiny("bert", "bi")
    out = tmp_path / "old"
    assert main(["audit", "--model", str(path), "--axioms", "TFC1", "--n", "8", "--steps", "heads", "--stability",
                 "0", "--screen", "atp*", "--out", str(out)]) == 0
    first = load_audit(out)
    stored = out / "work" / "settings.json"
    saved = json.loads(stored.read_text())
    assert saved.pop("screen") == "atp*"
    def write_old(settings: dict) -> None:  # as an older version wrote it, recorded in the folder's ledger
        stored.write_text(json.dumps(settings))
        ledger_path = out / ".mechir-axioms.json"
        ledger = json.loads(ledger_path.read_text())
        ledger["files"]["work/settings.json"]["sha256"] = digest(stored)
        ledger_path.write_text(json.dumps(ledger))

    write_old(saved)
    assert main(["audit", "--out", str(out), "--resume"]) == 0
    again = load_audit(out)
    assert again.manifest["settings"]["screen"] == "atp*"
    pd.testing.assert_frame_equal(again.heads, first.heads)
    assert first.manifest["axioms"]["TFC1"]["verification"]["screened_by"] == "atp*"
    write_old(saved)
    with pytest.raises(SettingsError, match="screen was 'atp\\*', now 'attribution'"):
        audit(str(path), "TFC1", n=8, steps=("heads",), stability=0, folder=out, resume=True, progress=False)


def test_an_exact_audit_resumes_whatever_the_verified_methods_settings(tiny, tmp_path):
    """The screen, budget and margin decide only a verified audit's numbers: an exact audit started with others
    resumes under today's defaults, and its reproduce command does not depend on them."""
    _, path = tiny("bert", "bi")
    first = audit(str(path), "TFC1", n=8, steps=("heads",), stability=0, method="exact", screen="atp*", verify=16,
                  margin=0.1, folder=tmp_path / "exact", progress=False)
    again = audit(str(path), "TFC1", n=8, steps=("heads",), stability=0, method="exact", folder=tmp_path / "exact",
                  resume=True, progress=False)
    pd.testing.assert_frame_equal(again.heads, first.heads)
    audit(str(path), "TFC1", n=8, steps=("heads",), stability=0, folder=tmp_path / "verified", progress=False)
    with pytest.raises(SettingsError, match="verify was 48, now 16"):  # a verified audit's own numbers
        audit(str(path), "TFC1", n=8, steps=("heads",), stability=0, verify=16, folder=tmp_path / "verified",
              resume=True, progress=False)


def test_the_report_says_how_many_pairs_each_axiom_patched_cells_on(tiny_audit):
    """The summary's cell-pair count is what ran per axiom (24 built, fewer kept), not the setting's 48 alone."""
    html = (tiny_audit.folder / "report.html").read_text()
    kept = {row.axiom: int(row.n) for row in tiny_audit.cells.groupby("axiom", sort=False)["n"].first().reset_index().itertuples()}
    assert set(kept) == {"TFC1", "LNC1"} and all(count <= 24 for count in kept.values())
    assert f"on up to 48 random pairs per axiom (TFC1 {kept['TFC1']}, LNC1 {kept['LNC1']}:" in html


def test_settings_that_cannot_reach_a_flag_are_warned_before_patching(tiny_double):
    """8 pairs of a few queries: the test over them may reach alpha, but stability selection's halves cannot (2/2^3
    = 0.25 for 3 queries); 3 pairs as units cannot even in the full test (2/2^3); 24 pairs with stability 0 can."""
    with pytest.warns(UserWarning, match=r"TFC1: no head can be flagged: stability selection's halves of \d "
                                         r"queries cannot give p below [\d.]+ > alpha 0.05; give more pairs"):
        audit(tiny_double, ["TFC1"], n=8, seed=3, steps=("heads",), method="attribution", tolerance=TINY_TOLERANCE,
              progress=False)
    with pytest.warns(UserWarning, match=r"no head can be flagged: the sign-flip test over 3 pairs cannot give p below 0.25"):
        audit(tiny_double, ["TFC1"], n=3, seed=3, steps=("heads",), method="attribution", tolerance=TINY_TOLERANCE,
              unit="pair", stability=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        audit(tiny_double, ["TFC1"], n=24, seed=3, steps=("heads",), method="attribution", tolerance=TINY_TOLERANCE,
              stability=0, progress=False)
