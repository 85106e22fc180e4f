"""Flags you can trust: verified heads equal exact heads, NULL reads satisfied by an equivalence test (and a
biased control does not), stability selection is on by default, and a design sweep reports which flags survive.

All on real TREC DL pairs with the packaged MiniLM (and the real cross-encoder for NULL).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mechir_axioms import audit, load_audit, load_ranker, make_pairs
from mechir_axioms.analysis.findings import behaviour, equivalence_margin
from mechir_axioms.results.settings import Settings
from mechir_axioms.auditing.designs import default_vary, variants_of
from mechir_axioms.cli import main
from mechir_axioms.core.errors import SettingsError
from mechir_axioms.specs.axiom import load_axiom

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_path):
    return load_ranker(cross_encoder_path)


def _behaviour(ranker, spec, n=200):
    pairs = make_pairs(spec, None, ranker, n=n, seed=0)
    scored = pairs.score(ranker)
    scores = np.concatenate([scored["baseline_score"], scored["perturbed_score"]])
    return behaviour(spec, scored["delta"].to_numpy(), 1e-3, 0, equivalence_margin(scores, Settings.equivalence))


@pytest.mark.parametrize("model", ["minilm", "cross_encoder"])
def test_null_is_equivalent_and_a_biased_control_is_not(request, model):
    """NULL's two neutral words are exchangeable: the 90% interval of the mean change lies inside the margin,
    although most pairs move by more than the tolerance. A query term against a neutral word is not."""
    ranker = request.getfixturevalue(model)
    null = _behaviour(ranker, load_axiom("NULL"))
    assert null["verdict"] == "satisfied", null
    assert -null["margin"] < null["tost_low"] < null["tost_high"] < null["margin"]
    assert null["agreement"] < 0.5, "most NULL pairs move beyond the tolerance: agreement no longer decides"
    biased = _behaviour(ranker, load_axiom("NULL")(term="query_random", title="biased control"))
    assert biased["verdict"] != "satisfied", biased
    assert biased["tost_low"] > biased["margin"], "a query term raises the score: the change is systematic"


def test_directional_axioms_keep_the_wilson_verdict(minilm):
    row = _behaviour(minilm, load_axiom("TFC1"), n=40)
    assert row["verdict"] == ("satisfied" if row["agreement_low"] > 0.5 else row["verdict"])
    assert np.isnan(row["margin"]) and np.isnan(row["tost_p"])


def test_verified_heads_flag_what_exact_heads_flag(minilm, tmp_path):
    """Every flag of the verified audit rests on exactly measured effects and equals the exact audit's flags;
    unverified heads keep their AtP estimate, marked as screened; the manifest bounds a missed flag."""
    options = dict(n=24, targets=["heads"], threshold=0.03, progress=False)
    exact = audit(minilm, ["TFC1"], **options, method="exact")
    verified = audit(minilm, ["TFC1"], **options, method="verified", folder=tmp_path / "verified")
    # 24 pairs are too few for stability selection: compare what the test on all queries flags
    flagged = lambda result: set(result.heads.loc[result.heads["test"] != "", "name"])  # noqa: E731
    assert flagged(exact), "the comparison needs some exact flag"
    assert flagged(verified) == flagged(exact)
    heads = verified.heads
    assert set(heads["measured"]) == {"exact", "screened"}
    assert (heads.loc[heads["test"] != "", "measured"] == "exact").all()
    facts = verified.manifest["axioms"]["TFC1"]["verification"]
    assert len(facts["verified"]) == (heads["measured"] == "exact").sum() <= Settings.verify
    assert facts["missed_flag_bound"] >= facts["largest_unverified_screen"]
    on_exact = exact.heads.set_index("name")["effect"]
    for row in heads[heads["measured"] == "exact"].itertuples():  # verified effects are the exact ones
        assert row.effect == pytest.approx(on_exact[row.name], abs=1e-4)  # float32: batching reorders sums
    assert heads["selection"].notna().all(), "stability selection is on by default"
    assert set(heads.loc[heads["flag"] != "", "name"]) <= flagged(verified)
    saved = load_audit(tmp_path / "verified")
    assert "measured" in saved.heads and "AtP screened all" in (tmp_path / "verified" / "report.html").read_text()


def test_sweep_varies_one_choice_at_a_time():
    spec = load_axiom("TFC1")
    assert default_vary(spec, 0) == {"filler": ["a", "the", "and"], "position": ["end", "start"], "seed": [0, 1, 2]}
    labels = [variant.label for variant, _, _ in variants_of(spec, default_vary(spec, 0), 0)]
    assert labels == ["reference", "filler=the", "filler=and", "position=start", "seed=1", "seed=2"]
    with pytest.raises(SettingsError, match="cannot vary colour"):
        variants_of(spec, {"colour": ["red"]}, 0)


def test_sweep_reports_which_flags_survive(minilm, tmp_path, capsys):
    code = main(["sweep", "--axioms", "TFC1", "--n", "32", "--targets", "heads", "--method", "attribution",
                 "--threshold", "0.02", "--vary", "filler=a,the", "--vary", "position=end,start",
                 "--out", str(tmp_path / "sweep")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "heads flagged under every variant" in printed
    variants = pd.read_parquet(tmp_path / "sweep" / "variants.parquet")
    assert variants["variant"].tolist() == ["reference", "filler=the", "position=start"]
    assert variants.loc[1, "filler"] == "the" and variants.loc[2, "position"] == "start"
    table = pd.read_parquet(tmp_path / "sweep" / "stability.parquet")
    assert len(table), "some head is flagged under some variant"
    for row in table.itertuples():
        assert row.holds == (row.variants_flagged == row.variants == 3)
        assert row.holds or set(row.depends_on) <= {"filler", "position"}
    for label in variants["variant"]:  # each variant is a saved audit of its own
        assert load_audit(tmp_path / "sweep" / "TFC1" / label).axioms["n_pairs"].iloc[0] == 32
    report = (tmp_path / "sweep" / "report.html").read_text()
    assert "holds under every variant" in report and "position=start" in report
