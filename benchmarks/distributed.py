"""Benchmark: an audit on a local Ray cluster against one process, Ray's cost per chunk, and a projection.

On this machine (2 cores) a Ray cluster cannot be faster than one process that already uses both cores: the
benchmark measures how much slower it is, checks that every frame is bitwise equal to the one-process run
with the same torch threads, and measures what Ray adds per chunk (shipping 32 pairs out and an effects array
back) with a job that returns a stored result instead of patching. It then projects the paper-scale study
(4 axioms x 2 models x 1,000 pairs, both directions, exact heads and block cells on every pair) onto 8 GPUs
from the H100 throughputs of benchmarks/gpu.py (its record gpu-cuda.json, 2026-11-26) and that overhead. Writes
the record benchmarks/results/distributed.json (benchmarks/record.py).

    python benchmarks/distributed.py [--n 64] [--cell-pairs 32] [--axiom TFC1]
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass

import pandas as pd
import torch
from record import ROOT, markdown, write_record

from mechir_axioms import LocalExecutor, PatchResult, RayExecutor, audit, load_ranker
from mechir_axioms.auditing.chunks import CHUNK
from mechir_axioms.executing.jobs import Task

TREC_DL = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"
FRAMES = ("axioms", "heads", "cells", "blocks", "pairs")

H100_PAIRS_PER_SECOND = {
    # benchmarks/results/gpu-cuda.json: `python benchmarks/gpu.py` on one NVIDIA H100 80GB, batches of 32, 2026-11-26.
    "MiniLM-L6 bi": {"heads": 59.42, "regions": 74.23},
    "MiniLM-L6 cross": {"heads": 85.85, "regions": 61.38},
}
PAPER = {"axioms": 4, "models": 2, "pairs": 1000, "directions": 2, "gpus": 8}


@dataclass(frozen=True)
class Stored:
    """A stand-in job: returns a chunk-sized result without patching, so that only Ray's own cost is timed."""

    result: PatchResult

    def run(self, ranker, pairs, direction) -> PatchResult:
        return self.result


def _timed(label: str, threads: int, executor, ranker, options: dict) -> tuple[dict, object]:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    with executor:
        result = audit(ranker, executor=executor, **options)
    seconds = time.perf_counter() - started
    return {"run": label, "torch threads": threads, "seconds": round(seconds, 1)}, result


def _identical(ours, reference) -> bool:
    """Every frame equal bitwise."""
    try:
        for name in FRAMES:
            pd.testing.assert_frame_equal(getattr(ours, name), getattr(reference, name), check_exact=True)
    except AssertionError:
        return False
    return True


def _overhead(ranker, options: dict, workers: int, tasks: int) -> float:
    """Seconds Ray adds per chunk: `tasks` chunks of CHUNK real pairs out, a real chunk's effects back."""
    from mechir_axioms import make_pairs, patch

    pairs = make_pairs(options["axioms"][0], options["data"], ranker, n=CHUNK, seed=0)
    stored = Stored(patch(ranker, pairs, "heads", "attribution", progress=False))
    work = [Task(pairs, "to_baseline")] * tasks
    with RayExecutor(workers=workers, threads=1) as executor:
        executor.bind(ranker)
        list(executor.run(stored, work[:workers * 2]))  # warm the workers
        started = time.perf_counter()
        done = sum(1 for _ in executor.run(stored, work))
        seconds = time.perf_counter() - started
    assert done == tasks
    return seconds / tasks


def _pairs_seconds(ranker, options: dict) -> float:
    """Seconds the driver spends compiling PAPER["pairs"] pairs of the axiom (per 1,000 pairs), on this CPU."""
    import warnings

    from mechir_axioms import make_pairs

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer pairs than asked: the time is scaled per pair below
        built = len(make_pairs(options["axioms"][0], options["data"], ranker, n=PAPER["pairs"], seed=0))
    return (time.perf_counter() - started) * PAPER["pairs"] / built


def _projection(overhead: float, pairs_seconds: float) -> dict:
    """The paper-scale study on PAPER["gpus"] GPUs: the driver compiles every audit's pairs one after the other
    (measured here), and the GPUs share the chunks (H100 throughputs) and Ray's cost per chunk."""
    per_model = {}
    chunks = 0
    for model, rates in H100_PAIRS_PER_SECOND.items():
        inputs = PAPER["axioms"] * PAPER["pairs"] * PAPER["directions"]
        per_model[model] = {target: inputs / rate for target, rate in rates.items()}
        chunks += PAPER["axioms"] * PAPER["directions"] * math.ceil(PAPER["pairs"] / CHUNK) * len(rates)
    gpu_seconds = sum(sum(seconds.values()) for seconds in per_model.values())
    serial = PAPER["axioms"] * PAPER["models"] * pairs_seconds
    eight = serial + (gpu_seconds + chunks * overhead) / PAPER["gpus"]
    return {"study": PAPER, "h100_pairs_per_second": H100_PAIRS_PER_SECOND, "chunks": chunks,
            "gpu_seconds_by_model": {model: {k: round(v, 1) for k, v in seconds.items()} for model, seconds in per_model.items()},
            "driver_pairs_seconds": round(serial, 1), "one_gpu_seconds": round(gpu_seconds + serial, 1), "ray_overhead_seconds": round(chunks * overhead, 1),
            "eight_gpu_seconds": round(eight, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64, help="pairs (default 64: 2 chunks per direction)")
    parser.add_argument("--cell-pairs", type=int, default=32, help="pairs whose block cells are patched (default 32)")
    parser.add_argument("--axiom", default="TFC1")
    parser.add_argument("--tasks", type=int, default=60, help="stand-in chunks timed for Ray's overhead")
    args = parser.parse_args()

    import ray

    ranker = load_ranker()
    data = str(TREC_DL) if TREC_DL.exists() else None
    options = {"axioms": [args.axiom], "data": data, "n": args.n, "method": "exact", "steps": ("heads", "cells", "blocks"),
               "cell_pairs": args.cell_pairs, "examples": 0, "stability": 0, "progress": False}
    cores = torch.get_num_threads()
    audit(ranker, **{**options, "n": 4, "cell_pairs": 4})  # warm-up: the first audit of a process pays one-time costs
    rows = []
    row, two_threads = _timed("one process", cores, LocalExecutor(), ranker, options)
    rows.append({**row, "workers": 0, "bitwise equal to": "-"})
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        row, result = _timed(f"Ray, 1 worker x {cores} threads", cores, RayExecutor(workers=1, threads=cores), ranker, options)
        rows.append({**row, "workers": 1, "bitwise equal to": "one process" if _identical(result, two_threads) else "NO"})
        row, one_thread = _timed("one process", 1, LocalExecutor(), ranker, options)
        rows.append({**row, "workers": 0, "bitwise equal to": "-"})
        # the driver scores pairs itself, so it too runs one thread: a worker equals one process of its own threads
        row, result = _timed(f"Ray, {cores} workers x 1 thread", 1, RayExecutor(workers=cores, threads=1), ranker, options)
        rows.append({**row, "torch threads": "1 per worker", "workers": cores,
                     "bitwise equal to": "one process, 1 thread" if _identical(result, one_thread) else "NO"})
        torch.set_num_threads(cores)
        overhead = {workers: _overhead(ranker, options, workers, args.tasks) for workers in (1, cores)}
        pairs_seconds = _pairs_seconds(ranker, options)
    finally:
        ray.shutdown()
    base = rows[0]["seconds"]
    for row in rows:
        row["vs one process, 2 threads"] = f"{base / row['seconds']:.2f}x"
    columns = ["run", "workers", "torch threads", "seconds", "vs one process, 2 threads", "bitwise equal to"]
    projection = _projection(overhead[1], pairs_seconds)
    print(f"{args.axiom}, {args.n} pairs, MiniLM, exact heads on every pair and block cells on "
          f"{args.cell_pairs}, both directions ({cores} torch threads available)")
    print(markdown(columns, rows))
    per_chunk = ", ".join(f"{workers} worker(s) {seconds * 1000:.1f} ms" for workers, seconds in overhead.items())
    print(f"\nRay's cost per chunk ({CHUNK} pairs out, a chunk's effects back), local cluster: {per_chunk}")
    print(f"\nProjection, paper scale ({PAPER['axioms']} axioms x {PAPER['models']} models x {PAPER['pairs']} pairs, "
          f"both directions, exact heads and cells on every pair; {projection['chunks']} chunks):")
    for model, seconds in projection["gpu_seconds_by_model"].items():
        print(f"  {model}: heads {seconds['heads']:.0f} s, cells {seconds['regions']:.0f} s of H100 time")
    print(f"  the driver compiles the 8 audits' pairs one after the other: {projection['driver_pairs_seconds']:.0f} s "
          f"({pairs_seconds:.1f} s per 1,000 pairs on this CPU)")
    print(f"  one H100: {projection['one_gpu_seconds']:.0f} s; 8 H100s over Ray: {projection['eight_gpu_seconds']:.0f} s "
          f"(Ray adds {projection['ray_overhead_seconds']:.1f} s of chunk overhead in all, shared by the 8)")
    write_record("distributed", rows, columns,
                 title="An audit in one process and on a local Ray cluster",
                 notes=[f"{args.axiom} on the packaged MiniLM, {args.n} pairs, exact heads on every pair and block cells "
                        f"on {args.cell_pairs}, both directions.",
                        f"Ray's cost per {CHUNK}-pair chunk (pairs out, a chunk's effects back), local cluster: "
                        f"{per_chunk}.",
                        f"Projection, paper scale: one H100 {projection['one_gpu_seconds']:.0f} s, "
                        f"{PAPER['gpus']} H100s over Ray {projection['eight_gpu_seconds']:.0f} s."],
                 details={"axiom": args.axiom, "n": args.n, "cores": cores,
                          "ray_overhead_seconds_per_chunk": {str(k): v for k, v in overhead.items()},
                          "projection": projection})


if __name__ == "__main__":
    main()
