"""Benchmark: wall time of `mechir-axioms audit` with no arguments (the README's main job).

Runs the real command in a fresh process, writing to a temporary folder, as a user would; prints a table,
then the seconds each axiom spent per step (the manifest's step_seconds: pairs, scores, heads, cells, blocks),
and writes benchmarks/results/audit-<method>.json. `--method exact` times the exact variant instead.
`--exact-from F` compares the flagged heads per axiom with those of an exact audit's folder F on the same
pairs (`mechir-axioms audit --method exact --targets heads --out F`; heads' flags do not depend on cells).

    python benchmarks/audit.py [--method verified|atp*|attribution|exact] [--n 200] [--exact-from F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LIMIT_SECONDS = 600


def _flagged(frame: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    """{axiom: {flag: [component names]}} of the flagged rows."""
    flagged = frame[frame["flag"] != ""]
    return {axiom: rows.groupby("flag")["name"].apply(list).to_dict() for axiom, rows in flagged.groupby("axiom")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", default=None, choices=["verified", "atp*", "attribution", "exact"],
                        help="default: the CLI's default")
    parser.add_argument("--n", type=int, default=None, help="pairs per axiom (default: the CLI's default)")
    parser.add_argument("--exact-from", default=None, help="an exact heads audit's folder to compare flags with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(temporary) / "audit"
        options = ["--method", args.method] if args.method else []
        options += ["--n", str(args.n)] if args.n else []
        command = [sys.executable, "-m", "mechir_axioms.cli", "audit", "--out", str(out), *options]
        started = time.perf_counter()
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        manifest = json.loads((out / "manifest.json").read_text())
        axioms = pd.read_parquet(out / "axioms.parquet")
        heads = pd.read_parquet(out / "heads.parquet")
        cells = pd.read_parquet(out / "cells.parquet")
        report_bytes = (out / "report.html").stat().st_size
        exact = _flagged(pd.read_parquet(Path(args.exact_from) / "heads.parquet")) if args.exact_from else None
    settings = manifest["settings"]
    result = {
        "command": " ".join(["mechir-axioms audit", *options]),
        "seconds": round(seconds, 1),
        "limit_seconds": LIMIT_SECONDS,
        "within_limit": seconds < LIMIT_SECONDS,
        "axioms": settings["axioms"],
        "n": settings["n"],
        "pairs": axioms.set_index("axiom")["n_pairs"].to_dict(),
        "method": settings["method"],
        "targets": settings["targets"],
        "cell_pairs": settings["cell_pairs"],
        "examples": settings["examples"],
        "flags": _flagged(heads),
        "cell_flags": _flagged(cells),
        "verdicts": axioms.set_index("axiom")["verdict"].to_dict(),
        "report_bytes": report_bytes,
        "verification": {axiom: {key: facts["verification"][key] for key in (
            "verified", "candidates", "largest_unverified_screen", "screen_error_p99", "missed_flag_bound")}
            for axiom, facts in manifest["axioms"].items() if "verification" in facts},
        "step_seconds": manifest.get("step_seconds", {}),
        "exact_flags": exact,
        "flags_equal_exact": None if exact is None else {
            axiom: _flagged(heads).get(axiom, {}) == exact.get(axiom, {}) for axiom in settings["axioms"]},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    print("| command | axioms x pairs | heads | block cells | blocks by position | seconds | limit |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {result['command']} | {len(result['axioms'])} x {result['n']} | {result['method']}, every pair | "
          f"exact, {result['cell_pairs']} pairs per axiom | exact, {result['examples']} example pairs per axiom | "
          f"{result['seconds']} | {LIMIT_SECONDS} |")
    order = ["pairs", "scores", "heads", "heads screen", "heads verification", "cells", "blocks", "paths"]
    steps = sorted({step for seconds in result["step_seconds"].values() for step in seconds},
                   key=lambda step: order.index(step) if step in order else len(order))
    print("| axiom | " + " | ".join(f"{step} (s)" for step in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for axiom, seconds in result["step_seconds"].items():
        print(f"| {axiom} | " + " | ".join(str(seconds.get(step, "")) for step in steps) + " |")
    totals = {step: round(sum(seconds.get(step, 0.0) for seconds in result["step_seconds"].values()), 1) for step in steps}
    print("| all | " + " | ".join(str(totals[step]) for step in steps) + " |")
    print("verdicts:", result["verdicts"])
    print("head flags:", result["flags"])
    print("cell flags:", result["cell_flags"])
    if result["flags_equal_exact"] is not None:
        print("| axiom | heads flagged (this run) | heads flagged (exact) | equal |")
        print("|---|---|---|---|")
        for axiom, equal in result["flags_equal_exact"].items():
            mine, theirs = result["flags"].get(axiom, {}), exact.get(axiom, {})
            show = lambda flags: "; ".join(f"{flag}: {', '.join(sorted(names))}" for flag, names in sorted(flags.items())) or "none"  # noqa: E731
            print(f"| {axiom} | {show(mine)} | {show(theirs)} | {'yes' if equal else 'NO'} |")
    for axiom, facts in result["verification"].items():
        print(f"{axiom}: verified {len(facts['verified'])} of {facts['candidates']} candidates; missed-flag bound "
              f"{facts['missed_flag_bound']:.3f} (largest unverified screen {facts['largest_unverified_screen']:.3f} "
              f"+ p99 screen error {facts['screen_error_p99']:.3f})")
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"audit-{result['method'].replace('*', '-star')}.json"
    (folder / name).write_text(json.dumps(result, indent=2))
    print(f"wrote benchmarks/results/{name}")


if __name__ == "__main__":
    main()
