"""Statistics with clusters of pairs as the unit of inference: an audit's pairs share queries, so a claim about
new queries must resample and sign-flip the pairs of one query together.

Every function takes `clusters`, each pair's cluster (any ids: they are numbered by `cluster_index`). With one
pair per cluster each reduces to its pair-level counterpart in stats.py, drawing the same random numbers, so
`unit="pair"` reproduces the pair-level statistics; but a sign-flip test over at most 16 clusters enumerates every
pattern (an exact p) where releases before issue 27 sampled them (stats.ENUMERATE_SIGNS).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from . import stats as pair_level
from .stats import Z_95, equivalence_test, sign_flip_p, signed_rank_p, wilson


def cluster_index(ids: np.ndarray) -> np.ndarray:
    """Each row's cluster number, 0, 1, ... in the order each id first appears (pairs of one query share one)."""
    _, first, inverse = np.unique(np.asarray(ids), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=int)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def cluster_sums(values: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Sums of values [n, ...] over each cluster's rows: [clusters, ...], clusters in their numbered order."""
    values = np.asarray(values, dtype=float)
    count = int(clusters.max()) + 1 if len(clusters) else 0
    if count == len(values) and (clusters == np.arange(count)).all():
        return values.copy()  # one row per cluster: the values themselves, bit for bit
    sums = np.zeros((count, *values.shape[1:]))
    np.add.at(sums, clusters, values)
    return sums


def smallest_p(clusters: int, resamples: int) -> float:
    """The smallest two-sided p-value a sign-flip test over `clusters` can give: 2 / 2^clusters when the flips are
    enumerated, 2 / (resamples + 1) when sampled. No unit is flagged when this exceeds alpha."""
    enumerated = pair_level.ENUMERATE_SIGNS and 2 ** min(clusters, 63) <= resamples
    return min(1.0, 2.0 / 2.0 ** clusters if enumerated else 2.0 / (resamples + 1))


def threshold_test(change: np.ndarray, size: np.ndarray, clusters: np.ndarray, threshold: float,
                   resamples: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Is sum(change)/sum(size) beyond +threshold or -threshold? change [n, k], size [n] (all > 0).

    Sign-flips whole clusters of the differences change - threshold * size (or -change - threshold * size), on
    the side the estimate falls; the one-sided p-value is doubled (capped at 1) because the side was chosen from
    the data. Returns (p-values [k], sides [k] of +1/-1).
    """
    change, clusters = np.asarray(change, dtype=float), cluster_index(clusters)
    if len(change) == 0:
        return np.full(change.shape[1], np.nan), np.zeros(change.shape[1], dtype=int)
    margin = threshold * np.asarray(size, dtype=float)[:, None]
    sides = np.where(change.sum(axis=0) >= 0, 1, -1)
    above = sign_flip_p(cluster_sums(change - margin, clusters), resamples, seed)
    below = sign_flip_p(cluster_sums(-change - margin, clusters), resamples, seed)
    return np.minimum(1.0, 2 * np.where(sides > 0, above, below)), sides


def ratio_interval(change: np.ndarray, size: np.ndarray, clusters: np.ndarray, resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile cluster-bootstrap interval of sum(change)/sum(size) per column: clusters are drawn with
    replacement and carry all their pairs."""
    clusters = cluster_index(clusters)
    change, size = cluster_sums(change, clusters), cluster_sums(size, clusters)
    if len(change) == 0:
        nan = np.full(change.shape[1], np.nan)
        return nan, nan
    draws = np.random.default_rng(seed).integers(0, len(change), size=(resamples, len(change)))
    replicates = np.stack([change[draw].sum(axis=0) / size[draw].sum() for draw in draws])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def effective_size(successes: np.ndarray, clusters: np.ndarray) -> float:
    """Kish's effective sample size of a share: pairs / design effect, where the design effect compares the
    cluster-robust variance of the share with the pairs-independent one. Bounded below by n^2 / sum of squared
    cluster sizes (every query's pairs alike: the number of queries when they are of one size) and above by the
    pairs (no correlation); the lower bound when the share is 0 or 1 or there is one cluster."""
    successes, clusters = np.asarray(successes, dtype=float), cluster_index(clusters)
    n, count = len(successes), int(clusters.max()) + 1 if len(clusters) else 0
    if count == n:
        return float(n)
    sizes = np.bincount(clusters).astype(float)
    lowest = float(n**2 / (sizes**2).sum())
    share = successes.mean()
    if share in (0.0, 1.0) or count < 2:
        return lowest
    sums = cluster_sums(successes, clusters)
    robust = count / (count - 1) * ((sums - share * sizes) ** 2).sum() / n**2
    independent = share * (1 - share) / (n - 1)
    return float(np.clip(n * independent / robust, lowest, n)) if robust > 0 else float(n)


def share_interval(successes: np.ndarray, clusters: np.ndarray, z: float = Z_95) -> tuple[float, float]:
    """Wilson interval of a share on its effective sample size (see effective_size); Wilson's on pairs when each
    cluster holds one pair."""
    successes, clusters = np.asarray(successes, dtype=bool), cluster_index(clusters)
    if len(successes) == 0:
        return math.nan, math.nan
    size = effective_size(successes, clusters)
    if size == len(successes):
        return wilson(int(successes.sum()), len(successes), z)
    return wilson(float(successes.mean()) * size, size, z)


def mean_interval(values: np.ndarray, clusters: np.ndarray, resamples: int = 2000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """Percentile cluster-bootstrap interval of the mean over pairs."""
    values = np.asarray(values, dtype=float)
    low, high = ratio_interval(values[:, None], np.ones(len(values)), clusters, resamples, seed, level)
    return float(low[0]), float(high[0])


def median_interval(values: np.ndarray, clusters: np.ndarray, resamples: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile cluster-bootstrap interval of the median over pairs: each replicate's median is that of the
    drawn clusters' pairs, each pair counted as often as its cluster was drawn."""
    values, clusters = np.asarray(values, dtype=float), cluster_index(clusters)
    if len(values) == 0:
        return math.nan, math.nan
    count = int(clusters.max()) + 1
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    drawn = np.stack([np.bincount(draw, minlength=count) for draw in draws]).astype(np.int32)  # [resamples, clusters]
    cumulative = np.cumsum(drawn[:, clusters[order]], axis=1, dtype=np.int32)  # pairs counted up to each rank
    total = cumulative[:, -1]
    lower = (cumulative < ((total + 1) // 2)[:, None]).sum(axis=1)  # the rank holding the (total+1)//2-th pair
    upper = (cumulative < (total // 2 + 1)[:, None]).sum(axis=1)
    medians = (ranked[lower] + ranked[upper]) / 2
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def cluster_means(values: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """The mean of each cluster's values."""
    clusters = cluster_index(clusters)
    return cluster_sums(values, clusters) / np.bincount(clusters)


def signed_rank(values: np.ndarray, clusters: np.ndarray, alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p-value over the clusters' mean values (each query one observation)."""
    return signed_rank_p(cluster_means(values, clusters), alternative)


def mean_equivalence(values: np.ndarray, clusters: np.ndarray, margin: float,
                     level: float = 0.90) -> tuple[float, float, float]:
    """TOST for a mean change within +-margin with a cluster-robust standard error (CR1) on clusters - 1 degrees of
    freedom: (low, high, p) as in stats.equivalence_test, which it equals when each cluster holds one pair."""
    values, clusters = np.asarray(values, dtype=float), cluster_index(clusters)
    count = int(clusters.max()) + 1 if len(clusters) else 0
    if count == len(values):
        return equivalence_test(values, margin, level)
    if count < 2:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    residuals = cluster_sums(values - mean, clusters)
    error = math.sqrt(count / (count - 1) * float((residuals**2).sum())) / len(values)
    if error == 0:
        return mean, mean, 0.0 if abs(mean) < margin else 1.0
    freedom = count - 1
    t = float(stats.t.ppf(1 - (1 - level) / 2, freedom))
    lower_p = float(stats.t.sf((mean + margin) / error, freedom))  # H0: mean <= -margin
    upper_p = float(stats.t.cdf((mean - margin) / error, freedom))  # H0: mean >= +margin
    return mean - t * error, mean + t * error, max(lower_p, upper_p)
