"""The patching-method registry: every method measures every target it declares (on a tiny model), and every
other combination is refused with one sentence that lists the methods that can measure the target."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mechir_axioms import SettingsError, load_ranker, make_pairs, patch, patch_paths, patch_variants
from mechir_axioms.models.names import act_name
from mechir_axioms.patching.methods import METHODS, Method, method_for, methods_for, register_method
from mechir_axioms.patching.plan import TARGETS, Variant

DELTA = 1e-9  # random weights barely react to one term
PAIRS = [(method.name, target) for method in METHODS.values() for target in method.targets]
VARIANTS = [Variant(1, act_name("z", 1), head=2), Variant(0, act_name("resid_pre", 0), position=1),
            Variant(1, act_name("mlp_out", 1))]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """A tiny model: one intra-op thread."""


@pytest.fixture(scope="module")
def tiny_case(tiny_model, short_frame):
    """A tiny cross-encoder of its own, in float64 so that engines compare without float32 noise, and 3 pairs."""
    ranker = load_ranker(tiny_model("bert", "cross"))
    ranker.model.double()
    return ranker, make_pairs("TFC1", short_frame, ranker, n=3, seed=1)


def _sae(ranker):
    """A random TopK SAE on the tiny model's first residual stream, in float64, for the features target."""
    from test_sae import random_sae

    return random_sae(ranker.model.config.hidden_size, 16, "topk", "blocks.0.hook_resid_post", k=4, seed=3).double()


def _measure(ranker, pairs, method: str, target: str):
    """One single-stage method on one target, through the public verb for that target."""
    if target == "features":
        return patch(ranker, pairs, target, method, delta=DELTA, progress=False, saes=[_sae(ranker)])
    if target == "variants":
        return patch_variants(ranker, pairs, VARIANTS, method, delta=DELTA)
    if target == "paths":
        return patch_paths(ranker, pairs, [(0, 1), (1, 3)], "final", method=method, delta=DELTA, progress=False)
    return patch(ranker, pairs, target, method, delta=DELTA, heads=[(0, 1), (1, 2)], progress=False)


@pytest.mark.parametrize(("name", "target"), PAIRS, ids=[f"{name}-{target}" for name, target in PAIRS])
def test_every_registered_pair_runs(tiny_case, name, target):
    ranker, pairs = tiny_case
    method = method_for(name, target)
    if method.two_stage:  # the screen on every component, then the verification of the strongest as variants
        screened = _measure(ranker, pairs, method.screen, target)
        if target == "features":  # the strongest latent, verified as a latent variant
            sae = _sae(ranker)
            latent = int(np.nanargmax(np.abs(np.nanmean(screened.effects, axis=0))))
            verified = patch_variants(ranker, pairs, [Variant(0, sae.hook_name, latent=latent)], method.verify,
                                      delta=DELTA, saes=[sae])
            exact = patch(ranker, pairs, target, method.verify, delta=DELTA, progress=False, saes=[sae])
            np.testing.assert_allclose(verified.effects[:, 0], exact.effects[:, latent], rtol=1e-9, atol=1e-9)
            return
        strongest = np.unravel_index(np.nanargmax(np.abs(np.nanmean(screened.effects, axis=0))),
                                     screened.effects.shape[1:])
        assert screened.dims == ("pair", "layer", "head")
        layer, head = (int(index) for index in strongest)
        verified = patch_variants(ranker, pairs, [Variant(layer, act_name("z", layer), head=head)], method.verify,
                                  delta=DELTA)
        exact = patch(ranker, pairs, target, method.verify, delta=DELTA, progress=False)
        np.testing.assert_allclose(verified.effects[:, 0], exact.effects[:, layer, head], rtol=1e-9, atol=1e-9)
        with pytest.raises(SettingsError, match=re.escape(f"method='{name}' screens with '{method.screen}' and verifies with 'exact'")):
            patch(ranker, pairs, target, name, delta=DELTA, progress=False)
        return
    result = _measure(ranker, pairs, name, target)
    assert result.method == name and result.target == target
    assert result.included.any(), "some pair must be patched"
    assert np.isfinite(result.effects[result.included]).any()
    assert (result.dropped is not None) == (name == "atp*")


def test_unsupported_combinations_are_refused_with_the_list(tiny_case):
    ranker, pairs = tiny_case
    with pytest.raises(SettingsError, match="^method='attribution' cannot measure target 'paths'; methods that can: "
                                            "exact$"):
        method_for("attribution", "paths")
    with pytest.raises(SettingsError, match="^method='atp\\*' cannot measure target 'paths'; methods that can: exact$"):
        patch_paths(ranker, pairs, [(0, 1)], method="atp*", progress=False)
    with pytest.raises(SettingsError, match="^method='verified' cannot measure target 'mlp'; methods that can: exact, "
                                            "attribution, atp\\*$"):
        patch(ranker, pairs, "mlp", "verified", progress=False)
    with pytest.raises(SettingsError, match="^method='verified' cannot measure target 'variants'"):
        patch_variants(ranker, pairs, VARIANTS, "verified")
    with pytest.raises(SettingsError, match="^method='gradient' is not valid; use one of exact, attribution, atp\\*, "
                                            "verified \\(the methods that can measure target 'heads'\\)$"):
        patch(ranker, pairs, "heads", "gradient", progress=False)
    with pytest.raises(SettingsError, match="^target='neurons' is not valid; use one of blocks, "):
        method_for("exact", "neurons")


def test_the_registry_declares_what_each_method_measures():
    assert list(METHODS) == ["exact", "attribution", "atp*", "verified"]
    assert methods_for("paths") == ["exact"]
    assert methods_for("variants") == ["exact", "attribution", "atp*"]
    assert methods_for("heads") == ["exact", "attribution", "atp*", "verified"]
    assert methods_for("features") == ["exact", "attribution", "atp*", "verified"]
    assert all(methods_for(target) for target in TARGETS), "every patching target needs a method"
    assert [name for name, method in METHODS.items() if method.estimate] == ["attribution", "atp*"]
    verified = METHODS["verified"]
    assert (verified.targets, verified.screen, verified.verify, verified.estimate) == (("heads", "features"), "attribution", "exact", False)
    from mechir_axioms.results.settings import Settings

    assert verified.screen == Settings().screen  # the registry's screen is the audits' default one
    assert all(method.description and "\n" not in method.description for method in METHODS.values())


def test_registering_checks_the_declaration():
    with pytest.raises(SettingsError, match="'exact' is registered twice"):
        register_method(Method("exact", ("heads",), "again", estimate=False))
    with pytest.raises(SettingsError, match="has targets \\['neurons'\\]; use a non-empty selection of blocks"):
        register_method(Method("new", ("neurons",), "new", estimate=False))
    with pytest.raises(SettingsError, match="give both \\(a two-stage method\\) or neither"):
        register_method(Method("new", ("heads",), "new", estimate=False, screen="atp*"))
    with pytest.raises(SettingsError, match="method='unknown' is not valid"):
        register_method(Method("new", ("heads",), "new", estimate=False, screen="unknown", verify="exact"))
    with pytest.raises(SettingsError, match="method='attribution' cannot measure target 'paths'"):
        register_method(Method("new", ("paths",), "new", estimate=False, screen="attribution", verify="exact"))
    assert "new" not in METHODS
