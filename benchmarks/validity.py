"""Benchmark: do an audit's flags hold on new queries? Two query-disjoint halves of the shared TREC DL data, each
audited on its own, and the flags of each rule compared between them.

For each real model (the packaged MiniLM bi-encoder and the TREC DL cross-encoder in ../shared/models) and each
half, one audit of the heads (the default method, verified) on TFC1, TDC, LNC1, STMC1 and NULL, and the verdict of
BIASED (NULL's slot filled with a query term against a neutral word, declared `no_change`: a deliberately biased
control; its pairs are scored, not patched). The audits keep each pair's change per head, so every rule is
applied to the same measurements:

- pair: pairs as the unit, flags from the test alone (the statistics before issue 27);
- cluster: queries as the unit, flags from the test alone;
- stable: queries as the unit, flags that the test gives on all queries and on at least 90% of 50 query-disjoint
  half samples (the default).

A flag replicates when the other half, as a follow-up study of that flag alone, confirms it: the other half's
threshold test of the unit, one-sided on the flag's side, with Benjamini-Hochberg over the flags carried
forward (the follow-up design of Bogomolov and Heller 2013; a unit the other half did not measure exactly counts
as not confirmed). Besides: whether the other half's own audit flags it alike under the same rule (which also
asks the other half to discover it among all units, so it is bounded by that audit's power), and whether the
other half's estimate lies beyond the threshold on the flag's side. NULL and BIASED are left out; each is
pooled over both directions. It prints the table and writes benchmarks/results/validity.json; the audits go to
benchmarks/results/validity/ and are continued when rerun.

    python benchmarks/validity.py [--n minilm=200,cross-encoder=100] [--models minilm,cross-encoder]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from record import ROOT, markdown, write_record

from mechir_axioms import audit, load_audit, load_ranker, make_pairs
from mechir_axioms.analysis.findings import behaviour, effects_frame, equivalence_margin, select, units_of
from mechir_axioms.analysis.stats import benjamini_hochberg
from mechir_axioms.passages.loading import load_data
from mechir_axioms.results.audit import Audit
from mechir_axioms.results.settings import Settings
from mechir_axioms.specs.axiom import load_axiom

SHARED = ROOT.parent / "shared"
MODELS = {"minilm": None, "cross-encoder": str(SHARED / "models" / "minilm-l6-cross-encoder-trecdl")}
AXIOMS = ("TFC1", "TDC", "LNC1", "STMC1")
RULES = {"pair": {"unit": "pair", "stability": 0}, "cluster": {"unit": "query", "stability": 0},
         "stable": {"unit": "query", "stability": Settings().stability, "selection": Settings().selection}}
"""Each rule as Settings overrides of the audits' own settings; stable is this release's default rule."""


def biased_control():
    """NULL with a query term in the perturbed slot: a systematic rise declared as no change."""
    spec = load_axiom("NULL")(term="query_random", title="Biased control: a query term against a neutral word")
    return dataclasses.replace(spec, name="BIASED")


def halves(folder: Path, seed: int = 0) -> list[Path]:
    """The shared data split into two halves by query (seeded), written as JSONL files."""
    frame, _ = load_data(SHARED / "data" / "trec-dl-passages.jsonl.gz")
    queries = np.random.default_rng(seed).permutation(sorted(frame["qid"].astype(str).unique()))
    first = set(queries[: len(queries) // 2])
    paths = []
    for name, keep in (("a", True), ("b", False)):
        path = folder / f"half-{name}.jsonl"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            frame[frame["qid"].astype(str).isin(first) == keep].to_json(path, orient="records", lines=True)
        paths.append(path)
    return paths


def reanalysed(result: Audit, **overrides) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The audit's heads and behaviour under other statistics (Settings overrides), from its per-pair changes: no
    patching again. A head only the screen measured stays unflagged, as in the audit."""
    settings = Settings(**{key: tuple(value) if isinstance(value, list) else value
                           for key, value in result.manifest["settings"].items()
                           if key in {field.name for field in dataclasses.fields(Settings)}}).but(**overrides)
    long = result.pair_changes["heads"]
    heads = result.heads
    changes, queries, labels = {}, {}, []
    for axiom in result.axioms["axiom"]:
        rows = long[long["axiom"] == axiom]
        names = list(heads.loc[heads["axiom"] == axiom, "name"])
        wide = rows.pivot(index="pair", columns="name", values="change")[names]
        sizes = rows.groupby("pair")["size"].first().loc[wide.index]
        qids = rows.groupby("pair")["qid"].first().loc[wide.index]
        changes[axiom] = (wide.to_numpy(dtype=float), sizes.to_numpy(dtype=float))
        queries[axiom] = qids.astype(str).to_numpy()
        labels = [{"layer": int(name.split(".")[0]), "head": int(name.split(".")[1]), "name": name} for name in names]
    frame = effects_frame(changes, labels, queries, settings.threshold, settings.alpha, settings.seed, settings.unit)
    select(frame, changes, queries, settings.stability, settings.selection, settings.alpha, settings.threshold,
           settings.seed, settings.unit)
    if "measured" in heads:
        screened = heads.set_index(["axiom", "name"])["measured"].eq("screened")
        frame.loc[screened.loc[list(zip(frame["axiom"], frame["name"]))].to_numpy(), "flag"] = ""
    verdicts = {}
    for axiom in result.axioms["axiom"]:
        pairs = result.pairs[result.pairs["axiom"] == axiom]
        spec = load_axiom(axiom)
        scores = np.concatenate([pairs["baseline_score"], pairs["perturbed_score"]])
        verdicts[axiom] = behaviour(spec, pairs["delta"].to_numpy(), settings.tolerance, settings.seed,
                                    equivalence_margin(scores, settings.equivalence),
                                    units_of(pairs["qid"].astype(str).to_numpy(), settings.unit))
    return frame, verdicts


@functools.lru_cache(maxsize=None)
def biased_pairs(model: str | None, data: Path, n: int, seed: int) -> pd.DataFrame:
    """BIASED's pairs of one half, scored (no patching), with their query ids."""
    ranker = load_ranker(model)
    pairs = make_pairs(biased_control(), str(data), ranker, n=n, seed=seed)
    return pairs.score(ranker).assign(qid=pairs.frame["qid"].astype(str).to_numpy())


def biased_verdicts(model: str | None, data: Path, n: int, overrides: dict) -> dict:
    """BIASED's behaviour row under one rule's statistics."""
    settings = Settings().but(**overrides)
    scored = biased_pairs(model, data, n, settings.seed)
    scores = np.concatenate([scored["baseline_score"], scored["perturbed_score"]])
    return behaviour(biased_control(), scored["delta"].to_numpy(), settings.tolerance, settings.seed,
                     equivalence_margin(scores, settings.equivalence), units_of(scored["qid"].to_numpy(), settings.unit))


def effect_held(found: set[tuple[str, str, str]], other: pd.DataFrame, threshold: float = 0.05) -> int:
    """How many of one half's flags the other half's estimate bears out: the head's effect there lies beyond the
    threshold on the flag's side (what a flag claims about new queries)."""
    effects = other.set_index(["axiom", "name"])["effect"]
    return sum(bool(effects[axiom, name] > threshold if flag == "encodes" else effects[axiom, name] < -threshold)
               for axiom, name, flag in found)


def confirmed(found: set[tuple[str, str, str]], other: pd.DataFrame, measured: pd.Series, alpha: float) -> int:
    """How many of one half's flags the other half confirms as a follow-up study of those flags only: the other
    half's threshold test of the unit, one-sided on the flag's side, significant after Benjamini-Hochberg over the
    flags carried forward. A unit the other half measured only by the screen is not confirmed."""
    if not found:
        return 0
    tests = other.set_index(["axiom", "name"])
    p_values = []
    for axiom, name, flag in sorted(found):
        row = tests.loc[(axiom, name)]
        same_side = (row["effect"] >= 0) == (flag == "encodes")
        exact = measured.get((axiom, name), "exact") != "screened"
        p_values.append(row["p_value"] / 2 if same_side and exact else 1.0)  # the two-sided test, halved
    return int((benjamini_hochberg(np.array(p_values)) <= alpha).sum())


def flags(frame: pd.DataFrame, axioms=AXIOMS) -> set[tuple[str, str, str]]:
    return {(row.axiom, row.name, row.flag) for row in frame.itertuples() if row.flag and row.axiom in axioms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="minilm=200,cross-encoder=100",
                        help="pairs per axiom in each half, per model (the cross-encoder's longer inputs cost twice "
                             "as much on two cores)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--folder", default=str(ROOT / "benchmarks" / "results" / "validity"))
    args = parser.parse_args()
    folder = Path(args.folder)
    data = halves(folder)
    specs = [*AXIOMS, "NULL"]
    rows, seconds, details = [], {}, {}
    sizes = {name: int(value) for name, value in (item.split("=") for item in args.n.split(","))}
    for model in args.models.split(","):
        audits, n = [], sizes[model]
        for half, path in zip("ab", data):
            out = folder / f"{model}-n{n}-{half}"
            started = time.perf_counter()
            if not (out / "manifest.json").exists():
                audit(MODELS[model], specs, str(path), n=n, steps=("heads",), folder=out, resume=out.exists())
            seconds[f"{model}-{half}"] = round(time.perf_counter() - started, 1)
            audits.append(load_audit(out))
        for rule, overrides in RULES.items():
            (frame_a, verdicts_a), (frame_b, verdicts_b) = (reanalysed(result, **overrides) for result in audits)
            verdicts_a["BIASED"], verdicts_b["BIASED"] = (biased_verdicts(MODELS[model], path, n, overrides)
                                                          for path in data)
            found_a, found_b = flags(frame_a), flags(frame_b)
            both = len(found_a & found_b)
            total = len(found_a) + len(found_b)
            null = [len(flags(frame, ("NULL",))) for frame in (frame_a, frame_b)]
            held = effect_held(found_a, frame_b) + effect_held(found_b, frame_a)
            measured = [result.heads.set_index(["axiom", "name"])["measured"] for result in audits]
            settings = Settings().but(**overrides)
            replicated = (confirmed(found_a, frame_b, measured[1], settings.alpha)
                          + confirmed(found_b, frame_a, measured[0], settings.alpha))
            rows.append({
                "model": model, "pairs per axiom": n, "rule": rule, "flags (a / b)": f"{len(found_a)} / {len(found_b)}",
                "flag replicates": f"{replicated / total:.0%}" if total else "n/a",
                "flagged in both": both,
                "flagged alike": f"{2 * both / total:.0%}" if total else "n/a",
                "effect replicates": f"{held / total:.0%}" if total else "n/a",
                "NULL flags (a / b)": f"{null[0]} / {null[1]}",
                "NULL verdict (a / b)": f"{verdicts_a['NULL']['verdict']} / {verdicts_b['NULL']['verdict']}",
                "biased verdict (a / b)": f"{verdicts_a['BIASED']['verdict']} / {verdicts_b['BIASED']['verdict']}",
            })
            details[f"{model} {rule}"] = {"a": sorted(map(list, found_a)), "b": sorted(map(list, found_b)),
                                         "queries": [int(result.axioms["queries"].min()) for result in audits]}
    columns = list(rows[0])
    print(markdown(columns, rows))
    write_record("validity", rows, columns, title="Flags that replicate between query-disjoint halves of TREC DL",
                 notes=["Each half: the pairs per axiom in the table, from about half of the queries of the shared TREC DL "
                        "2019/2020 judged pairs, heads measured by the default method (verified); the three rules are "
                        "applied to the same per-pair changes.",
                        "Flag replicates: the share of one half's flags (TFC1, TDC, LNC1, STMC1; axiom, head and "
                        "side) that the other half confirms as a follow-up study of those flags (its threshold test, "
                        "one-sided on the flag's side, Benjamini-Hochberg over the flags carried forward; Bogomolov "
                        "and Heller 2013), pooled over both directions. Flagged alike: the share that the other "
                        "half's own audit flags alike under the same rule, which asks it to rediscover the flag among "
                        "all units (bounded by that audit's power). Effect replicates: the share whose effect in the "
                        "other half lies beyond the threshold (0.05) on the flag's side."],
                 details={"seconds": seconds, "flags": details})


if __name__ == "__main__":
    main()
