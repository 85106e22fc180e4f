"""`audit`: build pairs, score them, patch heads and blocks, and turn the effects into flagged findings.

An audit in a folder checkpoints every finished step under `work/` (see checkpoints.py), so an
interrupted audit continues with `resume=True` and gives results identical to an uninterrupted one.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..analysis.findings import Changes, behaviour, effects_frame, equivalence_margin, replication
from ..core.outputs import OutputFolder
from ..executing.base import Executor
from ..executing.jobs import Job
from ..executing.registry import running
from ..models.loading import load_ranker
from ..models.rankers import Ranker
from ..pairs.compile import check_selection, make_pairs, unjudged_note
from ..pairs.data import DataSource, data_hash, load_data
from ..patching.api import patch
from ..patching.plan import BLOCK_COMPONENTS, plan
from ..patching.runs import sharing_clean_runs
from ..specs.axiom import Axiom, load_axiom
from .checkpoints import RESUME_ADVICE, Checkpoints
from .chunks import both_directions
from .circuits import path_changes
from .examples import attention_patterns, blocks_frame, example_rows, pair_tokens, top_heads
from .result import Audit
from .settings import Settings
from .verified import verified_heads

DEFAULTS = Settings()


def _cell_rows(count: int, cell_pairs: int, seed: int) -> list[int]:
    """A seeded random subset of the pairs (in their order) for block cells or paths; all of them if there are
    fewer."""
    if count <= cell_pairs:
        return list(range(count))
    return sorted(np.random.default_rng(seed).permutation(count)[:cell_pairs].tolist())


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Add the block's wall time to seconds[step]: the manifest says where an audit's time went."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - started, 1)


def _labels_of_heads(ranker: Ranker) -> list[dict[str, Any]]:
    """One label per head, in the order patching lays out its effects."""
    return [{"layer": l, "head": h, "name": f"{l}.{h}"} for (l, h), _ in plan("heads", ranker.n_layers, ranker.n_heads, 0).variants]


def _labels_of_cells(ranker: Ranker) -> list[dict[str, Any]]:
    """One label per block cell, in the order patching lays out its effects."""
    regions = ranker.regions
    return [
        {"component": BLOCK_COMPONENTS[c], "layer": l, "region": regions[r], "name": f"{BLOCK_COMPONENTS[c]}.{l}.{regions[r]}"}
        for (c, l, r), _ in plan("regions", ranker.n_layers, ranker.n_heads, 0, regions=regions).variants
    ]


def audit(
    ranker: Ranker | str | None = None,
    axioms: Sequence[str | Axiom] = DEFAULTS.axioms,
    data: DataSource = None,
    n: int = DEFAULTS.n,
    seed: int = DEFAULTS.seed,
    targets: Sequence[str] = DEFAULTS.targets,
    method: str = DEFAULTS.method,
    *,
    verify: int = DEFAULTS.verify,
    margin: float = DEFAULTS.margin,
    threshold: float = DEFAULTS.threshold,
    alpha: float = DEFAULTS.alpha,
    tolerance: float = DEFAULTS.tolerance,
    equivalence: float = DEFAULTS.equivalence,
    cell_pairs: int = DEFAULTS.cell_pairs,
    path_pairs: int = DEFAULTS.path_pairs,
    examples: int = DEFAULTS.examples,
    stability: int = DEFAULTS.stability,
    batch_size: int = DEFAULTS.batch_size,
    folder: str | Path | OutputFolder | None = None,
    resume: bool = False,
    progress: bool = True,
    executor: str | Executor = "local",
) -> Audit:
    """Audit `ranker` on `axioms`: pairs, scores, patching, statistics; saved to `folder` if given.

    targets: "heads" patches every head's output on every pair, in both directions, with `method` ("exact",
    "attribution", "atp*", or "verified": AtP* screens every head and the heads whose screen comes within
    `margin` of the threshold, at most `verify` per axiom, are patched exactly; only those can be flagged).
    "blocks" patches the residual stream, attention and MLP outputs per layer
    and token region (the changed span, the rest of the changed text, the other text of a joint input,
    special tokens) on `cell_pairs` seeded random pairs per axiom, in both directions, always exactly
    (attribution misjudges the residual stream at the changed span); and per layer and position on the
    `examples` shortest strongly changed pairs, for the report's plot. "paths" (with heads) path-patches every
    head into each head flagged for the axiom and into the final residual stream (the score), on `path_pairs`
    seeded random pairs, in both directions; each edge gets the statistics and flag of a head. A head, cell or
    edge is flagged `encodes` (`violates`) when the share of the score change it carries is above `threshold` (below -threshold) at
    Benjamini-Hochberg FDR `alpha` across all heads (cells) of the audit. `tolerance` is the score change
    below which a pair counts as unchanged; such pairs are left out of patching; `equivalence` sets the TOST
    margin of no_change axioms (a fraction of the scores' standard deviation). `stability=R` adds each
    flag's replication rate over R random query-disjoint half splits. With `folder`, every finished step
    is checkpointed; `resume=True` continues an interrupted audit. The folder holds nothing but the audit:
    one that holds files the tool did not write is refused (see core.outputs). `executor` runs the patching chunks: "local"
    (this process), "ray" (a local Ray cluster, or the one `ray.init` joined), or an Executor such as
    RayExecutor(address, workers); the results are the same whichever runs them.
    """
    names = tuple(axiom.name if isinstance(axiom, Axiom) else str(axiom) for axiom in axioms)
    settings = Settings(names, None, None, n, seed, tuple(targets), method, verify, margin, threshold, alpha,
                        tolerance, equivalence, cell_pairs, path_pairs, examples, stability, batch_size)  # fails first
    specs = [axiom if isinstance(axiom, Axiom) else load_axiom(axiom) for axiom in axioms]
    if folder is not None and not isinstance(folder, OutputFolder):
        audit_folder(folder, resume).check()  # a folder that cannot be written fails here, before any work
    frame, source = load_data(data)  # bad data fails here, before the model loads
    for spec in specs:
        check_selection(spec, frame, source)
    if not isinstance(ranker, Ranker):
        ranker = load_ranker(ranker)
    settings = replace(settings, axioms=tuple(spec.name for spec in specs), model=ranker.name, data=source)
    fingerprint = ranker.fingerprint()
    identity = {"model": fingerprint, "data_hash": data_hash(frame), "spec_hashes": {spec.name: spec.spec_hash for spec in specs}}
    with (_output(folder, resume) as out, running(executor) as runner, sharing_clean_runs(),
          Checkpoints(out, settings.describe(), identity) as work):
        runner.bind(ranker)
        result = _run(ranker, specs, data, source, settings, work, runner, identity, progress)
        result.manifest.update(unjudged_note(frame))  # nothing for judged data
        if out is not None:
            result.save(out)
    return result


def audit_folder(folder: str | Path, resume: bool = False) -> OutputFolder:
    """The output folder of an audit (not yet claimed): continued with `resume`, else refused if it holds one."""
    return OutputFolder(folder, "audit", "continue" if resume else "refuse", advice=RESUME_ADVICE)


@contextmanager
def _output(folder: str | Path | OutputFolder | None, resume: bool) -> Iterator[OutputFolder | None]:
    """The audit's claimed output folder (None: kept in memory); a part of a bigger output is entered as given."""
    if folder is None:
        yield None
        return
    with folder if isinstance(folder, OutputFolder) else audit_folder(folder, resume) as out:
        yield out


def _run(ranker: Ranker, specs: list[Axiom], data: DataSource, source: str, settings: Settings, work: Checkpoints,
         executor: Executor, identity: dict[str, Any], progress: bool) -> Audit:
    """The audit's steps: pairs, scores, patching and findings per axiom, then the examples and the manifest."""
    n, seed, targets, method, tolerance = settings.n, settings.seed, settings.targets, settings.method, settings.tolerance
    examples, cell_pairs, batch_size = settings.examples, settings.cell_pairs, settings.batch_size
    started = time.perf_counter()
    rows_of_behaviour, pair_frames, provenance, examples_of, pair_sets = [], [], {}, {}, {}
    head_changes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cell_changes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    head_qids: dict[str, np.ndarray] = {}
    cell_qids: dict[str, np.ndarray] = {}
    path_rows: dict[str, list[int]] = {}
    step_seconds: dict[str, dict[str, float]] = {}
    blocks = []
    for spec in tqdm(specs, desc="audit", unit="axiom", disable=not progress):
        seconds = step_seconds.setdefault(spec.name, {})
        with _timed(seconds, "pairs"):
            pairs = work.pairs(spec.name, lambda spec=spec: make_pairs(spec, data, ranker, n=n, seed=seed))
        pair_sets[spec.name] = pairs
        with _timed(seconds, "scores"):
            scored = work.scores(spec.name, lambda pairs=pairs: pairs.score(ranker))
        scores = np.concatenate([scored["baseline_score"].to_numpy(), scored["perturbed_score"].to_numpy()])
        rows_of_behaviour.append(behaviour(spec, scored["delta"].to_numpy(), tolerance, seed,
                                           equivalence_margin(scores, settings.equivalence)))
        pair_frames.append(scored.assign(axiom=spec.name, pair=np.arange(len(scored))))
        provenance[spec.name] = {**pairs.provenance, "data": source}
        qids = pairs.frame["qid"].astype(str).to_numpy()
        if "heads" in targets:
            if method == "verified":
                head_changes[spec.name], run, verification = verified_heads(pairs, spec, settings, work, executor,
                                                                            progress)
                provenance[spec.name]["verification"] = verification
                seconds.update({f"heads {step}": value for step, value in verification.pop("seconds").items()})
            else:
                with _timed(seconds, "heads"):
                    job = Job("heads", method, batch_size, tolerance)
                    head_changes[spec.name], run, _ = both_directions(pairs, spec.name, spec.expect, "heads", job,
                                                                      work, executor, progress)
            head_qids[spec.name] = qids
            provenance[spec.name]["excluded"] = {"patching": run.excluded, "delta": tolerance}
        examples_of[spec.name] = example_rows(scored, pairs.tensors["length"], spec, examples, tolerance)
        path_rows[spec.name] = _cell_rows(len(pairs), settings.path_pairs, seed)
        if "blocks" in targets:
            rows = _cell_rows(len(pairs), cell_pairs, seed)
            with _timed(seconds, "cells"):
                cell_changes[spec.name], run, _ = both_directions(
                    pairs.take(rows), spec.name, spec.expect, "regions", Job("regions", "exact", batch_size, tolerance),
                    work, executor, progress)
            cell_qids[spec.name] = qids[rows]
            provenance[spec.name]["cells"] = {"pairs": len(rows), "excluded": run.excluded, "delta": tolerance}
            if examples_of[spec.name]:
                with _timed(seconds, "blocks"):
                    result = work.patched(spec.name, "blocks", lambda pairs=pairs, rows=examples_of[spec.name]: patch(
                        ranker, pairs.take(rows), "blocks", "exact", batch_size=batch_size, direction="to_baseline",
                        delta=tolerance, progress=progress))
                blocks.append(blocks_frame(spec, result, examples_of[spec.name], ranker, pairs))
    heads = _findings(head_changes, _labels_of_heads(ranker), head_qids, settings)
    _mark_measured(heads, provenance, method)
    cells = _findings(cell_changes, _labels_of_cells(ranker), cell_qids, settings)
    paths = pd.DataFrame()
    if "paths" in targets:
        changes, labels, facts = path_changes(pair_sets, specs, heads, path_rows, ranker.n_layers, ranker.n_heads,
                                              settings, work, executor, progress)
        paths = _findings(changes, labels, {name: head_qids[name][path_rows[name]] for name in changes}, settings)
        for name, fact in facts.items():
            step_seconds[name]["paths"] = fact.pop("seconds")
            provenance[name]["paths"] = fact
    axioms_frame = pd.DataFrame(rows_of_behaviour)
    for frame, prefix in ((heads, ""), (cells, "cells_")):
        counts = frame.groupby(["axiom", "flag"]).size() if len(frame) else pd.Series(dtype=int)
        for flag in ("encodes", "violates"):
            axioms_frame[prefix + flag] = [int(counts.get((name, flag), 0)) for name in axioms_frame["axiom"]]
    attention = {}
    for spec in specs:
        rows = examples_of[spec.name]
        if not rows or heads.empty:
            continue
        top = top_heads(heads, spec.name)
        pairs = pair_sets[spec.name]
        baseline, perturbed = pair_tokens(ranker, pairs, rows[0])
        patterns = attention_patterns(ranker, pairs, rows[0], [(h["layer"], h["head"]) for h in top])
        attention[spec.name] = {"pair": rows[0], "tokens": perturbed, "baseline_tokens": baseline,
                                "heads": [{**h, "pattern": p} for h, p in zip(top, patterns)]}
    manifest = {
        "package": "mechir-axioms",
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
        "step_seconds": step_seconds,
        "settings": settings.describe(),
        "model": {"name": ranker.name, "kind": ranker.kind, "layers": ranker.n_layers, "heads": ranker.n_heads,
                  "device": str(ranker.device), "dtype": str(ranker.dtype).removeprefix("torch."),
                  "config_hash": identity["model"]["config_hash"], "weights_digest": identity["model"]["weights_digest"]},
        "data_hash": identity["data_hash"],
        "axioms": provenance,
        "examples": examples_of,
        "command": settings.command(),
        "executor": executor.describe(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
    }
    return Audit(axioms_frame, heads, cells, pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(),
                 pd.concat(pair_frames, ignore_index=True), attention, manifest, paths=paths)


def _mark_measured(heads: pd.DataFrame, provenance: dict[str, Any], method: str) -> None:
    """Say how each head's effect was measured; a head that only the screen measured carries no flag."""
    if heads.empty:
        heads["measured"] = pd.Series(dtype=str)
        return
    measured = np.full(len(heads), "exact" if method == "verified" else method, dtype=object)
    for axiom, facts in provenance.items():
        if "verification" in facts:
            rows = (heads["axiom"] == axiom).to_numpy()
            exact = np.asarray(facts["verification"]["measured"], dtype=bool).reshape(-1)
            measured[rows] = np.where(exact, "exact", "screened")
    heads["measured"] = measured
    heads.loc[heads["measured"] == "screened", "flag"] = ""


def _findings(changes: Changes, labels: list[dict[str, Any]] | dict[str, list[dict[str, Any]]], qids: dict[str, np.ndarray],
              settings: Settings) -> pd.DataFrame:
    """The statistics frame of one kind of component, with replication rates when asked for."""
    frame = effects_frame(changes, labels, settings.threshold, settings.alpha, settings.seed)
    replication(frame, changes, qids, settings.stability, settings.alpha, settings.threshold, settings.seed)
    return frame
