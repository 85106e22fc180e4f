"""`sweep`: one audit per design variant of an axiom, and which findings survive a change of design.

Causal conclusions about rankers shift with how the diagnostic pairs are built (van Marken & Petcu, 2025): the
filler word, the insertion position, the term drawn and the baseline. A sweep varies one choice at a time around
the spec as written (the reference), so a finding that vanishes under a variant names the choice it depends on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..core.errors import SettingsError
from ..core.files import write_atomically, write_json
from ..executing.base import Executor
from ..executing.registry import running
from ..models.loading import load_ranker
from ..models.rankers import Ranker
from ..pairs.data import DataSource, load_data
from ..perturb.operators import OPERATORS
from ..report.summary import sweep_summary
from ..report.sweep import render_sweep
from ..specs.axiom import Axiom, load_axiom
from .result import Audit
from .run import audit

FACTORS = ("filler", "position", "seed", "baseline")
"""What a sweep may vary: the baseline's filler word, where the slot goes, the seed that draws pairs and terms,
and how the baseline slot is filled (filler words, masked padding or another term)."""
FILLERS = ("a", "the", "and")
"""The default fillers: single-wordpiece words in every packaged tokenizer."""


@dataclass(frozen=True)
class Variant:
    """One design of an axiom: the factor changed from the reference (None for the reference) and its value."""

    factor: str | None
    value: Any

    @property
    def label(self) -> str:
        return "reference" if self.factor is None else f"{self.factor}={self.value}"


def default_vary(spec: Axiom, seed: int) -> dict[str, list[Any]]:
    """The default sweep of an axiom: three fillers when its baseline uses a filler, start and end when its
    operator takes a position, and three seeds."""
    vary: dict[str, list[Any]] = {}
    if spec.baseline.fill == "filler":
        vary["filler"] = list(dict.fromkeys([spec.baseline.filler, *FILLERS]))[:3]
    if "position" in OPERATORS[spec.perturb.operation].params:
        vary["position"] = list(dict.fromkeys([spec.perturb["position"], "end", "start"]))
    vary["seed"] = [seed, seed + 1, seed + 2]
    return vary


def variants_of(spec: Axiom, vary: Mapping[str, Sequence[Any]], seed: int) -> list[tuple[Variant, Axiom, int]]:
    """The reference and one variant per value that differs from it, one factor at a time: (variant, spec, seed)."""
    unknown = sorted(set(vary) - set(FACTORS))
    if unknown:
        raise SettingsError(f"vary={dict(vary)!r}: cannot vary {', '.join(unknown)}; use {', '.join(FACTORS)}")
    reference = {"filler": spec.baseline.filler, "position": spec.perturb.params.get("position"), "seed": seed,
                 "baseline": spec.baseline.fill}
    variants = [(Variant(None, None), spec, seed)]
    for factor, values in vary.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise SettingsError(f"vary[{factor!r}]={values!r} is not valid; give a non-empty list of values")
        for value in values:
            if value == reference[factor]:
                continue
            if factor == "seed":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise SettingsError(f"vary['seed'] holds {value!r}; seeds are integers of at least 0")
                variants.append((Variant(factor, value), spec, value))
                continue
            key = {"filler": "filler", "position": "position", "baseline": "fill"}[factor]
            overrides = {key: value, **({"term": "unrelated"} if factor == "baseline" and value == "term" else {})}
            variants.append((Variant(factor, value), spec(**overrides), seed))
    return variants


@dataclass
class Sweep:
    """The audits of a sweep and what they say together.

    variants: one row per (axiom, variant) with its behaviour and flag counts; stability: one row per component
    (head or block cell) flagged in some variant, with how many variants flag it and the variants that do not.
    """

    variants: pd.DataFrame
    stability: pd.DataFrame
    audits: dict[tuple[str, str], Audit]
    manifest: dict[str, Any]
    folder: Path | None = None

    def holding(self, axiom: str, frame: str = "heads") -> list[str]:
        """The components whose flag holds under every variant of `axiom`."""
        rows = self.stability[(self.stability["axiom"] == axiom) & (self.stability["frame"] == frame)]
        return rows.loc[rows["holds"], "name"].tolist()

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("variants", "stability"):
            frame: pd.DataFrame = getattr(self, name)
            write_atomically(folder / f"{name}.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
        write_atomically(folder / "report.html", lambda path: path.write_text(render_sweep(self), encoding="utf-8"))
        write_json(folder / "sweep.json", self.manifest)
        self.folder = folder
        return folder

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: per variant its verdict, agreement and flags; which flags hold."""
        return sweep_summary(self)


def stability(audits: Mapping[tuple[str, str], Audit], factors: Mapping[str, str | None]) -> pd.DataFrame:
    """Per axiom and component flagged in some variant: the variants that give it the reference's flag (or, when
    the reference has none, the most common flag), whether that holds under every variant, and the factors whose
    variants lose it."""
    rows = []
    axioms = dict.fromkeys(axiom for axiom, _ in audits)
    for axiom in axioms:
        labels = [label for name, label in audits if name == axiom]
        for frame in ("heads", "cells"):
            flags = {label: getattr(audits[axiom, label], frame).set_index("name")["flag"] for label in labels}
            table = pd.DataFrame(flags)
            if table.empty:
                continue
            for name, row in table.iterrows():
                given = row[row != ""]
                if given.empty:
                    continue
                flag = row["reference"] if row["reference"] else given.value_counts().index[0]
                agreeing = row[row == flag].index.tolist()
                losing = [label for label in labels if label not in agreeing]
                rows.append({
                    "axiom": axiom, "frame": frame, "name": name, "flag": flag, "reference_flag": row["reference"],
                    "variants_flagged": len(agreeing), "variants": len(labels), "share": len(agreeing) / len(labels),
                    "holds": not losing, "lost_under": losing,
                    "depends_on": sorted({factors[label] for label in losing if factors[label]}),
                })
    columns = ["axiom", "frame", "name", "flag", "reference_flag", "variants_flagged", "variants", "share", "holds",
               "lost_under", "depends_on"]
    return pd.DataFrame(rows, columns=columns)


def sweep(
    ranker: Ranker | str | None = None,
    axioms: str | Axiom | Sequence[str | Axiom] = "TFC1",
    vary: Mapping[str, Sequence[Any]] | None = None,
    data: DataSource = None,
    *,
    seed: int = 0,
    folder: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    executor: str | Executor = "local",
    **options: Any,
) -> Sweep:
    """Audit each axiom once per design variant and report which flags hold under every variant.

    vary: {factor: [values]} over FACTORS, varied one at a time around the spec (default: `default_vary`);
    options: the audit's settings (n, targets, method, threshold, ...); the variants skip per-position example
    blocks unless `examples` is given. With `folder`, each variant's audit is saved (and resumable) in its own
    subfolder and the sweep's report.html compares them. `executor` (see `audit`) is started once and runs
    every variant's chunks, so a Ray cluster's workers load the model once for the whole sweep.
    """
    specs = [axiom if isinstance(axiom, Axiom) else load_axiom(axiom)
             for axiom in ([axioms] if isinstance(axioms, (str, Axiom)) else axioms)]
    frame, _ = load_data(data)
    if not isinstance(ranker, Ranker):
        ranker = load_ranker(ranker)
    options = {"examples": 0, **options}
    plan = [(spec, *item) for spec in specs for item in variants_of(spec, vary or default_vary(spec, seed), seed)]
    folder = Path(folder) if folder is not None else None
    audits: dict[tuple[str, str], Audit] = {}
    rows, factors = [], {}
    with running(executor) as runner:
        for spec, variant, design, variant_seed in tqdm(plan, desc="sweep", unit="audit", disable=not progress):
            where = folder / spec.name / variant.label if folder is not None else None
            audits[spec.name, variant.label] = audit(
                ranker, [design], frame, seed=variant_seed, folder=where, resume=resume and where is not None
                and where.is_dir(), progress=False, executor=runner, **options)
            factors[variant.label] = variant.factor
    for spec, variant, design, variant_seed in plan:
        result = audits[spec.name, variant.label]
        behaviour = result.axioms.iloc[0]
        rows.append({"axiom": spec.name, "variant": variant.label, "factor": variant.factor or "",
                     "value": "" if variant.value is None else str(variant.value), "seed": variant_seed,
                     "filler": design.baseline.filler, "position": design.perturb.params.get("position"),
                     "baseline": design.baseline.fill, "n_pairs": int(behaviour["n_pairs"]),
                     "agreement": float(behaviour["agreement"]), "agreement_low": float(behaviour["agreement_low"]),
                     "agreement_high": float(behaviour["agreement_high"]), "mean_delta": float(behaviour["mean_delta"]),
                     "verdict": behaviour["verdict"], "encodes": int(behaviour["encodes"]),
                     "violates": int(behaviour["violates"]), "cells_encodes": int(behaviour["cells_encodes"]),
                     "cells_violates": int(behaviour["cells_violates"]), "spec_hash": design.spec_hash})
    manifest = {"axioms": [spec.name for spec in specs], "vary": {k: list(v) for k, v in (vary or {}).items()},
                "default_vary": vary is None, "seed": seed, "options": json.loads(json.dumps(options, default=list)),
                "model": ranker.name, "kind": ranker.kind}
    result = Sweep(pd.DataFrame(rows), stability(audits, factors), audits, manifest)
    if folder is not None:
        result.save(folder)
    return result
