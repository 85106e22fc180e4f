"""Benchmark: the TFC1 circuit of the TREC DL cross-encoder, an audit with `--targets heads,blocks,paths`.

It runs the CLI's audit (verified heads and paths on 200 pairs, block cells on 48) on the cross-encoder in
../shared/models, times it, prints the flagged heads and the flagged paths, and writes the circuit figure.

    python benchmarks/circuit.py [--axiom TFC1] [--out benchmarks/results/circuit.json]
                                 [--figure docs/figures/circuit-tfc1-cross-encoder.svg]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from mechir_axioms import load_audit

ROOT = Path(__file__).resolve().parents[1]
CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axiom", default="TFC1")
    parser.add_argument("--folder", default=str(ROOT / "benchmarks" / "results" / "circuit-audit"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "circuit.json"))
    parser.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "circuit-tfc1-cross-encoder.svg"))
    args = parser.parse_args()
    command = ["mechir-axioms", "audit", "--model", str(CROSS_ENCODER), "--axioms", args.axiom,
               "--targets", "heads,blocks,paths", "--out", args.folder]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    subprocess.run(["mechir-axioms", "figure", args.folder, "--axioms", args.axiom, "--frame", "circuit",
                    "--out", args.figure], check=True)
    audit = load_audit(args.folder)
    heads = audit.flagged(args.axiom)
    paths = audit.flagged(args.axiom, frame="paths")
    facts = audit.manifest["axioms"][args.axiom]["paths"]
    print(f"\n| command | pairs (heads) | pairs (cells, paths) | edges measured | seconds |\n|---|---|---|---|---|\n"
          f"| `{' '.join(command[:2])} --model <cross-encoder> --axioms {args.axiom} --targets heads,blocks,paths` | "
          f"{audit.manifest['settings']['n']} | {facts['pairs']} | {facts['edges']} | {seconds:.0f} |")
    print("\n| flagged head | flag | effect [95% CI] |\n|---|---|---|")
    for row in heads.itertuples():
        print(f"| {row.name} | {row.flag} | {row.effect:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] |")
    print("\n| flagged path | flag | effect [95% CI] | q | replication |\n|---|---|---|---|---|")
    for row in paths.itertuples():
        print(f"| {row.sender} → {row.receiver} | {row.flag} | {row.effect:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] | "
              f"{row.q_value:.3g} | {row.replication:.0%} |")
    result = {
        "axiom": args.axiom, "model": str(CROSS_ENCODER.name), "seconds": round(seconds, 1), "command": command,
        "heads": heads[["name", "flag", "effect", "ci_low", "ci_high"]].to_dict("records"),
        "paths": paths[["name", "flag", "effect", "ci_low", "ci_high", "q_value", "replication"]].to_dict("records"),
        "edges": facts["edges"], "path_pairs": facts["pairs"], "figure": args.figure,
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
                    "python": sys.version.split()[0]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
