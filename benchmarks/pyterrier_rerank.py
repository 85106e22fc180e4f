"""Benchmark: re-ranking the judged TREC DL passages in PyTerrier with RankerTransformer, evaluated by pt.Experiment.

Each query's judged passages (../shared/data/trec-dl-passages.jsonl.gz, TREC DL 2019/2020) are the candidate
list; the packaged MiniLM bi-encoder and the TREC DL cross-encoder re-rank them, and pt.Experiment reports
nDCG@10, MRR@10 (relevance >= 2) and MAP (relevance >= 2) with paired t-tests against the first system. It
checks on the way that the transformer's scores equal ranker.score, times the scoring, and writes the record
benchmarks/results/pyterrier_rerank.json (benchmarks/record.py).

    python benchmarks/pyterrier_rerank.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import pyterrier as pt
from ir_measures import AP, RR, nDCG
from record import ROOT, markdown, write_record

from mechir_axioms import load_ranker
from mechir_axioms.pyterrier import RankerTransformer

TREC_DL = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"
CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    rows = pd.read_json(TREC_DL, lines=True, dtype={"qid": str, "docno": str})
    candidates = rows[["qid", "query", "docno", "text"]]
    topics = candidates[["qid", "query"]].drop_duplicates("qid")
    qrels = rows[["qid", "docno", "relevance"]].rename(columns={"relevance": "label"})
    systems, names, timings = [], [], []
    for name, model in (("MiniLM-L6 bi-encoder (packaged)", None), ("MiniLM-L6 cross-encoder (TREC DL)", CROSS_ENCODER)):
        ranker = load_ranker(model)
        transformer = RankerTransformer(ranker)
        start = time.perf_counter()
        scored = transformer(candidates)
        timings.append(time.perf_counter() - start)
        direct = ranker.score(list(candidates["query"]), list(candidates["text"]))
        assert np.array_equal(scored["score"].to_numpy(), np.asarray(direct, dtype=float)), f"{name}: scores differ"
        systems.append(pt.Transformer.from_df(candidates) >> transformer)
        names.append(name)
    metrics = [nDCG @ 10, RR(rel=2) @ 10, AP(rel=2)]  # ir-measures objects; PyTerrier reads strings as trec_eval names
    measures = [str(metric) for metric in metrics]
    experiment = pt.Experiment(systems, topics, qrels, eval_metrics=metrics, names=names, baseline=0)
    experiment["scoring seconds"] = [round(seconds, 1) for seconds in timings]
    shown = experiment[["name", *measures, *[f"{m} p-value" for m in measures if f"{m} p-value" in experiment], "scoring seconds"]]
    shown = shown.round(4)
    print(f"{len(candidates)} judged passages, {len(topics)} queries; pyterrier {pt.__version__}\n")
    rows = shown.to_dict(orient="records")
    print(markdown(list(shown.columns), rows))
    write_record("pyterrier_rerank", rows, list(shown.columns),
                 title="Re-ranking the judged TREC DL passages in PyTerrier",
                 notes=[f"The judged TREC DL 2019/2020 passages: {len(candidates):,} passages, {len(topics)} queries.",
                        "p-values: paired t-tests against the first system."],
                 details={"passages": len(candidates), "queries": len(topics), "pyterrier": pt.__version__})


if __name__ == "__main__":
    main()
