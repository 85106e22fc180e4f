"""Ranking effectiveness of scored judged data with `ir-measures`, and paired before/after comparisons.

Each query's candidates (its judged passages, or a given run) are ranked by the ranker's scores and evaluated per
query by ir-measures: nDCG@10 with the graded judgements, MRR@10 and MAP with passages of relevance >= 2 counted
relevant (the TREC Deep Learning passage conventions, as `pt.Experiment` reports them in benchmarks/). Two systems
on the same queries (or pairs) are compared by the paired randomization test of Smucker, Allan and Carterette
(CIKM 2007), with the paired t-test's p beside it and a percentile bootstrap interval of the mean difference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import ir_measures
import numpy as np
import pandas as pd
from ir_measures import AP, RR, nDCG
from scipy import stats

from ..core.errors import DataError
from .stats import bootstrap_ci

MEASURES = (nDCG @ 10, RR(rel=2) @ 10, AP(rel=2))
"""nDCG@10 (graded), MRR@10 and MAP (relevance >= 2 is relevant)."""
RESAMPLES = 100_000
"""Sign flips of the randomization test: p-values reach 1e-5."""


def qrels_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The judged rows of a data frame (qid, docno, relevance) as ir-measures qrels; DataError when none is judged."""
    judged = frame.dropna(subset=["relevance"]) if "relevance" in frame else frame.iloc[:0]
    if judged.empty:
        raise DataError("the data hold no judged passages (no relevance grades); effectiveness needs judged data")
    return pd.DataFrame({"query_id": judged["qid"].astype(str), "doc_id": judged["docno"].astype(str),
                         "relevance": judged["relevance"].astype(int)}).drop_duplicates(["query_id", "doc_id"])


def check_judged_run(run: pd.DataFrame, qrels: pd.DataFrame, source: str, judged: str) -> None:
    """Refuse a run (qid, docno rows) none of whose documents is judged in `qrels`, which would give every measure
    0 before and after; warn, in one line, when some of its queries have no judged document."""
    pairs = set(zip(qrels["query_id"], qrels["doc_id"]))
    qids = run["qid"].astype(str).to_numpy()
    hits = pd.Series([(qid, docno) in pairs for qid, docno in zip(qids, run["docno"].astype(str))], dtype=int)
    per_query = hits.groupby(qids).sum()
    if int(per_query.sum()) == 0:
        raise DataError(f"{source}: none of the run's {len(run)} documents over {len(per_query)} queries is judged in "
                        f"{judged}; rank documents that have relevance grades there (the same qid and docno)")
    empty = per_query[per_query == 0].index
    if len(empty):
        unjudged = int((~empty.isin(qrels["query_id"])).sum())
        warnings.warn(f"{source}: {len(empty)} of {len(per_query)} queries of the run have no judged document in "
                      f"{judged} ({unjudged} of them are not judged at all and are left out; the other "
                      f"{len(empty) - unjudged} count 0 before and after); judged documents per query: median "
                      f"{per_query.median():g}, fewest {int(per_query.min())}, most {int(per_query.max())}",
                      stacklevel=3)


def run_of(frame: pd.DataFrame, scores: Sequence[float]) -> pd.DataFrame:
    """A run: each row's (qid, docno) with its score, as ir-measures ranks it (score descending per query)."""
    return pd.DataFrame({"query_id": frame["qid"].astype(str).to_numpy(), "doc_id": frame["docno"].astype(str).to_numpy(),
                         "score": np.asarray(scores, dtype=float)}).drop_duplicates(["query_id", "doc_id"])


def per_query(qrels: pd.DataFrame, run: pd.DataFrame, measures: Sequence[Any] = MEASURES) -> pd.DataFrame:
    """One row per query that is both judged and in the run (qid, then one column per measure as ir-measures
    names it); a value ir-measures does not report for such a query counts as 0."""
    values: dict[tuple[str, str], float] = {}
    for metric in ir_measures.iter_calc(list(measures), qrels, run):
        values[str(metric.query_id), str(metric.measure)] = float(metric.value)
    qids = sorted(set(qrels["query_id"]) & set(run["query_id"]))
    columns = {str(measure): [values.get((qid, str(measure)), 0.0) for qid in qids] for measure in measures}
    return pd.DataFrame({"qid": qids, **columns})


def randomization_p(differences: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided paired randomization (sign-flip) p-value that the mean difference is 0:
    (1 + #{|flipped mean| >= |observed mean|}) / (1 + resamples); NaN with no differences."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) == 0:
        return math.nan
    observed = abs(differences.mean()) - 1e-12
    rng = np.random.default_rng(seed)
    count = 0
    for start in range(0, resamples, 1000):
        signs = rng.integers(0, 2, size=(min(1000, resamples - start), len(differences))) * 2.0 - 1.0
        count += int((np.abs(signs @ differences) / len(differences) >= observed).sum())
    return (1 + count) / (1 + resamples)


def paired_difference(before: np.ndarray, after: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Means before and after, their difference with a 95% bootstrap interval, the randomization p and the paired
    t-test p (NaN when every difference is 0)."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    differences = after - before
    low, high = bootstrap_ci(differences, "mean", seed=seed)
    constant = len(differences) < 2 or np.all(differences == differences[0])
    t_p = math.nan if constant else float(stats.ttest_rel(after, before).pvalue)
    return {"before": float(before.mean()), "after": float(after.mean()), "difference": float(differences.mean()),
            "low": float(low), "high": float(high), "p_value": randomization_p(differences, seed=seed), "t_test_p": t_p,
            "n": len(differences)}


def compare_per_query(before: pd.DataFrame, after: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per measure of two per_query frames over the same queries: paired_difference's columns."""
    both = before.merge(after, on="qid", suffixes=("_before", "_after"), validate="one_to_one")
    measures = [column for column in before.columns if column != "qid"]
    return pd.DataFrame([{"measure": measure, **paired_difference(both[f"{measure}_before"], both[f"{measure}_after"], seed)}
                         for measure in measures])
