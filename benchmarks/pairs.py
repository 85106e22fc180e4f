"""Benchmark: time to compile each catalogue axiom into 200 relevance-stratified pairs.

Runs on the real TREC DL data (../shared) if present, else the bundled sample, for the packaged MiniLM
bi-encoder and, when ../shared has it, the real cross-encoder (joint query-document input), and for tiny
"llm" rankers over each decoder tokenizer family (byte-level BPE: Qwen, Llama 3; SentencePiece: Gemma,
Llama 2; trained on TREC DL, see benchmarks/modern_models.py). For every model and axiom it reports the
alignment drop rate: the share of perturbed candidates that token alignment refused (lengths differ, the
slot moves, tokens outside the span change, too long), of those that reached alignment.
Prints a table and writes the record benchmarks/results/pairs.json (benchmarks/record.py).

    python benchmarks/pairs.py [--n 200] [--seed 0] [--styles qwen,llama3,gemma,llama2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from record import ROOT, markdown, write_record

from mechir_axioms import __version__, list_axioms, load_ranker, make_pairs
from mechir_axioms import load_data

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
    scratch.cleanup()
    names = [axiom.name for axiom in list_axioms()]
    columns = ["model", *names]
    rates = [{"model": label, **{row["axiom"]: f"{row['alignment_drop_rate']:.1%}" for row in rows if row["model"] == label}}
             for label in models]
    seconds = [{"model": label, **{row["axiom"]: row["seconds"] for row in rows if row["model"] == label}}
               for label in models]
    print("\n" + markdown(columns, rates))
    print("\n" + markdown(columns, seconds))
    slowest = max(rows, key=lambda row: row["seconds"])
    write_record("pairs", rates, columns,
                 title="Alignment drop rate per axiom",
                 notes=[f"The share of perturbed candidates that token alignment refused, of those that reached it; "
                        f"{args.n} relevance-stratified pairs per axiom from {source}.",
                        f"Slowest: {slowest['axiom']} for {slowest['model']}, {slowest['seconds']:.2f} s for {args.n} pairs."],
                 tables=[{"title": f"Seconds to compile {args.n} pairs", "columns": columns, "rows": seconds}],
                 details={"data": source, "n": args.n, "seed": args.seed, "package_version": __version__,
                          "results": rows})


if __name__ == "__main__":
    main()
