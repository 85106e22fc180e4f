"""Train a TopK sparse autoencoder (Gao et al. 2024) on a ranker's activations at one site.

The recipe is Gao et al.'s: the decoder's rows kept at unit norm, the encoder initialised as the decoder's
transpose, b_dec at the data's mean, inputs scaled to a mean norm of sqrt(d_in) during training (the
factor is folded into the weights at the end, as SAELens folds it, so the saved SAE reads raw activations), and
an auxiliary loss (AuxK) that has the latents dead for a while reconstruct the main reconstruction's error.
The queries are split first: the SAE trains on the activations of most queries' texts and is measured on the
rest (`held_out`), so its quality figures are on passages it never saw. Training is checkpointed into the
output folder and resumes bit for bit; a fixed seed gives the same SAE.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import DataError, SettingsError
from ..core.outputs import OutputFolder
from ..models.rankers.base import Ranker
from ..passages.loading import DataSource, load_data
from .activations import site_rows
from .files import save_sae
from .sae import SaeConfig, SparseAutoencoder
from .splice import check_saes, site_width
from .training_settings import TrainingSettings

CHECKPOINT = "work/checkpoint.pt"
QUALITY = "training.json"


def sae_folder(out: str | Path, resume: bool = False) -> OutputFolder:
    """The guarded output folder of a training run: refused when it holds another run, unless resuming."""
    return OutputFolder(out, "sae", "continue" if resume else "refuse",
                        advice="add --resume to continue it, or choose another folder")


def split_queries(frame: Any, held_out: float, seed: int) -> tuple[Any, Any]:
    """(training pairs, held-out pairs): whole queries on either side, at least one query held out."""
    queries = np.array(sorted(frame["qid"].astype(str).unique()))
    order = np.random.default_rng(seed).permutation(len(queries))
    held = set(queries[order[: min(len(queries) - 1, max(1, round(held_out * len(queries))))]])
    mask = frame["qid"].astype(str).isin(held).to_numpy()
    return frame[~mask], frame[mask]


def gather(ranker: Ranker, site: str, frame: Any, progress: bool, desc: str) -> torch.Tensor:
    rows = list(site_rows(ranker, site, list(frame["query"]), list(frame["text"]), progress=progress, desc=desc))
    return torch.cat(rows) if rows else torch.empty(0, site_width(ranker, site))


def initial_sae(site: str, d_in: int, settings: TrainingSettings, mean: torch.Tensor,
                generator: torch.Generator) -> SparseAutoencoder:
    sae = SparseAutoencoder(SaeConfig(d_in=d_in, d_sae=settings.latents, hook_name=site, architecture="topk",
                                      k=settings.k, apply_b_dec_to_input=True))
    with torch.no_grad():
        directions = torch.randn(settings.latents, d_in, generator=generator)
        sae.W_dec.copy_(directions / directions.norm(dim=-1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(mean)
    return sae


def quality(sae: SparseAutoencoder, rows: torch.Tensor, batch: int = 4096) -> dict[str, float]:
    """Fraction of variance unexplained, mean L0 and the share of latents that never fire, over `rows`."""
    with torch.no_grad():
        squared_error, fired, active = 0.0, torch.zeros(sae.config.d_sae, dtype=torch.bool), 0.0
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            latents = sae.encode(chunk)
            squared_error += float(((sae.decode(latents) - chunk) ** 2).sum())
            fired |= (latents > 0).any(0)
            active += float((latents > 0).sum())
        variance = float(((rows - rows.mean(0)) ** 2).sum())
    return {"fvu": squared_error / variance, "l0": active / max(len(rows), 1),
            "dead_share": 1 - float(fired.float().mean()), "tokens": len(rows)}


def _step(sae: SparseAutoencoder, batch: torch.Tensor, since_fired: torch.Tensor, settings: TrainingSettings,
          aux_k: int) -> torch.Tensor:
    """The loss of one batch (normalised MSE + AuxK), with the count of tokens since each latent fired updated."""
    pre = sae.pre_activation(batch)
    top = torch.topk(pre, settings.k, dim=-1)
    values = torch.relu(top.values)
    reconstruction = torch.zeros_like(pre).scatter(-1, top.indices, values) @ sae.W_dec + sae.b_dec
    error = batch - reconstruction
    scale = ((batch - batch.mean(0)) ** 2).sum(-1).mean()
    loss = (error**2).sum(-1).mean() / scale
    fired = torch.zeros_like(since_fired, dtype=torch.bool).scatter(0, top.indices[values > 0].flatten(), True)
    since_fired.add_(len(batch)).masked_fill_(fired, 0)
    dead = since_fired > settings.dead_tokens
    if dead.any():
        dead_pre = pre.masked_fill(~dead, -math.inf)
        count = min(aux_k, int(dead.sum()))
        aux = torch.topk(dead_pre, count, dim=-1)
        aux_latents = torch.zeros_like(pre).scatter(-1, aux.indices, torch.relu(aux.values))
        aux_error = ((error.detach() - aux_latents @ sae.W_dec) ** 2).sum(-1).mean()
        residual_scale = ((error.detach() - error.detach().mean(0)) ** 2).sum(-1).mean().clamp(min=1e-12)
        loss = loss + settings.aux_coefficient * aux_error / residual_scale
    return loss


def _unit_decoder(sae: SparseAutoencoder) -> None:
    """Remove the part of W_dec's gradient along its rows, then keep the rows at unit norm (Gao et al.)."""
    rows = sae.W_dec.data
    if sae.W_dec.grad is not None:
        sae.W_dec.grad -= (sae.W_dec.grad * rows).sum(-1, keepdim=True) * rows


def train_sae(ranker: Ranker, site: str, data: DataSource = None, settings: TrainingSettings | None = None,
              out: str | Path | None = None, resume: bool = False, progress: bool = True) -> tuple[SparseAutoencoder, dict]:
    """Train a TopK SAE on `ranker`'s activations at `site` over `data` (default: the bundled sample); returns the
    SAE (for raw activations) and its quality on held-out queries' texts. With `out`, the SAE is written there in
    SAELens's format with training.json, checkpointed every `checkpoint_every` steps; `resume=True` continues."""
    settings = settings or TrainingSettings()
    d_in = site_width(ranker, site)
    frame, source = load_data(data)
    if settings.max_pairs is not None:
        frame = frame.sample(n=min(settings.max_pairs, len(frame)), random_state=settings.seed)
    if frame["qid"].nunique() < 2:
        raise DataError(f"{source}: {frame['qid'].nunique()} query; training an SAE holds whole queries out to "
                        "measure it, so the data need at least two")
    training, held = split_queries(frame, settings.held_out, settings.seed)
    folder = sae_folder(out, resume) if out else None
    if folder is not None:
        folder.check()  # before the activations are computed
    started = time.perf_counter()
    train_rows = gather(ranker, site, training, progress, f"{site} (training)")
    held_rows = gather(ranker, site, held, progress, f"{site} (held out)")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    scale = math.sqrt(d_in) / float(train_rows.norm(dim=-1).mean())
    scaled = train_rows * scale
    sae = initial_sae(site, d_in, settings, scaled.mean(0), generator).to(ranker.device)  # trains where the ranker runs
    scaled = scaled.to(ranker.device)
    optimiser = torch.optim.Adam(sae.parameters(), lr=settings.learning_rate(), betas=(0.9, 0.999), eps=6.25e-10)
    since_fired = torch.zeros(settings.latents, dtype=torch.long).to(ranker.device)
    first = 0
    aux_k = settings.aux_k or max(1, d_in // 2)
    with folder if folder is not None else nullcontext() as out_folder:
        if out_folder is not None and resume and out_folder.path(CHECKPOINT).is_file():
            state = torch.load(out_folder.path(CHECKPOINT), weights_only=True, map_location="cpu")
            if state["settings"] != _deciding(settings, site, source, ranker):
                raise SettingsError(f"{out_folder.root} holds an SAE trained with other settings, site, data or "
                                    "model; choose another folder, or resume with those it was trained with")
            sae.load_state_dict(state["sae"])
            optimiser.load_state_dict(state["optimiser"])
            since_fired, first = state["since_fired"].to(ranker.device), state["step"]
        order = _batches(len(scaled), settings)
        with tqdm(total=settings.steps, initial=first, desc=f"SAE {site}", unit="step", disable=not progress) as bar:
            for step in range(first, settings.steps):
                loss = _step(sae, scaled[order[step]], since_fired, settings, aux_k)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                _unit_decoder(sae)
                optimiser.step()
                with torch.no_grad():
                    sae.W_dec.data /= sae.W_dec.data.norm(dim=-1, keepdim=True)
                bar.update(1)
                if out_folder is not None and (step + 1) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
                    _checkpoint(out_folder, sae, optimiser, since_fired, step + 1, _deciding(settings, site, source, ranker))
        sae = sae.cpu()
        _fold_scale(sae, scale)
        facts = {"site": site, "model": ranker.name, "data": source, "settings": asdict(settings),
                 "training_tokens": len(train_rows), "activation_scale": scale,
                 "train": quality(sae, train_rows), "held_out": quality(sae, held_rows),
                 "seconds": round(time.perf_counter() - started, 1)}
        sae.config = sae.config.but(metadata={"model_name": ranker.name, "dataset_path": source,
                                              "trained_by": "mechir-axioms", "fvu_held_out": facts["held_out"]["fvu"]})
        if out_folder is not None:
            save_sae(sae, out_folder)
            out_folder.write_json(QUALITY, facts)
            out_folder.keep()
    check_saes(ranker, [sae])
    return sae, facts


def _batches(rows: int, settings: TrainingSettings) -> list[torch.Tensor]:
    """Each step's row indices: seeded permutations of the rows, one after another (the same on a resumed run)."""
    generator = torch.Generator().manual_seed(settings.seed + 1)
    order, batches = torch.empty(0, dtype=torch.long), []
    size = min(settings.batch_tokens, rows)
    for _ in range(settings.steps):
        if len(order) < size:
            order = torch.cat([order, torch.randperm(rows, generator=generator)])
        batches.append(order[:size])
        order = order[size:]
    return batches


def _fold_scale(sae: SparseAutoencoder, scale: float) -> None:
    """Trained on x * scale: the same SAE for raw x has W_enc * scale, W_dec / scale and b_dec / scale."""
    with torch.no_grad():
        sae.W_enc.mul_(scale)
        sae.W_dec.div_(scale)
        sae.b_dec.div_(scale)


def _deciding(settings: TrainingSettings, site: str, source: str, ranker: Ranker) -> dict[str, Any]:
    """What a checkpoint must share with a run that resumes it: the settings, the site, the data, the model."""
    deciding = {key: value for key, value in asdict(settings).items() if key != "checkpoint_every"}
    model = hashlib.sha256(json.dumps(ranker.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()
    return {**deciding, "site": site, "data": source, "model": model}


def _checkpoint(folder: OutputFolder, sae: SparseAutoencoder, optimiser: torch.optim.Optimizer,
                since_fired: torch.Tensor, step: int, deciding: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"sae": sae.state_dict(), "optimiser": optimiser.state_dict(), "since_fired": since_fired,
                "step": step, "settings": deciding}, buffer)
    folder.write(CHECKPOINT, lambda temporary: temporary.write_bytes(buffer.getvalue()))
    folder.keep()
