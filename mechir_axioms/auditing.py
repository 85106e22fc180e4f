"""`audit`: build pairs, score them, patch heads and blocks, and turn the effects into flagged findings.

An audit in a folder checkpoints every finished step under `work/` (see checkpoints.py), so an
interrupted audit continues with `resume=True` and gives results identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoints import Checkpoints, plain, write_json
from .data import SAMPLE_NAME, DataSource, load_data
from .files import write_atomically
from .findings import EXPECTED_SIGN, Changes, behaviour, effects_frame, replication, signed_effects, symmetric_change
from .hooks import caching_hooks
from .pairs import PairSet, make_pairs
from .patch_result import PatchResult
from .patching import BLOCK_COMPONENTS, METHODS, patch, plan, regions_of
from .rankers import Ranker
from .spec import DEFAULT_AXIOMS, Axiom, load_axiom

TARGETS = ("heads", "blocks")
CHUNK = 32
"""Pairs per checkpoint: an interrupted audit loses at most one chunk of patching."""
FRAMES = ("axioms", "heads", "cells", "blocks", "pairs")
RESULT_FILES = (*(f"{name}.parquet" for name in FRAMES), "attention.json", "manifest.json")


@dataclass(frozen=True)
class Settings:
    """Everything that decides an audit's numbers; a resumed audit must match them exactly."""

    axioms: tuple[str, ...]
    model: str
    data: str
    n: int
    seed: int
    targets: tuple[str, ...]
    method: str
    threshold: float
    alpha: float
    tolerance: float
    cell_pairs: int
    examples: int
    stability: int
    batch_size: int

    def describe(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass
class Audit:
    """The findings of one audit as tidy frames, plus provenance; `save` writes them and the report.

    axioms: one row per axiom (behaviour, verdict, flag counts); heads: one row per (axiom, layer, head);
    cells: one row per (axiom, component, layer, token region); blocks: per-position effects on the example
    pairs; pairs: every pair with its scores.
    """

    axioms: pd.DataFrame
    heads: pd.DataFrame
    cells: pd.DataFrame
    blocks: pd.DataFrame
    pairs: pd.DataFrame
    attention: dict[str, Any]
    manifest: dict[str, Any]
    folder: Path | None = None

    def save(self, folder: str | Path) -> Path:
        """Write the frames (Parquet), attention.json, manifest.json and report.html into `folder`."""
        from .report import render

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in FRAMES:
            frame: pd.DataFrame = getattr(self, name)
            write_atomically(folder / f"{name}.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
        write_json(folder / "attention.json", self.attention)
        write_atomically(folder / "report.html", lambda path: path.write_text(render(self), encoding="utf-8"))
        write_json(folder / "manifest.json", self.manifest)  # last: a folder with a manifest is a finished audit
        self.folder = folder
        return folder

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def flagged(self, axiom: str | None = None, frame: str = "heads") -> pd.DataFrame:
        """Flagged heads (or cells) of one axiom or all, strongest first."""
        rows = getattr(self, frame)
        rows = rows[rows["flag"] != ""]
        if axiom is not None:
            rows = rows[rows["axiom"] == axiom]
        return rows.reindex(rows["effect"].abs().sort_values(ascending=False).index)


def load_audit(folder: str | Path) -> Audit:
    """Read a saved audit back from its folder."""
    folder = Path(folder)
    missing = [name for name in RESULT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a finished audit: missing {', '.join(missing)}")
    return Audit(
        **{name: pd.read_parquet(folder / f"{name}.parquet") for name in FRAMES},
        attention=json.loads((folder / "attention.json").read_text()),
        manifest=json.loads((folder / "manifest.json").read_text()),
        folder=folder,
    )


# --- patching in checkpointed chunks ----------------------------------------------------------------
def _patch_in_chunks(ranker: Ranker, pairs: PairSet, axiom: str, target: str, method: str, direction: str,
                     settings: Settings, work: Checkpoints, progress: bool) -> PatchResult:
    """Patch `target` on every pair in one direction, CHUNK pairs at a time, each chunk checkpointed."""
    parts = []
    bar = tqdm(total=len(pairs), desc=f"{axiom} {target} {direction} ({method})", unit="pair", leave=False,
               disable=not progress)
    for start in range(0, len(pairs), CHUNK):
        rows = list(range(start, min(start + CHUNK, len(pairs))))
        parts.append(work.patched(axiom, f"{target}-{direction}/chunk-{start // CHUNK:04d}", lambda rows=rows: patch(
            ranker, pairs.take(rows), target, method, batch_size=settings.batch_size, direction=direction,
            delta=settings.tolerance, progress=False)))
        bar.update(len(rows))
    bar.close()
    first = parts[0]
    return PatchResult(
        first.target, first.method, np.concatenate([part.effects for part in parts]), first.dims,
        np.concatenate([part.receiver_score for part in parts]), np.concatenate([part.donor_score for part in parts]),
        sum(part.excluded for part in parts), first.delta, first.labels, {**first.provenance, "n_pairs": len(pairs)},
    )


def _both_directions(ranker: Ranker, pairs: PairSet, spec: Axiom, target: str, method: str, settings: Settings,
                     work: Checkpoints, progress: bool) -> tuple[tuple[np.ndarray, np.ndarray], PatchResult]:
    """The symmetric change of every component of `target` (perturbed into baseline and back), and the first run."""
    denoising, noising = (_patch_in_chunks(ranker, pairs, spec.name, target, method, direction, settings, work, progress)
                          for direction in ("to_baseline", "to_perturbed"))
    return symmetric_change(denoising, noising, spec.expect), denoising


def _cell_rows(count: int, cell_pairs: int, seed: int) -> list[int]:
    """A seeded random subset of the pairs (in their order) for block cells; all of them if there are fewer."""
    if count <= cell_pairs:
        return list(range(count))
    return sorted(np.random.default_rng(seed).permutation(count)[:cell_pairs].tolist())


def _labels_of_heads(ranker: Ranker) -> list[dict[str, Any]]:
    """One label per head, in the order patching lays out its effects."""
    return [{"layer": l, "head": h, "name": f"{l}.{h}"} for (l, h), _ in plan("heads", ranker.n_layers, ranker.n_heads, 0).variants]


def _labels_of_cells(ranker: Ranker) -> list[dict[str, Any]]:
    """One label per block cell, in the order patching lays out its effects."""
    regions = regions_of(ranker.kind)
    return [
        {"component": BLOCK_COMPONENTS[c], "layer": l, "region": regions[r], "name": f"{BLOCK_COMPONENTS[c]}.{l}.{regions[r]}"}
        for (c, l, r), _ in plan("regions", ranker.n_layers, ranker.n_heads, 0, regions=regions).variants
    ]


# --- examples: per-position blocks and attention patterns ----------------------------------------------
def _examples(scored: pd.DataFrame, lengths: torch.Tensor, axiom: Axiom, count: int, tolerance: float) -> list[int]:
    """Readable, typical example pairs: the shortest of those whose change in the axiom's direction is at least
    the median such change (for no_change axioms: the largest changes)."""
    change = scored["delta"].to_numpy(dtype=float)
    strength = np.abs(change) if axiom.expect == "no_change" else EXPECTED_SIGN[axiom.expect] * change
    moved = np.flatnonzero((np.abs(change) > tolerance) & (strength > 0))
    if not len(moved):
        return []
    strong = moved[strength[moved] >= np.median(strength[moved])]
    return sorted(strong.tolist(), key=lambda row: (int(lengths[row]), -strength[row], row))[:count]


def _tokens(ranker: Ranker, pairs: PairSet, row: int) -> tuple[list[str], list[str]]:
    length = int(pairs.tensors["length"][row])
    baseline, perturbed = (
        ranker.tokenizer.convert_ids_to_tokens(pairs.tensors[f"{which}_input_ids"][row, :length].tolist())
        for which in ("baseline", "perturbed")
    )
    return baseline, perturbed


def _blocks_frame(axiom: Axiom, result: PatchResult, rows: list[int], ranker: Ranker, pairs: PairSet) -> pd.DataFrame:
    effects = signed_effects(result, axiom.expect)
    frames = []
    for example, row in enumerate(rows):
        baseline, perturbed = _tokens(ranker, pairs, row)
        cells = effects[example]  # [component, layer, position]
        components, layers, _ = cells.shape
        for component in range(components):
            for layer in range(layers):
                frames.append(pd.DataFrame({
                    "axiom": axiom.name, "example": example, "pair": row,
                    "component": result.labels["component"][component], "layer": layer,
                    "position": np.arange(len(perturbed)), "token": perturbed, "baseline_token": baseline,
                    "effect": cells[component, layer, : len(perturbed)],
                }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _attention(ranker: Ranker, pairs: PairSet, row: int, heads: list[tuple[int, int]]) -> list[list[list[float]]]:
    """The perturbed input's attention pattern [query pos, key pos] of each (layer, head)."""
    names = sorted({f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads})
    cache: dict[str, torch.Tensor] = {}
    inputs = pairs.model_input("perturbed", [row])
    with torch.no_grad():
        if ranker.kind == "bi":
            ranker.forward(inputs, caching_hooks(names, cache), query_embeddings=ranker.embed(inputs.query_tokens))
        else:
            ranker.forward(inputs, caching_hooks(names, cache))
    length = int(pairs.tensors["length"][row])
    return [
        np.round(cache[f"blocks.{layer}.attn.hook_pattern"][0, head, :length, :length].float().numpy(), 4).tolist()
        for layer, head in heads
    ]


def _top_heads(heads: pd.DataFrame, axiom: str, count: int = 2) -> list[dict[str, Any]]:
    """The strongest flagged heads of an axiom, or the strongest heads when none is flagged."""
    rows = heads[heads["axiom"] == axiom]
    flagged = rows[rows["flag"] != ""]
    pool = flagged if len(flagged) else rows
    top = pool.reindex(pool["effect"].abs().sort_values(ascending=False).index).head(count)
    return [{key: plain(value) if isinstance(value, np.generic) else value for key, value in row.items()}
            for row in top[["layer", "head", "name", "effect", "flag", "q_value"]].to_dict("records")]


# --- the audit -------------------------------------------------------------------------------------
def _check(targets: Sequence[str], method: str, counts: dict[str, tuple[Any, int]], alpha: float, threshold: float,
           tolerance: float) -> None:
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(f"targets={list(targets)!r} is not valid; choose from {', '.join(TARGETS)}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; use one of {', '.join(METHODS)}")
    for name, (value, low) in counts.items():
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is not valid; use an integer of at least {low}")
    if not 0 < alpha < 1 or threshold < 0 or tolerance < 0:
        raise ValueError(f"alpha must be in (0, 1) and threshold, tolerance >= 0; got {alpha}, {threshold}, {tolerance}")


def audit(
    ranker: Ranker | str | None = None,
    axioms: Sequence[str | Axiom] = DEFAULT_AXIOMS,
    data: DataSource = None,
    n: int = 200,
    seed: int = 0,
    targets: Sequence[str] = TARGETS,
    method: str = "exact",
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    tolerance: float = 1e-3,
    cell_pairs: int = 48,
    examples: int = 2,
    stability: int = 0,
    batch_size: int = 8,
    folder: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Audit:
    """Audit `ranker` on `axioms`: pairs, scores, patching, statistics; saved to `folder` if given.

    targets: "heads" patches every head's output on every pair, in both directions, with `method`
    ("exact" or "attribution"). "blocks" patches the residual stream, attention and MLP outputs per layer
    and token region (the changed span, the rest of the changed text, the other text of a joint input,
    special tokens) on `cell_pairs` seeded random pairs per axiom, in both directions, always exactly
    (attribution misjudges the residual stream at the changed span); and per layer and position on the
    `examples` shortest strongly changed pairs, for the report's plot. A head or cell is flagged `encodes`
    (`violates`) when the share of the score change it carries is above `threshold` (below -threshold) at
    Benjamini-Hochberg FDR `alpha` across all heads (cells) of the audit. `tolerance` is the score change
    below which a pair counts as unchanged; such pairs are left out of patching. `stability=R` adds each
    flag's replication rate over R random query-disjoint half splits. With `folder`, every finished step
    is checkpointed; `resume=True` continues an interrupted audit.
    """
    from .loading import load_ranker

    _check(targets, method, {"n": (n, 1), "cell_pairs": (cell_pairs, 2), "examples": (examples, 0),
                             "stability": (stability, 0), "batch_size": (batch_size, 1)}, alpha, threshold, tolerance)
    specs = [axiom if isinstance(axiom, Axiom) else load_axiom(axiom) for axiom in axioms]
    if not specs:
        raise ValueError("axioms is empty; name at least one axiom (see `mechir-axioms list`)")
    _, source = load_data(data)  # bad data fails here, before the model loads
    if not isinstance(ranker, Ranker):
        ranker = load_ranker(ranker)
    settings = Settings(
        tuple(spec.name for spec in specs), ranker.name, source, n, seed, tuple(targets), method,
        threshold, alpha, tolerance, cell_pairs, examples, stability, batch_size,
    )
    folder = Path(folder) if folder is not None else None
    work = Checkpoints(folder, settings.describe(), resume)
    started = time.perf_counter()
    rows_of_behaviour, pair_frames, provenance, example_rows, pair_sets = [], [], {}, {}, {}
    head_changes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cell_changes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    head_qids: dict[str, np.ndarray] = {}
    cell_qids: dict[str, np.ndarray] = {}
    blocks = []
    for spec in tqdm(specs, desc="audit", unit="axiom", disable=not progress):
        pairs = work.pairs(spec.name, lambda spec=spec: make_pairs(spec, data, ranker, n=n, seed=seed))
        pair_sets[spec.name] = pairs
        scored = work.scores(spec.name, lambda pairs=pairs: pairs.score(ranker))
        rows_of_behaviour.append(behaviour(spec, scored["delta"].to_numpy(), tolerance, seed))
        pair_frames.append(scored.assign(axiom=spec.name, pair=np.arange(len(scored))))
        provenance[spec.name] = {**pairs.provenance, "data": source}
        qids = pairs.frame["qid"].astype(str).to_numpy()
        if "heads" in targets:
            head_changes[spec.name], run = _both_directions(ranker, pairs, spec, "heads", method, settings, work, progress)
            head_qids[spec.name] = qids
            provenance[spec.name]["excluded"] = {"patching": run.excluded, "delta": tolerance}
        example_rows[spec.name] = _examples(scored, pairs.tensors["length"], spec, examples, tolerance)
        if "blocks" in targets:
            rows = _cell_rows(len(pairs), cell_pairs, seed)
            cell_changes[spec.name], run = _both_directions(
                ranker, pairs.take(rows), spec, "regions", "exact", settings, work, progress)
            cell_qids[spec.name] = qids[rows]
            provenance[spec.name]["cells"] = {"pairs": len(rows), "excluded": run.excluded, "delta": tolerance}
            if example_rows[spec.name]:
                result = work.patched(spec.name, "blocks", lambda pairs=pairs, rows=example_rows[spec.name]: patch(
                    ranker, pairs.take(rows), "blocks", "exact", batch_size=batch_size, direction="to_baseline",
                    delta=tolerance, progress=progress))
                blocks.append(_blocks_frame(spec, result, example_rows[spec.name], ranker, pairs))
    heads = _findings(head_changes, _labels_of_heads(ranker), head_qids, settings)
    cells = _findings(cell_changes, _labels_of_cells(ranker), cell_qids, settings)
    axioms_frame = pd.DataFrame(rows_of_behaviour)
    for frame, prefix in ((heads, ""), (cells, "cells_")):
        counts = frame.groupby(["axiom", "flag"]).size() if len(frame) else pd.Series(dtype=int)
        for flag in ("encodes", "violates"):
            axioms_frame[prefix + flag] = [int(counts.get((name, flag), 0)) for name in axioms_frame["axiom"]]
    attention = {}
    for spec in specs:
        rows = example_rows[spec.name]
        if not rows or heads.empty:
            continue
        top = _top_heads(heads, spec.name)
        pairs = pair_sets[spec.name]
        baseline, perturbed = _tokens(ranker, pairs, rows[0])
        patterns = _attention(ranker, pairs, rows[0], [(h["layer"], h["head"]) for h in top])
        attention[spec.name] = {"pair": rows[0], "tokens": perturbed, "baseline_tokens": baseline,
                                "heads": [{**h, "pattern": p} for h, p in zip(top, patterns)]}
    manifest = {
        "package": "mechir-axioms",
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": settings.describe(),
        "model": {"name": ranker.name, "kind": ranker.kind, "layers": ranker.n_layers, "heads": ranker.n_heads},
        "axioms": provenance,
        "examples": example_rows,
        "command": _command(settings),
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
    }
    result = Audit(axioms_frame, heads, cells, pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(),
                   pd.concat(pair_frames, ignore_index=True), attention, manifest)
    if folder is not None:
        result.save(folder)
    return result


def _findings(changes: Changes, labels: list[dict[str, Any]], qids: dict[str, np.ndarray], settings: Settings) -> pd.DataFrame:
    """The statistics frame of one kind of component, with replication rates when asked for."""
    frame = effects_frame(changes, labels, settings.threshold, settings.alpha, settings.seed)
    replication(frame, changes, qids, settings.stability, settings.alpha, settings.threshold, settings.seed)
    return frame


def _command(settings: Settings) -> str:
    """The CLI command that repeats this audit (the model and data options only when not the defaults)."""
    from .loading import DEFAULT_MODEL

    model = "" if settings.model == DEFAULT_MODEL else f"--model '{settings.model}' "
    data = "" if settings.data == SAMPLE_NAME else f"--data '{settings.data}' "
    return (
        f"mechir-axioms audit {model}{data}--axioms {','.join(settings.axioms)} "
        f"--n {settings.n} --seed {settings.seed} --targets {','.join(settings.targets)} --method {settings.method} "
        f"--threshold {settings.threshold} --alpha {settings.alpha} --tolerance {settings.tolerance} "
        f"--cell-pairs {settings.cell_pairs} --examples {settings.examples} --stability {settings.stability} "
        f"--batch-size {settings.batch_size}"
    )
