"""`assess_intervention`: what an intervention on heads does to axioms and to ranking effectiveness.

The axioms are audited twice on the same pairs (built identically from the same data and seed), without and with
the intervention; per axiom, the change in agreement and in the mean score change comes with a paired bootstrap
interval and a paired randomization p-value over the pairs. The judged data (or a given run) are ranked per query
before and after, and nDCG@10, MRR@10 and MAP are compared over the queries with the same paired statistics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .analysis.effectiveness import (MEASURES, RESAMPLES, check_judged_run, compare_per_query, paired_difference,
                                     per_query, qrels_of, run_of)
from .analysis.findings import agrees
from .auditing.pipeline import audit
from .core.errors import DataError, SettingsError
from .features.interventions import Feature, check_features, feature_label, intervene
from .features.splice import check_saes
from .models.head_edits import HeadLike, check_intervention
from .models.loading import load_ranker
from .models.rankers import Ranker
from .passages.loading import DataSource, load_data
from .results.audit import Audit, load_audit
from .results.intervention import InterventionResult, intervention_folder
from .results.settings import INTERVENTION_DEFAULTS, Settings
from .results.suggestions import intervene_command

DEFAULTS = Settings()

PAIR_KEYS = ["axiom", "pair", "qid", "docno", "baseline", "perturbed"]
"""What must be equal for the two audits' pairs to be the same pairs."""
REFERENCE_PAIRS = 64
"""Judged pairs (seeded sample) over which op "mean" takes each head's mean output."""


def axiom_changes(before: Audit, after: Audit, tolerance: float, seed: int) -> pd.DataFrame:
    """Per axiom, agreement and mean score change before and after on the same pairs, paired; SettingsError when
    the audits' pairs differ."""
    keys = before.pairs[PAIR_KEYS].reset_index(drop=True)
    if not keys.equals(after.pairs[PAIR_KEYS].reset_index(drop=True)):
        raise SettingsError("the audits with and without the intervention were built on different pairs; "
                            "they must share data, n and seed")
    rows = []
    for facts in before.axioms.itertuples():
        chosen = (before.pairs["axiom"] == facts.axiom).to_numpy()
        deltas = [audit.pairs.loc[chosen, "delta"].to_numpy(dtype=float) for audit in (before, after)]
        agreeing = [agrees(delta, facts.expect, tolerance).astype(float) for delta in deltas]
        agreement, mean = paired_difference(*agreeing, seed=seed), paired_difference(*deltas, seed=seed)
        verdict_after = after.axioms.set_index("axiom").loc[facts.axiom, "verdict"]
        rows.append({"axiom": facts.axiom, "expect": facts.expect, "n_pairs": int(chosen.sum()),
                     **{f"agreement_{key}": value for key, value in _renamed(agreement).items()},
                     **{f"mean_{key}": value for key, value in _renamed(mean).items()},
                     "verdict_before": facts.verdict, "verdict_after": verdict_after})
    return pd.DataFrame(rows)


def overlap(measured: Audit, chooser: Audit) -> dict[str, Any]:
    """How many of the pairs and queries an intervention was measured on were also in the audit that chose it."""
    keys = ["axiom", "qid", "docno", "baseline", "perturbed"]
    mine, theirs = measured.pairs[keys].astype(str), chooser.pairs[keys].astype(str)
    shared = mine.merge(theirs.drop_duplicates(), on=keys, how="inner")
    queries, chosen_queries = set(mine["qid"]), set(theirs["qid"])
    return {"folder": None if chooser.folder is None else str(chooser.folder), "pairs": int(len(mine)),
            "pairs_shared": int(len(shared)), "queries": len(queries), "queries_shared": len(queries & chosen_queries)}


def _renamed(difference: dict[str, float]) -> dict[str, float]:
    """paired_difference's keys as the axiom frame's suffixes (difference -> change, p_value -> p)."""
    names = {"difference": "change", "p_value": "p"}
    return {names.get(key, key): value for key, value in difference.items() if key not in ("n", "t_test_p")}


def _candidates(judged: pd.DataFrame, run: DataSource | None, qrels: pd.DataFrame,
                judged_source: str) -> tuple[pd.DataFrame, str | None]:
    """What is ranked per query: the judged passages, or a given run's (qid, query, docno, text) rows (DataError
    when none of them is judged)."""
    if run is None:
        return judged.dropna(subset=["relevance"]).reset_index(drop=True), None
    frame, source = load_data(run)
    if not set(frame["qid"].astype(str)) & set(judged["qid"].astype(str)):
        raise DataError(f"{source}: the run shares no query with the judged data; rank the judged queries")
    check_judged_run(frame, qrels, source, judged_source)
    return frame.reset_index(drop=True), source


def _reference(frame: pd.DataFrame, reference: int | tuple[Sequence[str], Sequence[str]],
               seed: int) -> tuple[list[str], list[str]]:
    """The reference pairs of op "mean": given (queries, passages), or a seeded sample of `reference` judged rows."""
    if not isinstance(reference, int) or isinstance(reference, bool):
        queries, passages = reference
        return list(queries), list(passages)
    if reference < 1:
        raise SettingsError(f"reference={reference!r} is not valid; use a number of reference pairs of at least 1")
    sample = frame.sample(n=min(reference, len(frame)), random_state=seed)
    return list(sample["query"]), list(sample["text"])


def _effectiveness(ranker: Ranker, candidates: pd.DataFrame, qrels: pd.DataFrame, progress: bool) -> pd.DataFrame:
    """Per query, the measures of the candidates ranked by the ranker's scores."""
    scores = ranker.score(list(candidates["query"]), list(candidates["text"]), progress=progress)
    return per_query(qrels, run_of(candidates, scores.numpy()))


def _per_query_long(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per query and measure: qid, measure, before, after, difference."""
    both = [frame.melt(id_vars="qid", var_name="measure", value_name=name) for frame, name in
            ((before, "before"), (after, "after"))]
    long = both[0].merge(both[1], on=["qid", "measure"])
    return long.assign(difference=long["after"] - long["before"])


def assess_intervention(
    ranker: Ranker | str | None,
    heads: str | Sequence[HeadLike],
    op: str = "ablate",
    factor: float | None = None,
    axioms: Sequence[str] = DEFAULTS.axioms,
    data: DataSource = None,
    n: int = DEFAULTS.n,
    seed: int = DEFAULTS.seed,
    *,
    judged: DataSource = None,
    run: DataSource = None,
    reference: int | tuple[Sequence[str], Sequence[str]] = REFERENCE_PAIRS,
    settings: Settings | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    features: Sequence[Feature] = (),
    chosen_by: str | Path | Audit | None = None,
    **overrides: Any,
) -> InterventionResult:
    """Audit `axioms` on `data` with and without the intervention (heads, op, factor: see models.head_edits.
    intervene) on the same pairs, and rank `judged` (default: `data`), or a given `run`, per query before and after.

    The re-audits run `settings` with `overrides` (default: the audit's Settings, but the heads step only and no
    replication splits: the flags that matter here are the heads'). op "mean" takes each head's mean over
    `reference` seeded judged pairs (or given (queries, passages)). With `folder`, the result is saved there (see
    InterventionResult.save). `features` [(sae, latent), ...] are changed by `op` (ablate, scale, steer) through
    their spliced SAEs instead of heads (see features.interventions.intervene). `chosen_by`, the audit (or its
    folder) that chose what is changed, is compared with the re-audits' pairs: the manifest and the report say how
    many pairs and queries both share, so that an in-sample gain is not read as a held-out one."""
    started = time.perf_counter()
    features = list(features)
    if folder is not None:
        intervention_folder(folder).check()  # before any work: the folder is written only when all is done
    chooser = load_audit(chosen_by) if isinstance(chosen_by, (str, Path)) else chosen_by
    ranker = ranker if isinstance(ranker, Ranker) else load_ranker(ranker)
    if features:
        if heads:
            raise SettingsError("give heads or features, not both: measure one intervention at a time")
        check_features(features, op, factor)
        check_saes(ranker, list(dict.fromkeys(sae for sae, _ in features)))
    else:
        check_intervention(ranker, heads, op, factor, reference if op == "mean" else None)
    frame, source = load_data(judged if judged is not None else data)
    qrels = qrels_of(frame)
    candidates, run_source = _candidates(frame, run, qrels, source)
    pairs = _reference(frame.dropna(subset=["relevance"]), reference, seed) if op == "mean" else None
    chosen = (settings or INTERVENTION_DEFAULTS).but(n=n, seed=seed, **overrides)
    sae_folders = chosen.saes
    if "features" not in chosen.steps:
        chosen = chosen.but(saes=())  # the SAEs name the features to change; the re-audits patch heads
    before = audit(ranker, axioms, data, chosen, progress=progress)
    queries_before = _effectiveness(ranker, candidates, qrels, progress)
    with intervene(ranker, heads, op, factor, pairs, features=features) as intervention:
        after = audit(ranker, axioms, data, chosen, progress=progress)
        queries_after = _effectiveness(ranker, candidates, qrels, progress)
    if features:
        facts = {**intervention, "label": feature_label(features, op, factor)}
    else:
        facts = {**intervention.describe(), "label": intervention.label()}
    command = _command(ranker, facts, op, axioms, data, n, seed, folder, sae_folders, chosen)
    after.manifest["intervention"] = facts
    after.manifest["command"] = command  # a plain audit command would repeat the audit without the intervention
    settings = before.manifest["settings"]
    manifest = {
        "package": "mechir-axioms", "package_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "intervention": facts, "model": before.manifest["model"], "settings": settings, "judged": source,
        "run": run_source, "queries": int(len(queries_before)), "passages": int(len(candidates)),
        "measures": [str(measure) for measure in MEASURES], "resamples": RESAMPLES, "seed": seed,
        "alpha": settings["alpha"], "reference_pairs": len(pairs[0]) if pairs else None,
        "command": command, "chosen_by": None if chooser is None else overlap(before, chooser),
    }
    result = InterventionResult(
        facts, axiom_changes(before, after, settings["tolerance"], seed),
        compare_per_query(queries_before, queries_after, seed), _per_query_long(queries_before, queries_after),
        before, after, manifest)
    result.manifest["seconds"] = round(time.perf_counter() - started, 1)
    if folder is not None:
        result.save(folder)
    return result


def _command(ranker: Ranker, facts: dict[str, Any], op: str, axioms: Sequence[str], data: DataSource, n: int,
             seed: int, folder: str | Path | None, sae_folders: Sequence[str] = (),
             chosen: Settings = INTERVENTION_DEFAULTS) -> str | None:
    """The `mechir-axioms intervene` command of these arguments, with every re-audit setting that differs from the
    intervention defaults (None when the data is an in-memory frame, or when features were changed by SAEs given
    as objects rather than folders)."""
    if isinstance(data, pd.DataFrame) or ("features" in facts and not sae_folders):
        return None
    own = ("axioms", "model", "data", "n", "seed", "saes")  # given by the command's own flags
    defaults = INTERVENTION_DEFAULTS.describe()
    changed = {key: value for key, value in chosen.describe().items() if key not in own and value != defaults[key]}
    return intervene_command(facts.get("heads", ()), op, [getattr(axiom, "name", axiom) for axiom in axioms],
                             model=ranker.name, factor=facts.get("factor"), data=None if data is None else str(data),
                             n=n, seed=seed, out=None if folder is None else str(folder),
                             features=facts.get("features", ()), saes=sae_folders, settings=changed)
