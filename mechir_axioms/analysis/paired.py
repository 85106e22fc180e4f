"""Paired statistics for two audits of the same pairs (two checkpoints of one ranker): each pair is measured
twice, so the difference is estimated pair by pair and its uncertainty comes from the clusters (queries) whose
pairs differ, not from two independent samples.

Both functions resample or permute whole clusters; an audit compared with itself gives a difference of exactly
0, an interval of [0, 0] and a p-value of 1.
"""

from __future__ import annotations

import math

import numpy as np

from .clusters import cluster_index, cluster_sums


def difference_interval(old: np.ndarray, new: np.ndarray, clusters: np.ndarray, resamples: int = 2000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile cluster-bootstrap interval of mean(new - old) over paired values (agreement 0/1 per pair):
    clusters are drawn with replacement, each carrying its pairs' differences."""
    difference, clusters = np.asarray(new, dtype=float) - np.asarray(old, dtype=float), cluster_index(clusters)
    if len(difference) == 0:
        return math.nan, math.nan
    sums, sizes = cluster_sums(difference, clusters), cluster_sums(np.ones(len(difference)), clusters)
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    replicates = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def _swaps(count: int, resamples: int, seed: int) -> np.ndarray:
    """Which clusters swap their old and new measurements [patterns, clusters] (1: swapped): every pattern when
    2^count <= resamples (exact), else the identity and `resamples` random ones."""
    if count < 63 and 2**count <= resamples:
        return (np.arange(2**count)[:, None] >> np.arange(count) & 1).astype(float)
    random = np.random.default_rng(seed).integers(0, 2, size=(resamples, count)).astype(float)
    return np.vstack([np.zeros((1, count)), random])


def effect_change_test(old_change: np.ndarray, old_size: np.ndarray, new_change: np.ndarray, new_size: np.ndarray,
                       clusters: np.ndarray, resamples: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The change of each unit's effect (sum of change / sum of size) from old to new on the same pairs, and its
    two-sided paired permutation p-value: under no change, a query's pairs are as likely measured by either
    checkpoint, so the test swaps old and new for whole clusters. changes [n, k], sizes [n]; returns
    (new - old effect [k], p [k]); p is 1 where the two audits agree pair for pair."""
    clusters = cluster_index(clusters)
    old_c, new_c = cluster_sums(old_change, clusters), cluster_sums(new_change, clusters)
    old_s, new_s = cluster_sums(old_size, clusters), cluster_sums(new_size, clusters)
    observed = new_c.sum(0) / new_s.sum() - old_c.sum(0) / old_s.sum()
    swaps = _swaps(len(old_c), resamples, seed)
    moved_c, moved_s = new_c - old_c, new_s - old_s
    as_new = (new_c.sum(0) - swaps @ moved_c) / (new_s.sum() - swaps @ moved_s)[:, None]
    as_old = (old_c.sum(0) + swaps @ moved_c) / (old_s.sum() + swaps @ moved_s)[:, None]
    statistics = as_new - as_old  # [patterns, k]; the identity pattern (first row) gives `observed`
    extreme = (np.abs(statistics) >= np.abs(observed) - 1e-12).sum(axis=0)
    return observed, np.minimum(1.0, extreme / len(swaps))  # enumerated: exact; sampled: (1 + #) / (1 + resamples)
