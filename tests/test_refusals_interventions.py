"""Refusals of interventions (issue 25): non-finite scores stop a run with one sentence, wherever they arise;
a scale factor or steer vector that cannot give finite scores, an empty or ragged reference, a run none of whose
documents is judged, and malformed arguments of the Python API are each refused with one MechirError sentence."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
import torch

from mechir_axioms import MechirError, SettingsError, assess_intervention, audit, intervene
from mechir_axioms.cli import main
from mechir_axioms.core.errors import DataError
from mechir_axioms.models.names import act_name

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

SITE = act_name("resid_post", 0)


@pytest.fixture(scope="module")
def cross(tiny, one_torch_thread):
    """A tiny random BERT cross-encoder (float32) and its folder."""
    return tiny("bert", "cross")


@pytest.fixture(scope="module")
def texts(trec_pairs) -> tuple[list[str], list[str]]:
    queries, documents = trec_pairs
    return queries[:6], documents[:6]


@pytest.fixture(scope="module")
def judged(short_frame) -> pd.DataFrame:
    """Real judged pairs of four queries with short passages."""
    qids = list(dict.fromkeys(short_frame["qid"]))[:4]
    return short_frame[short_frame["qid"].isin(qids)].reset_index(drop=True)


def _one_sentence(error: BaseException) -> str:
    text = str(error)
    assert isinstance(error, MechirError) and "\n" not in text, text
    return text


def _untouched(ranker) -> None:
    assert ranker.interventions == []


def _non_finite_error():
    from mechir_axioms.core.errors import NonFiniteError  # absent before issue 25

    return NonFiniteError


# --- 1. non-finite scores stop the run; the scale factor is checked up front ------------------------------------
def test_scale_factors_the_dtype_cannot_hold_are_refused_up_front(cross, texts):
    ranker, _ = cross
    for factor in (1e308, -1e300, 10**400):
        with pytest.raises(SettingsError, match=r"factor=.* is not valid") as caught:
            with intervene(ranker, ["0.1"], "scale", factor):
                ranker.score(*texts)
        text = _one_sentence(caught.value)
        assert factor == 10**400 or "float32" in text, text
        _untouched(ranker)
    for factor in (float("inf"), float("nan")):
        with pytest.raises(SettingsError, match="finite number"):
            with intervene(ranker, ["0.1"], "scale", factor):
                pass


def test_non_finite_scores_under_an_intervention_stop_scoring_with_one_sentence(cross, texts):
    ranker, _ = cross
    error = _non_finite_error()
    assert issubclass(error, MechirError) and issubclass(error, ArithmeticError)
    plain = ranker.score(*texts)
    with pytest.raises(error) as caught:
        with intervene(ranker, ["0.1", "1.2"], "scale", 1e30):
            ranker.score(*texts)
    text = _one_sentence(caught.value)
    assert f"scores for {len(texts[0])} of {len(texts[0])} pairs" in text, text
    assert "under the intervention scale x1e+30 on heads 0.1, 1.2" in text and "smaller factor" in text, text
    _untouched(ranker)
    assert torch.equal(ranker.score(*texts), plain)  # the check costs nothing when scores are finite


def test_non_finite_scores_stop_patched_runs_and_audits(cross, texts):
    ranker, _ = cross
    error = _non_finite_error()

    def poison(z: torch.Tensor, name: str) -> torch.Tensor:
        return z.clone().fill_(float("nan"))

    with pytest.raises(error, match="while hooks patched or read its activations") as caught:
        ranker.run_with_hooks(*texts, {act_name("z", 0): poison})
    _one_sentence(caught.value)
    with pytest.raises(error, match="under the intervention scale x1e\\+30 on head 0.1"):
        with intervene(ranker, ["0.1"], "scale", 1e30):
            audit(ranker, ["TFC1"], n=4, targets=("heads",), method="attribution", stability=0, examples=0,
                  progress=False)
    _untouched(ranker)


def test_cli_intervene_with_non_finite_scores_exits_2_with_one_line(cross, judged, tmp_path, capsys):
    _, folder = cross
    data = tmp_path / "judged.jsonl"
    judged.to_json(data, orient="records", lines=True)
    base = ["intervene", "--model", str(folder), "--axioms", "TFC1", "--n", "4", "--data", str(data),
            "--targets", "heads", "--method", "attribution", "--stability", "0", "--heads", "0.1", "--op", "scale"]
    assert main([*base, "--factor", "1e308", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mechir-axioms: error: factor=1e+308 is not valid"), err
    assert main([*base, "--factor", "1e30", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mechir-axioms: error: ") and "scores for" in err[-1], err
    assert "under the intervention scale x1e+30 on head 0.1" in err[-1], err
    assert not (tmp_path / "b" / "intervention.json").exists()


# --- 2. a run none of whose documents is judged -----------------------------------------------------------------
def _run_file(frame: pd.DataFrame, path) -> str:
    frame = frame.assign(rank=frame.groupby("qid").cumcount() + 1)
    frame[["qid", "query", "docno", "text", "rank"]].to_json(path, orient="records", lines=True)
    return str(path)


def test_a_run_of_unjudged_documents_is_refused(cross, judged, tmp_path):
    ranker, _ = cross
    run = _run_file(judged.assign(docno="unjudged-" + judged["docno"].astype(str)), tmp_path / "run.jsonl")
    with pytest.raises(DataError) as caught:
        assess_intervention(ranker, ["0.1"], axioms=["TFC1"], data=judged, n=4, run=run, progress=False)
    text = _one_sentence(caught.value)
    assert text.startswith(f"{run}: none of the run's {len(judged)} documents over 4 queries is judged"), text
    _untouched(ranker)


def test_a_run_with_queries_without_judged_documents_warns(cross, judged, tmp_path):
    ranker, _ = cross
    first = judged["qid"] == judged["qid"].iloc[0]
    frame = judged.assign(docno=judged["docno"].astype(str).where(first, "unjudged-" + judged["docno"].astype(str)))
    run = _run_file(frame, tmp_path / "run.jsonl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = assess_intervention(ranker, ["0.1"], axioms=["TFC1"], data=judged, n=4, run=run, progress=False,
                                     targets=("heads",), method="attribution", stability=0, examples=0)
    lines = [str(w.message) for w in caught if "judged document" in str(w.message)]
    assert len(lines) == 1 and "\n" not in lines[0], [str(w.message) for w in caught]
    assert lines[0].startswith(f"{run}: 3 of 4 queries of the run have no judged document"), lines[0]
    assert int(result.measures["n"].iloc[0]) == 4


# --- 3. op "mean" with an empty or ragged reference -------------------------------------------------------------
@pytest.mark.parametrize("reference, message", [
    (([], []), r"reference has 0 queries and 0 passages"),
    ((["a query", "another"], ["one passage"]), r"reference has 2 queries and 1 passages.*one to one"),
    ((["a query"], []), r"reference has 1 queries and 0 passages"),
    (("a query", "a passage"), r"reference queries is 'a query', not a list of strings"),
    ((["a query"], [3]), r"reference passages\[0\] is 3, not a string"),
    ((["q"], ["p"], ["x"]), r"reference has 3 parts, not 2"),
    (5, r"intervene needs reference=\(queries, passages\)"),
])
def test_an_empty_or_ragged_reference_is_refused(cross, reference, message):
    ranker, _ = cross
    with pytest.raises(SettingsError, match=message) as caught:
        with intervene(ranker, ["0.1"], "mean", reference=reference):
            pass
    _one_sentence(caught.value)
    _untouched(ranker)


def test_assess_intervention_refuses_an_empty_reference_up_front(cross, judged):
    ranker, _ = cross
    with pytest.raises(SettingsError, match=r"reference has 0 queries and 0 passages"):
        assess_intervention(ranker, ["0.1"], "mean", axioms=["TFC1"], data=judged, n=4, reference=([], []),
                            progress=False)


# --- 4. steer vectors that cannot give finite scores ------------------------------------------------------------
@pytest.mark.parametrize("fill, message", [
    (float("nan"), r"has 1 non-finite entries \(the first at index 5: nan\); every entry must be a finite number"),
    (float("-inf"), r"has 1 non-finite entries \(the first at index 5: -inf\)"),
    (1e38, r"has norm 1e\+38; it must stay below 1\.84e\+19"),
    (-1e39, r"has entries as large as 1e\+39, beyond the model's dtype float32"),
])
def test_steer_vectors_with_non_finite_or_overflowing_entries_are_refused(cross, texts, fill, message):
    ranker, _ = cross
    width = ranker.stack.embed.weight.shape[-1]
    vector = torch.zeros(width, dtype=torch.float64)
    vector[5] = fill
    with pytest.raises(SettingsError, match=message) as caught:
        with intervene(ranker, steer={SITE: vector}):
            ranker.score(*texts)
    assert repr(SITE) in _one_sentence(caught.value)
    _untouched(ranker)


# --- 5. the Python API's malformed arguments are SettingsErrors ---------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"heads": 3}, r"heads=3 is not valid; name heads as"),
    ({"heads": None}, r"heads=None is not valid"),
    ({"steer": {SITE: ["a", "b"]}}, r"steer vector for '.*' is \['a', 'b'\]; it must be real numbers"),
    ({"steer": {SITE: [1 + 2j] * 4}}, r"it must be real numbers"),
    ({"steer": torch.zeros(4)}, r"steer=tensor.* is not valid; give \{site: vector\}"),
    ({"heads": ["0.1"], "op": "mean", "reference": (["q", "r"], ["p"])}, r"2 queries and 1 passages"),
    ({"heads": ["0.1"], "batch_size": 0}, r"batch_size=0 is not valid"),
])
def test_malformed_api_arguments_are_settings_errors(cross, options, message):
    ranker, _ = cross
    with pytest.raises(SettingsError, match=message) as caught:
        with intervene(ranker, **options):
            pass
    _one_sentence(caught.value)
    _untouched(ranker)


def test_finite_interventions_still_run(cross, texts):
    """The checks refuse nothing that works: a large but harmless factor, a modest steer vector, a real reference."""
    ranker, _ = cross
    width = ranker.stack.embed.weight.shape[-1]
    with intervene(ranker, ["0.1"], "scale", 1e3):
        assert torch.isfinite(ranker.score(*texts)).all()
    with intervene(ranker, steer={SITE: torch.full((width,), 3.0)}):
        assert torch.isfinite(ranker.score(*texts)).all()
    with intervene(ranker, ["0.1"], "mean", reference=(pd.Series(texts[0]), texts[1])):
        assert torch.isfinite(ranker.score(*texts)).all()
    _untouched(ranker)
    json.dumps(ranker.fingerprint())
