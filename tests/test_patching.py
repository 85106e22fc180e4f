"""Activation patching: the batched exact path equals the naive reference; the metric's end points hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechir_axioms import PairSet, PatchResult, Variant, load_ranker, make_pairs, patch, patch_variants
from mechir_axioms.analysis.findings import symmetric_change
from mechir_axioms.patching.naive import patch_naive

TOLERANCE = 1e-5


REAL = {"minilm": None, "cross-encoder": "cross_encoder_path"}
"""The real models: the slow tier patches them; the fast tier patches the tiny random-weight models only."""
TINY = {"tiny-bi": ("bert", "bi"), "tiny-cross": ("bert", "cross"), "t5": ("t5", "t5")}


@pytest.fixture(scope="module", params=[*(pytest.param(name, marks=pytest.mark.slow) for name in REAL), *TINY])
def double_ranker(request, tiny):
    """Each model in float64, so the comparison sees the algorithm and not float32 reduction order."""
    if request.param in REAL:
        fixture = REAL[request.param]
        ranker = load_ranker(request.getfixturevalue(fixture) if fixture else None)
    else:
        ranker = load_ranker(tiny(*TINY[request.param])[1])
    ranker.model.double()
    ranker.test_delta = 1e-3 if request.param in REAL else 1e-7  # random weights barely react to one term
    return ranker


def _delta_for(ranker) -> float:
    return ranker.test_delta


@pytest.mark.parametrize("target", ["heads", "mlp", "heads_by_pos", "blocks", "regions"])
def test_exact_matches_naive(double_ranker, short_frame, target):
    n = 1 if target == "blocks" else 3  # blocks patch every position of every layer: one pair is plenty
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=n, seed=11)
    options = {"heads": [(0, 1), (double_ranker.n_layers - 1, 2)]} if target == "heads_by_pos" else {}
    delta = _delta_for(double_ranker)
    fast = patch(double_ranker, pairs, target, batch_size=5, delta=delta, progress=False, **options)
    naive = patch_naive(double_ranker, pairs, target, delta=delta, **options)
    assert fast.effects.shape == naive.effects.shape
    assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects))
    assert not np.isnan(fast.effects).all(), "some pair must be patched"
    assert np.nanmax(np.abs(fast.effects - naive.effects)) <= TOLERANCE


@pytest.mark.parametrize("direction", ["to_baseline", "to_perturbed"])
@pytest.mark.parametrize("target", ["heads", "regions"])
def test_exact_matches_naive_in_the_audit_directions(double_ranker, short_frame, target, direction):
    """Audits patch heads and regions in the two fixed directions, never by the default to_low: each receiver is
    the named input whatever the scores, and the batched exact path matches the reference there too."""
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=3, seed=11)
    delta = _delta_for(double_ranker)
    fast = patch(double_ranker, pairs, target, batch_size=5, direction=direction, delta=delta, progress=False)
    naive = patch_naive(double_ranker, pairs, target, direction=direction, delta=delta)
    scored = pairs.score(double_ranker)
    receiver, donor = ("baseline", "perturbed") if direction == "to_baseline" else ("perturbed", "baseline")
    for result in (fast, naive):
        assert np.allclose(result.receiver_score, scored[f"{receiver}_score"], rtol=0, atol=1e-9)
        assert np.allclose(result.donor_score, scored[f"{donor}_score"], rtol=0, atol=1e-9)
    assert fast.effects.shape == naive.effects.shape
    assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects))
    assert not np.isnan(fast.effects).all(), "some pair must be patched"
    assert np.nanmax(np.abs(fast.effects - naive.effects)) <= TOLERANCE


def swap_inputs(pairs: PairSet) -> PairSet:
    """The same pairs with each pair's baseline and perturbed inputs exchanged: tensors and frame columns."""
    tensors = dict(pairs.tensors)
    for key in pairs.tensors:
        if key.startswith("baseline_"):
            other = "perturbed_" + key.removeprefix("baseline_")
            tensors[key], tensors[other] = pairs.tensors[other], pairs.tensors[key]
    frame = pairs.frame.assign(baseline=pairs.frame["perturbed"], perturbed=pairs.frame["baseline"])
    return PairSet(frame, tensors, dict(pairs.provenance))


def test_head_change_is_antisymmetric_under_swapping_inputs(minilm, short_frame):
    """The audit's per-pair change of a head, averaged over both patching directions, changes sign exactly when
    a pair's two inputs are swapped (the README's claim that makes the NULL calibration's test exact)."""
    pairs = make_pairs("TFC1", short_frame, minilm, n=4, seed=3)
    swapped = swap_inputs(pairs)
    assert set(swapped.tensors) == set(pairs.tensors) and any(key.startswith("baseline_") for key in pairs.tensors)
    scored, rescored = pairs.score(minilm), swapped.score(minilm)
    assert np.array_equal(rescored["baseline_score"], scored["perturbed_score"])
    assert np.array_equal(rescored["delta"], -scored["delta"])

    def change(pair_set: PairSet) -> tuple[np.ndarray, np.ndarray]:
        denoising, noising = (patch(minilm, pair_set, "heads", direction=direction, progress=False)
                              for direction in ("to_baseline", "to_perturbed"))
        return symmetric_change(denoising, noising, "increase")

    (forward, size), (backward, swapped_size) = change(pairs), change(swapped)
    assert forward.shape == (4, minilm.n_layers, minilm.n_heads)
    assert np.array_equal(np.isnan(size), np.isnan(swapped_size)) and np.allclose(size, swapped_size, equal_nan=True)
    kept = ~np.isnan(size)
    assert kept.sum() >= 2 and np.abs(forward[kept]).max() > 1e-3  # real pairs whose heads carry some change
    assert np.allclose(backward[kept], -forward[kept], rtol=0, atol=1e-7)
    effect = forward[kept].sum(0) / size[kept].sum()  # the audit's head effect: negated as a whole, too
    assert np.allclose(backward[kept].sum(0) / swapped_size[kept].sum(), -effect, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_exact_matches_naive_in_float32_unbatched(minilm, short_frame):
    """In float32, with one pair per batch, the layer replay alone is compared (batching reorders sums)."""
    pairs = make_pairs("TFC1", short_frame, minilm, n=3, seed=2)
    fast = patch(minilm, pairs, "heads", batch_size=1, progress=False)
    naive = patch_naive(minilm, pairs, "heads")
    assert np.nanmax(np.abs(fast.effects - naive.effects)) <= TOLERANCE


@pytest.fixture(scope="module")
def double_minilm():
    ranker = load_ranker()
    ranker.model.double()
    return ranker


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), name=st.sampled_from(["TFC1", "TFC1-start", "TDC", "STMC1", "WORD-ORDER"]))
def test_whole_residual_restores_and_untouched_positions_do_nothing(double_minilm, short_frame, seed, name):
    pairs = make_pairs(name, short_frame, double_minilm, n=2, seed=seed)
    whole = patch_variants(double_minilm, pairs, [Variant(0, "blocks.0.hook_resid_pre")], delta=1e-9)
    assert np.allclose(whole.effects[:, 0], 1.0, atol=1e-9)  # the receiver becomes the donor
    width = int(pairs.tensors["length"].max())
    singles = patch_variants(double_minilm, pairs, [Variant(0, "blocks.0.hook_resid_pre", position=p) for p in range(width)],
                             delta=1e-9)
    for row in range(len(pairs)):
        start, end = int(pairs.frame["span_start"][row]), int(pairs.frame["span_end"][row])
        length = int(pairs.tensors["length"][row])
        outside = [p for p in range(length) if not start <= p < end]
        assert outside and np.allclose(singles.effects[row, outside], 0.0, atol=1e-9)  # same token, same position
        assert np.isnan(singles.effects[row, length:]).all()


def test_regions_partition_the_sequence(double_ranker, short_frame):
    """Regions: the changed span's embeddings carry the whole change, identical tokens none; attribution over
    all regions of a component adds up to attribution over the whole sequence."""
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=3, seed=5)
    delta = _delta_for(double_ranker)
    exact = patch(double_ranker, pairs, "regions", batch_size=8, delta=delta, progress=False)
    assert exact.labels["region"] == (["span", "text", "markup"] if double_ranker.kind == "bi" else ["span", "text", "other", "markup"])
    included = exact.included
    assert included.any()
    layer_zero = exact.effects[included, 0, 0]  # resid_pre of layer 0, by region
    assert np.allclose(layer_zero[:, 0], 1.0, atol=1e-9) and np.allclose(layer_zero[:, 1:], 0.0, atol=1e-9)
    approx = patch(double_ranker, pairs, "regions", method="attribution", delta=delta, progress=False)
    whole = patch_variants(double_ranker, pairs, [Variant(l, f"blocks.{l}.hook_{c}") for c in ("resid_pre", "attn_out", "mlp_out")
                                                 for l in range(double_ranker.n_layers)],
                           method="attribution", delta=delta)
    summed = approx.effects[included].sum(-1).reshape(int(included.sum()), -1)
    assert np.allclose(summed, whole.effects[included], atol=1e-9)


def test_attribution_tracks_exact(minilm, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=6, seed=4)
    exact = patch(minilm, pairs, "heads", progress=False)
    approx = patch(minilm, pairs, "heads", method="attribution", progress=False)
    assert approx.method == "attribution" and approx.effects.shape == exact.effects.shape
    both = pd.DataFrame({"exact": exact.mean().ravel(), "approx": approx.mean().ravel()})
    assert both.corr(method="spearman").iloc[0, 1] > 0.8


def test_result_frame_save_and_exclusions(tmp_path, minilm, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=3, seed=1)
    unexplained = patch(minilm, pairs, "mlp", delta=1e9, progress=False)  # no pair's change is large enough
    assert unexplained.excluded == 3 and np.isnan(unexplained.effects).all() and unexplained.frame().empty
    result = patch(minilm, pairs, "blocks", batch_size=64, progress=False)
    frame = result.frame()
    assert list(frame.columns) == ["pair", "component", "layer", "position", "effect"]
    assert set(frame["component"]) == {"resid_pre", "attn_out", "mlp_out"}
    assert result.effects.shape == (3, 3, minilm.n_layers, int(pairs.tensors["length"].max()))
    loaded = PatchResult.load(result.save(tmp_path / "blocks"))
    assert np.array_equal(loaded.effects, result.effects, equal_nan=True)
    assert loaded.dims == result.dims and loaded.provenance == result.provenance
    assert np.array_equal(loaded.high, result.high) and np.all(loaded.high >= loaded.low)


def test_directions(minilm, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=3, seed=6)
    scored = pairs.score(minilm)
    to_baseline = patch(minilm, pairs, "mlp", direction="to_baseline", progress=False)
    to_perturbed = patch(minilm, pairs, "mlp", direction="to_perturbed", progress=False)
    assert np.allclose(to_baseline.receiver_score, scored["baseline_score"], atol=1e-5)
    assert np.allclose(to_perturbed.receiver_score, scored["perturbed_score"], atol=1e-5)


def test_bad_arguments(minilm, tiny, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=2, seed=1)
    with pytest.raises(ValueError, match=r"target='neurons' is not valid; use one of blocks, regions, heads, heads_by_pos, mlp"):
        patch(minilm, pairs, "neurons")
    with pytest.raises(ValueError, match=r"method='gradient' is not valid; use one of exact, attribution"):
        patch(minilm, pairs, method="gradient")
    with pytest.raises(ValueError, match=r"target='heads_by_pos' needs heads=\[\(layer, head\), ...\]"):
        patch(minilm, pairs, "heads_by_pos")
    with pytest.raises(ValueError, match=r"head \(6, 0\) does not exist: the model has 6 layers x 12 heads"):
        patch(minilm, pairs, "heads_by_pos", heads=[(6, 0)])
    with pytest.raises(ValueError, match="these pairs were tokenized for"):
        patch(tiny("t5", "t5")[0], pairs)
