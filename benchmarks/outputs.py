"""Benchmark: what the guarded output folder (core.outputs) costs over plain atomic writes.

An audit writes one checkpoint per finished step; each write through an OutputFolder also hashes the file and
rewrites the folder's ledger, and claiming a folder (for --resume) hashes every file in it. This times both
on a folder shaped like the main job's `work/` (5 axioms, 200 pairs: ~420 files, ~24 MB), against writing the
same files with core.files.write_atomically, and writes the record benchmarks/results/outputs.json
(benchmarks/record.py).

    python benchmarks/outputs.py [--files 420] [--megabytes 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from record import markdown, write_record

from mechir_axioms.core.files import write_atomically
from mechir_axioms.core.outputs import OutputFolder


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
    rows = [{"step": "write the checkpoints, plain atomic writes", "seconds": round(plain, 3)},
            {"step": "write the checkpoints through an OutputFolder", "seconds": round(guarded, 3)},
            {"step": "claim the folder again (--resume: hash every file)", "seconds": round(claim, 3)}]
    overhead = f"Overhead per checkpoint write: {1000 * (guarded - plain) / args.files:.1f} ms."
    print(f"{args.files} files, {args.megabytes:g} MB")
    print(markdown(["step", "seconds"], rows))
    print(overhead)
    write_record("outputs", rows, ["step", "seconds"],
                 title="The guarded output folder against plain atomic writes",
                 notes=[f"{args.files} files, {args.megabytes:g} MB.", overhead],
                 details={"files": args.files, "megabytes": args.megabytes})


if __name__ == "__main__":
    main()
