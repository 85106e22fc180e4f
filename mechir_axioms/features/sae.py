"""A sparse autoencoder over one activation site: the three architectures the community's files hold.

The parameters and their shapes are SAELens's (W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec, and a
JumpReLU's threshold), so a file written by SAELens 6 loads without conversion and ours open there (see
features.files). Encoding and decoding run in the activation's dtype and on its device, so a float64 reference
run stays float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

ARCHITECTURES = ("standard", "topk", "jumprelu")
"""standard: ReLU of the pre-activation; topk: the k largest pre-activations, ReLU'd (Gao et al. 2024);
jumprelu: a pre-activation kept where it exceeds its latent's threshold (Rajamanoharan et al. 2024)."""


@dataclass(frozen=True)
class SaeConfig:
    """What an SAE is, besides its weights: its size, architecture and the site it reads."""

    d_in: int
    d_sae: int
    hook_name: str
    architecture: str = "topk"
    k: int | None = None
    apply_b_dec_to_input: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    """Everything else a file's config said (model name, dataset, training facts), written back unchanged."""

    def but(self, **changes: Any) -> SaeConfig:
        return replace(self, **changes)


class SparseAutoencoder(nn.Module):
    """encode(x) -> latents [..., d_sae]; decode(latents) -> reconstruction [..., d_in]."""

    def __init__(self, config: SaeConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        d_in, d_sae = config.d_in, config.d_sae
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        if config.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae, dtype=dtype))

    @property
    def hook_name(self) -> str:
        return self.config.hook_name

    def _weights(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters in the activation's dtype and on its device (no copy when they already are)."""
        return {name: (value if value.device == like.device else value.to(like.device)).to(like.dtype)
                for name, value in self.named_parameters()}

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        weights = self._weights(x)
        if self.config.apply_b_dec_to_input:
            x = x - weights["b_dec"]
        return x @ weights["W_enc"] + weights["b_enc"]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latents of activations x [..., d_in]."""
        pre = self.pre_activation(x)
        architecture = self.config.architecture
        if architecture == "standard":
            return torch.relu(pre)
        if architecture == "topk":
            top = torch.topk(pre, self.config.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        threshold = self._weights(pre)["threshold"]
        return torch.relu(pre) * (pre > threshold)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        weights = self._weights(latents)
        return latents @ weights["W_dec"] + weights["b_dec"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def extra_repr(self) -> str:
        k = f", k={self.config.k}" if self.config.architecture == "topk" else ""
        return f"{self.config.hook_name}: {self.config.d_in} -> {self.config.d_sae}, {self.config.architecture}{k}"


def feature_name(site: str, latent: int) -> str:
    """A feature's short name: its site without the hook words, and its latent ("3.resid_post:17")."""
    short = site.replace("blocks.", "").replace("attn.", "").replace("hook_", "")
    return f"{short}:{latent}"


def flattened(activation: torch.Tensor) -> torch.Tensor:
    """An activation as an SAE reads it: hook_z's [..., head, d_head] flattened to [..., head x d_head] (as SAELens
    reshapes hook_z), any other activation as it is."""
    return activation.flatten(-2) if activation.dim() == 4 else activation
