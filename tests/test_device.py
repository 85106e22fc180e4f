"""Device correctness: every tensor that pairs, patching, attribution and the audit give a model lives on the
ranker's device, proved on a CPU-only machine by an emulated accelerator (tests/virtual_device.py), and
checked for real on every device this machine has.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from mechir_axioms import audit, load_ranker, make_pairs, patch
from mechir_axioms.models.rankers import Ranker
from mechir_axioms.patching.naive import patch_naive
from virtual_device import DeviceMismatch, VirtualDevice

KINDS = [("bert", "bi"), ("bert", "cross"), pytest.param("t5", "t5", marks=pytest.mark.slow)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
    ["mps"] if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else [])


@pytest.fixture(scope="module")
def small_pairs(tiny, trec_rows):
    """(ranker, pairs) per kind: 3 TFC1 pairs built before the emulated device is switched on."""
    import pandas as pd

    frame = pd.DataFrame(trec_rows[:300])
    built = {}

    def get(family: str, kind: str):
        if (family, kind) not in built:
            ranker, _ = tiny(family, kind)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[family, kind] = (ranker, make_pairs("TFC1", frame, ranker, n=3, seed=0))
        return built[family, kind]

    return get


@pytest.mark.parametrize("family,kind", KINDS)
def test_patching_puts_every_tensor_on_the_rankers_device(small_pairs, family, kind):
    ranker, pairs = small_pairs(family, kind)
    with VirtualDevice(ranker.model):
        pairs.score(ranker)
        results = [patch(ranker, pairs, target, "exact", batch_size=4, direction="to_baseline", delta=0.0, progress=False)
                   for target in ("heads", "regions", "blocks")]
        results.append(patch(ranker, pairs, "heads", "attribution", delta=0.0, progress=False))
        results.append(patch(ranker, pairs, "heads", "atp*", delta=0.0, progress=False))
        results.append(patch(ranker, pairs, "heads_by_pos", heads=[(0, 0)], delta=0.0, progress=False))
        results.append(patch_naive(ranker, pairs.take([0]), "mlp", delta=0.0))
        ranker.score(["a query"], ["a document about a query"])
        ranker.run_with_cache(["a query"], ["a document"], names=["blocks.0.attn.hook_z"])
    assert all(result.excluded == 0 for result in results)  # every pair really went through the engines


@pytest.mark.slow
@pytest.mark.parametrize("family,kind", KINDS)
def test_audit_puts_every_tensor_on_the_rankers_device(small_pairs, trec_rows, tmp_path, family, kind):
    import pandas as pd

    ranker, _ = small_pairs(family, kind)
    with VirtualDevice(ranker.model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = audit(ranker, ["TFC1"], pd.DataFrame(trec_rows[:300]), n=3, cell_pairs=2, examples=1, tolerance=0.0,
                       method="verified", threshold=0.0, folder=tmp_path / "audit", progress=False)
    assert len(result.heads) == ranker.n_layers * ranker.n_heads
    assert result.manifest["axioms"]["TFC1"]["excluded"]["patching"] == 0  # the heads really were patched
    assert result.manifest["axioms"]["TFC1"]["verification"]["verified"], "threshold 0: some head is verified exactly"
    assert result.manifest["model"]["device"] == "cpu" and result.manifest["model"]["dtype"] == "float32"


def test_the_emulated_device_catches_inputs_left_on_the_host(small_pairs, monkeypatch):
    """The check can fail: with placement switched off, the model receives host tensors and the test says so."""
    ranker, pairs = small_pairs("bert", "cross")
    monkeypatch.setattr(Ranker, "place", lambda self, inputs: inputs)
    with pytest.raises(DeviceMismatch), VirtualDevice(ranker.model):
        patch(ranker, pairs, "heads", delta=0.0, progress=False)


def test_the_emulated_device_catches_a_mask_built_on_the_host(small_pairs, monkeypatch):
    """Region maps must be placed too: without it, exact patching mixes a host mask into device activations."""
    ranker, pairs = small_pairs("bert", "cross")
    monkeypatch.setattr(Ranker, "place_tensor", lambda self, tensor: tensor)
    with pytest.raises(DeviceMismatch), VirtualDevice(ranker.model):
        patch(ranker, pairs, "regions", delta=0.0, progress=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family,kind", KINDS)
def test_scores_and_patching_agree_on_every_available_device(small_pairs, tiny_model, family, kind, device):
    """Each device this machine has scores and patches as the CPU does (CPU always, CUDA or MPS when present)."""
    cpu_ranker, pairs = small_pairs(family, kind)
    ranker = load_ranker(tiny_model(family, kind), device=device)
    assert ranker.device.type == device
    cpu, here = (patch(r, pairs, "heads", delta=0.0, progress=False) for r in (cpu_ranker, ranker))
    torch.testing.assert_close(torch.as_tensor(here.receiver_score), torch.as_tensor(cpu.receiver_score),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.as_tensor(here.effects), torch.as_tensor(cpu.effects), atol=1e-3, rtol=0,
                               equal_nan=True)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lower_precision_on_request(tiny_model, dtype):
    ranker = load_ranker(tiny_model("bert", "cross"), dtype=dtype)
    assert ranker.dtype == getattr(torch, dtype)
    full = load_ranker(tiny_model("bert", "cross"))
    queries, documents = ["what is a cat"], ["a cat is a small mammal"]
    assert torch.allclose(ranker.score(queries, documents), full.score(queries, documents), atol=0.05)


def test_device_auto_and_bad_values(tiny_model):
    from mechir_axioms import SettingsError
    from mechir_axioms.models.device import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "mps" if "mps" in DEVICES else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(SettingsError, match="dtype='float8'"):
        load_ranker(tiny_model("bert", "cross"), dtype="float8")
    with pytest.raises(SettingsError, match="device='gpu0'"):
        load_ranker(tiny_model("bert", "cross"), device="gpu0")
