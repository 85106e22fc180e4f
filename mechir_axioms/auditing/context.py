"""`AuditContext`: what every audit step works with, in one object instead of a bundle of arguments, and
`AxiomRecord`: what the audit knows of one axiom (its pairs, scores, provenance and step timings)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.clusters import smallest_p
from ..analysis.findings import SIGN_FLIPS, Changes, effects_frame, pair_changes, select, units_of
from ..executing.base import Executor
from ..executing.jobs import Job
from ..features.sae import SparseAutoencoder
from ..models.rankers import Ranker
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult
from ..patching.runs import CleanRuns
from ..results.settings import Settings
from ..specs.axiom import Axiom
from .checkpoints import Checkpoints
from .chunks import both_directions


@dataclass
class AxiomRecord:
    """One axiom of an audit: its spec, pairs and scores, the example pairs, its provenance for the manifest and
    the seconds each step spent on it."""

    spec: Axiom
    pairs: PairSet
    scored: pd.DataFrame
    examples: list[int]
    provenance: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def qids(self) -> np.ndarray:
        """Each pair's query id: the unit of inference and of the stability splits."""
        return self.pairs.frame["qid"].astype(str).to_numpy()


@dataclass
class AuditContext:
    """The ranker under audit, its Settings, the checkpoints, the executor of patching chunks, this process's
    store of clean runs (None: nothing cached), and whether to show progress."""

    ranker: Ranker
    settings: Settings
    work: Checkpoints
    executor: Executor
    clean_runs: CleanRuns | None
    progress: bool
    saes: list[SparseAutoencoder] = field(default_factory=list)
    """The SAEs of Settings.saes, loaded and checked against the ranker: the features step patches their latents."""
    pair_changes: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Per flagged step, each pair's change per unit (see analysis.findings.pair_changes), for paired comparisons."""

    @contextmanager
    def timed(self, record: AxiomRecord, step: str) -> Iterator[None]:
        """Add the block's wall time to the record's seconds[step]: the manifest says where the time went."""
        started = time.perf_counter()
        try:
            yield
        finally:
            record.seconds[step] = round(record.seconds.get(step, 0.0) + time.perf_counter() - started, 1)

    def job(self, target: str, method: str, **parts: Any) -> Job:
        """A patching job of this audit's batch size and tolerance."""
        return Job(target, method, self.settings.batch_size, self.settings.tolerance, **parts)

    def both_directions(self, record: AxiomRecord, name: str, job: Job,
                        pairs: PairSet | None = None) -> tuple[Changes, PatchResult, PatchResult]:
        """Patch the record's pairs (or some of them) both ways in checkpointed chunks on the executor:
        (the symmetric change per component, the denoising run, the noising run)."""
        return both_directions(record.pairs if pairs is None else pairs, record.name, record.spec.expect, name, job,
                               self.work, self.executor, self.progress)

    def findings(self, step: str, records: list[AxiomRecord], changes: dict[str, Changes],
                 labels: list[dict[str, Any]] | dict[str, list[dict[str, Any]]],
                 rows: dict[str, list[int]] | None = None) -> pd.DataFrame:
        """The statistics frame of one step's units over every axiom (`rows[axiom]`: the pairs measured, default
        all), with stability-selected flags; keeps each pair's changes for paired comparisons, and records per
        axiom the queries behind it, the smallest p-value they allow and the bound on false flags."""
        settings = self.settings
        measured = {record.name: list(range(len(record.pairs))) if rows is None else rows[record.name]
                    for record in records if record.name in changes}
        queries = {record.name: record.qids[measured[record.name]] for record in records if record.name in changes}
        frame = effects_frame(changes, labels, queries, settings.threshold, settings.alpha, settings.seed, settings.unit)
        bounds = select(frame, changes, queries, settings.stability, settings.selection, settings.alpha,
                        settings.threshold, settings.seed, settings.unit)
        for record in records:
            if record.name not in changes:
                continue
            size = changes[record.name][1]
            units = units_of(queries[record.name], settings.unit)[~np.isnan(size)]
            inference = {"unit": settings.unit, "queries": int(len(np.unique(queries[record.name][~np.isnan(size)]))),
                         "smallest_p": smallest_p(len(np.unique(units)), SIGN_FLIPS)}
            if record.name in bounds:
                inference["selection"] = bounds[record.name]
                inference["smallest_p_half"] = smallest_p(len(np.unique(units)) // 2, SIGN_FLIPS // 5)
            record.provenance.setdefault("inference", {})[step] = inference
        self.pair_changes[step] = pair_changes(changes, labels, measured, queries)
        return frame

    def underpowered(self, records: list[AxiomRecord], steps: list) -> list[str]:
        """Before any patching: for each axiom and flagging step whose pairs (the moved ones of its sample) span too
        few units of inference for the sign-flip test, or for stability selection's halves, to reach alpha, why no
        unit of it can be flagged."""
        settings, found = self.settings, []
        plural = {"query": "queries", "pair": "pairs"}[settings.unit]
        for record in records:
            moved = np.abs(record.scored["delta"].to_numpy(dtype=float)) >= settings.tolerance
            for step in steps:
                if not step.flags:
                    continue
                rows = (self.sample_rows(len(record.pairs), getattr(settings, step.sample)) if step.sample
                        else list(range(len(record.pairs))))
                units = len(np.unique(units_of(record.qids[rows][moved[rows]], settings.unit)))
                smallest, half = smallest_p(units, SIGN_FLIPS), smallest_p(units // 2, SIGN_FLIPS // 5)
                if not units:
                    why = f"none of its pairs moved the score by the tolerance {settings.tolerance}"
                elif smallest > settings.alpha:
                    why = f"the sign-flip test over {units} {plural} cannot give p below {smallest:.2g}"
                elif settings.stability and half > settings.alpha:
                    why = f"stability selection's halves of {units // 2} {plural} cannot give p below {half:.2g}"
                else:
                    continue
                power = f" > alpha {settings.alpha}" if units else ""
                found.append(f"{record.name}: no {step.unit} can be flagged: {why}{power}; give more pairs "
                             f"(n{', ' + step.sample if step.sample else ''}) or data with more queries")
        return found

    def sample_rows(self, count: int, limit: int) -> list[int]:
        """`limit` of `count` pairs, drawn with the audit's seed (see sample_rows)."""
        return sample_rows(count, limit, self.settings.seed)


def sample_rows(count: int, limit: int, seed: int) -> list[int]:
    """A seeded random subset of `limit` of `count` pairs (in their order) for block cells or paths; all of them if
    there are fewer."""
    if count <= limit:
        return list(range(count))
    return sorted(np.random.default_rng(seed).permutation(count)[:limit].tolist())


def unit_labels(result: PatchResult, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """One label per component of a patching result, in the order of its flattened effects: each dimension's
    label (or index) and a name joining `columns` with dots ("3.2", "attn_out.4.span")."""
    dims, shape = result.dims[1:], result.effects.shape[1:]
    labels = []
    for index in np.ndindex(*shape):
        label: dict[str, Any] = {dim: result.labels[dim][i] if dim in result.labels else i for dim, i in zip(dims, index)}
        label["name"] = ".".join(str(label[column]) for column in columns)
        labels.append(label)
    return labels
