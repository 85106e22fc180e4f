"""From scores and patching effects to findings: behaviour per axiom, and flagged components per axiom.

A component is a head (layer, head) or a block cell (component, layer, token region). Its effect is the
share of the pairs' score change it carries, measured in both patching directions so that exchangeable
inputs give an effect exactly symmetric about 0; its flag comes from a threshold test with
Benjamini-Hochberg control across all components of its kind in the audit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..patching.result import PatchResult
from ..specs.axiom import Axiom
from .stats import (benjamini_hochberg, bootstrap_ci, bootstrap_ratio_ci, equivalence_test, signed_rank_p, threshold_test,
                    wilson)

EXPECTED_SIGN = {"increase": 1, "not_decrease": 1, "no_change": 1, "decrease": -1, "not_increase": -1}
SIGN_FLIPS = 100_000
"""Sign-flip resamples per test: p-values reach 1e-5, small enough for BH over hundreds of components."""
STATISTIC_COLUMNS = ["effect", "ci_low", "ci_high", "p_value", "q_value", "flag"]

Changes = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Per axiom: (change [pair, ...component dims], |perturbed - baseline| [pair], NaN for excluded pairs)."""


def strongest_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Components ordered by the size of their effect, largest first, in one place for every list of findings."""
    return rows.reindex(rows["effect"].abs().sort_values(ascending=False).index)


# --- behaviour ---------------------------------------------------------------------------------------
def agrees(delta: np.ndarray, expect: str, tolerance: float) -> np.ndarray:
    """Per pair: did the score move as the axiom expects, beyond `tolerance`?"""
    return {
        "increase": delta > tolerance,
        "decrease": delta < -tolerance,
        "no_change": np.abs(delta) <= tolerance,
        "not_increase": delta <= tolerance,
        "not_decrease": delta >= -tolerance,
    }[expect]


def equivalence_margin(scores: np.ndarray, fraction: float) -> float:
    """The margin within which a `no_change` axiom's mean change counts as none: `fraction` of the standard
    deviation of the audited pairs' scores (both inputs), in score units."""
    scores = np.asarray(scores, dtype=float)
    return float(fraction * scores.std(ddof=1)) if len(scores) > 1 else math.nan


def behaviour(axiom: Axiom, delta: np.ndarray, tolerance: float, seed: int, margin: float = math.nan) -> dict[str, Any]:
    """Agreement with its Wilson CI, mean and median change with bootstrap CIs, Wilcoxon p, verdict.

    A directional axiom is satisfied when the Wilson interval of agreement lies above one half (violated below).
    A `no_change` axiom asks whether the change is systematic: an equivalence test (TOST) on the mean change
    against +-`margin` (score units) says satisfied when the 90% interval lies inside, violated when it lies
    wholly outside, and inconclusive otherwise; agreement (the share within `tolerance`) is still reported."""
    delta = np.asarray(delta, dtype=float)
    agreeing = agrees(delta, axiom.expect, tolerance)
    low, high = wilson(int(agreeing.sum()), len(agreeing))
    mean_low, mean_high = bootstrap_ci(delta, "mean", seed=seed)
    median_low, median_high = bootstrap_ci(delta, "median", seed=seed)
    alternative = {"increase": "greater", "decrease": "less"}.get(axiom.expect, "two-sided")
    verdict = "satisfied" if low > 0.5 else "violated" if high < 0.5 else "inconclusive"
    equivalence = {"margin": math.nan, "tost_low": math.nan, "tost_high": math.nan, "tost_p": math.nan}
    if axiom.expect == "no_change":
        tost_low, tost_high, tost_p = equivalence_test(delta, margin)
        equivalence = {"margin": margin, "tost_low": tost_low, "tost_high": tost_high, "tost_p": tost_p}
        inside, outside = -margin < tost_low and tost_high < margin, tost_low > margin or tost_high < -margin
        verdict = "satisfied" if inside else "violated" if outside else "inconclusive"
    return {
        "axiom": axiom.name, "title": axiom.title, "expect": axiom.expect, "n_pairs": len(delta),
        "agreement": float(agreeing.mean()), "agreement_low": low, "agreement_high": high,
        "mean_delta": float(delta.mean()), "mean_low": float(mean_low), "mean_high": float(mean_high),
        "median_delta": float(np.median(delta)), "median_low": float(median_low), "median_high": float(median_high),
        "wilcoxon_p": signed_rank_p(delta, alternative), "wilcoxon_alternative": alternative, **equivalence,
        "verdict": verdict,
    }


# --- effects of components ------------------------------------------------------------------------------
def _per_pair(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A per-pair vector shaped to broadcast against `like` [pair, ...]."""
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


def signed_effects(result: PatchResult, expect: str) -> np.ndarray:
    """Per-pair effects in the axiom's direction: +1 means the component moves the receiver's score by the
    whole |perturbed - baseline| the way the axiom expects, -1 the same amount against it."""
    sign = EXPECTED_SIGN[expect] * np.sign(result.donor_score - result.receiver_score)
    return result.effects * _per_pair(sign, result.effects)


def symmetric_change(denoising: PatchResult, noising: PatchResult, expect: str) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the score change a component carries, averaged over both patching directions, in the
    axiom's direction: s * ((patched baseline - baseline) - (patched perturbed - perturbed)) / 2.

    `denoising` patches into the baseline, `noising` into the perturbed input. Swapping a pair's two inputs
    negates the change exactly, so when the inputs are exchangeable (the NULL axiom) it is symmetric about 0
    and the sign-flip test is exact. Returns (change [pair, ...], |delta| [pair]); excluded pairs are NaN.
    """
    def moved(result: PatchResult) -> np.ndarray:
        return result.effects * _per_pair(result.donor_score - result.receiver_score, result.effects)

    change = EXPECTED_SIGN[expect] * (moved(denoising) - moved(noising)) / 2
    size = np.abs(denoising.donor_score - denoising.receiver_score)
    return change, np.where(denoising.included, size, np.nan)


def _tests(change: np.ndarray, size: np.ndarray, threshold: float, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Threshold test per component of change [pair, ...] over the included pairs: (p-values, sides)."""
    kept = ~np.isnan(size)
    flat = change[kept].reshape(int(kept.sum()), int(np.prod(change.shape[1:])))
    return threshold_test(flat, size[kept], threshold, resamples, seed)


def _flags(q_values: np.ndarray, sides: np.ndarray, alpha: float) -> np.ndarray:
    significant = np.nan_to_num(q_values, nan=1.0) <= alpha
    return np.where(significant & (sides > 0), "encodes", np.where(significant & (sides < 0), "violates", ""))


def effects_frame(changes: Changes, labels: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]],
                  threshold: float, alpha: float, seed: int) -> pd.DataFrame:
    """One row per (axiom, component), components described by `labels` in the order of the flattened dims
    (or by `labels[axiom]` when each axiom has its own components, as paths into its own flagged heads).

    effect: the share of the score change the component carries (sum over pairs of its change / sum of
    |delta|), with a pair-bootstrap CI; p_value: the threshold test; q_value: BH across every row of the
    frame; flag: `encodes` (q <= alpha, effect above threshold) or `violates` (below -threshold).
    """
    rows, p_values, sides = [], [], []
    columns = {}
    for axiom, (change, size) in changes.items():
        of_axiom = labels[axiom] if isinstance(labels, Mapping) else labels
        columns = columns or (of_axiom[0] if of_axiom else {})
        kept = ~np.isnan(size)
        flat = change[kept].reshape(int(kept.sum()), len(of_axiom))
        effect = flat.sum(axis=0) / size[kept].sum() if kept.any() else np.full(len(of_axiom), np.nan)
        low, high = bootstrap_ratio_ci(flat, size[kept], seed=seed)
        p, side = _tests(change, size, threshold, SIGN_FLIPS, seed)
        rows += [
            {"axiom": axiom, **label, "effect": float(effect[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
             "p_value": float(p[i]), "n": int(kept.sum())}
            for i, label in enumerate(of_axiom)
        ]
        sides.append(side)
        p_values.append(p)
    if not columns and not isinstance(labels, Mapping) and labels:
        columns = labels[0]
    frame = pd.DataFrame(rows, columns=["axiom", *columns, "effect", "ci_low", "ci_high", "p_value", "n"])
    frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy(dtype=float))
    frame["flag"] = _flags(frame["q_value"].to_numpy(), np.concatenate(sides) if sides else np.array([]), alpha)
    frame["replication"] = np.nan
    identity = [column for column in frame.columns if column not in (*STATISTIC_COLUMNS, "name", "n", "replication")]
    return frame[[*identity, *STATISTIC_COLUMNS, "name", "n", "replication"]]


def replication(frame: pd.DataFrame, changes: Changes, qids: Mapping[str, np.ndarray], splits: int, alpha: float,
                threshold: float, seed: int) -> None:
    """Fill `replication` of flagged rows: the share of query-disjoint halves (over `splits` random splits)
    that give the same flag on their own, with BH across the frame's components within each half."""
    if not splits or frame.empty:
        return
    rng = np.random.default_rng(seed)
    agreeing = np.zeros(len(frame))
    for _ in range(splits):
        halves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for axiom, (change, size) in changes.items():
            queries = np.unique(qids[axiom])
            first = set(rng.permutation(queries)[: len(queries) // 2])
            mask = np.array([qid in first for qid in qids[axiom]])
            halves[axiom] = [(change[mask], size[mask]), (change[~mask], size[~mask])]
        for half in (0, 1):
            tests = [_tests(*parts[half], threshold, SIGN_FLIPS // 5, seed) for parts in halves.values()]
            p_values = np.concatenate([p for p, _ in tests])
            sides = np.concatenate([side for _, side in tests])
            agreeing += _flags(benjamini_hochberg(p_values), sides, alpha) == frame["flag"].to_numpy()
    flagged = frame["flag"] != ""
    frame.loc[flagged, "replication"] = agreeing[flagged.to_numpy()] / (2 * splits)
