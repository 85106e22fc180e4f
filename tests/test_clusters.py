"""The query as the unit of inference: clustered statistics against naive references, their pair-level special
case, and the property that copying a query's pairs adds no evidence."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mechir_axioms.analysis.clusters import (cluster_index, effective_size, mean_equivalence, median_interval,
                                             ratio_interval, share_interval, smallest_p, threshold_test)
from mechir_axioms.analysis.paired import difference_interval, effect_change_test
from mechir_axioms.analysis.stats import equivalence_test, sign_flip_p, wilson


def _clustered(seed=0, queries=12, most=5, effect=0.3):
    """Pairs in queries of 1..most pairs, each query with its own offset (pairs of a query alike)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, most + 1, queries)
    clusters = np.repeat(np.arange(queries), sizes)
    offsets = rng.normal(0, 1, queries)
    change = effect + offsets[clusters][:, None] * [1.0, -1.0] + rng.normal(0, 0.1, (len(clusters), 2))
    size = rng.uniform(0.5, 1.5, len(clusters))
    return change, size, clusters


def test_cluster_index_numbers_clusters_in_order_of_first_appearance():
    assert cluster_index(np.array(["q9", "q2", "q9", "q5", "q2"])).tolist() == [0, 1, 0, 2, 1]


def test_ratio_interval_equals_a_naive_cluster_bootstrap():
    change, size, clusters = _clustered()
    low, high = ratio_interval(change, size, clusters, resamples=300, seed=4)
    draws = np.random.default_rng(4).integers(0, clusters.max() + 1, size=(300, clusters.max() + 1))
    naive = []
    for draw in draws:  # each drawn cluster brings all its pairs
        rows = np.concatenate([np.flatnonzero(clusters == c) for c in draw])
        naive.append(change[rows].sum(axis=0) / size[rows].sum())
    expected = np.percentile(np.array(naive), [2.5, 97.5], axis=0)
    np.testing.assert_allclose([low, high], expected, rtol=0, atol=1e-12)


def test_median_interval_equals_a_naive_cluster_bootstrap():
    values, _, clusters = _clustered(seed=2)
    values = values[:, 0]
    low, high = median_interval(values, clusters, resamples=300, seed=5)
    draws = np.random.default_rng(5).integers(0, clusters.max() + 1, size=(300, clusters.max() + 1))
    medians = [np.median(np.concatenate([values[clusters == c] for c in draw])) for draw in draws]
    np.testing.assert_allclose([low, high], np.percentile(medians, [2.5, 97.5]), rtol=0, atol=1e-12)


def test_sign_flips_are_enumerated_exactly_when_they_are_few():
    # mean of [1, 2] is 1.5; of the four sign patterns only (+, +) reaches it
    assert sign_flip_p(np.array([[1.0], [2.0]]), resamples=100)[0] == 0.25
    assert smallest_p(5, 100_000) == 2 / 32 and smallest_p(40, 100_000) == pytest.approx(2 / 100_001)


def test_enumerated_p_values_agree_with_sampled_ones(monkeypatch):
    values = np.random.default_rng(8).normal(0.1, 1.0, size=(14, 40))
    exact = sign_flip_p(values, resamples=100_000)
    monkeypatch.setattr("mechir_axioms.analysis.stats.ENUMERATE_SIGNS", False)
    sampled = sign_flip_p(values, resamples=100_000)
    assert not np.array_equal(exact, sampled)
    np.testing.assert_allclose(exact, sampled, rtol=0, atol=4 * np.sqrt(0.25 / 100_000))
    assert (exact * 2**14 == np.round(exact * 2**14)).all()  # exact: counts of the 16,384 patterns


def test_copying_a_querys_pairs_adds_no_evidence():
    """Each query's pair repeated 4 times: the query-level test and interval are those of one pair per query,
    while a pair-level test on the copies claims far more than the data hold."""
    rng = np.random.default_rng(7)
    single = 0.12 * np.ones((10, 1)) + rng.normal(0, 0.08, (10, 1))
    size = np.ones(10)
    copies, copied_size, queries = np.repeat(single, 4, axis=0), np.repeat(size, 4), np.repeat(np.arange(10), 4)
    p_single, _ = threshold_test(single, size, np.arange(10), 0.05)
    p_query, _ = threshold_test(copies, copied_size, queries, 0.05)
    p_pair, _ = threshold_test(copies, copied_size, np.arange(40), 0.05)
    assert p_query[0] == p_single[0]
    assert p_pair[0] < p_single[0] / 10
    assert effective_size(np.repeat(rng.random(10) < 0.6, 4), queries) == 10


def test_one_pair_per_cluster_is_the_pair_level_statistics():
    rng = np.random.default_rng(1)
    values = rng.normal(0.02, 0.1, 30)
    pairs = np.arange(30)
    assert share_interval(values > 0, pairs) == wilson(int((values > 0).sum()), 30)
    np.testing.assert_allclose(mean_equivalence(values, pairs, 0.05), equivalence_test(values, 0.05), rtol=0,
                               atol=1e-15)
    clustered = mean_equivalence(values, np.repeat(np.arange(10), 3), 0.05)
    assert clustered[1] - clustered[0] != pytest.approx(equivalence_test(values, 0.05)[1] - equivalence_test(values, 0.05)[0])


def test_share_interval_widens_with_correlated_queries_but_not_past_the_queries():
    agreeing = np.repeat(np.array([True] * 7 + [False] * 3), 5)  # 10 queries, 5 alike pairs each
    queries = np.repeat(np.arange(10), 5)
    low, high = share_interval(agreeing, queries)
    assert (low, high) == pytest.approx(wilson(7, 10))
    assert high - low > np.subtract(*wilson(35, 50)[::-1])
    assert share_interval(np.ones(50, dtype=bool), queries) == pytest.approx(wilson(10, 10))
    assert math.isnan(share_interval(np.array([], dtype=bool), np.array([], dtype=int))[0])


def test_paired_statistics_of_an_audit_against_itself_are_exactly_null():
    change, size, clusters = _clustered(seed=3)
    agreeing = change[:, 0] > 0.3
    assert difference_interval(agreeing, agreeing, clusters) == (0.0, 0.0)
    difference, p = effect_change_test(change, size, change, size, clusters)
    assert (difference == 0).all() and (p == 1).all()


def test_paired_test_detects_an_ablated_unit_and_spares_the_others():
    _, size, clusters = _clustered(seed=5, queries=30)
    noise = np.random.default_rng(0).normal(0, 0.05, (len(size), 2))
    change = np.stack([0.4 * size, 0.3 * size], axis=1) + noise
    ablated = change.copy()
    ablated[:, 0] = 0.0  # the unit now carries nothing
    difference, p = effect_change_test(change, size, ablated, size, clusters, resamples=5000)
    assert difference[0] < -0.3 and p[0] < 0.01
    assert difference[1] == 0 and p[1] == 1
    noisy = change + np.random.default_rng(9).normal(0, 0.01, change.shape)  # a retrained twin: small noise
    _, p_noise = effect_change_test(change, size, noisy, size, clusters, resamples=5000)
    assert (p_noise > 0.01).all()


def test_paired_p_values_hold_their_level_under_exchangeable_noise():
    rng = np.random.default_rng(11)
    rejections = 0
    for trial in range(200):
        clusters = np.repeat(np.arange(15), 3)
        base = rng.normal(0.2, 0.3, (45, 1))
        old = base + rng.normal(0, 0.1, (45, 1))
        new = base + rng.normal(0, 0.1, (45, 1))
        _, p = effect_change_test(old, np.ones(45), new, np.ones(45), clusters, resamples=2000, seed=trial)
        rejections += p[0] <= 0.05
    assert rejections / 200 <= 0.05 + 0.035


def test_effective_size_of_unequal_queries_and_of_one_query():
    """All pairs of a query alike, queries of 20, 1, 1, 1 and 1 pairs: the effective size is n^2 / sum of squared
    sizes (1.43), not the number of queries; one query alone is one effective observation."""
    sizes, queries = np.array([20, 1, 1, 1, 1]), np.repeat(np.arange(5), [20, 1, 1, 1, 1])
    assert effective_size(np.ones(24, dtype=bool), queries) == pytest.approx(24**2 / (sizes**2).sum())
    assert effective_size(np.array([1, 0, 1, 1], dtype=bool), np.zeros(4, dtype=int)) == 1.0
    low, high = share_interval(np.array([1, 0, 1, 1], dtype=bool), np.array(["q", "q", "q", "q"]))
    assert (low, high) == pytest.approx(wilson(0.75, 1.0))
