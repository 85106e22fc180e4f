"""Benchmark: a TopK SAE on the packaged MiniLM's blocks.3.hook_resid_post, trained over the bundled sample with
the default settings, and what it costs the ranker.

It trains the SAE (`mechir-axioms sae train`'s code, timed end to end: activations, training, measuring), reads
its quality on the held-out queries' texts (fraction of variance unexplained, L0, dead latents), and ranks the
judged TREC DL passages of ../shared/data whose queries were not in the SAE's training split three ways: the plain
ranker, the ranker with the SAE spliced in (reconstruction plus error: must equal plain), and the ranker with the
reconstruction alone in place of the activation (the splice's cost), nDCG@10 by ir-measures.

    python benchmarks/sae.py [--site blocks.3.hook_resid_post] [--steps 3000] [--folder benchmarks/results/sae]
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from record import ROOT, machine, markdown, write_record

from mechir_axioms import load_ranker
from mechir_axioms.analysis.effectiveness import per_query, qrels_of, run_of
from mechir_axioms.features.splice import reconstruction_hooks, spliced
from mechir_axioms.features.training import TrainingSettings, split_queries, train_sae
from mechir_axioms.models.hooks import attached
from mechir_axioms.passages.loading import load_data

SHARED = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="blocks.3.hook_resid_post")
    parser.add_argument("--steps", type=int, default=TrainingSettings().steps)
    parser.add_argument("--folder", default=str(ROOT / "benchmarks" / "results" / "sae"))
    args = parser.parse_args()
    folder = Path(args.folder) / f"minilm-{args.site}"
    if folder.exists():
        shutil.rmtree(folder)  # a fresh run: the time is the point
    ranker = load_ranker()
    settings = replace(TrainingSettings(), steps=args.steps)
    started = time.perf_counter()
    sae, facts = train_sae(ranker, args.site, None, settings, out=folder)
    seconds = time.perf_counter() - started
    sample, _ = load_data(None)
    trained_on = split_queries(sample, settings.held_out, settings.seed)[0]
    judged, _ = load_data(SHARED)
    seen = set(zip(trained_on["qid"].astype(str), trained_on["docno"].astype(str)))
    sets = {"unseen queries": judged[~judged["qid"].astype(str).isin(set(trained_on["qid"].astype(str)))],
            "unseen passages": judged[[pair not in seen for pair in zip(judged["qid"].astype(str),
                                                                         judged["docno"].astype(str))]]}
    held = facts["held_out"]
    rows, ndcgs = [], {}
    for name, frame in sets.items():
        queries, passages = list(frame["query"]), list(frame["text"])
        qrels = qrels_of(frame)
        plain = ranker.score(queries, passages, progress=True)
        with spliced(ranker, [sae]):
            with_error = ranker.score(queries, passages, progress=True)
        with attached(ranker.sites, reconstruction_hooks([sae])):
            reconstructed = ranker.score(queries, passages, progress=True)
        ndcg = {label: float(per_query(qrels, run_of(frame, scores))["nDCG@10"].mean())
                for label, scores in (("plain", plain), ("spliced", with_error), ("reconstruction", reconstructed))}
        ndcgs[name] = ndcg
        rows.append({"judged data": f"{name} ({frame['qid'].nunique()} queries, {len(frame)} passages)",
                     "site": args.site, "latents": settings.latents, "k": settings.k, "steps": settings.steps,
                     "seconds (all)": round(seconds, 1), "held-out FVU": round(held["fvu"], 4),
                     "L0": round(held["l0"], 1), "dead latents": f"{held['dead_share']:.1%}",
                     "nDCG@10 plain": round(ndcg["plain"], 4), "nDCG@10 spliced": round(ndcg["spliced"], 4),
                     "nDCG@10 reconstruction only": round(ndcg["reconstruction"], 4),
                     "max |spliced - plain|": float((with_error - plain).abs().max()),
                     "mean |reconstruction - plain|": round(float((reconstructed - plain).abs().mean()), 4)})
    columns = list(rows[0])
    print(markdown(columns, rows))
    write_record("sae", rows, columns, title="A TopK SAE on MiniLM: training time, quality, splice cost",
                 notes=[f"Trained by `mechir-axioms sae train --site {args.site}` with the defaults over the bundled "
                        f"sample ({facts['training_tokens']} training tokens, {held['tokens']} held-out tokens of "
                        "unseen queries), timed end to end (activations, training, measuring) on "
                        f"{machine()}, torch threads {torch.get_num_threads()}.",
                        "nDCG@10 over the judged TREC DL data of ../shared/data, each query's judged passages ranked: "
                        "unseen queries are those not in the SAE's training split; unseen passages are all judged "
                        "pairs but the training split's (the bundled sample is drawn from the same queries, so most "
                        "of these queries' texts were seen). Spliced keeps the SAE's error term; reconstruction only "
                        "drops it."],
                 details={"facts": facts, "ndcg": ndcgs})


if __name__ == "__main__":
    main()
