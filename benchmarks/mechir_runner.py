"""Run MechIR 0.2.0's head patching on given token tensors; executed with the MechIR environment's python.

MechIR needs transformers<5 and numpy<2, so it lives in its own virtual environment (made by
benchmarks/patching.py). This script reads a job (JSON) and the token tensors (torch.save), calls MechIR's
documented API (`Dot(...).patch(queries, documents, perturbed_documents, patch_type="head_all")` or
`Cat(...).patch(sequences, perturbed_sequences, patch_type="head_all")`), and writes timings and effects.

    MECHIR_PYTHON benchmarks/mechir_runner.py JOB.json
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch


def main(job_path: str) -> None:
    job = json.loads(open(job_path).read())
    torch.set_num_threads(job["threads"])
    tensors = torch.load(job["tensors"])
    if job["kind"] == "bi":
        from mechir import Dot

        model = Dot(job["model"], pooling_type=job["pooling"])

        def run(rows: slice):
            pick = lambda batch: {key: value[rows] for key, value in batch.items()}  # noqa: E731
            effects, _ = model.patch(
                pick(tensors["queries"]), pick(tensors["documents"]), pick(tensors["perturbed"]), patch_type="head_all"
            )
            return effects
    else:
        from mechir import Cat

        model = Cat(job["model"], num_labels=1)

        def run(rows: slice):
            pick = lambda batch: {key: value[rows] for key, value in batch.items()}  # noqa: E731
            effects, _ = model.patch(pick(tensors["documents"]), pick(tensors["perturbed"]), patch_type="head_all")
            return effects

    n = tensors["documents"]["input_ids"].shape[0]
    batch = job["batch_size"]
    start = time.perf_counter()
    batch_means = []
    for first in range(0, n, batch):
        rows = slice(first, min(first + batch, n))
        batch_means.append((run(rows) * (rows.stop - rows.start)).tolist())
    seconds = time.perf_counter() - start
    mean = (torch.tensor(batch_means).sum(0) / n).tolist()
    per_pair = [run(slice(row, row + 1)).tolist() for row in range(job["per_pair"])]
    result = {
        "seconds": seconds,
        "pairs": n,
        "pairs_per_s": n / seconds,
        "mean_effects": mean,
        "per_pair_effects": per_pair,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sequence_length": int(tensors["documents"]["input_ids"].shape[1]),
    }
    open(job["out"], "w").write(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
