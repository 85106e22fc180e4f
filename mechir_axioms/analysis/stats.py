"""The statistics of an audit: Wilson and bootstrap intervals, signed-rank tests, Benjamini-Hochberg.

Every function is pure and seeded: the same inputs and seed give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

Z_95 = 1.959963984540054
ENUMERATE_SIGNS = True
"""Enumerate every sign pattern when there are no more than the resamples (an exact p); False samples them, as
releases before issue 27 did, which the reference test sets to reproduce their stored p-values."""


def wilson(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial share; (nan, nan) when there are no trials."""
    if total == 0:
        return math.nan, math.nan
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no float residue past the data
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def bootstrap_ci(
    values: np.ndarray, statistic: str = "mean", resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean or median over axis 0, for every column at once.

    values is [n] or [n, k]; NaN rows are not allowed (drop excluded pairs first).
    """
    values = np.asarray(values, dtype=float)
    column = values.ndim == 1
    values = values.reshape(len(values), 1) if column else values.reshape(len(values), values.shape[1])
    if len(values) == 0:
        nan = np.full(values.shape[1], np.nan)
        return (nan[0], nan[0]) if column else (nan, nan)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    reduce = np.mean if statistic == "mean" else np.median
    replicates = np.stack([reduce(values[draw], axis=0) for draw in draws])  # [resamples, k]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return (low[0], high[0]) if column else (low, high)


def signed_rank_p(values: np.ndarray, alternative: str = "two-sided", centre: float = 0.0) -> float:
    """Wilcoxon signed-rank p-value of values - centre (zeros dropped); nan with fewer than 2 non-zero values."""
    shifted = np.asarray(values, dtype=float) - centre
    shifted = shifted[shifted != 0]
    if len(shifted) < 2:
        return math.nan
    return float(stats.wilcoxon(shifted, alternative=alternative, method="auto").pvalue)


def sign_flip_p(values: np.ndarray, resamples: int = 100_000, seed: int = 0) -> np.ndarray:
    """One-sided sign-flip permutation p-value that each column of values [n, k] has a mean above 0.

    Valid when, under the null, each value is as likely negative as positive (symmetric about 0). With 2^n <=
    resamples every sign pattern is enumerated and p is exact (at least 1 / 2^n); otherwise
    p = (1 + #{flipped means >= observed}) / (1 + resamples), so it is never 0.
    """
    values = np.asarray(values, dtype=float)
    observed = values.mean(axis=0)
    if ENUMERATE_SIGNS and len(values) < 63 and 2 ** len(values) <= resamples:
        patterns = np.arange(2 ** len(values))[:, None] >> np.arange(len(values)) & 1
        signs = patterns * 2.0 - 1.0  # every pattern once, the observed one (all +1) among them
        return (signs @ values / len(values) >= observed - 1e-12).sum(axis=0) / len(signs)
    rng = np.random.default_rng(seed)
    count = np.zeros(values.shape[1])
    for start in range(0, resamples, 1000):
        signs = rng.integers(0, 2, size=(min(1000, resamples - start), len(values))) * 2.0 - 1.0
        count += (signs @ values / len(values) >= observed - 1e-12).sum(axis=0)
    return (1 + count) / (1 + resamples)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted q-values; NaN p-values stay NaN and do not count as tests."""
    p_values = np.asarray(p_values, dtype=float)
    q_values = np.full_like(p_values, np.nan)
    tested = ~np.isnan(p_values)
    p = p_values[tested]
    if len(p) == 0:
        return q_values
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    q = np.empty_like(p)
    q[order] = adjusted
    q_values[tested] = q
    return q_values


def equivalence_test(values: np.ndarray, margin: float, level: float = 0.90) -> tuple[float, float, float]:
    """TOST for a mean within +-margin: (low, high, p) of the two-sided `level` t interval of the mean and the
    larger of the two one-sided p-values (equivalence at 1 - p); nan with fewer than 2 values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan, math.nan
    mean, error = float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
    if error == 0:
        inside = abs(mean) < margin
        return mean, mean, 0.0 if inside else 1.0
    t = float(stats.t.ppf(1 - (1 - level) / 2, len(values) - 1))
    lower_p = float(stats.t.sf((mean + margin) / error, len(values) - 1))  # H0: mean <= -margin
    upper_p = float(stats.t.cdf((mean - margin) / error, len(values) - 1))  # H0: mean >= +margin
    return mean - t * error, mean + t * error, max(lower_p, upper_p)
