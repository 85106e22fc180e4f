"""The HTML comparison of two audits, opened in headless Chromium, and the compact `_repr_html_` summaries of an
audit, a comparison, a sweep and a patching result (the key numbers shown, every text escaped)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from mechir_axioms import audit, compare
from mechir_axioms.results.audit import Audit, load_audit
from mechir_axioms.results.sweep import Sweep, stability
from mechir_axioms.results.comparison import Comparison
from mechir_axioms.core.errors import SettingsError
from mechir_axioms.patching.result import PatchResult
from mechir_axioms.results.text import percent

from browser import chromium, open_page

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

OPTIONS = dict(n=12, seed=1, targets=("heads",), method="attribution", examples=0, tolerance=1e-7, progress=False)
HOSTILE = '<script>alert("x")</script>'


def _with_flags(audit: Audit, flags: dict[str, str], shift: float = 0.0) -> Audit:
    """A copy of `audit` whose TFC1 heads carry exactly `flags` (name -> flag), their effects shifted by `shift`
    (ranks, so the head-map correlation, unchanged); the other axioms' heads lose their flags. Without per-pair
    changes it compares as an audit saved before them: an independent-samples interval, every lost flag counted."""
    edited = copy.deepcopy(audit)
    heads = edited.heads.copy()
    heads["flag"] = ""
    tfc1 = heads["axiom"] == "TFC1"
    for name, flag in flags.items():
        heads.loc[tfc1 & (heads["name"] == name), "flag"] = flag
    heads.loc[tfc1, "effect"] += shift
    edited.heads, edited.folder = heads, None
    edited.pair_changes = {}  # edited flags have no per-pair changes behind them: every lost flag counts
    return edited


@pytest.fixture(scope="module")
def audits(tiny, tmp_path_factory, one_torch_thread):
    """A tiny ranker's audit saved twice with edited flags: the new one loses 0.1 and gains 1.3 on TFC1."""
    ranker, _ = tiny("bert", "bi")
    root = tmp_path_factory.mktemp("compare-html")
    real = audit(ranker, ["TFC1", "STMC1"], **OPTIONS)
    old = _with_flags(real, {"0.1": "violates", "1.2": "encodes"}).save(root / "old")
    new = _with_flags(real, {"1.2": "encodes", "1.3": "encodes"}, shift=0.05).save(root / "new")
    return root, old, new


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    with chromium() as launched:
        yield launched


def test_comparison_report_opens_and_shows_maps_flags_and_failures(audits, browser):
    root, old, new = audits
    comparison = compare(old, new)
    assert [row.gained for row in comparison.axioms] == [["1.3 (encodes)"], []]
    assert [row.lost for row in comparison.axioms] == [["0.1 (violates)"], []]
    path = comparison.to_html(root / "comparison.html")
    page, errors, requests = open_page(browser, path)
    tfc1 = page.locator("#axiom-TFC1")
    maps = {kind: tfc1.locator(f"figure.map-{kind} svg rect").count() for kind in ("old", "new", "difference")}
    outlined = tfc1.locator("figure.map-difference svg rect[stroke] title").all_text_contents()
    gained = tfc1.locator("ul.gained li").all_text_contents()
    lost = tfc1.locator("ul.lost li").all_text_contents()
    differences = page.locator("figure.map-difference svg").count()
    failures = page.locator("#failures li").all_text_contents()
    verdict = page.locator("#verdict").text_content()
    text = page.locator("body").inner_text()
    table = page.locator("pre").text_content()
    page.close()
    assert errors == []
    assert requests == [path.as_uri()], f"the comparison fetched {requests[1:]}"
    assert maps == {"old": 8, "new": 8, "difference": 8}  # 2 layers x 4 heads each
    assert differences == 2
    assert gained == ["1.3 (encodes)"] and lost == ["0.1 (violates)"]
    assert len(outlined) == 2  # outlined: the heads whose flag changed
    assert any(tip.startswith("layer 0, head 1:") and "flag lost (violates)" in tip for tip in outlined)
    assert any(tip.startswith("layer 1, head 3:") and "flag gained (encodes)" in tip for tip in outlined)
    assert failures == comparison.failures == ["TFC1: 1 head(s) lost their flag, more than the allowed 0"]
    assert verdict.strip() == "result: " + comparison.verdict == "result: FAIL (1 threshold(s) crossed)"
    assert table.strip() == comparison.table()
    row = comparison.axioms[0]
    assert f"{percent(row.change, True)} [{percent(row.difference_low, True)}, {percent(row.difference_high, True)}]" in text


def test_models_of_different_shapes_get_both_maps_and_no_difference(audits, minilm, browser, one_torch_thread):
    root, old, _ = audits
    other = audit(minilm, ["TFC1"], folder=root / "minilm", **OPTIONS)
    comparison = compare(old, other, allow_different_models=True)
    path = comparison.to_html(root / "shapes.html")
    page, errors, requests = open_page(browser, path)
    tfc1 = page.locator("#axiom-TFC1")
    maps = {kind: tfc1.locator(f"figure.map-{kind} svg rect").count() for kind in ("old", "new", "difference")}
    captions = tfc1.locator("figcaption").all_text_contents()
    note = tfc1.locator(".no-difference").text_content()
    stmc1 = page.locator("#axiom-STMC1 .no-difference").text_content()
    page.close()
    assert errors == [] and requests == [path.as_uri()]
    assert maps == {"old": 2 * 4, "new": 6 * 12, "difference": 0}
    assert any("2 × 4" in caption for caption in captions) and any("6 × 12" in caption for caption in captions)
    assert "differ in shape (2 × 4 vs 6 × 12" in note and "no difference map is drawn" in note
    assert "missing from the new audit" in stmc1  # the old audit's STMC1 was not audited on MiniLM
    tfc1_row = comparison.axioms[0]  # heads of different models do not correspond: no rho, no flags matched
    assert math.isnan(tfc1_row.correlation) and tfc1_row.gained == tfc1_row.lost == []
    assert not any("different heads" in failure for failure in comparison.failures)
    assert tfc1_row.notes == ["the head maps differ in shape (2 x 4 vs 6 x 12 layers x heads): agreement is compared, "
                              "heads are not matched or correlated"]
    assert "note: the head maps differ in shape" in comparison.table()


def test_to_html_needs_the_audits():
    with pytest.raises(SettingsError, match="compare\\(old, new\\)"):
        Comparison("a", "b", [], 0.05, 0.8, 0).to_html("unused.html")


def _hostile(audit: Audit) -> Audit:
    renamed = copy.deepcopy(audit)
    renamed.manifest["model"]["name"] = HOSTILE
    return renamed


def test_audit_repr_html_shows_verdicts_agreement_flags_and_folder(audits):
    _, old, _ = audits
    saved = load_audit(old)
    shown = saved._repr_html_()
    for row in saved.axioms.itertuples():
        assert f"{percent(row.agreement)} [{percent(row.agreement_low)}, {percent(row.agreement_high)}]" in shown
        assert f"<td>{row.verdict}</td>" in shown and f"<td>{row.encodes} / {row.violates}</td>" in shown
    assert str(old) in shown and str(old / "report.html") in shown
    hostile = _hostile(saved)._repr_html_()
    assert HOSTILE not in hostile and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in hostile


def test_comparison_repr_html_shows_changes_flags_and_verdict(audits):
    _, old, new = audits
    comparison = compare(_hostile(load_audit(old)), _hostile(load_audit(new)))
    shown = comparison._repr_html_()
    row = comparison.axioms[0]
    assert f"[{percent(row.difference_low, True)}, {percent(row.difference_high, True)}]" in shown
    assert f"<td>{row.correlation:.3f}</td>" in shown
    assert "<td>1</td><td>1</td><td>FAIL</td>" in shown  # one flag gained, one lost
    assert "result: FAIL (1 threshold(s) crossed)" in shown
    assert HOSTILE not in shown and "&lt;script&gt;" in shown


def test_sweep_repr_html_shows_variants_and_holding_flags(audits):
    _, old, new = audits
    runs = {("TFC1", "reference"): load_audit(old), ("TFC1", "seed=2"): load_audit(new)}
    variants = pd.DataFrame([{"axiom": axiom, "variant": label, **result.axioms.iloc[0].to_dict()}
                             for (axiom, label), result in runs.items()])
    found = stability(runs, {"reference": None, "seed=2": "seed"})
    shown = Sweep(variants, found, runs, {"model": HOSTILE, "kind": "bi"})._repr_html_()
    assert "<td>seed=2</td>" in shown and percent(variants["agreement"].iloc[0]) in shown
    assert "TFC1: 1 of 3 flagged component(s) hold under every variant" in shown  # 1.2 holds; 0.1 and 1.3 do not
    assert "not saved" in shown
    assert HOSTILE not in shown and "&lt;script&gt;" in shown


def test_patch_result_repr_html_shows_shape_pairs_and_strongest_effects():
    effects = np.array([[0.1, 0.9, -0.2], [0.3, 0.7, -0.4], [np.nan, np.nan, np.nan]])
    result = PatchResult(HOSTILE, "exact", effects, ("pair", "variant"), np.array([0.0, 0.0, 0.0]),
                         np.array([1.0, 2.0, 0.001]), 1, 0.01, labels={"variant": ["a", HOSTILE, "c"]})
    shown = result._repr_html_()
    assert "2 patched, 1 excluded" in shown and "pair 3 x variant 3" in shown
    assert shown.index("+0.8000") < shown.index("-0.3000") < shown.index("+0.2000")  # strongest |mean| first
    assert HOSTILE not in shown and "&lt;script&gt;" in shown
