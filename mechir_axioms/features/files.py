"""SAE folders in the community's formats: SAELens (read and written) and EleutherAI sparsify (read).

SAELens 6 (`SAE.save_model`): `cfg.json` with d_in, d_sae, architecture (standard, topk with k, jumprelu),
apply_b_dec_to_input, normalize_activations and metadata.hook_name, and `sae_weights.safetensors` with W_enc
[d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec (and a JumpReLU's threshold). Configs older than SAELens 6 keep
hook_name (or hook_point) at the top level and say TopK as activation_fn_str "topk" with activation_fn_kwargs.k;
both are read. A TopK file saved with rescale_acts_by_decoder_norm has the decoder norms folded into the weights
on load, as SAELens folds them; a mid-training checkpoint's activation_scaler.json factor is folded likewise.

sparsify (`SparseCoder.save_to_disk`, one folder per hook point): `cfg.json` (d_in, k, num_latents or
expansion_factor) and `sae.safetensors` with encoder.weight [d_sae, d_in], encoder.bias, W_dec, b_dec. Its hook
point is a module name; `layers.N`, `encoder.layer.N` and `h.N` (a block's output) map to
`blocks.N.hook_resid_post`, any other takes `hook_name=`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.errors import MechirError
from ..core.outputs import OutputFolder
from .sae import ARCHITECTURES, SaeConfig, SparseAutoencoder

SAELENS_CONFIG, SAELENS_WEIGHTS, ACTIVATION_SCALER = "cfg.json", "sae_weights.safetensors", "activation_scaler.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
SAELENS_VERSION = "6.0.0"
"""Written as metadata.sae_lens_version: SAELens reads a config without one as pre-6 and rebuilds its metadata."""
INFERENCE_NORMALISATIONS = (None, False, "none", "expected_average_only_in")
"""normalize_activations values that change nothing at inference (SAELens folds the expected-average factor
into the weights when training ends)."""
_BLOCK_OUTPUT = re.compile(r"^(?:.*\.)?(?:layers|layer|h)\.(\d+)$")


class SaeError(MechirError, ValueError):
    """An SAE folder that cannot be used: names the folder, the field or tensor, and what is allowed."""


def load_sae(path: str | Path, hook_name: str | None = None) -> SparseAutoencoder:
    """The SAE in folder `path` (SAELens or sparsify format); `hook_name` overrides the site the file names."""
    folder = Path(path).expanduser()
    if not (folder / SAELENS_CONFIG).is_file():
        raise SaeError(f"{folder}: no {SAELENS_CONFIG}; an SAE folder holds {SAELENS_CONFIG} with "
                       f"{SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify)")
    try:
        config = json.loads((folder / SAELENS_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SaeError(f"{folder / SAELENS_CONFIG} is not a JSON file: {error}") from error
    if not isinstance(config, dict):
        raise SaeError(f"{folder / SAELENS_CONFIG} holds {type(config).__name__}, not a JSON object")
    if (folder / SAELENS_WEIGHTS).is_file():
        return _from_saelens(folder, config, hook_name)
    if (folder / SPARSIFY_WEIGHTS).is_file():
        return _from_sparsify(folder, config, hook_name)
    raise SaeError(f"{folder}: {SAELENS_CONFIG} but no weights; expected {SAELENS_WEIGHTS} (SAELens) or "
                   f"{SPARSIFY_WEIGHTS} (sparsify)")


def save_sae(sae: SparseAutoencoder, folder: str | Path | OutputFolder, command: str = "sae") -> Path:
    """Write `sae` in SAELens 6's format (cfg.json, sae_weights.safetensors) into a guarded output folder."""
    config = sae.config
    metadata = {**config.metadata, "hook_name": config.hook_name, "sae_lens_version": SAELENS_VERSION,
                "sae_lens_training_version": SAELENS_VERSION}
    cfg: dict[str, Any] = {
        "d_in": config.d_in, "d_sae": config.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": config.apply_b_dec_to_input, "normalize_activations": "none",
        "reshape_activations": "hook_z" if config.hook_name.endswith("hook_z") else "none",
        "metadata": metadata, "architecture": config.architecture,
    }
    if config.architecture == "topk":
        cfg.update(k=config.k, rescale_acts_by_decoder_norm=False)
    tensors = {name: value.detach().cpu().float().contiguous() for name, value in sae.named_parameters()}
    out = folder if isinstance(folder, OutputFolder) else OutputFolder(folder, command)
    with out:
        out.write(SAELENS_WEIGHTS, lambda temporary: save_file(tensors, str(temporary)))
        out.write_json(SAELENS_CONFIG, cfg)
        out.keep()
    return out.root


# --- SAELens ---------------------------------------------------------------------------------------------------
def _from_saelens(folder: Path, config: dict[str, Any], hook_name: str | None) -> SparseAutoencoder:
    where = folder / SAELENS_CONFIG
    metadata = dict(config.get("metadata") or {})
    site = hook_name or metadata.get("hook_name") or config.get("hook_name") or config.get("hook_point")
    if not site:
        raise SaeError(f"{where} names no site (metadata.hook_name or hook_name); pass hook_name=")
    head = metadata.get("hook_head_index", config.get("hook_head_index", config.get("hook_point_head_index")))
    if head is not None:
        raise SaeError(f"{where}: hook_head_index {head}: SAEs of one attention head's slice are not supported; "
                       "use an SAE of the whole site")
    architecture = config.get("architecture") or "standard"
    function = config.get("activation_fn", config.get("activation_fn_str"))
    k = config.get("k")
    if function == "topk":  # SAELens before 6
        architecture, k = "topk", (config.get("activation_fn_kwargs") or {}).get("k", k)
    elif function not in (None, "relu"):
        raise SaeError(f"{where}: activation_fn {function!r} is not supported; use relu or topk")
    if architecture not in ARCHITECTURES:
        raise SaeError(f"{where}: architecture {architecture!r} is not supported; use {', '.join(ARCHITECTURES)}")
    if architecture == "topk" and not (isinstance(k, int) and k > 0):
        raise SaeError(f"{where}: a topk SAE needs k, a positive integer (found {k!r})")
    if config.get("finetuning_scaling_factor"):
        raise SaeError(f"{where}: finetuning_scaling_factor (SAELens before 6) is not supported; load the SAE in "
                       "SAELens 6, which folds it, and save it again")
    normalisation = config.get("normalize_activations")
    if normalisation is True:
        normalisation = "expected_average_only_in"
    if normalisation not in INFERENCE_NORMALISATIONS:
        raise SaeError(f"{where}: normalize_activations {normalisation!r} is not supported; use none or "
                       "expected_average_only_in (its factor folded into the weights)")
    sizes = _sizes(where, config)
    if architecture == "topk" and k > sizes[1]:
        raise SaeError(f"{where}: k {k} is more than the {sizes[1]} latents (d_sae)")
    known = {"d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input", "normalize_activations",
             "reshape_activations", "metadata", "architecture", "k", "rescale_acts_by_decoder_norm", "hook_name",
             "hook_point", "activation_fn", "activation_fn_str", "activation_fn_kwargs"}
    kept = {**{key: value for key, value in config.items() if key not in known}, **metadata}
    kept.pop("hook_name", None)
    sae = SparseAutoencoder(SaeConfig(
        d_in=sizes[0], d_sae=sizes[1], hook_name=str(site), architecture=architecture,
        k=k if architecture == "topk" else None,
        apply_b_dec_to_input=bool(config.get("apply_b_dec_to_input", True)), metadata=kept))
    tensors = _tensors(folder / SAELENS_WEIGHTS)
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if architecture == "jumprelu" else [])
    _fill(sae, folder / SAELENS_WEIGHTS, {name: tensors.get(name) for name in names})
    if architecture == "topk" and config.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norms(sae)
    _fold_scaler(sae, folder, normalisation)
    return sae


def _fold_decoder_norms(sae: SparseAutoencoder) -> None:
    """A TopK SAE that scales its pre-activations by the decoder rows' norms, as one with unit-norm rows."""
    with torch.no_grad():
        norms = sae.W_dec.norm(dim=-1)
        sae.W_enc.mul_(norms)
        sae.b_enc.mul_(norms)
        sae.W_dec.div_(norms[:, None])


def _fold_scaler(sae: SparseAutoencoder, folder: Path, normalisation: Any) -> None:
    """A mid-training checkpoint's expected-average factor s (inputs were x * s): W_enc * s, W_dec / s, b_dec / s."""
    path = folder / ACTIVATION_SCALER
    if normalisation != "expected_average_only_in" or not path.is_file():
        return
    try:
        factor = json.loads(path.read_text(encoding="utf-8")).get("scaling_factor")
    except (OSError, ValueError, AttributeError) as error:
        raise SaeError(f"{path} is not a JSON object with scaling_factor: {error}") from error
    if factor is not None:
        with torch.no_grad():
            sae.W_enc.mul_(float(factor))
            sae.W_dec.div_(float(factor))
            sae.b_dec.div_(float(factor))


# --- sparsify --------------------------------------------------------------------------------------------------
def _from_sparsify(folder: Path, config: dict[str, Any], hook_name: str | None) -> SparseAutoencoder:
    where = folder / SAELENS_CONFIG
    if config.get("activation", "topk") != "topk" or config.get("skip_connection") or config.get("transcode"):
        raise SaeError(f"{where}: only plain TopK sparse coders are supported (activation topk, no skip connection, "
                       "not a transcoder)")
    site = hook_name or _canonical_site(folder.name)
    if site is None:
        raise SaeError(f"{folder}: the sparsify hook point {folder.name!r} maps to no canonical site; pass "
                       "hook_name= (e.g. blocks.3.hook_resid_post)")
    tensors = _tensors(folder / SPARSIFY_WEIGHTS)
    encoder = tensors.get("encoder.weight")
    d_in = config.get("d_in")
    if encoder is None:
        raise SaeError(f"{folder / SPARSIFY_WEIGHTS}: no tensor encoder.weight")
    d_sae = int(encoder.shape[0])
    k = config.get("k")
    if not (isinstance(d_in, int) and isinstance(k, int) and 0 < k <= d_sae):
        raise SaeError(f"{where}: d_in and k must be positive integers, k at most the {d_sae} latents "
                       f"(found d_in {d_in!r}, k {k!r})")
    sae = SparseAutoencoder(SaeConfig(d_in=d_in, d_sae=d_sae, hook_name=site, architecture="topk", k=k,
                                      apply_b_dec_to_input=True,
                                      metadata={"converted_from": "sparsify", "hookpoint": folder.name}))
    _fill(sae, folder / SPARSIFY_WEIGHTS, {"W_enc": encoder.T, "W_dec": tensors.get("W_dec"),
                                          "b_enc": tensors.get("encoder.bias"), "b_dec": tensors.get("b_dec")})
    return sae


def _canonical_site(hookpoint: str) -> str | None:
    if hookpoint.startswith(("blocks.", "hook_", "decoder.")):
        return hookpoint
    match = _BLOCK_OUTPUT.match(hookpoint)
    return f"blocks.{match.group(1)}.hook_resid_post" if match else None


# --- shared ----------------------------------------------------------------------------------------------------
def _sizes(where: Path, config: dict[str, Any]) -> tuple[int, int]:
    d_in, d_sae = config.get("d_in"), config.get("d_sae")
    if not (isinstance(d_in, int) and isinstance(d_sae, int) and d_in > 0 and d_sae > 0):
        raise SaeError(f"{where}: d_in and d_sae must be positive integers (found {d_in!r}, {d_sae!r})")
    return d_in, d_sae


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise SaeError(f"{path} is not a readable safetensors file: {error}") from error


def _fill(sae: SparseAutoencoder, path: Path, tensors: dict[str, torch.Tensor | None]) -> None:
    """Copy the file's tensors into the SAE's parameters, naming any missing or misshapen one."""
    missing = [name for name, value in tensors.items() if value is None]
    if missing:
        raise SaeError(f"{path}: missing tensor(s) {', '.join(missing)}")
    parameters = dict(sae.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            expected = parameters[name].shape
            if tuple(value.shape) != tuple(expected):
                raise SaeError(f"{path}: tensor {name} has shape {list(value.shape)}, expected {list(expected)} "
                               f"for d_in {sae.config.d_in} and d_sae {sae.config.d_sae}")
            parameters[name].copy_(value.to(torch.float32))
