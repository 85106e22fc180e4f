"""`sweep`: one audit per design variant of an axiom, and which findings survive a change of design.

Causal conclusions about rankers shift with how the diagnostic pairs are built (van Marken & Petcu, 2025): the
filler word, the insertion position, the term drawn and the baseline. A sweep varies one choice at a time around
the spec as written (the reference), so a finding that vanishes under a variant names the choice it depends on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..core.errors import SettingsError, SpecError
from ..core.outputs import OutputFolder
from ..executing.base import Executor
from ..executing.registry import running
from ..models.loading import load_ranker
from ..models.rankers import Ranker
from ..pairs.compile import check_filler, vocabulary_of
from ..passages.loading import DataSource, load_data
from ..perturb.operators import OPERATORS, POSITIONS
from ..results.audit import Audit
from ..results.steps import STEPS
from ..results.sweep import Sweep, stability
from ..specs.axiom import FILLS, Axiom, load_axiom
from .checkpoints import RESUME_ADVICE
from .pipeline import audit

FACTORS = ("filler", "position", "seed", "baseline")
"""What a sweep may vary: the baseline's filler word, where the slot goes, the seed that draws pairs and terms,
and how the baseline slot is filled (filler words, masked padding or another term)."""
FILLERS = ("a", "the", "and")
"""The default fillers: single-wordpiece words in every packaged tokenizer."""
SEED_MAX = 2**32 - 1
"""The largest seed: pandas' random_state and NumPy's RandomState take seeds from 0 to 2**32 - 1 (default_rng
takes more, torch.manual_seed up to 2**64 - 1), and a sweep stores each variant's seed as a 64-bit integer."""
SEED_RULE = f"seeds are integers from 0 to {SEED_MAX} (2**32 - 1)"


def valid_seed(value: Any) -> bool:
    """Is `value` a seed: an int (not a bool) from 0 to SEED_MAX?"""
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= SEED_MAX


def check_vary(vary: Mapping[str, Sequence[Any]]) -> None:
    """Refuse, before anything is loaded, a `vary` that names no factor or an unknown one, gives a factor no
    list of values, or holds a seed that is not an integer from 0 to SEED_MAX."""
    if not isinstance(vary, Mapping) or not vary:
        raise SettingsError(f"vary={vary!r} names no factor to vary; give {{factor: [values]}} over "
                            f"{', '.join(FACTORS)}, or vary=None for the default sweep")
    unknown = sorted(map(str, set(vary) - set(FACTORS)))
    if unknown:
        raise SettingsError(f"vary={dict(vary)!r}: cannot vary {', '.join(unknown)}; use {', '.join(FACTORS)}")
    for factor, values in vary.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise SettingsError(f"vary[{factor!r}]={values!r} is not valid; give a non-empty list of values")
    bad = [value for value in vary.get("seed", ()) if not valid_seed(value)]
    if bad:
        raise SettingsError(f"vary['seed'] holds {bad[0]!r}; {SEED_RULE}")


@dataclass(frozen=True)
class Design:
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
    vary["seed"] = [seed, seed + 1, seed + 2] if seed + 2 <= SEED_MAX else [seed, seed - 1, seed - 2]
    return vary


def variants_of(spec: Axiom, vary: Mapping[str, Sequence[Any]], seed: int) -> list[tuple[Design, Axiom, int]]:
    """The reference and one variant per value that differs from it, one factor at a time: (variant, spec, seed).

    Every value is checked against what the spec allows (SettingsError naming it), and a `vary` under which
    nothing differs from the reference is refused: it would be one audit, not a sweep."""
    check_vary(vary)
    reference = {"filler": spec.baseline.filler, "position": spec.perturb.params.get("position"), "seed": seed,
                 "baseline": spec.baseline.fill}
    variants = [(Design(None, None), spec, seed)]
    for factor, values in vary.items():
        for value in values:
            _check_value(spec, factor, value)
            if value == reference[factor]:
                continue
            if factor == "seed":
                variants.append((Design(factor, value), spec, value))
                continue
            key = {"filler": "filler", "position": "position", "baseline": "fill"}[factor]
            overrides = {key: value, **({"term": "unrelated"} if factor == "baseline" and value == "term" else {})}
            try:
                design = spec(**overrides)
            except SpecError as error:
                raise SettingsError(f"vary[{factor!r}] holds {value!r}, which {spec.name} does not allow ({error})") from None
            variants.append((Design(factor, value), design, seed))
    if len(variants) == 1:
        shown = ", ".join(f"{factor}={reference[factor]!r}" for factor in vary)
        raise SettingsError(f"vary={dict(vary)!r} is not a sweep of {spec.name}: every value equals its reference "
                            f"({shown}); give at least one other value")
    return variants


def _check_value(spec: Axiom, factor: str, value: Any) -> None:
    """Refuse a value a factor cannot take for `spec`: a position its operation has no slot for or does not know,
    a baseline fill that is not one of FILLS, a filler that is not a non-empty word."""
    if factor == "position":
        if "position" not in OPERATORS[spec.perturb.operation].params:
            raise SettingsError(f"vary['position'] holds {value!r}, but {spec.name}'s operation "
                                f"{spec.perturb.operation!r} takes no position; leave position out of vary")
        if value not in POSITIONS:
            raise SettingsError(f"vary['position'] holds {value!r}; positions are {', '.join(POSITIONS)}")
    if factor == "baseline" and value not in FILLS:
        raise SettingsError(f"vary['baseline'] holds {value!r}; baselines are {', '.join(FILLS)}")
    if factor == "filler" and (not isinstance(value, str) or not value.strip()):
        raise SettingsError(f"vary['filler'] holds {value!r}; fillers are non-empty words (such as 'a', 'the', 'and')")


def check_fillers(plan: Sequence[tuple[Axiom, Design, Axiom, int]], ranker: Ranker) -> None:
    """Refuse, before any audit runs, a filler variant that is not one token for the ranker's tokenizer (a
    baseline slot of n tokens is filled with n fillers) or that holds one of its special tokens."""
    vocabulary = vocabulary_of(ranker)
    for _, variant, design, _ in plan:
        if variant.factor != "filler":
            continue
        pieces = vocabulary.length(variant.value)
        if pieces != 1:
            raise SettingsError(f"vary['filler'] holds {variant.value!r}, which is {pieces} tokens for "
                                f"{ranker.name}'s tokenizer; sweep fillers must be single tokens (such as 'a', 'the', 'and')")
        check_filler(design, ranker)


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
    options: the audit's settings (n, steps, method, threshold, ...); the variants skip per-position example
    blocks unless `examples` is given. With `folder`, each variant's audit is saved (and resumable) in its own
    subfolder and the sweep's report.html compares them. `executor` (see `audit`) is started once and runs
    every variant's chunks, so a Ray cluster's workers load the model once for the whole sweep.
    """
    specs = [axiom if isinstance(axiom, Axiom) else load_axiom(axiom)
             for axiom in ([axioms] if isinstance(axioms, (str, Axiom)) else axioms)]
    if not valid_seed(seed):
        raise SettingsError(f"seed={seed!r} is not valid; {SEED_RULE}")
    if vary is not None:
        check_vary(vary)
    plan = [(spec, *item) for spec in specs
            for item in variants_of(spec, default_vary(spec, seed) if vary is None else vary, seed)]
    output = None if folder is None else sweep_folder(folder, resume)
    if output is not None:
        output.check()  # before the data and the model load
        for spec, variant, *_ in plan:
            output.path(spec.name, variant.label)  # each variant's folder name is checked before any audit
    frame, _ = load_data(data)
    if not isinstance(ranker, Ranker):
        ranker = load_ranker(ranker)
    check_fillers(plan, ranker)  # every variant is valid before the first audit runs
    options = {"examples": 0, **options}
    audits: dict[tuple[str, str], Audit] = {}
    factors: dict[str, str | None] = {}
    with running(executor) as runner, output if output is not None else nullcontext() as out:
        for spec, variant, design, variant_seed in tqdm(plan, desc="sweep", unit="audit", disable=not progress):
            where = None if out is None else out.part(f"{spec.name}/{variant.label}", "audit",
                                                      "continue" if resume else "refuse")
            audits[spec.name, variant.label] = audit(
                ranker, [design], frame, seed=variant_seed, folder=where, progress=False, executor=runner, **options)
            factors[variant.label] = variant.factor
        result = _sweep_result(plan, audits, factors, specs, vary, seed, options, ranker)
        if out is not None:
            result.save(out)
    return result


def sweep_folder(folder: str | Path, resume: bool = False) -> OutputFolder:
    """The output folder of a sweep (not yet claimed): continued with `resume`, else refused if it holds one."""
    return OutputFolder(folder, "sweep", "continue" if resume else "refuse", advice=RESUME_ADVICE)


def _sweep_result(plan: list[tuple[Axiom, Design, Axiom, int]], audits: dict[tuple[str, str], Audit],
                  factors: dict[str, str | None], specs: list[Axiom], vary: Mapping[str, Sequence[Any]] | None,
                  seed: int, options: dict[str, Any], ranker: Ranker) -> Sweep:
    """The sweep's frames and manifest from its variants' audits."""
    rows = []
    for spec, variant, design, variant_seed in plan:
        result = audits[spec.name, variant.label]
        behaviour = result.axioms.iloc[0]
        rows.append({"axiom": spec.name, "variant": variant.label, "factor": variant.factor or "",
                     "value": "" if variant.value is None else str(variant.value), "seed": variant_seed,
                     "filler": design.baseline.filler, "position": design.perturb.params.get("position"),
                     "baseline": design.baseline.fill, "n_pairs": int(behaviour["n_pairs"]),
                     "agreement": float(behaviour["agreement"]), "agreement_low": float(behaviour["agreement_low"]),
                     "agreement_high": float(behaviour["agreement_high"]), "mean_delta": float(behaviour["mean_delta"]),
                     "verdict": behaviour["verdict"],
                     **{step.counts + flag: int(behaviour[step.counts + flag]) for step in STEPS.values()
                        if step.counts is not None for flag in ("encodes", "violates")},
                     "spec_hash": design.spec_hash})
    manifest = {"axioms": [spec.name for spec in specs], "vary": {k: list(v) for k, v in (vary or {}).items()},
                "default_vary": vary is None, "seed": seed, "options": json.loads(json.dumps(options, default=list)),
                "model": ranker.name, "kind": ranker.kind}
    return Sweep(pd.DataFrame(rows), stability(audits, factors), audits, manifest)
