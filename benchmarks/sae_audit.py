"""Benchmark: a real feature audit. TFC1 on the packaged MiniLM with the default SAE at blocks.3.hook_resid_post
(benchmarks/sae.py trains it), over the bundled sample.

1. Exact on every latent against verified (AtP screens every latent, those that could reach a flag are patched
   exactly), on the same `--compare-n` pairs, timed: equal flags, and the time each took.
2. The audit itself, verified, on `--n` pairs: the flagged features with their top contexts.
3. Its encoding features ablated, measured on nDCG@10 (ir-measures) over the judged TREC DL data of ../shared/data
   and on the axiom's agreement.

    python benchmarks/sae_audit.py [--sae benchmarks/results/sae/minilm-blocks.3.hook_resid_post] [--n 200]
        [--compare-n 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from record import ROOT, machine, markdown, write_record

from mechir_axioms import assess_intervention, audit, load_ranker, load_sae
from mechir_axioms.features.interventions import feature_label

SHARED = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"
SAE = ROOT / "benchmarks" / "results" / "sae" / "minilm-blocks.3.hook_resid_post"


def _contexts(row: pd.Series, shown: int = 3) -> list[str]:
    """A flagged feature's strongest contexts as text, the firing token in brackets."""
    lines = []
    for context in json.loads(row["contexts"])[:shown]:
        tokens = list(context["tokens"])
        tokens[context["focus"]] = f"[{tokens[context['focus']]}]"
        lines.append(f"{context['activation']:.1f} ({context['input']}): {' '.join(tokens)}")
    return lines


def _exact(ranker, args: argparse.Namespace, options: dict) -> tuple:
    """The exact audit of the comparison and its wall time, kept in `--folder`: the slow half of the comparison
    (about 21 s a pair on 2 cores) runs once, and a rerun after a change to the verified method resumes it."""
    folder = Path(args.folder, f"exact-{args.axiom}-{args.compare_n}")
    timing = folder.with_name(folder.name + "-seconds.json")
    fresh, started = not folder.exists(), time.perf_counter()
    exact = audit(ranker, [args.axiom], None, method="exact", n=args.compare_n, folder=folder, resume=not fresh,
                  **options)
    if fresh:
        timing.write_text(json.dumps({"seconds": time.perf_counter() - started}))
    if not timing.is_file():
        raise SystemExit(f"{folder} was resumed from an interrupted run, so its time is unknown: delete it and rerun")
    timed = json.loads(timing.read_text())
    return exact, timed["seconds"], timed.get("how")


def _earlier_ablation(label: str) -> dict | None:
    """The ablation row of the record this script wrote before, when it ablated the same features (`label`): the
    ablation does not depend on how the audit that found them was measured, and costs 7 minutes."""
    record = ROOT / "benchmarks" / "results" / "sae-audit.json"
    if not record.is_file():
        return None
    stored = json.loads(record.read_text())
    for table in stored.get("tables", []):
        for row in table["rows"]:
            if row.get("intervention") == label:
                return {**row, "measured": f"{stored['date']} (an earlier run; --remeasure repeats it)"}
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sae", default=str(SAE))
    parser.add_argument("--axiom", default="TFC1")
    parser.add_argument("--n", type=int, default=200, help="pairs of the audit (verified)")
    parser.add_argument("--compare-n", type=int, default=200, help="pairs of the exact-against-verified comparison")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure the ablation again even when the record holds one of the same features")
    parser.add_argument("--folder", default=str(ROOT / "benchmarks" / "results" / "sae-audit"),
                        help="where the exact comparison audit is kept, so that a rerun resumes it")
    args = parser.parse_args()
    if not Path(args.sae, "cfg.json").is_file():
        raise SystemExit(f"no SAE at {args.sae}; train it first: python benchmarks/sae.py")
    ranker = load_ranker()
    sae = load_sae(args.sae)
    options = dict(steps=("features",), saes=(args.sae,), progress=True)
    runs, seconds = {}, {}
    runs["exact"], seconds["exact"], exact_timing = _exact(ranker, args, options)
    started = time.perf_counter()
    runs["verified"] = audit(ranker, [args.axiom], None, method="verified", n=args.compare_n, **options)
    seconds["verified"] = time.perf_counter() - started
    exact, verified = (runs[method].frames["features"] for method in ("exact", "verified"))
    checked = runs["verified"].manifest["axioms"][args.axiom]["feature_verification"]
    same = exact[["name", "flag"]].merge(verified[["name", "flag"]], on="name", suffixes=("_exact", "_verified"))
    agree = bool((same["flag_exact"] == same["flag_verified"]).all())
    rows = []
    for method, frame in (("exact", exact), ("verified", verified)):
        rows.append({"method": method, "pairs": args.compare_n, "seconds": round(seconds[method], 1),
                     "latents patched exactly": int((frame["measured"] == "exact").sum()),
                     "flagged (encodes / violates)": f"{int((frame['flag'] == 'encodes').sum())} / "
                                                     f"{int((frame['flag'] == 'violates').sum())}",
                     "flags equal exact": "yes" if method == "exact" or agree else "NO",
                     "missed-flag bound": "" if method == "exact" else round(checked["missed_flag_bound"], 4)})
    columns = list(rows[0])
    print(markdown(columns, rows))
    if args.n == args.compare_n:  # the comparison's verified audit is the audit
        main_audit, seconds["audit"] = runs["verified"], seconds["verified"]
    else:
        started = time.perf_counter()
        main_audit = audit(ranker, [args.axiom], None, method="verified", n=args.n, **options)
        seconds["audit"] = time.perf_counter() - started
    features = main_audit.frames["features"]
    print("\n".join(main_audit.step_lines(args.axiom)))
    flagged = features[features["flag"] != ""].sort_values("effect", key=abs, ascending=False)
    found = [{"feature": row["name"], "flag": row["flag"], "effect": round(float(row["effect"]), 4),
              "95% CI": f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]", "fires": f"{row['fires']:.1%}",
              "top contexts": " | ".join(_contexts(row))} for _, row in flagged.iterrows()]
    found_columns = ["feature", "flag", "effect", "95% CI", "fires", "top contexts"]
    if found:
        print(markdown(found_columns, found))
    ablation = []
    encoding = [int(latent) for latent in flagged.loc[flagged["flag"] == "encodes", "latent"]]
    earlier = _earlier_ablation(feature_label([(sae, latent) for latent in encoding], "ablate", None))
    if encoding and earlier is not None and not args.remeasure:
        ablation.append(earlier)
        print(markdown(list(earlier), ablation))
    elif encoding:
        started = time.perf_counter()
        result = assess_intervention(ranker, (), "ablate", axioms=[args.axiom], n=args.n, judged=SHARED,
                                     features=[(sae, latent) for latent in encoding], progress=True)
        ndcg = result.measures.set_index("measure").loc["nDCG@10"]
        axiom = result.axioms.iloc[0]
        ablation.append({"intervention": result.label, "queries": int(result.manifest["queries"]),
                         "passages": int(result.manifest["passages"]),
                         "nDCG@10 before": round(float(ndcg["before"]), 4),
                         "nDCG@10 after": round(float(ndcg["after"]), 4),
                         "difference [95% CI]": f"{ndcg['difference']:+.4f} [{ndcg['low']:+.4f}, "
                                                f"{ndcg['high']:+.4f}]",
                         f"{args.axiom} agreement before": f"{axiom['agreement_before']:.1%}",
                         f"{args.axiom} agreement after": f"{axiom['agreement_after']:.1%}",
                         "seconds": round(time.perf_counter() - started, 1), "measured": "this run"})
        print(markdown(list(ablation[0]), ablation))
    tables = [{"title": f"Flagged features of the verified audit ({args.n} pairs, "
                        f"{main_audit.manifest['axioms'][args.axiom]['inference']['features']['queries']} queries, "
                        f"{seconds['audit']:.0f} s) and what they fire on", "columns": found_columns, "rows": found}]
    if ablation:
        tables.append({"title": "The encoding features ablated", "columns": list(ablation[0]), "rows": ablation})
    write_record("sae-audit", rows, columns, title=f"{args.axiom} features of MiniLM: exact and verified",
                 notes=[f"{args.axiom} on the packaged MiniLM over the bundled sample, the features "
                        f"step alone with the SAE of benchmarks/sae.py ({sae.config.d_sae} latents at "
                        f"{sae.hook_name}), default settings otherwise, on {machine()}, torch threads "
                        f"{torch.get_num_threads()}.",
                        "Contexts: the firing token in brackets, with its activation and the input it fired on.",
                        *([f"The exact audit's time: {exact_timing}."] if exact_timing else []),
                        "The ablation re-audits the axiom (heads) and ranks each query's judged passages of "
                        "../shared/data before and after; nDCG@10 by ir-measures, the interval a paired bootstrap "
                        "over queries."],
                 tables=tables, details={"verification": {key: value for key, value in checked.items()
                                                          if key not in ("measured", "screened_share", "screen_value")},
                                         "seconds": seconds,
                                         "audit": main_audit.manifest["axioms"][args.axiom].get("feature_verification")
                                         and {key: value for key, value in
                                              main_audit.manifest["axioms"][args.axiom]["feature_verification"].items()
                                              if key not in ("measured", "screened_share", "screen_value")}})


if __name__ == "__main__":
    main()
