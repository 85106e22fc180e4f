"""Benchmark: how well AtP and AtP* rank heads against exact patching, per model and axiom.

On the audit's own pairs (200 per axiom, seed 0, the bundled TREC DL sample), each head's share of the score
change is measured in both directions exactly and estimated by AtP (attribution) and AtP* (AtP with GradDrop).
AtP* ranks a head by its screen, max(|AtP|, mean |GradDrop|), the value `method="verified"` screens with.
Per model and axiom the table gives the Spearman correlation of |estimate| with |exact| over the head map,
the top-10 recall (how many of the 10 heads with the largest exact |share| are among the estimate's top 10),
and how many of the heads the exact audit flags the verified screen would send to exact patching (screen
within the default margin of the threshold). Writes the record benchmarks/results/fidelity.json, or
fidelity-<models>.json for some of the models (benchmarks/record.py).

Exact patching of every head takes a while (about 20 minutes per model on 2 CPU cores); `--exact-from` reuses
the folder of an exact audit (`mechir-axioms audit --method exact --steps heads --out F`) on the same pairs.

    python benchmarks/fidelity.py [--models minilm,cross-encoder] [--exact-from minilm=F1,cross-encoder=F2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from record import machine, markdown, write_record
from scipy import stats

from mechir_axioms import Settings, audit, load_ranker
from mechir_axioms.analysis.findings import symmetric_change
from mechir_axioms.auditing.chunks import concatenate
from mechir_axioms.auditing.verified import screen, share
from mechir_axioms.core.defaults import DEFAULT_AXIOMS
from mechir_axioms.patching.result import PatchResult

ROOT = Path(__file__).resolve().parents[1]
CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"
MODELS = {"minilm": None, "cross-encoder": str(CROSS_ENCODER)}


def _runs(folder: Path, axiom: str, name: str) -> tuple[PatchResult, PatchResult]:
    """The two directions of a checkpointed patching run of an audit folder, chunks joined."""
    def one(direction: str) -> PatchResult:
        parts = [PatchResult.load(chunk) for chunk in sorted((folder / "work" / axiom / f"{name}-{direction}").iterdir())]
        return concatenate(parts, sum(len(part.effects) for part in parts))

    return one("to_baseline"), one("to_perturbed")


def _top(values: np.ndarray, k: int = 10) -> set[int]:
    return set(np.argsort(-values, axis=None, kind="stable")[:k].tolist())


def measure(model: str, exact_folder: Path | None, axioms: list[str], scratch: Path, device: str = "cpu",
            batch_size: int = 8) -> list[dict]:
    ranker = load_ranker(MODELS[model], device=device)
    options = dict(steps=("heads",), stability=0, examples=0, progress=False, batch_size=batch_size)
    if exact_folder is None:
        exact_folder = scratch / f"{model}-exact"
        audit(ranker, axioms, method="exact", folder=exact_folder, **options)
    flags = pd.read_parquet(exact_folder / "heads.parquet")
    settings_of_exact = json.loads((exact_folder / "manifest.json").read_text())["settings"]
    options.update(n=settings_of_exact["n"], seed=settings_of_exact["seed"])  # the same pairs as the exact audit
    seconds = {}
    for method in ("attribution", "atp*"):
        started = time.perf_counter()
        audit(ranker, axioms, method=method, folder=scratch / f"{model}-{method}", **options)
        seconds[method] = time.perf_counter() - started
    rows = []
    settings = Settings()
    for axiom in axioms:
        denoising, noising = _runs(exact_folder, axiom, "heads")
        direction = _expect_of(axiom)
        change, size = symmetric_change(denoising, noising, direction)
        exact = np.abs(share(change, size))
        atp_den, atp_noise = _runs(scratch / f"{model}-attribution", axiom, "heads")
        atp = np.abs(share(*symmetric_change(atp_den, atp_noise, direction)))
        star_den, star_noise = _runs(scratch / f"{model}-atp*", axiom, "heads")
        _, star = screen(star_den, star_noise, direction)
        flagged = flags[(flags["axiom"] == axiom) & (flags["flag"] != "")]
        flat = [(int(row.layer), int(row.head)) for row in flagged.itertuples()]
        sent = {head for head in flat if star[head] >= settings.threshold - settings.margin}
        sent_atp = {head for head in flat if atp[head] >= settings.threshold - settings.margin}
        rows.append({
            "model": model, "axiom": axiom, "pairs": len(size), "patched": int((~np.isnan(size)).sum()),
            "spearman_atp": float(stats.spearmanr(atp.ravel(), exact.ravel()).statistic),
            "spearman_atp_star": float(stats.spearmanr(star.ravel(), exact.ravel()).statistic),
            "top10_atp": len(_top(atp) & _top(exact)) / 10, "top10_atp_star": len(_top(star) & _top(exact)) / 10,
            "exact_flags": len(flat), "flags_screened_in_atp": len(sent_atp), "flags_screened_in_atp_star": len(sent),
            "seconds_atp": round(seconds["attribution"], 1), "seconds_atp_star": round(seconds["atp*"], 1),
        })
    return rows


def _expect_of(axiom: str) -> str:
    from mechir_axioms.specs.axiom import load_axiom

    return load_axiom(axiom).expect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="minilm,cross-encoder")
    parser.add_argument("--axioms", default=",".join(DEFAULT_AXIOMS))
    parser.add_argument("--exact-from", default="", help="model=folder of an exact heads audit, comma-separated")
    parser.add_argument("--cross-encoder", default=str(CROSS_ENCODER), help="the cross-encoder's folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    MODELS["cross-encoder"] = args.cross_encoder
    given = dict(item.split("=", 1) for item in args.exact_from.split(",") if item)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models.split(","):
            exact = Path(given[model]) if model in given else None
            rows += measure(model, exact, args.axioms.split(","), Path(scratch), args.device, args.batch_size)
    table = pd.DataFrame(rows)
    labels = {"minilm": "MiniLM", "cross-encoder": "cross-encoder"}
    columns = ["model", "axiom", "Spearman AtP", "Spearman AtP*", "top-10 recall AtP", "top-10 recall AtP*",
               "exact flags", "screened in, AtP / AtP*"]
    shown = [{"model": labels.get(row["model"], row["model"]), "axiom": row["axiom"],
              "Spearman AtP": round(row["spearman_atp"], 3), "Spearman AtP*": round(row["spearman_atp_star"], 3),
              "top-10 recall AtP": row["top10_atp"], "top-10 recall AtP*": row["top10_atp_star"],
              "exact flags": row["exact_flags"],
              "screened in, AtP / AtP*": f"{row['flags_screened_in_atp']} / {row['flags_screened_in_atp_star']}"}
             for row in rows]
    means = table.groupby("model", sort=False)[["spearman_atp", "spearman_atp_star", "top10_atp", "top10_atp_star"]].mean()
    shown += [{"model": f"**mean, {labels.get(model, model)}**", "Spearman AtP": round(mean.spearman_atp, 3),
               "Spearman AtP*": round(mean.spearman_atp_star, 3), "top-10 recall AtP": round(mean.top10_atp, 2),
               "top-10 recall AtP*": round(mean.top10_atp_star, 2)} for model, mean in means.iterrows()]
    print(markdown(columns, shown))
    models = args.models.split(",")
    name = "fidelity" if set(models) == set(MODELS) else f"fidelity-{'-'.join(models)}"
    write_record(name, shown, columns, title="How AtP and AtP* rank heads against exact patching",
                 machine=machine(args.device), details={"rows": rows, "device": args.device,
                                                        "batch_size": args.batch_size})


if __name__ == "__main__":
    main()
