"""`audit`: build and score each axiom's pairs, run the registered audit steps, and gather their frames, the
axioms' behaviour and the provenance into an `Audit`.

An audit in a folder checkpoints every finished chunk under `work/` (see checkpoints.py), so an interrupted
audit continues with `resume=True` and gives results identical to an uninterrupted one.
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import __version__
from .. import report  # noqa: F401  (registers the report's pages, which Audit.save writes)
from ..analysis.findings import behaviour, equivalence_margin, units_of
from ..core.errors import SettingsError
from ..core.outputs import OutputFolder
from ..executing.base import Executor
from ..executing.registry import running
from ..features.files import load_sae
from ..features.splice import check_saes, sae_digest
from ..models.loading import load_ranker
from ..models.rankers import Ranker
from ..pairs.compile import check_selection, make_pairs, unjudged_note
from ..passages.loading import DataSource, data_hash, load_data
from ..patching.methods import method_for
from ..results.audit import Audit
from ..results.settings import Settings
from ..results.steps import STEPS, check_steps, in_order
from ..specs.axiom import Axiom, load_axiom
from . import steps as _steps  # noqa: F401  (registers the built-in steps)
from .checkpoints import RESUME_ADVICE, Checkpoints
from .context import AuditContext, AxiomRecord
from .examples import attention_patterns, example_rows, pair_tokens, top_heads


def check_settings(settings: Settings) -> Settings:
    """Refuse, before any work, steps that are not registered or lack what they need, and a method that cannot
    measure a step's target (naming the methods that can)."""
    check_steps(settings.steps)
    if settings.saes and "features" not in settings.steps:
        raise SettingsError(f"saes={list(settings.saes)!r} is given but steps={list(settings.steps)!r} lacks features; "
                            f"add it (--steps {','.join((*settings.steps, 'features'))})")
    for step in in_order(settings.steps):
        if step.method is None:
            method_for(settings.method, step.target)
    return settings


def audit(
    ranker: Ranker | str | None = None,
    axioms: str | Axiom | Sequence[str | Axiom] | None = None,
    data: DataSource = None,
    settings: Settings | None = None,
    *,
    folder: str | Path | OutputFolder | None = None,
    resume: bool = False,
    progress: bool = True,
    executor: str | Executor = "local",
    **overrides: Any,
) -> Audit:
    """Audit `ranker` on `axioms` (default: the settings' axioms) over `data`: pairs, scores, then each of the
    settings' steps (results.steps: heads, cells, blocks, paths, or a registered one); saved to `folder` if given.

    `settings` (default: Settings()) with `overrides` of its fields decide every number; see Settings for each
    field, and docs/guide/audits.md for what each step measures and how a unit is flagged. With `folder`, every
    finished chunk is checkpointed; `resume=True` continues an interrupted audit. The folder holds nothing but the
    audit: one that holds files the tool did not write is refused (see core.outputs). `executor` runs the patching
    chunks: "local" (this process), "ray" (a local Ray cluster, or the one `ray.init` joined), or an Executor such
    as RayExecutor(address, workers); the results are the same whichever runs them.
    """
    settings = (settings or Settings()).but(**overrides)
    if axioms is None:
        axioms = settings.axioms
    elif isinstance(axioms, (str, Axiom)):  # one axiom, not the letters of its name
        axioms = [axioms]
    names = tuple(axiom.name if isinstance(axiom, Axiom) else str(axiom) for axiom in axioms)
    settings = check_settings(settings.but(axioms=names))  # fails first
    specs = [axiom if isinstance(axiom, Axiom) else load_axiom(axiom) for axiom in axioms]
    if folder is not None and not isinstance(folder, OutputFolder):
        audit_folder(folder, resume).check()  # a folder that cannot be written fails here, before any work
    frame, source = load_data(data)  # bad data fails here, before the model loads
    for spec in specs:
        check_selection(spec, frame, source)
    saes = [load_sae(path) for path in settings.saes]  # and bad SAE files
    if not isinstance(ranker, Ranker):
        ranker = load_ranker(ranker)
    check_saes(ranker, saes)
    settings = settings.but(axioms=tuple(spec.name for spec in specs), model=ranker.name, data=source)
    identity = {"model": ranker.fingerprint(), "data_hash": data_hash(frame),
                "spec_hashes": {spec.name: spec.spec_hash for spec in specs},
                **({"saes": {sae.hook_name: sae_digest(sae) for sae in saes}} if saes else {})}
    with (_output(folder, resume) as out, running(executor) as runner,
          Checkpoints(out, settings.deciding(), identity) as work):
        runner.bind(ranker, settings.cache_mib * 2**20)  # every worker process keeps a store of that size
        context = AuditContext(ranker, settings, work, runner, runner.clean_runs, progress, saes=saes)
        result = _run(context, specs, data, source, identity)
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


def _record(context: AuditContext, spec: Axiom, data: DataSource, source: str) -> tuple[AxiomRecord, dict[str, Any]]:
    """One axiom's pairs and scores (checkpointed), its example pairs and provenance, and its behaviour row."""
    settings, work, ranker = context.settings, context.work, context.ranker
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    pairs = work.pairs(spec.name, lambda: make_pairs(spec, data, ranker, n=settings.n, seed=settings.seed))
    seconds["pairs"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    scored = work.scores(spec.name, lambda: pairs.score(ranker))
    seconds["scores"] = round(time.perf_counter() - started, 1)
    scores = np.concatenate([scored["baseline_score"].to_numpy(), scored["perturbed_score"].to_numpy()])
    queries = pairs.frame["qid"].astype(str).to_numpy()
    row = behaviour(spec, scored["delta"].to_numpy(), settings.tolerance, settings.seed,
                    equivalence_margin(scores, settings.equivalence), units_of(queries, settings.unit))
    row["queries"] = len(set(queries))
    examples = example_rows(scored, pairs.tensors["length"], spec, settings.examples, settings.tolerance)
    return AxiomRecord(spec, pairs, scored, examples, {**pairs.provenance, "data": source}, seconds), row


def _run(context: AuditContext, specs: list[Axiom], data: DataSource, source: str,
         identity: dict[str, Any]) -> Audit:
    """Pairs and scores per axiom, each step over every axiom, then the flag counts, examples and manifest."""
    started = time.perf_counter()
    settings, ranker = context.settings, context.ranker
    records, rows = [], []
    for spec in tqdm(specs, desc="pairs", unit="axiom", disable=not context.progress):
        record, row = _record(context, spec, data, source)
        records.append(record)
        rows.append(row)
    for line in context.underpowered(records, in_order(settings.steps)):
        warnings.warn(line, stacklevel=3)
    frames: dict[str, pd.DataFrame] = {}
    for step in tqdm(in_order(settings.steps), desc="audit", unit="step", disable=not context.progress):
        frames[step.name] = step.run(context, records, frames)
    axioms_frame = pd.DataFrame(rows)
    for step in STEPS.values():  # every counted step's columns, zeros when it did not run
        if step.counts is None:
            continue
        frame = frames.get(step.name, pd.DataFrame())
        counts = frame.groupby(["axiom", "flag"]).size() if len(frame) else pd.Series(dtype=int)
        for flag in ("encodes", "violates"):
            axioms_frame[step.counts + flag] = [int(counts.get((name, flag), 0)) for name in axioms_frame["axiom"]]
    manifest = {
        "package": "mechir-axioms",
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
        **({"runs": context.work.runs, "seconds_all_runs": round(context.work.seconds_all_runs(), 1)}
           if context.work.runs > 1 else {}),
        "step_seconds": {record.name: record.seconds for record in records},
        "settings": settings.describe(),
        "model": {"name": ranker.name, "kind": ranker.kind, "layers": ranker.n_layers, "heads": ranker.n_heads,
                  "device": str(ranker.device), "dtype": str(ranker.dtype).removeprefix("torch."),
                  "config_hash": identity["model"]["config_hash"], "weights_digest": identity["model"]["weights_digest"]},
        "data_hash": identity["data_hash"],
        "axioms": {record.name: record.provenance for record in records},
        "examples": {record.name: record.examples for record in records},
        "command": settings.command(),
        "executor": context.executor.describe(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
    }
    return Audit(axioms_frame, pd.concat([record.scored.assign(axiom=record.name, pair=np.arange(len(record.scored)))
                                          for record in records], ignore_index=True),
                 frames, _attention(context, records, frames.get("heads", pd.DataFrame())), manifest,
                 pair_changes=dict(context.pair_changes))


def _attention(context: AuditContext, records: list[AxiomRecord], heads: pd.DataFrame) -> dict[str, Any]:
    """Per axiom with example pairs, the attention patterns of its strongest heads on the first example."""
    attention = {}
    for record in records:
        if not record.examples or heads.empty:
            continue
        top = top_heads(heads, record.name)
        row = record.examples[0]
        baseline, perturbed = pair_tokens(context.ranker, record.pairs, row)
        patterns = attention_patterns(context.ranker, record.pairs, row, [(h["layer"], h["head"]) for h in top])
        attention[record.name] = {"pair": row, "tokens": perturbed, "baseline_tokens": baseline,
                                  "heads": [{**h, "pattern": p} for h, p in zip(top, patterns)]}
    return attention
