"""Benchmark: what the guarded output folder (core.outputs) costs over plain atomic writes.

An audit writes one checkpoint per finished step; each write through an OutputFolder also hashes the file and
rewrites the folder's ledger, and claiming a folder (for --resume) hashes every file in it. This times both
on a folder shaped like the main job's `work/` (5 axioms, 200 pairs: ~420 files, ~24 MB), against writing the
same files with core.files.write_atomically, and writes benchmarks/results/outputs.json.

    python benchmarks/outputs.py [--files 420] [--megabytes 24]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from mechir_axioms.core.files import write_atomically
from mechir_axioms.core.outputs import OutputFolder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=420, help="checkpoint files (default: 420)")
    parser.add_argument("--megabytes", type=float, default=24.0, help="their total size (default: 24)")
    args = parser.parse_args()
    payload = os.urandom(int(args.megabytes * 2**20 / args.files))
    names = [f"work/AXIOM{i % 5}/chunk{i:04d}/effects.npz" for i in range(args.files)]
    with tempfile.TemporaryDirectory() as scratch:
        plain_root = Path(scratch) / "plain"
        started = time.perf_counter()
        for name in names:
            path = plain_root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda temporary: temporary.write_bytes(payload))
        plain = time.perf_counter() - started
        started = time.perf_counter()
        with OutputFolder(Path(scratch) / "guarded", "audit") as out:
            for name in names:
                out.write(name, lambda temporary: temporary.write_bytes(payload))
        guarded = time.perf_counter() - started
        started = time.perf_counter()
        with OutputFolder(Path(scratch) / "guarded", "audit", "continue"):
            pass
        claim = time.perf_counter() - started
    rows = [("write the checkpoints, plain atomic writes", plain),
            ("write the checkpoints through an OutputFolder", guarded),
            ("claim the folder again (--resume: hash every file)", claim)]
    print(f"{args.files} files, {args.megabytes:g} MB, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print("| step | seconds |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")
    print(f"overhead per checkpoint write: {1000 * (guarded - plain) / args.files:.1f} ms")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "outputs.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "files": args.files, "megabytes": args.megabytes, "seconds": {label: round(s, 3) for label, s in rows},
    }, indent=2))


if __name__ == "__main__":
    main()
