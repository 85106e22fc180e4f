"""Benchmark: patching throughput on the fastest device here (CUDA, then MPS, then the CPU), and device parity.

Nothing is downloaded: every model is built from its published configuration with random weights, since
throughput does not depend on the weights' values (every pair is patched: the exclusion threshold is 1e-8,
so near-ties of a random model are not skipped; "pairs" counts the pairs patched):
- MiniLM-L6 as a bi-encoder (mean pooling, cosine) and as a cross-encoder, in float32: exact heads,
  attribution heads, exact regions, and an audit of TFC1 and NULL (exact heads and cells, both directions);
- Qwen3-0.6B's configuration as an "llm" reranker (Qwen3-Reranker prompt) in bfloat16: exact heads, with
  pairs per second and peak GPU memory;
- device parity: each modern kind (tiny models of benchmarks/modern_models.py and the real SPLADE) scores
  16 TREC DL pairs and patches heads of 4 pairs on the device and on the CPU in float32; the table gives
  the largest score difference and the largest difference of patched scores (effect x |delta|; effects
  themselves are ratios that amplify float noise where a random model's two scores nearly tie).
Prints tables and writes the record benchmarks/results/gpu-<device>.json (benchmarks/record.py); `--ray` writes
gpu-ray.json and `--verified-vs-exact` gpu-verified-vs-exact.json instead. On the GPU machine, install the project with
`pip install --no-deps -e .`; data and vocabularies come from ../shared or, where that is absent, from the
folder named by --assets (see the closing note of the issue that ran it).

    python benchmarks/gpu.py [--device auto] [--n 64] [--llm-n 32] [--audit-n 64] [--batch-size 32] [--quick]
    python benchmarks/gpu.py --ray [--audit-n 64]                # one process against a one-GPU Ray cluster
    python benchmarks/gpu.py --verified-vs-exact MODEL [--out DIR]  # its two audits are saved in DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
from record import ROOT, machine, markdown, write_record

SHARED = ROOT.parent / "shared"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, run) -> tuple[float, object, float | None]:
    """(seconds, result, peak GPU memory in GiB or None) of one run."""
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = run()
    _synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return time.perf_counter() - started, result, peak


def _asset(name: str, assets: Path) -> Path:
    """A file from ../shared (data) or the installed default model, else from the carried assets folder."""
    for candidate in (SHARED / "data" / name, assets / name):
        if candidate.exists():
            return candidate
    if name == "vocab.txt":
        try:
            from mechir_axioms.models.loading import default_model_path

            return Path(default_model_path()) / "vocab.txt"
        except Exception:  # noqa: BLE001  (the default-model extra is optional)
            pass
    sys.exit(f"missing {name}: put it in {assets} or ../shared/data")


def _minilm(kind: str, vocab: Path, root: Path) -> Path:
    """all-MiniLM-L6-v2's architecture (6 layers, 12 heads, 384 wide) with random weights, as a HF folder."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, num_labels=1)
    model = BertModel(config) if kind == "bi" else BertForSequenceClassification(config)
    folder = root / f"minilm-{kind}"
    model.save_pretrained(folder)
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    return folder


def _qwen3_0_6b(device: torch.device, batch_size: int, layers: int | None = None):
    """An "llm" ranker over Qwen3-0.6B's configuration (random weights, bfloat16) and a TREC-trained tokenizer."""
    import modern_models
    from decoder_models import qwen3_0_6b_config
    from transformers import Qwen3ForCausalLM

    from mechir_axioms.models.rankers import LLMReranker

    config = qwen3_0_6b_config()
    if layers:  # --quick: the same widths, fewer layers
        config.num_hidden_layers, config.layer_types = layers, config.layer_types[:layers]
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    return LLMReranker("Qwen3-0.6B (random weights)", model, modern_models.tokenizer("qwen"), max_length=512,
                       batch_size=batch_size)


def throughput(args, device: torch.device, data: str, vocab: Path, root: Path) -> list[dict]:
    from mechir_axioms import audit, load_ranker, make_pairs, patch

    rows = []
    rankers = {
        "MiniLM-L6 bi (float32)": lambda: load_ranker(_minilm("bi", vocab, root), kind="bi", pooling="mean",
                                                      similarity="cosine", device=device),
        "MiniLM-L6 cross (float32)": lambda: load_ranker(_minilm("cross", vocab, root), device=device),
        "Qwen3-0.6B llm (bfloat16)": lambda: _qwen3_0_6b(device, args.batch_size, 2 if args.quick else None),
    }
    for label, build in rankers.items():
        try:
            ranker = build()
            llm = ranker.kind == "llm"
            pairs = make_pairs("TFC1", data, ranker, n=args.llm_n if llm else args.n, seed=0)
            patch(ranker, pairs.take(range(min(2, len(pairs)))), "heads", batch_size=args.batch_size, progress=False)
            runs = [("exact heads", "heads", "exact"), ("attribution heads", "heads", "attribution")]
            if not llm:
                runs += [("exact regions", "regions", "exact")]
            for name, target, method in runs:  # delta=1e-8: every pair is patched, however close its two scores
                seconds, result, peak = _timed(device, lambda: patch(ranker, pairs, target, method, delta=1e-8,
                                                                     batch_size=args.batch_size, progress=False))
                rows.append({"model": label, "run": name, "pairs": len(pairs) - int(result.excluded),
                             "seconds": round(seconds, 2), "pairs_per_second": round(len(pairs) / seconds, 2),
                             "peak_gib": None if peak is None else round(peak, 2)})
                print(rows[-1], flush=True)
            if not llm:
                with tempfile.TemporaryDirectory() as folder:
                    seconds, result, peak = _timed(device, lambda: audit(
                        ranker, ["TFC1", "NULL"], data, n=args.audit_n, method="exact", batch_size=args.batch_size,
                        examples=0, tolerance=1e-8, folder=Path(folder) / "audit", progress=False))
                audited = int(result.axioms["n_pairs"].sum())
                rows.append({"model": label, "run": "audit TFC1+NULL (exact heads, cells)", "pairs": audited,
                             "seconds": round(seconds, 2), "pairs_per_second": round(audited / seconds, 2),
                             "peak_gib": None if peak is None else round(peak, 2)})
                print(rows[-1], flush=True)
            ranker = None  # free the device memory before the next model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as error:  # noqa: BLE001  (report and go on: one failure must not cost the whole run)
            traceback.print_exc()
            rows.append({"model": label, "run": f"FAILED: {type(error).__name__}: {error}"[:200], "pairs": 0,
                         "seconds": 0, "pairs_per_second": 0, "peak_gib": None})
    return rows


def parity(device: torch.device, data: str, root: Path) -> list[dict]:
    """Scores and head effects of every modern kind on `device` against the CPU, in float32."""
    import numpy as np
    import modern_models

    from mechir_axioms import load_ranker, make_pairs, patch

    rows = []
    for label in modern_models.MODERN:
        try:
            folder = modern_models.folder(label, root)
            cpu, there = load_ranker(folder), load_ranker(folder, device=device)
            pairs = make_pairs("TFC1", data, cpu, n=16, seed=0)
            queries, texts = list(pairs.frame["query"]), list(pairs.frame["perturbed"])
            score_gap = float((cpu.score(queries, texts) - there.score(queries, texts)).abs().max())
            few = pairs.take(range(min(4, len(pairs))))
            effects = [np.asarray(patch(r, few, "heads", delta=1e-8, progress=False).effects) for r in (cpu, there)]
            # an effect is (patched - receiver) / (donor - receiver): its gap times |delta| is the gap in patched
            # scores, which does not blow up where a random model's two scores nearly tie
            deltas = np.abs(few.score(cpu)["delta"].to_numpy()).reshape(-1, 1, 1)
            effect_gap = float(np.nanmax(np.abs(effects[0] - effects[1]) * deltas))
            placed = str(there.device)
            rows.append({"kind": there.kind, "model": label, "device": placed, "max_score_diff": score_gap,
                         "max_patched_score_diff": effect_gap})
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            rows.append({"kind": "?", "model": label, "device": "FAILED", "max_score_diff": float("nan"),
                         "max_patched_score_diff": float("nan"), "error": f"{type(error).__name__}: {error}"[:200]})
        print(rows[-1], flush=True)
    return rows


def verified_against_exact(model: Path, device: torch.device, out: Path, n: int, batch_size: int) -> list[dict]:
    """The real cross-encoder audited on the five default axioms (heads only) by --method exact and by
    --method verified on this device; each audit is saved under `out`. Returns seconds and flag sets."""
    from mechir_axioms import audit, load_ranker
    from mechir_axioms.core.defaults import DEFAULT_AXIOMS

    ranker = load_ranker(str(model), device=str(device))
    rows = []
    for method in ("exact", "verified"):
        seconds, result, peak = _timed(device, lambda method=method: audit(
            ranker, list(DEFAULT_AXIOMS), n=n, steps=("heads",), method=method, stability=0, examples=0,
            batch_size=batch_size, folder=out / f"cross-encoder-{method}", progress=False))
        flags = result.heads[result.heads["flag"] != ""]
        rows.append({"method": method, "seconds": round(seconds, 1), "peak_gib": None if peak is None else round(peak, 2),
                     "flags": {axiom: sorted(f"{name}:{flag}" for name, flag in zip(group["name"], group["flag"]))
                               for axiom, group in flags.groupby("axiom")},
                     "verification": {axiom: facts.get("verification") for axiom, facts in result.manifest["axioms"].items()}})
        print(f"{method}: {seconds:.1f} s, flags {rows[-1]['flags']}", flush=True)
    same = rows[0]["flags"] == rows[1]["flags"]
    print(f"flagged heads equal: {same}", flush=True)
    return rows


def on_ray(device: torch.device, data: str, vocab: Path, root: Path, n: int, batch_size: int) -> dict:
    """The random MiniLM bi-encoder audited (TFC1, exact heads and cells on every pair, both directions) in this
    process and on a one-GPU local Ray cluster: seconds, the workers' devices, and whether every frame is equal."""
    import logging

    import pandas as pd
    import ray

    from mechir_axioms import RayExecutor, audit, load_ranker

    ranker = load_ranker(str(_minilm("bi", vocab, root)), device=str(device))
    options = {"axioms": ["TFC1"], "data": data, "n": n, "method": "exact", "steps": ("heads", "cells", "blocks"),
               "cell_pairs": n, "examples": 0, "stability": 0, "tolerance": 1e-8, "batch_size": batch_size,
               "progress": False}
    audit(ranker, **{**options, "n": 4, "cell_pairs": 4})  # warm-up
    local_seconds, local, _ = _timed(device, lambda: audit(ranker, **options))
    ray.init(num_gpus=1 if device.type == "cuda" else 0, num_cpus=4, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    try:
        with RayExecutor() as executor:
            executor.bind(ranker)  # start the worker before timing, as the warm-up did for the local run
            audit(ranker, executor=executor, **{**options, "n": 4, "cell_pairs": 4})
            ray_seconds, distributed, _ = _timed(device, lambda: audit(ranker, executor=executor, **options))
            described = executor.describe()
    finally:
        ray.shutdown()
    equal = {}
    for name in ("axioms", "heads", "cells", "pairs"):
        try:
            pd.testing.assert_frame_equal(getattr(distributed, name), getattr(local, name), check_exact=True)
            equal[name] = "bitwise"
        except AssertionError:
            difference = (getattr(distributed, name).select_dtypes("number") - getattr(local, name).select_dtypes("number"))
            equal[name] = f"max abs diff {float(difference.abs().max().max()):.2e}"
    chunks = 2 * 2 * -(-n // 32)
    result = {"pairs": n, "chunks": chunks, "local_seconds": round(local_seconds, 2), "ray_seconds": round(ray_seconds, 2),
              "seconds_per_chunk_on_ray": round(ray_seconds / chunks, 3), "workers": described, "equal": equal}
    print(json.dumps(result, indent=2), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=64, help="pairs for the MiniLM patching runs")
    parser.add_argument("--llm-n", type=int, default=32, help="pairs for the Qwen3-0.6B run")
    parser.add_argument("--audit-n", type=int, default=64, help="pairs per axiom for the audits")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--assets", default=str(ROOT / ".gpu"), help="folder with trec-dl-passages.jsonl.gz, vocab.txt")
    parser.add_argument("--quick", action="store_true", help="a small run to try the script (CPU)")
    parser.add_argument("--verified-vs-exact", default=None, metavar="MODEL",
                        help="only audit this model's heads by exact and verified patching (5 axioms), saved in --out")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verified"),
                        help="--verified-vs-exact: the folder its two audits are saved in")
    parser.add_argument("--ray", action="store_true",
                        help="only the audit in this process against a one-GPU local Ray cluster (--audit-n pairs)")
    args = parser.parse_args()
    if args.ray:
        from mechir_axioms.models.device import resolve_device

        device = resolve_device(args.device)
        root = Path(tempfile.mkdtemp())
        try:
            result = on_ray(device, str(_asset("trec-dl-passages.jsonl.gz", Path(args.assets))),
                            _asset("vocab.txt", Path(args.assets)), root, 8 if args.quick else args.audit_n, args.batch_size)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        equal = ", ".join(f"{name}: {how}" for name, how in result["equal"].items())
        rows = [{"run": "one process", "seconds": result["local_seconds"]},
                {"run": "one-GPU local Ray cluster", "seconds": result["ray_seconds"], "frames equal to one process": equal}]
        columns = ["run", "seconds", "frames equal to one process"]
        cost = result["ray_seconds"] - result["local_seconds"]
        print(markdown(columns, rows))
        write_record("gpu-ray", rows, columns, machine=machine(device),
                     title="An audit in one process and on a one-GPU Ray cluster",
                     notes=[f"The random-weight MiniLM bi-encoder, TFC1, exact heads and cells on {result['pairs']} pairs, "
                            f"batches of {args.batch_size}, {result['chunks']} chunks.",
                            f"Ray's cost: {cost:.2f} s, {1000 * cost / result['chunks']:.0f} ms per chunk."], details=result)
        return
    if args.verified_vs_exact:
        from mechir_axioms.models.device import resolve_device

        device = resolve_device(args.device)
        rows = verified_against_exact(Path(args.verified_vs_exact), device, Path(args.out), 4 if args.quick else 200,
                                      args.batch_size)
        exact, verified = rows
        table = []
        for axiom in verified["verification"]:  # every audited axiom, flagged or not
            flags: dict[str, list[str]] = {}
            for entry in verified["flags"].get(axiom, []):
                name, flag = entry.split(":")
                flags.setdefault(flag, []).append(name)
            facts = verified["verification"][axiom] or {}
            bound = (f"{facts['missed_flag_bound']:.3f} ({facts['largest_unverified_screen']:.3f} + "
                     f"{facts['screen_error_p99']:.3f})" if facts else None)
            table.append({"axiom": axiom, "heads flagged, verified": "; ".join(
                              f"{flag}: {', '.join(names)}" for flag, names in sorted(flags.items())) or "none",
                          "equal to exact": exact["flags"].get(axiom) == verified["flags"].get(axiom),
                          "verified exactly / candidates": f"{len(facts.get('verified', []))} / {facts.get('candidates')}",
                          "missed-flag bound": bound})
        columns = ["axiom", "heads flagged, verified", "equal to exact", "verified exactly / candidates",
                   "missed-flag bound"]
        print(markdown(columns, table))
        write_record("gpu-verified-vs-exact", table, columns, machine=machine(device),
                     title=f"{Path(args.verified_vs_exact).name}: verified heads against exact patching",
                     notes=[f"Five axioms x {4 if args.quick else 200} pairs, heads only, batches of {args.batch_size}."],
                     tables=[{"title": "Seconds (heads only, five axioms)", "columns": ["method", "seconds"],
                              "rows": [{"method": row["method"], "seconds": row["seconds"]} for row in rows]}],
                     details=rows)
        return
    if args.quick:
        args.n, args.llm_n, args.audit_n = 4, 2, 4
    warnings.simplefilter("ignore")
    from mechir_axioms.models.device import resolve_device

    assets = Path(args.assets)
    data_file = _asset("trec-dl-passages.jsonl.gz", assets)
    import modern_models

    if not modern_models.DATA.exists():
        modern_models.DATA = data_file
    vocab = _asset("vocab.txt", assets)
    modern_models.VOCAB = vocab
    device = resolve_device(args.device)
    root = Path(tempfile.mkdtemp())
    try:
        rows = throughput(args, device, str(data_file), vocab, root)
        checks = parity(device, str(data_file), root) if device.type != "cpu" or args.quick else []
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ndevice: {device} ({machine(device)}), batch size {args.batch_size}\n")
    columns = ["model", "run", "pairs", "seconds", "pairs/s", "peak GiB"]
    shown = [{**row, "pairs/s": row["pairs_per_second"], "peak GiB": row["peak_gib"]} for row in rows]
    print(markdown(columns, shown))
    parity_columns = ["kind", "model", "device", "max score diff", "max patched-score diff (heads)"]
    parity_rows = [{**row, "max score diff": float(f"{row['max_score_diff']:.3g}"),
                    "max patched-score diff (heads)": float(f"{row['max_patched_score_diff']:.3g}")} for row in checks]
    if checks:
        print("\n" + markdown(parity_columns, parity_rows))
    write_record(f"gpu-{device.type}", shown, columns, machine=machine(device),
                 title="Patching throughput on a GPU" if device.type == "cuda" else f"Patching throughput on {device.type}",
                 notes=[f"Random weights, batch size {args.batch_size}. TFC1 pairs; the audit patches heads and cells "
                        "exactly in both directions."],
                 tables=[{"title": "Device parity against the CPU, float32 (16 pairs scored, 4 pairs' heads patched)",
                          "columns": parity_columns, "rows": parity_rows}] if checks else [],
                 details={"device": str(device), "torch": torch.__version__, "batch_size": args.batch_size,
                          "rows": rows, "parity": checks})


if __name__ == "__main__":
    main()
