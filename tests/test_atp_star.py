"""AtP*: the query, key and value hooks it builds on, GradDrop's one-forward path against its definition, and the
claim that head-level attribution already takes a head's patched attention pattern exactly (the QK fix).

Models run in float64 so that comparisons see the algorithm and not float32 reduction order; torch runs on one
thread (see conftest's one_torch_thread).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechir_axioms import load_ranker, make_pairs, patch
from mechir_axioms.models.names import act_name
from mechir_axioms.patching.attribution import attribution_batch
from mechir_axioms.patching.plan import plan
from mechir_axioms.patching.runs import clean_batch


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Small models: one intra-op thread."""


CASES = {
    "minilm": lambda get: None,
    "modernbert-cross": lambda get: get("tiny_model")("modernbert", "cross"),
    "mpnet-bi": lambda get: get("tiny_model")("mpnet", "bi"),
    "t5": lambda get: get("tiny_model")("t5", "t5"),
    "llm-qwen3": lambda get: get("decoder_model")("qwen3", "causal-lm"),
}


@pytest.fixture(scope="module")
def double_case(request, short_frame):
    """double_case(name) -> (float64 ranker, 4 TFC1 pairs)."""
    built = {}

    def get(name: str):
        if name not in built:
            ranker = load_ranker(CASES[name](request.getfixturevalue))
            ranker.model.double()
            built[name] = (ranker, make_pairs("TFC1", short_frame, ranker, n=4, seed=3))
        return built[name]

    return get


def _delta(ranker) -> float:
    return 1e-3 if ranker.name.endswith("MiniLM-L6-v2") else 1e-12  # random weights barely react to one term


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("target", ["heads", "regions"])
def test_graddrop_matches_its_definition(double_case, name, target):
    """One forward and partial backward passes give what a forward and backward pass per blocked layer give."""
    ranker, pairs = double_case(name)
    result = patch(ranker, pairs, target, method="atp*", delta=_delta(ranker), progress=False)
    plain = patch(ranker, pairs, target, method="attribution", delta=_delta(ranker), progress=False)
    assert result.dropped.shape == (len(pairs), ranker.n_layers, *result.effects.shape[1:])
    assert np.array_equal(np.isnan(result.effects), np.isnan(plain.effects)) and not np.isnan(plain.effects).all()
    assert np.nanmax(np.abs(result.effects - plain.effects)) <= 1e-9  # AtP* keeps AtP's estimate beside GradDrop's

    the_plan = plan(target, ranker.n_layers, ranker.n_heads, int(pairs.tensors["length"].max()), None, ranker.regions)
    names = sorted({variant.site for _, variant in the_plan.variants})
    rows = list(range(len(pairs)))
    with torch.no_grad():
        runs = clean_batch(ranker, pairs, rows, names, "to_low")
    kept = np.abs(result.donor_score - result.receiver_score) >= _delta(ranker)
    changed = 0
    for layer in range(ranker.n_layers):
        reference = np.full(result.effects.shape, np.nan)
        attribution_batch(ranker, runs, names, the_plan, reference, rows, pairs.tensors["length"], blocked=layer)
        fast = result.dropped[:, layer]
        # relative: random-weight models' score differences, the denominators, are as small as 1e-7; the LLM
        # kind applies its answer rows in float32, where subtracting the blocked paths' gradient keeps ~1e-7
        atol = 1e-5 if ranker.kind == "llm" else 1e-8
        assert np.allclose(fast[kept], reference[kept], rtol=1e-6, atol=atol, equal_nan=True), f"blocked layer {layer}"
        changed += int(np.nanmax(np.abs(fast[kept] - result.effects[kept])) > 1e-6)
    assert changed >= ranker.n_layers - 1, "blocking a layer must change some estimate"


def test_patching_a_heads_queries_keys_and_values_is_patching_its_output(double_case):
    """hook_q, hook_k and hook_v reach the head's own attention: the donor's three give the donor's hook_z, so
    attribution over hook_z takes the pattern of patched queries and keys exactly (AtP*'s QK fix, per head)."""
    ranker, pairs = double_case("minilm")
    layer, head = 2, 5
    baseline, perturbed = (pairs.model_input(which, ranker, [0, 1]) for which in ("baseline", "perturbed"))
    context = ranker.context(baseline, pairs.target)
    sites = [act_name(site, layer) for site in ("q", "k", "v", "z")]
    donor: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        ranker.forward(perturbed, [(name, lambda a, name: donor.__setitem__(name, a.clone())) for name in sites],
                       context=context)

        def swap(activation, name):
            activation = activation.clone()
            activation[:, :, head] = donor[name][:, :, head]
            return activation

        by_qkv = ranker.forward(baseline, [(name, swap) for name in sites[:3]], context=context)
        by_z = ranker.forward(baseline, [(sites[3], swap)], context=context)
        unchanged = ranker.forward(baseline, context=context)
    assert donor[sites[0]].shape[2:] == (ranker.n_heads, ranker.d_head)
    assert torch.allclose(by_qkv, by_z, atol=1e-12, rtol=0)
    assert (by_z - unchanged).abs().max() > 1e-6, "the head must matter to these pairs"
