"""From scores and patching effects to findings: behaviour per axiom, and flagged components per axiom.

A component is a head (layer, head) or a block cell (component, layer, token region). Its effect is the
share of the pairs' score change it carries, measured in both patching directions so that exchangeable
inputs give an effect exactly symmetric about 0. Its test is a threshold test that flips the pairs of one query
together (the query is the unit of inference), with Benjamini-Hochberg control across all components of its kind
in the audit; its flag asks, besides, that the test select it in most query-disjoint half samples (`select`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..patching.result import PatchResult
from ..specs.axiom import Axiom
from .clusters import (cluster_index, mean_equivalence, mean_interval, median_interval, ratio_interval, share_interval,
                       signed_rank, threshold_test)
from .stats import benjamini_hochberg

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


def behaviour(axiom: Axiom, delta: np.ndarray, tolerance: float, seed: int, margin: float = math.nan,
              clusters: np.ndarray | None = None) -> dict[str, Any]:
    """Agreement with its interval, mean and median change with bootstrap CIs, a signed-rank p, the verdict.

    `clusters` holds each pair's unit of inference (its query id; None: each pair its own). Agreement's interval
    is Wilson's on the effective sample size of the clusters, the mean's and median's are cluster-bootstrap
    intervals, and the signed-rank test runs over the clusters' mean changes. A directional axiom is satisfied
    when agreement's interval lies above one half (violated below). A `no_change` axiom asks whether the change
    is systematic: an equivalence test (TOST, cluster-robust) on the mean change against +-`margin` (score units)
    says satisfied when the 90% interval lies inside, violated when it lies wholly outside, and inconclusive
    otherwise; agreement (the share within `tolerance`) is still reported."""
    delta = np.asarray(delta, dtype=float)
    groups = cluster_index(np.arange(len(delta)) if clusters is None else clusters)
    agreeing = agrees(delta, axiom.expect, tolerance)
    low, high = share_interval(agreeing, groups)
    mean_low, mean_high = mean_interval(delta, groups, seed=seed)
    median_low, median_high = median_interval(delta, groups, seed=seed)
    alternative = {"increase": "greater", "decrease": "less"}.get(axiom.expect, "two-sided")
    verdict = "satisfied" if low > 0.5 else "violated" if high < 0.5 else "inconclusive"
    equivalence = {"margin": math.nan, "tost_low": math.nan, "tost_high": math.nan, "tost_p": math.nan}
    if axiom.expect == "no_change":
        tost_low, tost_high, tost_p = mean_equivalence(delta, groups, margin)
        equivalence = {"margin": margin, "tost_low": tost_low, "tost_high": tost_high, "tost_p": tost_p}
        inside, outside = -margin < tost_low and tost_high < margin, tost_low > margin or tost_high < -margin
        verdict = "satisfied" if inside else "violated" if outside else "inconclusive"
    return {
        "axiom": axiom.name, "title": axiom.title, "expect": axiom.expect, "n_pairs": len(delta),
        "agreement": float(agreeing.mean()), "agreement_low": low, "agreement_high": high,
        "mean_delta": float(delta.mean()), "mean_low": float(mean_low), "mean_high": float(mean_high),
        "median_delta": float(np.median(delta)), "median_low": float(median_low), "median_high": float(median_high),
        "wilcoxon_p": signed_rank(delta, groups, alternative), "wilcoxon_alternative": alternative, **equivalence,
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


def _tests(change: np.ndarray, size: np.ndarray, clusters: np.ndarray, threshold: float, resamples: int,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Threshold test per component of change [pair, ...] over the included pairs, flipping whole clusters:
    (p-values, sides)."""
    kept = ~np.isnan(size)
    flat = change[kept].reshape(int(kept.sum()), int(np.prod(change.shape[1:])))
    return threshold_test(flat, size[kept], cluster_index(clusters[kept]), threshold, resamples, seed)


def _flags(q_values: np.ndarray, sides: np.ndarray, alpha: float) -> np.ndarray:
    significant = np.nan_to_num(q_values, nan=1.0) <= alpha
    return np.where(significant & (sides > 0), "encodes", np.where(significant & (sides < 0), "violates", ""))


def units_of(queries: np.ndarray, unit: str) -> np.ndarray:
    """Each pair's unit of inference: its query (`unit="query"`) or the pair itself (`unit="pair"`)."""
    return np.asarray(queries) if unit == "query" else np.arange(len(queries))


def effects_frame(changes: Changes, labels: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]],
                  queries: Mapping[str, np.ndarray], threshold: float, alpha: float, seed: int,
                  unit: str = "query") -> pd.DataFrame:
    """One row per (axiom, component), components described by `labels` in the order of the flattened dims
    (or by `labels[axiom]` when each axiom has its own components, as paths into its own flagged heads).

    `queries[axiom]` holds each pair's query id; `unit` says whether the query (its pairs resampled and flipped
    together) or the pair is the unit of inference. effect: the share of the score change the component carries (sum over pairs of its change /
    sum of |delta|), with a cluster-bootstrap CI; p_value: the threshold test, flipping whole clusters; q_value:
    BH across every row of the frame; test: `encodes` (q <= alpha, effect above threshold) or `violates` (below
    -threshold); flag: the test's flag until `select` asks for stability too; queries: the clusters behind it.
    """
    rows, p_values, sides = [], [], []
    columns = {}
    for axiom, (change, size) in changes.items():
        of_axiom = labels[axiom] if isinstance(labels, Mapping) else labels
        columns = columns or (of_axiom[0] if of_axiom else {})
        kept = ~np.isnan(size)
        flat = change[kept].reshape(int(kept.sum()), len(of_axiom))
        clusters = units_of(queries[axiom], unit)
        groups = cluster_index(clusters[kept])
        effect = flat.sum(axis=0) / size[kept].sum() if kept.any() else np.full(len(of_axiom), np.nan)
        low, high = ratio_interval(flat, size[kept], groups, seed=seed)
        p, side = _tests(change, size, clusters, threshold, SIGN_FLIPS, seed)
        behind = len(np.unique(np.asarray(queries[axiom])[kept]))
        rows += [
            {"axiom": axiom, **label, "effect": float(effect[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
             "p_value": float(p[i]), "n": int(kept.sum()), "queries": behind}
            for i, label in enumerate(of_axiom)
        ]
        sides.append(side)
        p_values.append(p)
    if not columns and not isinstance(labels, Mapping) and labels:
        columns = labels[0]
    frame = pd.DataFrame(rows, columns=["axiom", *columns, "effect", "ci_low", "ci_high", "p_value", "n", "queries"])
    frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy(dtype=float))
    frame["test"] = _flags(frame["q_value"].to_numpy(), np.concatenate(sides) if sides else np.array([]), alpha)
    frame["flag"] = frame["test"]
    frame["selection"] = np.nan
    tail = ("name", "n", "queries", "test", "selection")
    identity = [column for column in frame.columns if column not in (*STATISTIC_COLUMNS, *tail)]
    return frame[[*identity, *STATISTIC_COLUMNS, *tail]]


def select(frame: pd.DataFrame, changes: Changes, queries: Mapping[str, np.ndarray], splits: int, level: float,
           alpha: float, threshold: float, seed: int, unit: str = "query") -> dict[str, dict[str, float]]:
    """Stability selection over query-disjoint halves (complementary pairs, Shah and Samworth 2013): `splits`
    random splits of each axiom's queries into two halves give 2 * splits subsamples; in each half a component is
    selected when its own threshold test there gives p <= alpha on the side of its estimate on all queries (no
    correction within the half: the selection share is what controls false selections, as in Meinshausen and
    Buehlmann). `selection` is the share of subsamples that select it; `flag` keeps the test's flag (on all
    queries, BH-corrected) only where selection >= level.

    Returns per axiom the facts of Meinshausen and Buehlmann's (2010) bound on the expected number of false flags,
    q^2 / ((2 level - 1) p), with q the mean number of components flagged per subsample and p the components.
    """
    if not splits or frame.empty:
        return {}
    rng = np.random.default_rng(seed)
    picked = np.zeros(len(frame))
    flagged_per_axiom = {axiom: 0.0 for axiom in changes}
    axiom_of_row = frame["axiom"].to_numpy()
    sides = np.where(frame["effect"].to_numpy(dtype=float) >= 0, "encodes", "violates")
    for _ in range(splits):
        halves: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for axiom, (change, size) in changes.items():
            kept = ~np.isnan(size)  # excluded pairs take no part, nor queries that have only such pairs
            change, size, asked = change[kept], size[kept], np.asarray(queries[axiom])[kept]
            names = np.unique(asked)
            first = set(rng.permutation(names)[: len(names) // 2])
            mask = np.array([qid in first for qid in asked], dtype=bool)
            clusters = units_of(asked, unit)
            halves[axiom] = [(change[mask], size[mask], clusters[mask]), (change[~mask], size[~mask], clusters[~mask])]
        for half in (0, 1):
            tests = [_tests(*parts[half], threshold, SIGN_FLIPS // 5, seed) for parts in halves.values()]
            flags = _flags(np.concatenate([p for p, _ in tests]), np.concatenate([side for _, side in tests]), alpha)
            picked += flags == sides
            for axiom in flagged_per_axiom:
                flagged_per_axiom[axiom] += float((flags[axiom_of_row == axiom] != "").sum())
    subsamples = 2 * splits
    frame["selection"] = picked / subsamples
    frame["flag"] = np.where(frame["selection"].to_numpy() >= level - 1e-12, frame["test"], "")
    facts = {}
    for axiom, total in flagged_per_axiom.items():
        components, mean = int((axiom_of_row == axiom).sum()), total / subsamples
        facts[axiom] = {"subsamples": subsamples, "level": level, "components": components,
                        "mean_flagged": round(mean, 4),
                        "false_flags_bound": mean**2 / ((2 * level - 1) * components) if components else 0.0}
    return facts


def pair_changes(changes: Changes, labels: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]],
                 pairs: Mapping[str, Sequence[int]], queries: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Each measured pair's change per unit in long form (axiom, pair, qid, name, change, size), excluded pairs
    left out: what a paired comparison of two audits on the same pairs needs."""
    parts = []
    for axiom, (change, size) in changes.items():
        names = [label["name"] for label in (labels[axiom] if isinstance(labels, Mapping) else labels)]
        kept = ~np.isnan(size)
        flat = change[kept].reshape(int(kept.sum()), len(names))
        count = len(names)
        parts.append(pd.DataFrame({
            "axiom": axiom, "pair": np.repeat(np.asarray(pairs[axiom])[kept], count),
            "qid": np.repeat(np.asarray(queries[axiom])[kept], count), "name": np.tile(np.asarray(names, dtype=object),
                                                                                       int(kept.sum())),
            "change": flat.reshape(-1), "size": np.repeat(size[kept], count)}))
    columns = ["axiom", "pair", "qid", "name", "change", "size"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
