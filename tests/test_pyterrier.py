"""PyTerrier: RankerTransformer in pt.Experiment on real TREC DL qrels, and unjudged rankings in make_pairs and audit."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import ir_measures
import pandas as pd
import pytest
import torch
from ir_measures import nDCG

import mechir_axioms.pyterrier as integration
from mechir_axioms import DataError, SettingsError, audit, load_axiom, load_data, make_pairs
from mechir_axioms.pyterrier import INSTALL, RankerTransformer

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

pt = pytest.importorskip("pyterrier")


@pytest.fixture(scope="module")
def candidates(short_frame) -> pd.DataFrame:
    """A first-stage result frame: the two queries with the best-judged short passages, each against every
    short passage (51 per query, so ranks reach three bands); no relevance, as a retrieval run has none."""
    qids = short_frame.groupby("qid")["relevance"].max().sort_values(ascending=False, kind="stable").index[:2]
    topics = short_frame[short_frame["qid"].isin(qids)].drop_duplicates("qid")[["qid", "query"]]
    passages = short_frame.drop_duplicates("docno")[["docno", "text"]]
    return topics.merge(passages, how="cross").reset_index(drop=True)


@pytest.fixture(scope="module")
def qrels(trec_rows, candidates) -> pd.DataFrame:
    """Every real TREC DL judgement of the candidates' queries, in PyTerrier's qrels columns."""
    frame = pd.DataFrame(trec_rows)
    frame = frame[frame["qid"].isin(set(candidates["qid"]))]
    return frame[["qid", "docno", "relevance"]].rename(columns={"relevance": "label"}).reset_index(drop=True)


@pytest.fixture(scope="module")
def direct(minilm, candidates, one_torch_thread) -> torch.Tensor:
    """The ranker's own scores of the candidates, without PyTerrier."""
    return minilm.score(list(candidates["query"]), list(candidates["text"]))


@pytest.fixture(scope="module")
def ranked(minilm, candidates, one_torch_thread) -> pd.DataFrame:
    """The candidates re-ranked by RankerTransformer: a PyTerrier result frame without relevance."""
    return RankerTransformer(minilm)(candidates)


def overlap(row: pd.Series) -> float:
    """A second, lexical system: how many query words the passage contains."""
    return float(len(set(row["query"].lower().split()) & set(row["text"].lower().split())))


def test_scores_equal_ranker_score_and_ranks_are_per_query(ranked, candidates, direct):
    assert list(ranked.columns) == [*candidates.columns, "score", "rank"]
    assert torch.equal(torch.tensor(ranked["score"].to_numpy(), dtype=torch.float32), direct)
    assert ranked["score"].dtype == "float64" and ranked["rank"].dtype == "int64"
    for _, group in ranked.groupby("qid"):
        ordered = group.sort_values("rank")
        assert list(ordered["rank"]) == list(range(len(group)))
        assert ordered["score"].is_monotonic_decreasing
    expected = pt.model.add_ranks(candidates.assign(score=direct.double().numpy()))
    assert list(ranked["rank"]) == list(expected["rank"])


def test_verbose_scores_the_same_batches(minilm, candidates, ranked, one_torch_thread):
    """With a progress bar (ranker.score's own) the scores are the same, bit for bit; an existing first-stage score
    and rank are replaced."""
    first = candidates.iloc[:40].assign(score=1.0, rank=0)  # ten batches of four
    again = RankerTransformer(minilm, batch_size=4, verbose=True)(first)
    assert list(again.columns) == list(ranked.columns)
    assert torch.equal(torch.tensor(again["score"].to_numpy(), dtype=torch.float32),
                       minilm.score(list(first["query"]), list(first["text"]), batch_size=4))


def test_experiment_ndcg_matches_ir_measures(minilm, candidates, qrels, direct, one_torch_thread):
    topics = candidates.drop_duplicates("qid")[["qid", "query"]]
    first_stage = candidates[["qid", "docno", "text"]]
    systems = [pt.Transformer.from_df(first_stage) >> RankerTransformer(minilm),
               pt.Transformer.from_df(first_stage) >> pt.apply.doc_score(overlap)]
    result = pt.Experiment(systems, topics, qrels,
                           eval_metrics=["ndcg_cut_10"], names=["minilm", "overlap"])
    own = {"minilm": direct.double().numpy(), "overlap": candidates.apply(overlap, axis=1).to_numpy()}
    judged = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    for name, scores in own.items():
        run = pd.DataFrame({"query_id": candidates["qid"], "doc_id": candidates["docno"], "score": scores})
        expected = ir_measures.calc_aggregate([nDCG @ 10], judged, run)[nDCG @ 10]
        got = float(result.set_index("name").loc[name, "ndcg_cut_10"])
        assert got == pytest.approx(expected, abs=1e-12), name
    assert 0 < result.set_index("name").loc["minilm", "ndcg_cut_10"] < 1


def test_experiment_inside_intervene_evaluates_the_intervened_ranker(minilm, candidates, qrels, direct, one_torch_thread):
    """`with intervene(...)` around pt.Experiment: the transformer scores with the heads ablated, and after it the
    ranker scores as before."""
    from mechir_axioms import intervene

    topics = candidates.drop_duplicates("qid")[["qid", "query"]]
    system = pt.Transformer.from_df(candidates[["qid", "docno", "text"]]) >> RankerTransformer(minilm)
    judged = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    with intervene(minilm, "0.0,1.3,2.5", "ablate"):
        result = pt.Experiment([system], topics, qrels, eval_metrics=[nDCG @ 10], names=["ablated"])
        ablated = minilm.score(list(candidates["query"]), list(candidates["text"]))
    assert not torch.equal(ablated, direct)
    run = pd.DataFrame({"query_id": candidates["qid"], "doc_id": candidates["docno"], "score": ablated.double().numpy()})
    expected = ir_measures.calc_aggregate([nDCG @ 10], judged, run)[nDCG @ 10]
    assert float(result.loc[0, "nDCG@10"]) == pytest.approx(expected, abs=1e-12)
    assert torch.equal(minilm.score(list(candidates["query"]), list(candidates["text"])), direct)


def test_missing_columns_are_named(minilm, candidates):
    transformer = RankerTransformer(minilm)
    with pytest.raises(DataError, match=r"RankerTransformer: the input frame lacks column\(s\) docno, text; "):
        transformer(candidates.drop(columns=["text", "docno"]))
    with pytest.raises(DataError, match=r"lacks column\(s\) query"):
        transformer.transform_outputs(["qid", "docno", "text"])
    assert transformer.transform_outputs(["qid", "query", "docno", "text", "score"])[-2:] == ["score", "rank"]
    with pytest.raises(DataError, match=r"row 0 \(qid '\d+', docno '\d+'\): text is missing; every row needs its text as a"):
        transformer(candidates.assign(text=[None, *candidates["text"][1:]]))
    with pytest.raises(SettingsError, match="batch_size=0 is not valid"):
        RankerTransformer(minilm, batch_size=0)
    empty = transformer(candidates.iloc[:0])
    assert list(empty.columns) == [*candidates.columns, "score", "rank"] and len(empty) == 0


def test_without_pyterrier_construction_says_how_to_install(monkeypatch, minilm):
    """The module imports without PyTerrier; constructing the transformer names the extra to install."""
    monkeypatch.setitem(sys.modules, "pyterrier", None)  # import pyterrier now raises ImportError
    spec = importlib.util.spec_from_file_location("mechir_axioms._pyterrier_probe", integration.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.pt is None
    with pytest.raises(SettingsError) as error:
        module.RankerTransformer(minilm)
    assert str(error.value) == f"RankerTransformer needs PyTerrier, which is not installed; {INSTALL}"


def test_load_data_reads_rankings(ranked, candidates):
    frame, _ = load_data(ranked)
    assert list(frame.columns) == ["qid", "query", "docno", "text", "relevance", "rank"]
    assert frame["relevance"].dtype == "Int64" and frame["relevance"].isna().all()
    assert list(frame["rank"]) == list(ranked["rank"])
    by_score, _ = load_data(ranked.drop(columns="rank"))  # ranks derived from scores as PyTerrier does
    assert list(by_score["rank"]) == list(ranked["rank"])
    partly = ranked.assign(label=[2.0, *[float("nan")] * (len(ranked) - 1)])  # PyTerrier's qrels column
    frame, _ = load_data(partly)
    assert frame["relevance"].tolist()[:2] == [2, pd.NA] and frame["relevance"].notna().sum() == 1
    with pytest.raises(DataError, match=r"missing column\(s\) relevance; .* \(or, for an unjudged ranking, a rank or score"):
        load_data(candidates)
    with pytest.raises(DataError, match=r"row 0, column 'rank' is -1; it must be a non-negative integer rank"):
        load_data(ranked.assign(rank=[-1, *ranked["rank"][1:]]))


def test_make_pairs_stratifies_unjudged_rankings_by_rank_band(ranked, minilm):
    pairs = make_pairs("TFC1", ranked, minilm, n=16, seed=4)
    facts = pairs.provenance
    assert facts["stratify"] == "rank_band" and facts["stratify_requested"] == "relevance"
    assert facts["rank_bands"] == ["0-9", "10-49", "50-99", "100+"]
    assert facts["judged_rows"] == {"judged": 0, "rows": len(ranked)}
    assert len(pairs) == 16 and pairs.frame["relevance"].isna().all()
    rank = ranked.set_index(["qid", "docno"])["rank"]
    ranks = [rank[key] for key in zip(pairs.frame["qid"], pairs.frame["docno"])]
    bands = pd.Series(pd.cut(ranks, [0, 10, 50, 100], right=False)).value_counts(sort=False).tolist()
    whole = pd.Series(pd.cut(ranked["rank"], [0, 10, 50, 100], right=False)).value_counts(sort=False).tolist()
    assert bands == [round(16 * count / len(ranked)) for count in whole]  # proportional to the run's bands
    again = make_pairs("TFC1", ranked, minilm, n=16, seed=4)
    pd.testing.assert_frame_equal(pairs.frame, again.frame)


def test_relevance_selection_needs_judgements(ranked, minilm):
    graded = load_axiom("TFC1", relevance=[2, 3])
    message = r"TFC1: select.relevance = \[2, 3\] needs relevance grades, but DataFrame has none \(an unjudged ranking\)"
    with pytest.raises(DataError, match=message):
        make_pairs(graded, ranked, minilm, n=4)
    with pytest.raises(DataError, match=message):
        audit("no/such-model", [graded], data=ranked, n=4, progress=False)  # refused before the model loads


def test_audit_of_an_unjudged_ranking_records_the_fallback(ranked, minilm, one_torch_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = audit(minilm, ["TFC1"], data=ranked, n=16, seed=1, targets=("heads",), method="attribution",
                       examples=0, progress=False)
    note = result.manifest["data_relevance"]
    assert note == {"judged_rows": 0, "rows": len(ranked), "stratify": "rank_band",
                    "rank_bands": ["0-9", "10-49", "50-99", "100+"]}
    assert result.manifest["axioms"]["TFC1"]["stratify"] == "rank_band"
    assert len(result.heads) == minilm.n_layers * minilm.n_heads and result.pairs["relevance"].isna().all()
