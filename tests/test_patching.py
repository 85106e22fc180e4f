"""Activation patching: the batched exact path equals the naive reference; the metric's end points hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechir_axioms import PatchResult, Variant, load_ranker, make_pairs, patch, patch_variants
from mechir_axioms.patching.naive import patch_naive

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def short_frame(trec_rows) -> pd.DataFrame:
    """Real pairs with short passages, so the naive reference stays affordable."""
    frame = pd.DataFrame(trec_rows)
    return frame[frame["text"].str.split().str.len().between(5, 14) & (frame["text"].str.len() < 100)]


@pytest.fixture(scope="module", params=["minilm", "cross-encoder", "t5"])
def double_ranker(request, tiny):
    """Each model in float64, so the comparison sees the algorithm and not float32 reduction order."""
    if request.param == "minilm":
        ranker = load_ranker()
    elif request.param == "cross-encoder":
        ranker = load_ranker(request.getfixturevalue("cross_encoder_path"))
    else:
        ranker = load_ranker(tiny("t5", "t5")[1])
    ranker.model.double()
    return ranker


def _delta_for(ranker) -> float:
    return 1e-3 if ranker.kind != "t5" else 1e-7  # the random-weight T5 barely reacts to one term


@pytest.mark.parametrize("target", ["heads", "mlp", "heads_by_pos", "blocks", "regions"])
def test_exact_matches_naive(double_ranker, short_frame, target):
    n = 2 if target == "blocks" else 3
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=n, seed=11)
    options = {"heads": [(0, 1), (double_ranker.n_layers - 1, 2)]} if target == "heads_by_pos" else {}
    delta = _delta_for(double_ranker)
    fast = patch(double_ranker, pairs, target, batch_size=5, delta=delta, progress=False, **options)
    naive = patch_naive(double_ranker, pairs, target, delta=delta, **options)
    assert fast.effects.shape == naive.effects.shape
    assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects))
    assert not np.isnan(fast.effects).all(), "some pair must be patched"
    assert np.nanmax(np.abs(fast.effects - naive.effects)) <= TOLERANCE


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
