"""Benchmark: the default design sweep of an axiom on the packaged MiniLM, heads only, and which flags hold.

Runs `mechir-axioms sweep --axioms TFC1 --steps heads` in a fresh process, as a user would (the reference design
and one variant per changed choice: filler, position, seed; verified heads on 200 pairs per variant), times it,
prints each variant's behaviour and every head flagged under some variant, and writes the record
benchmarks/results/sweep.json (benchmarks/record.py).

    python benchmarks/sweep.py [--axiom TFC1] [--n 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from record import markdown, write_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axiom", default="TFC1")
    parser.add_argument("--n", type=int, default=None, help="pairs per variant (default: the CLI's default)")
    args = parser.parse_args()
    options = ["--axioms", args.axiom, "--steps", "heads", *(["--n", str(args.n)] if args.n else [])]
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(temporary) / "sweep"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mechir_axioms.cli", "sweep", *options, "--out", str(out)], check=True,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        variants = pd.read_parquet(out / "variants.parquet")
        stability = pd.read_parquet(out / "stability.parquet")
    labels = list(variants["variant"])
    variant_columns = ["variant", "pairs", "agreement [95% Wilson CI]", "mean change", "verdict",
                       "heads encoding / violating"]
    variant_rows = [{"variant": row.variant, "pairs": int(row.n_pairs),
                     "agreement [95% Wilson CI]": f"{row.agreement:.1%} [{row.agreement_low:.1%}, {row.agreement_high:.1%}]",
                     "mean change": f"{row.mean_delta:+.4f}", "verdict": row.verdict,
                     "heads encoding / violating": f"{row.encodes} / {row.violates}"} for row in variants.itertuples()]
    heads = stability[stability["frame"] == "heads"]
    head_columns = ["head", "flag", *labels, "holds under every variant", "depends on"]
    head_rows = [{"head": row.name, "flag": row.flag,
                  **{label: "" if label in set(row.lost_under) else "✓" for label in labels},
                  "holds under every variant": bool(row.holds), "depends on": list(row.depends_on)}
                 for row in heads.itertuples()]
    print(markdown(variant_columns, variant_rows))
    if head_rows:
        print("\n" + markdown(head_columns, head_rows))
    minutes = seconds / 60
    write_record("sweep", variant_rows, variant_columns,
                 command=" ".join(["mechir-axioms sweep", *options]),
                 title=f"The default {args.axiom} sweep of the packaged MiniLM, heads only",
                 notes=[f"The whole sweep took {minutes:.0f} minutes ({seconds:.0f} s)."],
                 tables=[{"title": "Heads flagged under some variant", "columns": head_columns, "rows": head_rows}]
                 if head_rows else [],
                 details={"seconds": round(seconds, 1), "variants": variants.to_dict("records")})


if __name__ == "__main__":
    main()
