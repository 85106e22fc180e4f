"""Sparse autoencoders: the three architectures against a plain NumPy reference, the SAELens and sparsify
folder formats (written here by hand the way those packages write them, and round-tripped through ours),
one-sentence errors for bad files, and splicing into every ranker kind with scores equal to the plain ones."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mechir_axioms import MechirError, load_sae, save_sae
from mechir_axioms.features.sae import SaeConfig, SparseAutoencoder
from mechir_axioms.features.splice import check_saes, splice_hooks, spliced_scores

QUERIES = ["what is the capital of france", "how do vaccines work"]
DOCUMENTS = ["paris is the capital and largest city of france", "vaccines train the immune system to fight germs"]


def random_sae(d_in: int, d_sae: int, architecture: str = "topk", site: str = "blocks.1.hook_resid_post",
               k: int | None = 4, seed: int = 0, apply_b_dec_to_input: bool = True) -> SparseAutoencoder:
    generator = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SaeConfig(d_in=d_in, d_sae=d_sae, hook_name=site, architecture=architecture,
                                      k=k if architecture == "topk" else None,
                                      apply_b_dec_to_input=apply_b_dec_to_input))
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(d_sae, generator=generator) * 0.2)
    return sae


def reference(weights: dict[str, np.ndarray], x: np.ndarray, architecture: str, k: int | None,
              apply_b_dec: bool) -> tuple[np.ndarray, np.ndarray]:
    """SAELens's encode and decode in float64 NumPy: (latents, reconstruction)."""
    sae_in = x - weights["b_dec"] if apply_b_dec else x
    pre = sae_in @ weights["W_enc"] + weights["b_enc"]
    if architecture == "standard":
        latents = np.maximum(pre, 0)
    elif architecture == "jumprelu":
        latents = np.maximum(pre, 0) * (pre > weights["threshold"])
    else:
        latents = np.zeros_like(pre)
        top = np.argsort(-pre, axis=-1)[..., :k]
        np.put_along_axis(latents, top, np.maximum(np.take_along_axis(pre, top, axis=-1), 0), axis=-1)
    return latents, latents @ weights["W_dec"] + weights["b_dec"]


def numpy_weights(sae: SparseAutoencoder) -> dict[str, np.ndarray]:
    return {name: value.detach().double().numpy() for name, value in sae.named_parameters()}


# --- the architectures ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_encode_and_decode_match_a_numpy_reference(architecture, apply_b_dec):
    sae = random_sae(6, 16, architecture, apply_b_dec_to_input=apply_b_dec).double()
    x = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    latents, reconstruction = reference(numpy_weights(sae), x.numpy(), architecture, 4, apply_b_dec)
    assert np.abs(sae.encode(x).detach().numpy() - latents).max() < 1e-12
    assert np.abs(sae(x).detach().numpy() - reconstruction).max() < 1e-12
    if architecture == "topk":
        assert ((sae.encode(x) > 0).sum(-1) <= 4).all()


def test_encoding_follows_the_activation_dtype():
    """A float32 SAE reads a float64 activation in float64, so a float64 reference run stays exact."""
    sae = random_sae(6, 16)
    x = torch.randn(2, 6, dtype=torch.float64)
    assert sae.encode(x).dtype == torch.float64 and sae(x).dtype == torch.float64


# --- files ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_saved_folders_round_trip_and_read_as_saelens_6(architecture, tmp_path):
    sae = random_sae(6, 16, architecture, site="blocks.2.hook_resid_post")
    folder = save_sae(sae, tmp_path / "sae")
    config = json.loads((folder / "cfg.json").read_text())
    assert config["architecture"] == architecture and config["d_in"] == 6 and config["d_sae"] == 16
    assert config["metadata"]["hook_name"] == "blocks.2.hook_resid_post"
    assert config["metadata"]["sae_lens_version"].startswith("6.")  # SAELens reads it as a version 6 config
    assert ("k" in config) == (architecture == "topk")
    loaded = load_sae(folder)
    assert loaded.config.hook_name == sae.config.hook_name and loaded.config.architecture == architecture
    for (name, value), (_, again) in zip(sae.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(value, again), name
    with pytest.raises(MechirError, match="already holds"):
        save_sae(sae, folder)  # the guarded output folder: nothing is overwritten


def write_saelens(folder: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """A folder laid out as SAELens's save_model writes it (no ledger of ours)."""
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps(config))
    save_file({name: value.contiguous() for name, value in tensors.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def saelens_tensors(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in sae.named_parameters()}


def test_a_saelens_6_folder_written_elsewhere_loads(tmp_path):
    """The keys SAELens 6.18's `save_model` writes for a trained TopK SAE, metadata and all."""
    sae = random_sae(6, 16, "topk", k=3)
    config = {"d_in": 6, "d_sae": 16, "dtype": "torch.float32", "device": "cuda", "apply_b_dec_to_input": True,
              "normalize_activations": "none", "reshape_activations": "none", "k": 3,
              "rescale_acts_by_decoder_norm": False, "architecture": "topk",
              "metadata": {"sae_lens_version": "6.18.0", "sae_lens_training_version": "6.18.0",
                           "model_name": "minilm", "hook_name": "blocks.3.hook_resid_post", "hook_head_index": None,
                           "context_size": 128, "prepend_bos": True, "dataset_path": "msmarco"}}
    loaded = load_sae(write_saelens(tmp_path / "sae", config, saelens_tensors(sae)))
    assert loaded.hook_name == "blocks.3.hook_resid_post" and loaded.config.k == 3
    assert loaded.config.metadata["dataset_path"] == "msmarco"
    x = torch.randn(4, 6)
    assert torch.allclose(loaded(x), sae(x), atol=1e-6)


def test_a_pre_6_topk_config_loads(tmp_path):
    """SAELens 5: hook_point at the top level, TopK as activation_fn_str with its k in activation_fn_kwargs."""
    sae = random_sae(6, 16, "topk", k=2)
    config = {"architecture": "standard", "d_in": 6, "d_sae": 16, "hook_point": "blocks.0.hook_attn_out",
              "hook_point_layer": 0, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2},
              "apply_b_dec_to_input": True, "normalize_activations": None, "sae_lens_training_version": "3.13.0"}
    loaded = load_sae(write_saelens(tmp_path / "sae", config, saelens_tensors(sae)))
    assert (loaded.hook_name, loaded.config.architecture, loaded.config.k) == ("blocks.0.hook_attn_out", "topk", 2)
    x = torch.randn(4, 6)
    assert torch.allclose(loaded(x), sae(x), atol=1e-6)


def test_decoder_norm_rescaling_is_folded_in(tmp_path):
    """rescale_acts_by_decoder_norm: latents computed on pre * |W_dec row|, decoded after dividing by it; loaded,
    the SAE gives the same reconstruction with plain weights."""
    sae = random_sae(6, 16, "topk", k=4)
    weights = numpy_weights(sae)
    norms = np.linalg.norm(weights["W_dec"], axis=-1)
    config = {"d_in": 6, "d_sae": 16, "architecture": "topk", "k": 4, "apply_b_dec_to_input": True,
              "rescale_acts_by_decoder_norm": True, "normalize_activations": "none",
              "metadata": {"sae_lens_version": "6.18.0", "hook_name": "blocks.0.hook_resid_post"}}
    loaded = load_sae(write_saelens(tmp_path / "sae", config, saelens_tensors(sae)))
    x = np.random.default_rng(0).normal(size=(5, 6))
    pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
    pre = pre * norms
    latents = np.zeros_like(pre)
    top = np.argsort(-pre, axis=-1)[:, :4]
    np.put_along_axis(latents, top, np.maximum(np.take_along_axis(pre, top, axis=-1), 0), axis=-1)
    expected = (latents / norms) @ weights["W_dec"] + weights["b_dec"]
    assert np.abs(loaded.double()(torch.from_numpy(x)).detach().numpy() - expected).max() < 1e-5


def test_a_sparsify_folder_loads(tmp_path):
    """sparsify: encoder.weight [latents, d_in], ReLU before the top k, one folder per hook point."""
    generator = torch.Generator().manual_seed(3)
    encoder, bias = torch.randn(16, 6, generator=generator), torch.randn(16, generator=generator)
    w_dec, b_dec = torch.randn(16, 6, generator=generator), torch.randn(6, generator=generator)
    folder = tmp_path / "run" / "layers.2"
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
                                                "num_latents": 16, "k": 3, "multi_topk": False,
                                                "skip_connection": False, "transcode": False, "d_in": 6}))
    save_file({"encoder.weight": encoder, "encoder.bias": bias, "W_dec": w_dec, "b_dec": b_dec},
              str(folder / "sae.safetensors"))
    sae = load_sae(folder)
    assert sae.hook_name == "blocks.2.hook_resid_post" and sae.config.k == 3
    x = torch.randn(4, 6, generator=generator)
    pre = torch.relu((x - b_dec) @ encoder.T + bias)
    top = pre.topk(3, dim=-1)
    expected = torch.stack([(top.values[i, :, None] * w_dec[top.indices[i]]).sum(0) for i in range(4)]) + b_dec
    assert torch.allclose(sae(x), expected, atol=1e-5)
    with pytest.raises(MechirError, match="maps to no canonical site; pass hook_name="):
        renamed = tmp_path / "run" / "mlp.act"
        folder.rename(renamed)
        load_sae(renamed)
    assert load_sae(renamed, hook_name="blocks.2.hook_mlp_out").hook_name == "blocks.2.hook_mlp_out"


BAD_FILES = {
    "no config": (lambda config, tensors: (None, tensors), "no cfg.json"),
    "no weights": (lambda config, tensors: (config, None), "but no weights"),
    "missing tensor": (lambda config, tensors: (config, {k: v for k, v in tensors.items() if k != "b_enc"}),
                       "missing tensor\\(s\\) b_enc"),
    "wrong shape": (lambda config, tensors: (config, {**tensors, "W_dec": tensors["W_dec"][:8]}),
                    "tensor W_dec has shape \\[8, 6\\], expected \\[16, 6\\]"),
    "unknown architecture": (lambda config, tensors: ({**config, "architecture": "gated"}, tensors),
                             "architecture 'gated' is not supported; use standard, topk, jumprelu"),
    "topk without k": (lambda config, tensors: ({**config, "k": None}, tensors), "a topk SAE needs k"),
    "no site": (lambda config, tensors: ({**config, "metadata": {"sae_lens_version": "6.1.0"}}, tensors),
                "names no site"),
    "layer norm": (lambda config, tensors: ({**config, "normalize_activations": "layer_norm"}, tensors),
                   "normalize_activations 'layer_norm' is not supported"),
    "k above d_sae": (lambda config, tensors: ({**config, "k": 17}, tensors), "k 17 is more than the 16 latents"),
    "finetuning factor": (lambda config, tensors: ({**config, "finetuning_scaling_factor": True}, tensors),
                          "finetuning_scaling_factor"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_sae_folders_are_one_sentence_errors(case, tmp_path):
    make, message = BAD_FILES[case]
    sae = random_sae(6, 16)
    config = {"d_in": 6, "d_sae": 16, "architecture": "topk", "k": 4, "apply_b_dec_to_input": True,
              "metadata": {"sae_lens_version": "6.18.0", "hook_name": "blocks.0.hook_resid_post"}}
    config, tensors = make(config, saelens_tensors(sae))
    folder = tmp_path / "sae"
    folder.mkdir()
    if config is not None:
        (folder / "cfg.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(folder / "sae_weights.safetensors"))
    with pytest.raises(MechirError, match=message) as caught:
        load_sae(folder)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)


# --- splicing --------------------------------------------------------------------------------------------------
def sites_of(ranker) -> list[str]:
    """A middle residual stream and the first layer's hook_z, by canonical name."""
    layer = ranker.n_layers // 2
    return [name for name in ranker.hook_names
            if name.endswith((f"blocks.{layer}.hook_resid_post", "blocks.0.attn.hook_z"))]


def check_splice(ranker) -> None:
    """Spliced scores equal plain ones within 1e-5 with SAEs at two sites at once, also when an edit rewrites
    every latent with its own value; an edit that zeroes the latents does change them (the splice is live)."""
    from mechir_axioms.features.splice import site_width

    saes = [random_sae(site_width(ranker, site), 32, site=site, k=4, seed=i) for i, site in enumerate(sites_of(ranker))]
    assert len(saes) >= 2
    plain = ranker.score(QUERIES, DOCUMENTS)
    spliced = spliced_scores(ranker, saes, QUERIES, DOCUMENTS).float().cpu()
    assert (spliced - plain).abs().max().item() <= 1e-5
    copied = spliced_scores(ranker, saes, QUERIES, DOCUMENTS, edit=lambda sae, latents: latents.clone()).float().cpu()
    assert (copied - plain).abs().max().item() <= 1e-5
    edited = spliced_scores(ranker, saes, QUERIES, DOCUMENTS, edit=lambda sae, latents: latents * 0).float().cpu()
    assert (edited - plain).abs().max().item() > 1e-6


@pytest.mark.parametrize("family, kind", [("bert", "bi"), ("bert", "cross"), ("t5", "t5")])
def test_spliced_encoder_rankers_score_as_plain_ones(tiny, family, kind):
    check_splice(tiny(family, kind)[0])


def test_spliced_minilm_scores_as_plain(minilm):
    check_splice(minilm)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llm", "cross-decoder", "bi-decoder", "late", "sparse"])
def test_spliced_modern_rankers_score_as_plain_ones(case, request):
    from mechir_axioms import load_ranker

    folders = {
        "llm": lambda: request.getfixturevalue("decoder_model")("qwen3", "causal-lm"),
        "cross-decoder": lambda: request.getfixturevalue("decoder_model")("llama", "sequence-classification", "llama2"),
        "bi-decoder": lambda: request.getfixturevalue("decoder_model")("qwen3", "base"),
        "late": lambda: request.getfixturevalue("colbert_path"),
        "sparse": lambda: request.getfixturevalue("splade_real_path"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny decoders' prompts: not what this test is about
        ranker = load_ranker(folders[case]())
    check_splice(ranker)


def test_saes_that_do_not_fit_the_ranker_are_refused(minilm):
    with pytest.raises(MechirError, match="has d_in 6, but .* is 384 wide"):
        check_saes(minilm, [random_sae(6, 16, site="blocks.2.hook_resid_post")])
    with pytest.raises(MechirError, match="'blocks.9.hook_resid_post' is not a hook of"):
        check_saes(minilm, [random_sae(384, 16, site="blocks.9.hook_resid_post")])
    with pytest.raises(MechirError, match="is an attention pattern"):
        check_saes(minilm, [random_sae(384, 16, site="blocks.2.attn.hook_pattern")])
    with pytest.raises(MechirError, match="two SAEs read site blocks.2.hook_resid_post"):
        check_saes(minilm, [random_sae(384, 16, site="blocks.2.hook_resid_post")] * 2)


def test_splice_hooks_keep_the_error_term():
    """Without an edit the hook returns the activation itself (reconstruction + error); zeroing every latent
    leaves b_dec + error."""
    sae = random_sae(6, 16).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    (site, hook), = splice_hooks([sae])
    assert site == sae.hook_name and torch.allclose(hook(x, site), x, atol=1e-12)
    (_, zeroed), = splice_hooks([sae], edit=lambda sae, latents: torch.zeros_like(latents))
    assert torch.allclose(zeroed(x, site), sae.b_dec.double() + (x - sae(x)), atol=1e-12)


def test_the_spliced_block_names_the_saes_and_restores_the_model(minilm):
    from mechir_axioms.features.splice import spliced

    sae = random_sae(384, 32, site="blocks.2.hook_resid_post")
    plain = minilm.fingerprint()
    with pytest.raises(RuntimeError, match="inside"):
        with spliced(minilm, [sae], edit=lambda sae, latents: latents * 0):
            assert minilm.fingerprint()["interventions"][0]["saes"][0]["site"] == "blocks.2.hook_resid_post"
            changed = minilm.score(QUERIES, DOCUMENTS)
            raise RuntimeError("inside")
    assert minilm.fingerprint() == plain
    assert not torch.equal(changed, minilm.score(QUERIES, DOCUMENTS))
