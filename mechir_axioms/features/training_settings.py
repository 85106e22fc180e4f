"""The settings of an SAE training run (features.training), apart from the trainer: the CLI builds `sae train`'s
flags from them without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import SettingsError


def _field(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainingSettings:
    """Every number of a training run; all but `checkpoint_every` decide the SAE."""

    latents: int = _field(2048, "latents of the SAE (d_sae)")
    k: int = _field(64, "latents active per token (TopK)")
    steps: int = _field(1500, "optimiser steps")
    batch_tokens: int = _field(1024, "activations (tokens) per step")
    lr: float | None = _field(None, "Adam's learning rate (default: twice Gao et al.'s 2e-4 / sqrt(latents / 2^14), "
                              "for these short runs)")
    aux_k: int | None = _field(None, "dead latents that reconstruct the error in the AuxK loss (default: d_in / 2)")
    aux_coefficient: float = _field(1 / 32, "weight of the AuxK loss (Gao et al.'s 1/32)")
    dead_tokens: int = _field(200_000, "a latent that fired on none of the last this many training tokens is dead")
    held_out: float = _field(0.1, "share of the queries whose texts are held out to measure the SAE")
    max_pairs: int | None = _field(None, "use at most this many of the data's pairs, seeded (default: all)")
    seed: int = _field(0, "seed of the initialisation, the held-out queries and the batches")
    checkpoint_every: int = _field(500, "steps between checkpoints in --out (a killed run resumes from the last)")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a SettingsError naming the first invalid field and what is allowed."""
        problems = [(name, value, rule) for name, value, rule, bad in (
            ("latents", self.latents, "an integer from 2 to 2^20", not 2 <= self.latents <= 2**20),
            ("k", self.k, f"between 1 and latents ({self.latents})", not 1 <= self.k <= self.latents),
            ("steps", self.steps, "an integer of at least 1", self.steps < 1),
            ("batch_tokens", self.batch_tokens, "an integer of at least 2", self.batch_tokens < 2),
            ("held_out", self.held_out, "a share in (0, 1)", not 0 < self.held_out < 1),
            ("lr", self.lr, "a positive number", self.lr is not None and not 0 < self.lr < math.inf),
            ("aux_k", self.aux_k, "a positive integer", self.aux_k is not None and self.aux_k < 1),
            ("aux_coefficient", self.aux_coefficient, "a number of at least 0",
             not 0 <= self.aux_coefficient < math.inf),
            ("dead_tokens", self.dead_tokens, "an integer of at least 1", self.dead_tokens < 1),
            ("max_pairs", self.max_pairs, "an integer of at least 2", self.max_pairs is not None and self.max_pairs < 2),
            ("checkpoint_every", self.checkpoint_every, "an integer of at least 1", self.checkpoint_every < 1),
        ) if bad]
        if problems:
            name, value, rule = problems[0]
            raise SettingsError(f"{name}={value!r} is not valid for training an SAE; use {rule}")

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2 * 2e-4 / math.sqrt(self.latents / 2**14)
