"""Feature patching: every method on every ranker kind (three in the fast tier, the other four in the full suite),
the batched exact engine against the one-latent-per-pass reference (spliced SAEs, float64), attribution against
the exact effects, zero latents skipped, and refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mechir_axioms import load_ranker, make_pairs, patch, patch_variants
from mechir_axioms.core.errors import SettingsError
from mechir_axioms.patching.naive import patch_features_naive
from mechir_axioms.patching.plan import Variant
from test_sae import random_sae

TINY = {"tiny-bi": ("bert", "bi"), "tiny-cross": ("bert", "cross"), "t5": ("t5", "t5")}
FOLDERS = {"llm-embedder": "st_embedder_path", "colbert": "colbert_path", "splade": "splade_st_path"}
"""The other kinds' tiny folders, by fixture: with TINY and the decoder reranker, every ranker kind."""


@pytest.fixture(scope="module", params=list(TINY))
def double_ranker(request, tiny):
    ranker = load_ranker(tiny(*TINY[request.param])[1])
    ranker.model.double()
    return ranker


@pytest.fixture(scope="module", params=["llm-reranker", *FOLDERS])
def other_kind(request):
    """The decoder reranker, the LLM embedder, ColBERT and SPLADE, tiny and in float64."""
    if request.param == "llm-reranker":
        ranker = load_ranker(request.getfixturevalue("decoder_model")("qwen3", "causal-lm"))
    else:
        ranker = load_ranker(request.getfixturevalue(FOLDERS[request.param]))
    ranker.model.double()
    return ranker


def saes_for(ranker, d_sae: int = 24) -> list:
    """Three SAEs (three sites, three architectures, one reading the heads' outputs flattened) sized for the
    ranker, in float64."""
    config = ranker.model.config
    width = config.d_model if hasattr(config, "d_model") else config.hidden_size
    head_width = getattr(config, "d_kv", None) or getattr(config, "head_dim", None) or width // ranker.n_heads
    heads = ranker.n_heads * head_width
    return [random_sae(width, d_sae, "topk", "blocks.0.hook_resid_post", k=6, seed=1).double(),
            random_sae(width, d_sae // 2, "standard", f"blocks.{ranker.n_layers - 1}.hook_resid_pre", seed=2).double(),
            random_sae(heads, d_sae // 3, "jumprelu", "blocks.0.attn.hook_z", seed=3).double()]


@pytest.mark.parametrize("direction", ["to_baseline", "to_perturbed"])
def test_exact_features_equal_the_one_latent_per_pass_reference(double_ranker, short_frame, direction):
    saes = saes_for(double_ranker)
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=3, seed=5)
    fast = patch(double_ranker, pairs, "features", batch_size=4, direction=direction, delta=1e-7, progress=False,
                 saes=saes)
    naive = patch_features_naive(double_ranker, pairs, saes, direction=direction, delta=1e-7)
    assert fast.effects.shape == naive.effects.shape == (3, 24 + 12 + 8)
    assert fast.labels["feature"] == naive.labels["feature"]
    assert fast.labels["feature"][0] == "0.resid_post:0"
    assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects))
    measured = fast.effects[~np.isnan(fast.effects)]
    assert measured.size and np.abs(measured).max() > 1e-6, "some latent must move the score"
    assert np.nanmax(np.abs(fast.effects - naive.effects)) <= 1e-9
    assert set(fast.provenance["saes"]) == {sae.hook_name for sae in saes}


@pytest.mark.slow
def test_every_other_kind_patches_features_exactly_and_attributes_them(other_kind, short_frame):
    """The kinds beyond the fast tier's three: exact equals the one-latent-per-pass reference, and AtP* matches the
    exact effects in the linear regime (decoder rows scaled to 1%; see the next-but-one test)."""
    saes = saes_for(other_kind)
    pairs = make_pairs("TFC1", short_frame, other_kind, n=2, seed=5)
    fast = patch(other_kind, pairs, "features", batch_size=4, delta=1e-7, progress=False, saes=saes)
    naive = patch_features_naive(other_kind, pairs, saes, delta=1e-7)
    assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects))
    assert np.nanmax(np.abs(fast.effects)) > 1e-6, "some latent must move the score"
    assert np.nanmax(np.abs(fast.effects - naive.effects)) <= 1e-9
    small = [copy.deepcopy(sae) for sae in saes]
    with torch.no_grad():
        for sae in small:
            sae.W_dec.mul_(0.01)
    exact = patch(other_kind, pairs, "features", delta=1e-7, progress=False, saes=small)
    estimate = patch(other_kind, pairs, "features", "atp*", delta=1e-7, progress=False, saes=small)
    kept = ~np.isnan(exact.effects)
    assert np.all(estimate.effects[exact.effects == 0] == 0)
    assert np.corrcoef(exact.effects[kept], estimate.effects[kept])[0, 1] > 0.99


def test_latents_that_do_not_change_carry_exactly_nothing(double_ranker, short_frame):
    """A latent equal on both inputs of a pair gets effect 0 without a run; the reference agrees it is 0."""
    width = saes_for(double_ranker)[0].config.d_in
    saes = [random_sae(width, 128, "topk", "blocks.0.hook_resid_post", k=2, seed=4).double()]
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=3, seed=5)
    fast = patch(double_ranker, pairs, "features", delta=1e-7, progress=False, saes=saes)
    naive = patch_features_naive(double_ranker, pairs, saes, delta=1e-7)
    zero = fast.effects == 0
    assert zero.any(), "a TopK SAE leaves most latents off on both inputs"
    assert np.all(naive.effects[zero] == 0)


@pytest.mark.parametrize("method", ["attribution", "atp*"])
def test_attribution_of_features_tracks_the_exact_effects(double_ranker, short_frame, method):
    """AtP is first order: with decoder rows small enough for the patch to stay in the linear regime its estimates
    match the exact effects (random full-size rows move ColBERT's MaxSim far beyond it: correlation 0.02 there),
    and a latent that does not change has estimate 0 exactly; atp* carries one GradDrop estimate per
    layer."""
    saes = saes_for(double_ranker)
    with torch.no_grad():
        for sae in saes:
            sae.W_dec.mul_(0.01)
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=3, seed=5)
    exact = patch(double_ranker, pairs, "features", delta=1e-7, progress=False, saes=saes)
    estimate = patch(double_ranker, pairs, "features", method, delta=1e-7, progress=False, saes=saes)
    kept = ~np.isnan(exact.effects)
    assert np.array_equal(kept, ~np.isnan(estimate.effects))
    assert np.all(estimate.effects[exact.effects == 0] == 0)
    assert np.corrcoef(exact.effects[kept], estimate.effects[kept])[0, 1] > 0.99
    if method == "atp*":
        assert estimate.dropped.shape == (3, double_ranker.n_layers, 44)


def test_attribution_is_exact_for_a_latent_read_linearly(minilm, short_frame):
    """Through the final residual stream of a bi-encoder whose score is linear in it there is nothing for a first
    order estimate to miss... except the pooling's normalisation; so compare on the raw gradient identity instead:
    one latent's AtP equals its change times the gradient along its decoder row, summed over positions."""
    sae = random_sae(384, 16, "standard", "blocks.5.hook_resid_post", seed=3)
    pairs = make_pairs("TFC1", short_frame, minilm, n=2, seed=1)
    estimate = patch(minilm, pairs, "features", "attribution", progress=False, saes=[sae])
    variants = [Variant(5, "blocks.5.hook_resid_post", latent=j) for j in range(16)]
    by_variants = patch_variants(minilm, pairs, variants, "attribution", saes=[sae])
    assert np.allclose(estimate.effects, by_variants.effects, equal_nan=True, rtol=0, atol=1e-6)


def test_patch_variants_measures_chosen_latents_as_the_whole_target_does(double_ranker, short_frame):
    saes = saes_for(double_ranker)
    pairs = make_pairs("TFC1", short_frame, double_ranker, n=3, seed=5)
    whole = patch(double_ranker, pairs, "features", delta=1e-7, progress=False, saes=saes)
    chosen = [Variant(1, saes[1].hook_name, latent=3), Variant(0, saes[0].hook_name, latent=5)]
    some = patch_variants(double_ranker, pairs, chosen, delta=1e-7, saes=saes)
    assert np.allclose(some.effects[:, 0], whole.effects[:, 24 + 3], equal_nan=True, rtol=0, atol=1e-9)
    assert np.allclose(some.effects[:, 1], whole.effects[:, 5], equal_nan=True, rtol=0, atol=1e-9)


def test_feature_patching_refuses_what_does_not_fit(minilm, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=2, seed=1)
    with pytest.raises(SettingsError, match="needs saes"):
        patch(minilm, pairs, "features", progress=False)
    with pytest.raises(Exception, match="d_in 100"):
        patch(minilm, pairs, "features", progress=False, saes=[random_sae(100, 8, site="blocks.1.hook_resid_post")])
    sae = random_sae(384, 8, site="blocks.1.hook_resid_post")
    with pytest.raises(SettingsError, match="latent 8 at blocks.1.hook_resid_post is not a latent"):
        patch_variants(minilm, pairs, [Variant(1, "blocks.1.hook_resid_post", latent=8)], saes=[sae])
    with pytest.raises(SettingsError, match="not both"):
        patch_variants(minilm, pairs, [Variant(1, "blocks.1.hook_resid_post", latent=1),
                                       Variant(1, "blocks.1.attn.hook_z", head=0)], saes=[sae])
    with pytest.raises(SettingsError, match="verified"):
        patch(minilm, pairs, "features", "verified", progress=False, saes=[sae])
