"""`assess_intervention`: what an intervention on heads does to axioms and to ranking effectiveness.

The axioms are audited twice on the same pairs (built identically from the same data and seed), without and with
the intervention; per axiom, the change in agreement and in the mean score change comes with a paired bootstrap
interval and a paired randomization p-value over the pairs. The judged data (or a given run) are ranked per query
before and after, and nDCG@10, MRR@10 and MAP are compared over the queries with the same paired statistics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .analysis.effectiveness import (MEASURES, RESAMPLES, check_judged_run, compare_per_query, paired_difference,
                                     per_query, qrels_of, run_of)
from .analysis.findings import agrees
from .auditing.result import Audit
from .auditing.run import DEFAULTS, audit
from .auditing.suggestions import intervene_command
from .core.errors import DataError, SettingsError
from .core.outputs import OutputFolder
from .models.interventions import HeadLike, check_intervention, intervene
from .models.loading import load_ranker
from .models.rankers import Ranker
from .pairs.data import DataSource, load_data
from .report.intervention import render_intervention
from .report.render import percent

PRIMARY = str(MEASURES[0])
"""The measure the summary line names: nDCG@10."""
PAIR_KEYS = ["axiom", "pair", "qid", "docno", "baseline", "perturbed"]
"""What must be equal for the two audits' pairs to be the same pairs."""
REFERENCE_PAIRS = 64
"""Judged pairs (seeded sample) over which op "mean" takes each head's mean output."""


@dataclass
class InterventionResult:
    """An intervention's effect: per axiom (agreement and mean change, before and after, paired), per measure
    (before, after, paired), per query and measure, the two audits, and provenance."""

    intervention: dict[str, Any]
    axioms: pd.DataFrame
    measures: pd.DataFrame
    queries: pd.DataFrame
    before: Audit
    after: Audit
    manifest: dict[str, Any]
    folder: Path | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.intervention["label"]

    @property
    def summary(self) -> str:
        """One sentence: what the intervention cost or gained in nDCG@10, and how each axiom's agreement moved."""
        alpha = self.manifest["alpha"]
        row = self.measures.set_index("measure").loc[PRIMARY]
        if row["p_value"] <= alpha:
            done = f"{'cost' if row['difference'] < 0 else 'gained'} {abs(row['difference']):.3f} {PRIMARY}"
        else:
            done = f"made no significant change to {PRIMARY}"
        effect = (f"The intervention ({self.label}) {done} ({row['before']:.3f} -> {row['after']:.3f}, "
                  f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}], p = {row['p_value']:.2g} over "
                  f"{int(row['n'])} queries)")
        axioms = [f"{a.axiom} agreement {percent(a.agreement_before)} -> {percent(a.agreement_after)} "
                  f"({percent(a.agreement_change, True)} [{percent(a.agreement_low, True)}, "
                  f"{percent(a.agreement_high, True)}], p = {a.agreement_p:.2g})" for a in self.axioms.itertuples()]
        return f"{effect}; {'; '.join(axioms)}."

    def table(self) -> str:
        """A plain-text report: the summary, the axioms before and after, the measures before and after."""
        lines = [f"mechir-axioms intervene: {self.label}", f"  model: {self.manifest['model']['name']}", ""]
        header = f"{'axiom':<8} {'agreement before -> after':<26} {'change [95% CI]':<26} {'p':>8}  mean change before -> after"
        lines += [header, "-" * len(header)]
        for a in self.axioms.itertuples():
            interval = f"{percent(a.agreement_change, True)} [{percent(a.agreement_low, True)}, {percent(a.agreement_high, True)}]"
            lines.append(f"{a.axiom:<8} {percent(a.agreement_before):>9} -> {percent(a.agreement_after):<13} {interval:<26} "
                         f"{a.agreement_p:>8.2g}  {a.mean_before:+.3g} -> {a.mean_after:+.3g} "
                         f"({a.mean_change:+.3g} [{a.mean_low:+.3g}, {a.mean_high:+.3g}], p = {a.mean_p:.2g})")
        header = f"{'measure':<14} {'before':>7} {'after':>7}  {'change [95% CI]':<28} {'rand. p':>8} {'t-test p':>9}"
        lines += ["", header, "-" * len(header)]
        for m in self.measures.itertuples():
            interval = f"{m.difference:+.4f} [{m.low:+.4f}, {m.high:+.4f}]"
            lines.append(f"{m.measure:<14} {m.before:>7.4f} {m.after:>7.4f}  {interval:<28} {m.p_value:>8.2g} {m.t_test_p:>9.2g}")
        lines += ["", f"over {int(self.measures['n'].iloc[0])} queries of {self.manifest['judged']}", "", self.summary]
        return "\n".join(lines)

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def save(self, folder: str | Path | OutputFolder) -> Path:
        """Write before/ and after/ (the audits), effectiveness.parquet (per query and measure), intervention.json
        (provenance, per axiom, per measure) and report.html into `folder`: a path, claimed as an intervention's
        output folder (refused if it holds one, or anything the tool did not write), or a held one."""
        with folder if isinstance(folder, OutputFolder) else intervention_folder(folder) as out:
            for name, audited in (("before", self.before), ("after", self.after)):
                with out.part(name, "audit") as part:
                    audited.save(part)
            out.write_frame("effectiveness.parquet", self.queries)
            out.write_json("intervention.json", {**self.manifest, "axioms": _records(self.axioms),
                                                 "measures": _records(self.measures)})
            self.folder = out.root
            out.write_text("report.html", render_intervention(self))
        return self.folder


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-ready records (NaN as null)."""
    return json.loads(frame.to_json(orient="records"))


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
    targets: Sequence[str] = ("heads",),
    method: str = "attribution",
    stability: int = 0,
    folder: str | Path | None = None,
    progress: bool = True,
    **audit_options: Any,
) -> InterventionResult:
    """Audit `axioms` on `data` with and without the intervention (heads, op, factor: see models.interventions.
    intervene) on the same pairs, and rank `judged` (default: `data`), or a given `run`, per query before and after.

    The re-audits patch `targets` by `method` (default: attribution on heads, the cheapest; any audit setting may
    be passed). op "mean" takes each head's mean over `reference` seeded judged pairs (or given (queries,
    passages)). With `folder`, the result is saved there (see InterventionResult.save)."""
    started = time.perf_counter()
    if folder is not None:
        intervention_folder(folder).check()  # before any work: the folder is written only when all is done
    ranker = ranker if isinstance(ranker, Ranker) else load_ranker(ranker)
    check_intervention(ranker, heads, op, factor, reference if op == "mean" else None)
    frame, source = load_data(judged if judged is not None else data)
    qrels = qrels_of(frame)
    candidates, run_source = _candidates(frame, run, qrels, source)
    pairs = _reference(frame.dropna(subset=["relevance"]), reference, seed) if op == "mean" else None
    options = {"targets": tuple(targets), "method": method, "stability": stability, "progress": progress,
               **audit_options}
    before = audit(ranker, axioms, data, n, seed, **options)
    queries_before = _effectiveness(ranker, candidates, qrels, progress)
    with intervene(ranker, heads, op, factor, pairs) as intervention:
        after = audit(ranker, axioms, data, n, seed, **options)
        queries_after = _effectiveness(ranker, candidates, qrels, progress)
    facts = {**intervention.describe(), "label": intervention.label()}
    after.manifest["intervention"] = facts
    settings = before.manifest["settings"]
    manifest = {
        "package": "mechir-axioms", "package_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "intervention": facts, "model": before.manifest["model"], "settings": settings, "judged": source,
        "run": run_source, "queries": int(len(queries_before)), "passages": int(len(candidates)),
        "measures": [str(measure) for measure in MEASURES], "resamples": RESAMPLES, "seed": seed,
        "alpha": settings["alpha"], "reference_pairs": len(pairs[0]) if pairs else None,
        "command": _command(ranker, facts, op, axioms, data, n, seed, folder),
    }
    result = InterventionResult(
        facts, axiom_changes(before, after, settings["tolerance"], seed),
        compare_per_query(queries_before, queries_after, seed), _per_query_long(queries_before, queries_after),
        before, after, manifest)
    result.manifest["seconds"] = round(time.perf_counter() - started, 1)
    if folder is not None:
        result.save(folder)
    return result


def intervention_folder(folder: str | Path) -> OutputFolder:
    """The output folder of an intervention (not yet claimed): refused if it holds one, or anything else."""
    return OutputFolder(folder, "intervene", "refuse")


def _command(ranker: Ranker, facts: dict[str, Any], op: str, axioms: Sequence[str], data: DataSource, n: int,
             seed: int, folder: str | Path | None) -> str | None:
    """The `mechir-axioms intervene` command of these arguments (None when the data is an in-memory frame)."""
    if isinstance(data, pd.DataFrame):
        return None
    return intervene_command(facts["heads"], op, [getattr(axiom, "name", axiom) for axiom in axioms], model=ranker.name,
                             factor=facts.get("factor"), data=None if data is None else str(data), n=n, seed=seed,
                             out=None if folder is None else str(folder))
