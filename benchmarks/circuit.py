"""Benchmark: the TFC1 circuit of the TREC DL cross-encoder, an audit with `--steps heads,cells,blocks,paths`.

It runs the CLI's audit (verified heads and paths on 200 pairs, block cells on 48) on the cross-encoder in
../shared/models, times it, prints the flagged heads and the flagged paths, writes the circuit figure and the
record benchmarks/results/circuit.json (benchmarks/record.py).

    python benchmarks/circuit.py [--axiom TFC1] [--figure docs/figures/circuit-tfc1-cross-encoder.svg]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from record import ROOT, markdown, write_record

from mechir_axioms import load_audit

CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axiom", default="TFC1")
    parser.add_argument("--folder", default=str(ROOT / "benchmarks" / "results" / "circuit-audit"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "circuit-tfc1-cross-encoder.svg"))
    args = parser.parse_args()
    steps = "heads,cells,blocks,paths"
    command = ["mechir-axioms", "audit", "--model", str(CROSS_ENCODER), "--axioms", args.axiom, "--steps", steps,
               "--out", args.folder]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    subprocess.run(["mechir-axioms", "figure", args.folder, "--axioms", args.axiom, "--frame", "circuit",
                    "--out", args.figure], check=True)
    audit = load_audit(args.folder)
    heads = audit.flagged(args.axiom)
    paths = audit.flagged(args.axiom, frame="paths")
    facts = audit.manifest["axioms"][args.axiom]["paths"]
    shown = f"mechir-axioms audit --model {CROSS_ENCODER.relative_to(ROOT.parent).as_posix()} --axioms {args.axiom} --steps {steps}"
    timing = [{"command": f"`{shown}`", "pairs (heads, paths)": audit.manifest["settings"]["n"],
               "block cells": f"{audit.manifest['settings']['cell_pairs']} pairs", "edges measured": facts["edges"],
               "seconds": round(seconds)}]
    head_rows = [{"flagged head": row.name, "flag": row.flag,
                  "effect [95% CI]": f"{row.effect:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"}
                 for row in heads.itertuples()]
    path_rows = [{"flagged path": f"{row.sender} → {row.receiver}",
                  "effect [95% CI]": f"{row.effect:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]",
                  "q": float(f"{row.q_value:.3g}"), "selected": f"{row.selection:.0%}"} for row in paths.itertuples()]
    tables = [{"title": f"Flagged paths of {args.axiom}", "columns": ["flagged path", "effect [95% CI]", "q", "selected"],
               "rows": path_rows},
              {"title": f"Flagged heads of {args.axiom}", "columns": ["flagged head", "flag", "effect [95% CI]"],
               "rows": head_rows}]
    for table in [{"columns": list(timing[0]), "rows": timing}, *tables]:
        print("\n" + markdown(table["columns"], table["rows"]))
    write_record("circuit", timing, list(timing[0]), title=f"The {args.axiom} circuit of the TREC DL cross-encoder",
                 tables=[table for table in tables if table["rows"]],
                 details={"axiom": args.axiom, "model": CROSS_ENCODER.name, "seconds": round(seconds, 1),
                          "command": command, "edges": facts["edges"], "path_pairs": facts["pairs"],
                          "figure": args.figure})
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
