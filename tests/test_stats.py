"""The audit's statistics against hand-computed values and their defining properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechir_axioms.analysis.clusters import ratio_interval, threshold_test
from mechir_axioms.analysis.stats import benjamini_hochberg, bootstrap_ci, sign_flip_p, signed_rank_p, wilson


def test_wilson_matches_the_textbook_interval():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; and 8/10 -> 0.4902 to 0.9433.
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    low, high = wilson(0, 20)
    assert low == 0.0 and 0.16 < high < 0.17
    assert np.isnan(wilson(0, 0)[0])


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.5])
    # sorted 0.005, 0.01, 0.03, 0.04, 0.5 over m = 5 tests: 0.025, 0.025, 0.05, 0.05, 0.5
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q[[3, 0, 2, 1, 5]], [0.025, 0.025, 0.05, 0.05, 0.5])
    assert np.isnan(q[4])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=40))
def test_benjamini_hochberg_properties(values):
    p = np.array(values)
    q = benjamini_hochberg(p)
    assert np.all(q >= p - 1e-12) and np.all(q <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-12)  # adjusted values keep the order of the p-values


def test_bootstrap_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(1).normal(0.3, 1.0, size=(200, 3))
    first = bootstrap_ci(values, seed=7)
    np.testing.assert_array_equal(first[0], bootstrap_ci(values, seed=7)[0])
    assert not np.array_equal(first[0], bootstrap_ci(values, seed=8)[0])
    mean = values.mean(axis=0)
    assert np.all(first[0] < mean) and np.all(mean < first[1])
    low, high = bootstrap_ci(values[:, 0], "median", seed=0)
    assert low < np.median(values[:, 0]) < high


def test_threshold_test_separates_effects_from_noise():
    rng = np.random.default_rng(0)
    size = rng.uniform(0.5, 1.5, 100)
    change = np.stack([0.4 * size + rng.normal(0, 0.1, 100),  # carries 40% of the change
                       -0.4 * size + rng.normal(0, 0.1, 100),  # pushes 40% against it
                       0.02 * size + rng.normal(0, 0.1, 100)], axis=1)  # real but below the threshold
    p, sides = threshold_test(change, size, np.arange(100), 0.05, resamples=20_000)
    assert list(sides[:2]) == [1, -1] and p[0] < 1e-3 and p[1] < 1e-3
    assert p[2] > 0.05
    assert signed_rank_p(np.zeros(5)) != signed_rank_p(np.zeros(5))  # all ties: nan, not a p-value
    low, high = ratio_interval(change, size, np.arange(100))
    estimate = change.sum(axis=0) / size.sum()
    assert np.all(low < estimate) and np.all(estimate < high)


def test_sign_flip_holds_its_level_under_the_null():
    rng = np.random.default_rng(3)
    p_values = sign_flip_p(rng.standard_t(3, size=(60, 400)), resamples=4000, seed=1)
    assert (p_values <= 0.05).mean() <= 0.05 + 0.03
    assert p_values.min() >= 1 / 4001
