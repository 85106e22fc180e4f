"""Benchmark: time to compile each catalogue axiom into 200 relevance-stratified pairs.

Runs on the real TREC DL data (../shared) if present, else the bundled sample, for the packaged MiniLM
bi-encoder and, when ../shared has it, the real cross-encoder (joint query-document input), and for tiny
"llm" rankers over each decoder tokenizer family (byte-level BPE: Qwen, Llama 3; SentencePiece: Gemma,
Llama 2; trained on TREC DL, see benchmarks/modern_models.py). For every model and axiom it reports the
alignment drop rate: the share of perturbed candidates that token alignment refused (lengths differ, the
slot moves, tokens outside the span change, too long), of those that reached alignment.
Prints a table and writes benchmarks/results/pairs.json.

    python benchmarks/pairs.py [--n 200] [--seed 0] [--styles qwen,llama3,gemma,llama2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from mechir_axioms import __version__, list_axioms, load_ranker, make_pairs
from mechir_axioms.pairs.data import load_data

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ALIGNMENT_REASONS = ("token lengths differ", "longer than the model's max length", "the changed slot lands",
                     "tokens outside the changed span")
"""The starts of the reasons token alignment gives (mechir_axioms/pairs/align.py) for dropping a pair."""


def alignment_drop_rate(pairs) -> tuple[int, float]:
    """(pairs alignment refused, their share of the candidates that reached alignment)."""
    refused = sum(count for reason, count in pairs.dropped.items() if reason.startswith(ALIGNMENT_REASONS))
    reached = refused + pairs.provenance["n_built"]
    return refused, refused / reached if reached else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--styles", default="qwen,llama3,gemma,llama2", help="decoder tokenizer families ('' for none)")
    args = parser.parse_args()
    data_path = SHARED / "data" / "trec-dl-passages.jsonl.gz"
    frame, source = load_data(data_path if data_path.exists() else None)
    models = {"minilm (bi)": None}
    cross = SHARED / "models" / "minilm-l6-cross-encoder-trecdl"
    if cross.exists():
        models["cross-encoder (joint)"] = cross
    scratch = tempfile.TemporaryDirectory()
    if args.styles:
        import modern_models

        for style in args.styles.split(","):
            models[f"llm, {style} tokenizer"] = modern_models.llm_folder(style, Path(scratch.name))
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
                    "alignment_dropped": alignment_drop_rate(pairs)[0],
                    "alignment_drop_rate": round(alignment_drop_rate(pairs)[1], 4),
                }
            )
            print(f"{label:<24} {axiom.name:<11} {len(pairs):>5} rows {seconds:7.2f} s  dropped {rows[-1]['dropped']:>5}"
                  f"  alignment drop rate {rows[-1]['alignment_drop_rate']:6.1%}", flush=True)
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
    scratch.cleanup()
    print(f"\n| {'model':<24} | " + " | ".join(f"{axiom.name:>8}" for axiom in list_axioms()) + " |")
    print(f"|{'-' * 26}|" + "|".join("-" * 10 for _ in list_axioms()) + "|")
    for label in models:
        rates = {row["axiom"]: row["alignment_drop_rate"] for row in rows if row["model"] == label}
        print(f"| {label:<24} | " + " | ".join(f"{rates[axiom.name]:8.1%}" for axiom in list_axioms()) + " |")
    out = ROOT / "benchmarks" / "results" / "pairs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"slowest: {result['max_seconds']:.2f} s for {args.n} pairs; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
