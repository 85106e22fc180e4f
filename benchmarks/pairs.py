"""Benchmark: time to compile each catalogue axiom into 200 relevance-stratified pairs.

Runs on the real TREC DL data (../shared) if present, else the bundled sample, for the packaged MiniLM
bi-encoder and, when ../shared has it, the real cross-encoder (joint query-document input).
Prints a table and writes benchmarks/results/pairs.json.

    python benchmarks/pairs.py [--n 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from mechir_axioms import __version__, list_axioms, load_ranker, make_pairs
from mechir_axioms.pairs.data import load_data

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data_path = SHARED / "data" / "trec-dl-passages.jsonl.gz"
    frame, source = load_data(data_path if data_path.exists() else None)
    models = {"minilm (bi)": None}
    cross = SHARED / "models" / "minilm-l6-cross-encoder-trecdl"
    if cross.exists():
        models["cross-encoder (joint)"] = cross
    rows = []
    for label, model in models.items():
        ranker = load_ranker(model)
        make_pairs("NULL", frame, ranker, n=8, seed=args.seed)  # warm-up: IDF memo, tokenizer caches
        for axiom in list_axioms():
            start = time.perf_counter()
            pairs = make_pairs(axiom, frame, ranker, n=args.n, seed=args.seed)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "model": label,
                    "axiom": axiom.name,
                    "rows": len(pairs),
                    "pairs": pairs.provenance["n_built"],
                    "seconds": round(seconds, 3),
                    "dropped": sum(pairs.dropped.values()),
                }
            )
            print(f"{label:<22} {axiom.name:<11} {len(pairs):>5} rows {seconds:7.2f} s  dropped {rows[-1]['dropped']}")
    result = {
        "benchmark": "pairs",
        "data": source,
        "n": args.n,
        "seed": args.seed,
        "package_version": __version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "results": rows,
        "max_seconds": max(row["seconds"] for row in rows),
    }
    out = ROOT / "benchmarks" / "results" / "pairs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"slowest: {result['max_seconds']:.2f} s for {args.n} pairs; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
