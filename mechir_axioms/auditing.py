"""`audit`: build pairs, score them, patch heads and blocks, and turn the effects into flagged findings.

An audit in a folder checkpoints every finished chunk of work under `work/` (atomically), so an
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
from .data import SAMPLE_NAME, DataSource, load_data
from .files import write_atomically
from .hooks import caching_hooks
from .pairs import PairSet, make_pairs
from .patch_result import PatchResult
from .patching import METHODS, patch
from .rankers import Ranker
from .spec import Axiom, load_axiom
from .stats import benjamini_hochberg, bootstrap_ci, bootstrap_ratio_ci, signed_rank_p, threshold_test, wilson

DEFAULT_AXIOMS = ("TFC1", "TDC", "LNC1", "STMC1", "NULL")
TARGETS = ("heads", "blocks")
CHUNK = 32
"""Pairs per checkpoint: an interrupted audit loses at most one chunk of patching."""
SIGN_FLIPS = 100_000
"""Sign-flip resamples per head test: p-values reach 1e-5, small enough for BH over hundreds of heads."""
EXPECTED_SIGN = {"increase": 1, "not_decrease": 1, "no_change": 1, "decrease": -1, "not_increase": -1}
HEAD_COLUMNS = ["axiom", "layer", "head", "effect", "ci_low", "ci_high", "p_value", "q_value", "flag"]
RESULT_FILES = ("axioms.parquet", "heads.parquet", "blocks.parquet", "pairs.parquet", "attention.json", "manifest.json")


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
    examples: int
    stability: int
    batch_size: int

    def describe(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass
class Audit:
    """The findings of one audit as tidy frames, plus provenance; `save` writes them and the report."""

    axioms: pd.DataFrame
    heads: pd.DataFrame
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
        for name in ("axioms", "heads", "blocks", "pairs"):
            frame: pd.DataFrame = getattr(self, name)
            write_atomically(folder / f"{name}.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
        _write_json(folder / "attention.json", self.attention)
        _write_json(folder / "manifest.json", self.manifest)
        write_atomically(folder / "report.html", lambda path: path.write_text(render(self), encoding="utf-8"))
        self.folder = folder
        return folder

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def flagged(self, axiom: str | None = None) -> pd.DataFrame:
        """Flagged heads (of one axiom), strongest first."""
        heads = self.heads[self.heads["flag"] != ""]
        if axiom is not None:
            heads = heads[heads["axiom"] == axiom]
        return heads.reindex(heads["effect"].abs().sort_values(ascending=False).index)


def load_audit(folder: str | Path) -> Audit:
    """Read a saved audit back from its folder."""
    folder = Path(folder)
    missing = [name for name in RESULT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a finished audit: missing {', '.join(missing)}")
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("axioms", "heads", "blocks", "pairs")}
    return Audit(
        **frames,
        attention=json.loads((folder / "attention.json").read_text()),
        manifest=json.loads((folder / "manifest.json").read_text()),
        folder=folder,
    )


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(value, indent=2, default=_plain)))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --- checkpoints -----------------------------------------------------------------------------------
class _Work:
    """The checkpoint folder of one audit (or nothing, for an audit kept in memory)."""

    def __init__(self, folder: Path | None, settings: Settings, resume: bool):
        self.root = folder / "work" if folder else None
        if self.root is None:
            return
        stored = self.root / "settings.json"
        if resume and stored.is_file():
            before = json.loads(stored.read_text())
            now = settings.describe()
            changed = [f"{key} was {before.get(key)!r}, now {now[key]!r}" for key in now if before.get(key) != now[key]]
            if changed:
                raise ValueError(f"cannot resume the audit in {folder}: its settings differ ({'; '.join(changed)})")
            return
        if not resume and (self.root.exists() or (folder / "manifest.json").exists()):
            raise FileExistsError(
                f"{folder} already holds an audit; pass --resume (resume=True) to continue it, or choose another folder"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(stored, settings.describe())

    def pairs(self, axiom: str, build) -> PairSet:
        if self.root is None:
            return build()
        folder = self.root / axiom / "pairs"
        if (folder / "provenance.json").is_file():
            return PairSet.load(folder)
        pairs = build()
        pairs.save(folder)
        return pairs

    def scores(self, axiom: str, compute) -> pd.DataFrame:
        if self.root is None:
            return compute()
        path = self.root / axiom / "scores.parquet"
        if path.is_file():
            return pd.read_parquet(path)
        scored = compute()
        write_atomically(path, lambda temporary: scored.to_parquet(temporary, index=False))
        return scored

    def patched(self, axiom: str, name: str, compute) -> PatchResult:
        if self.root is None:
            return compute()
        folder = self.root / axiom / name
        if (folder / "result.json").is_file():
            return PatchResult.load(folder)
        result = compute()
        result.save(folder)  # effects.npz first, result.json last: a chunk counts only when both are there
        return result


# --- statistics ------------------------------------------------------------------------------------
def _agrees(delta: np.ndarray, expect: str, tolerance: float) -> np.ndarray:
    """Per pair: did the score move as the axiom expects, beyond `tolerance`?"""
    return {
        "increase": delta > tolerance,
        "decrease": delta < -tolerance,
        "no_change": np.abs(delta) <= tolerance,
        "not_increase": delta <= tolerance,
        "not_decrease": delta >= -tolerance,
    }[expect]


def _behaviour(axiom: Axiom, scored: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    """Agreement with its Wilson CI, mean and median change with bootstrap CIs, Wilcoxon p, verdict."""
    delta = scored["delta"].to_numpy(dtype=float)
    agrees = _agrees(delta, axiom.expect, settings.tolerance)
    low, high = wilson(int(agrees.sum()), len(agrees))
    mean_low, mean_high = bootstrap_ci(delta, "mean", seed=settings.seed)
    median_low, median_high = bootstrap_ci(delta, "median", seed=settings.seed)
    alternative = {"increase": "greater", "decrease": "less"}.get(axiom.expect, "two-sided")
    verdict = "satisfied" if low > 0.5 else "violated" if high < 0.5 else "inconclusive"
    return {
        "axiom": axiom.name, "title": axiom.title, "expect": axiom.expect, "n_pairs": len(delta),
        "agreement": float(agrees.mean()), "agreement_low": low, "agreement_high": high,
        "mean_delta": float(delta.mean()), "mean_low": float(mean_low), "mean_high": float(mean_high),
        "median_delta": float(np.median(delta)), "median_low": float(median_low), "median_high": float(median_high),
        "wilcoxon_p": signed_rank_p(delta, alternative), "wilcoxon_alternative": alternative, "verdict": verdict,
    }


def signed_effects(result: PatchResult, expect: str) -> np.ndarray:
    """Per-pair effects in the axiom's direction: +1 means the component moves the receiver's score by the
    whole |perturbed - baseline| the way the axiom expects, -1 the same amount against it."""
    sign = EXPECTED_SIGN[expect] * np.sign(result.donor_score - result.receiver_score)
    return result.effects * sign.reshape((-1,) + (1,) * (result.effects.ndim - 1))


def symmetric_change(denoising: PatchResult, noising: PatchResult, expect: str) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the score change a component carries, averaged over both patching directions, in the
    axiom's direction: s * ((patched baseline - baseline) - (patched perturbed - perturbed)) / 2.

    Swapping a pair's two inputs negates it exactly, so when the two inputs are exchangeable (the NULL
    axiom) it is symmetric about 0 and the sign-flip test is exact. Returns (change [pair, ...], |delta| [pair]);
    excluded pairs are NaN.
    """
    def moved(result: PatchResult) -> np.ndarray:
        gap = (result.donor_score - result.receiver_score).reshape((-1,) + (1,) * (result.effects.ndim - 1))
        return result.effects * gap

    change = EXPECTED_SIGN[expect] * (moved(denoising) - moved(noising)) / 2
    size = np.abs(denoising.donor_score - denoising.receiver_score)
    return change, np.where(denoising.included, size, np.nan)


def _head_tests(change: np.ndarray, size: np.ndarray, settings: Settings, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Threshold test per head of change [pair, layer, head] over the included pairs."""
    kept = ~np.isnan(size)
    flat = change[kept].reshape(int(kept.sum()), int(np.prod(change.shape[1:])))
    return threshold_test(flat, size[kept], settings.threshold, resamples, settings.seed)


def _flags(q_values: np.ndarray, sides: np.ndarray, alpha: float) -> np.ndarray:
    significant = np.nan_to_num(q_values, nan=1.0) <= alpha
    return np.where(significant & (sides > 0), "encodes", np.where(significant & (sides < 0), "violates", ""))


def _heads_frame(changes: dict[str, tuple[np.ndarray, np.ndarray]], settings: Settings) -> pd.DataFrame:
    """One row per (axiom, layer, head): the share of the score change it carries (sum over pairs of its
    change / sum of |delta|), a bootstrap CI, the threshold test's p, BH q across the audit, and the flag."""
    rows, p_all, sides_all = [], [], []
    for axiom, (change, size) in changes.items():
        layers, heads = change.shape[1:]
        kept = ~np.isnan(size)
        flat = change[kept].reshape(int(kept.sum()), layers * heads)
        effect = flat.sum(axis=0) / size[kept].sum() if kept.any() else np.full(layers * heads, np.nan)
        low, high = bootstrap_ratio_ci(flat, size[kept], seed=settings.seed)
        p_values, sides = _head_tests(change, size, settings, SIGN_FLIPS)
        for index in range(layers * heads):
            layer, head = divmod(index, heads)
            rows.append({
                "axiom": axiom, "layer": layer, "head": head, "name": f"{layer}.{head}",
                "effect": float(effect[index]), "ci_low": float(low[index]), "ci_high": float(high[index]),
                "n": int(kept.sum()),
            })
        p_all.append(p_values)
        sides_all.append(sides)
    frame = pd.DataFrame(rows, columns=["axiom", "layer", "head", "name", "effect", "ci_low", "ci_high", "n"])
    p_values = np.concatenate(p_all) if p_all else np.array([])
    frame["p_value"] = p_values
    frame["q_value"] = benjamini_hochberg(p_values)
    frame["flag"] = _flags(frame["q_value"].to_numpy(), np.concatenate(sides_all) if sides_all else np.array([]),
                           settings.alpha)
    frame["replication"] = np.nan
    return frame[[*HEAD_COLUMNS, "name", "n", "replication"]]


def _replication(frame: pd.DataFrame, changes: dict[str, tuple[np.ndarray, np.ndarray]], qids: dict[str, np.ndarray],
                 settings: Settings) -> None:
    """For each flag, the share of query-disjoint halves (over `settings.stability` random splits) that
    give the same flag on their own, with BH across the audit within each half."""
    if not settings.stability or frame.empty:
        return
    rng = np.random.default_rng(settings.seed)
    agreeing = np.zeros(len(frame))
    for _ in range(settings.stability):
        halves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for axiom, (change, size) in changes.items():
            queries = np.unique(qids[axiom])
            first = set(rng.permutation(queries)[: len(queries) // 2])
            mask = np.array([qid in first for qid in qids[axiom]])
            halves[axiom] = [(change[mask], size[mask]), (change[~mask], size[~mask])]
        for half in (0, 1):
            tests = [_head_tests(*parts[half], settings, SIGN_FLIPS // 5) for parts in halves.values()]
            p_values = np.concatenate([p for p, _ in tests])
            sides = np.concatenate([side for _, side in tests])
            agreeing += _flags(benjamini_hochberg(p_values), sides, settings.alpha) == frame["flag"].to_numpy()
    flagged = frame["flag"] != ""
    frame.loc[flagged, "replication"] = agreeing[flagged.to_numpy()] / (2 * settings.stability)


# --- examples: blocks and attention patterns ------------------------------------------------------------
def _examples(scored: pd.DataFrame, axiom: Axiom, count: int, delta: float) -> list[int]:
    """The rows with the largest change in the axiom's direction (largest |change| for no_change)."""
    change = scored["delta"].to_numpy(dtype=float)
    strength = np.abs(change) if axiom.expect == "no_change" else EXPECTED_SIGN[axiom.expect] * change
    order = np.argsort(-strength, kind="stable")
    return [int(row) for row in order if abs(change[row]) >= delta][:count]


def _tokens(ranker: Ranker, pairs: PairSet, row: int) -> tuple[list[str], list[str]]:
    length = int(pairs.tensors["length"][row])
    names = [ranker.tokenizer.convert_ids_to_tokens(pairs.tensors[f"{which}_input_ids"][row, :length].tolist())
             for which in ("baseline", "perturbed")]
    return names[0], names[1]


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
    return [{key: _plain(value) if isinstance(value, np.generic) else value for key, value in row.items()}
            for row in top[["layer", "head", "name", "effect", "flag", "q_value"]].to_dict("records")]


# --- the audit -------------------------------------------------------------------------------------
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
    examples: int = 2,
    stability: int = 0,
    batch_size: int = 8,
    folder: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Audit:
    """Audit `ranker` on `axioms`: pairs, scores, patching, statistics; saved to `folder` if given.

    targets: "heads" patches every head's output on every pair, in both directions, with `method`
    ("exact" or "attribution"); "blocks" patches residual stream, attention and MLP outputs per layer and
    position, exactly, on the `examples` pairs with the largest change per axiom (5-13 s a pair for MiniLM
    on 2 CPU cores). A head is flagged `encodes` (`violates`) when the share of the score change it carries
    is above `threshold` (below -threshold) at Benjamini-Hochberg FDR `alpha` across all heads of the audit.
    `tolerance` is the score change below which a pair counts as unchanged; such pairs are left out of
    patching (there is no change to explain). `stability=R` adds each flag's replication rate over R random
    query-disjoint half splits. With `folder`, every finished step is checkpointed; `resume=True` continues.
    """
    from .loading import load_ranker

    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(f"targets={list(targets)!r} is not valid; choose from {', '.join(TARGETS)}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid; use one of {', '.join(METHODS)}")
    for name, value, low in (("n", n, 1), ("examples", examples, 0), ("stability", stability, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} is not valid; use an integer of at least {low}")
    if not 0 < alpha < 1 or threshold < 0 or tolerance < 0:
        raise ValueError(f"alpha must be in (0, 1) and threshold, tolerance >= 0; got {alpha}, {threshold}, {tolerance}")
    specs = [axiom if isinstance(axiom, Axiom) else load_axiom(axiom) for axiom in axioms]
    if not specs:
        raise ValueError("axioms is empty; name at least one axiom (see `mechir-axioms list`)")
    _, source = load_data(data)  # bad data fails here, before the model loads
    if not isinstance(ranker, Ranker):
        ranker = load_ranker(ranker)
    settings = Settings(
        tuple(spec.name for spec in specs), ranker.name, source, n, seed, tuple(targets), method,
        threshold, alpha, tolerance, examples, stability, batch_size,
    )
    folder = Path(folder) if folder is not None else None
    work = _Work(folder, settings, resume)
    started = time.perf_counter()
    behaviour, pair_frames, provenance, head_changes, qids = [], [], {}, {}, {}
    blocks, example_rows, pair_sets = [], {}, {}
    for spec in tqdm(specs, desc="audit", unit="axiom", disable=not progress):
        pairs = work.pairs(spec.name, lambda spec=spec: make_pairs(spec, data, ranker, n=n, seed=seed))
        pair_sets[spec.name] = pairs
        scored = work.scores(spec.name, lambda pairs=pairs: pairs.score(ranker))
        behaviour.append(_behaviour(spec, scored, settings))
        pair_frames.append(scored.assign(axiom=spec.name, pair=np.arange(len(scored))))
        provenance[spec.name] = {**pairs.provenance, "data": source}
        if "heads" in targets:
            denoising, noising = (_patch_in_chunks(ranker, pairs, spec, settings, work, direction, progress)
                                  for direction in ("to_baseline", "to_perturbed"))
            head_changes[spec.name] = symmetric_change(denoising, noising, spec.expect)
            qids[spec.name] = pairs.frame["qid"].astype(str).to_numpy()
            provenance[spec.name]["excluded"] = {"patching": denoising.excluded, "delta": denoising.delta}
        rows = _examples(scored, spec, examples, tolerance)
        example_rows[spec.name] = rows
        if "blocks" in targets and rows:
            result = work.patched(spec.name, "blocks", lambda pairs=pairs, rows=rows: patch(
                ranker, pairs.take(rows), "blocks", "exact", batch_size=batch_size, direction="to_baseline",
                delta=tolerance, progress=progress))
            blocks.append(_blocks_frame(spec, result, rows, ranker, pairs))
    heads = _heads_frame(head_changes, settings)
    _replication(heads, head_changes, qids, settings)
    axioms_frame = pd.DataFrame(behaviour)
    counts = heads.groupby(["axiom", "flag"]).size() if len(heads) else pd.Series(dtype=int)
    for flag in ("encodes", "violates"):
        axioms_frame[flag] = [int(counts.get((name, flag), 0)) for name in axioms_frame["axiom"]]
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
    result = Audit(axioms_frame, heads, pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(),
                   pd.concat(pair_frames, ignore_index=True), attention, manifest)
    if folder is not None:
        result.save(folder)
    return result


def _patch_in_chunks(ranker: Ranker, pairs: PairSet, spec: Axiom, settings: Settings, work: _Work, direction: str,
                     progress: bool) -> PatchResult:
    """Patch every head on every pair in one direction, CHUNK pairs at a time, each chunk checkpointed."""
    parts = []
    bar = tqdm(total=len(pairs), desc=f"{spec.name} heads {direction} ({settings.method})", unit="pair",
               leave=False, disable=not progress)
    for start in range(0, len(pairs), CHUNK):
        rows = list(range(start, min(start + CHUNK, len(pairs))))
        parts.append(work.patched(spec.name, f"heads-{direction}/chunk-{start // CHUNK:04d}", lambda rows=rows: patch(
            ranker, pairs.take(rows), "heads", settings.method, batch_size=settings.batch_size,
            direction=direction, delta=settings.tolerance, progress=False)))
        bar.update(len(rows))
    bar.close()
    first = parts[0]
    receiver = np.concatenate([part.receiver_score for part in parts])
    donor = np.concatenate([part.donor_score for part in parts])
    return PatchResult(
        first.target, first.method, np.concatenate([part.effects for part in parts]), first.dims, receiver, donor,
        sum(part.excluded for part in parts), first.delta, first.labels, {**first.provenance, "n_pairs": len(pairs)},
    )


def _command(settings: Settings) -> str:
    """The CLI command that repeats this audit (the model and data options only when not the defaults)."""
    from .loading import DEFAULT_MODEL

    model = "" if settings.model == DEFAULT_MODEL else f"--model '{settings.model}' "
    data = "" if settings.data == SAMPLE_NAME else f"--data '{settings.data}' "
    return (
        f"mechir-axioms audit {model}{data}--axioms {','.join(settings.axioms)} "
        f"--n {settings.n} --seed {settings.seed} --targets {','.join(settings.targets)} --method {settings.method} "
        f"--threshold {settings.threshold} --alpha {settings.alpha} --tolerance {settings.tolerance} "
        f"--examples {settings.examples} --stability {settings.stability}"
    )
