"""The features step: every latent of the audit's SAEs patched on every pair, both ways, by the audit's method;
each feature's firing rate on the axiom's inputs, and for the flagged and the strongest features their
top-activating tokens in context (the report's feature dashboards)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from ...analysis.findings import strongest_first
from ...features.sae import SparseAutoencoder, feature_name, flattened
from ...models.hooks import caching_hooks
from ...patching.methods import method_for
from ...patching.plan import Variant, patched_layer
from ..context import AuditContext, AxiomRecord
from ..examples import pair_tokens
from ..registry import audit_step
from ..verified import verified_units
from .heads import mark_measured, verified_summary

FIELDS = ("axiom", "site", "latent", "name", "effect", "ci_low", "ci_high", "p_value", "q_value", "flag", "fires",
          "contexts")
STRONGEST = 5
"""Unflagged features that get a dashboard too, the strongest first, so a report without flags still shows what
its strongest features fire on."""
CONTEXTS = 10
"""Top activations shown per feature."""
WINDOW = 5
"""Tokens shown on either side of a top activation."""
KEY = "feature_verification"


@audit_step("features", title="Features", unit="feature", target="features", method=None, columns=("site", "latent"),
            reads=("saes", "method", "verify", "margin", "batch_size"), provenance=(KEY, "features"),
            counts="features_", fields=FIELDS, summary=verified_summary("feature", KEY))
def features(context: AuditContext, records: list[AxiomRecord], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each SAE latent's share of the score change per axiom, with flags, firing rates and dashboards."""
    saes = tuple(context.saes)
    variants = [Variant(patched_layer(sae.hook_name, context.ranker.n_layers), sae.hook_name, latent=j)
                for sae in saes for j in range(sae.config.d_sae)]
    labels = [{"site": v.site, "latent": v.latent, "name": feature_name(v.site, v.latent)} for v in variants]
    method = method_for(context.settings.method, "features")
    changes = {}
    for record in records:
        if method.screen:
            changes[record.name], run, verification = verified_units(
                record, context, "features", method.name, lambda unit: variants[unit[0]],
                lambda unit: labels[unit[0]]["name"], saes=saes)
            record.provenance[KEY] = verification
            record.seconds.update({f"features {step}": value for step, value in verification.pop("seconds").items()})
        else:
            with context.timed(record, "features"):
                changes[record.name], run, _ = context.both_directions(
                    record, "features", context.job("features", method.name, saes=saes))
        record.provenance["features"] = {"excluded": run.excluded, "saes": run.provenance.get("saes", {})}
    frame = context.findings("features", records, changes, labels)
    mark_measured(frame, records, method.verify if method.screen else method.name, KEY)
    frame["fires"] = np.nan
    frame["contexts"] = ""
    for record in records:
        with context.timed(record, "feature contexts"):
            _describe(context, record, saes, frame)
    return frame


def _describe(context: AuditContext, record: AxiomRecord, saes: tuple[SparseAutoencoder, ...],
              frame: pd.DataFrame) -> None:
    """Fill one axiom's `fires` (the share of its inputs' tokens on which each feature is active) and, for its
    flagged and strongest features, `contexts`: their top activations with the tokens around them, as JSON."""
    rows = frame["axiom"] == record.name
    mine = frame[rows]
    unflagged = mine[(mine["flag"] == "") & mine["effect"].notna()]
    shown = pd.concat([mine[mine["flag"] != ""], strongest_first(unflagged).head(STRONGEST)])
    wanted = {(site, int(latent)) for site, latent in zip(shown["site"], shown["latent"])}
    fires, tops = _activations(context, record, saes, wanted)
    frame.loc[rows, "fires"] = [fires[site][latent] for site, latent in zip(mine["site"], mine["latent"])]
    tokens: dict[tuple[str, int], list[str]] = {}
    for index in shown.index.unique():
        site, latent = frame.at[index, "site"], int(frame.at[index, "latent"])
        contexts = []
        for value, which, pair, position in tops.get((site, latent), []):
            if (which, pair) not in tokens:
                baseline, perturbed = pair_tokens(context.ranker, record.pairs, pair)
                tokens["baseline", pair], tokens["perturbed", pair] = baseline, perturbed
            line = tokens[which, pair]
            start = max(0, position - WINDOW)
            contexts.append({"activation": round(value, 4), "input": which, "pair": pair,
                             "tokens": line[start : position + WINDOW + 1], "focus": position - start})
        frame.at[index, "contexts"] = json.dumps(contexts) if contexts else ""  # never fired here: no card


def _activations(context: AuditContext, record: AxiomRecord, saes: tuple[SparseAutoencoder, ...],
                 wanted: set[tuple[str, int]]) -> tuple[dict[str, np.ndarray], dict[tuple[str, int], list[tuple]]]:
    """Per site, each latent's firing rate over the tokens of both inputs of the axiom's pairs; per wanted
    (site, latent), its CONTEXTS strongest activations as (value, input, pair, position), one per token."""
    ranker, pairs = context.ranker, record.pairs
    active = {sae.hook_name: torch.zeros(sae.config.d_sae, dtype=torch.float64) for sae in saes}
    seen = dict.fromkeys(active, 0)
    found: dict[tuple[str, int], list[tuple]] = {key: [] for key in wanted}
    sites = [sae.hook_name for sae in saes]
    order = torch.argsort(pairs.tensors["length"], stable=True).tolist()
    size = context.settings.batch_size
    with torch.inference_mode():
        for start in range(0, len(pairs), size):
            batch = order[start : start + size]
            lengths = pairs.tensors["length"][batch]
            shared = pairs.shared_context(ranker, batch)
            for which in ("baseline", "perturbed"):
                cache: dict[str, torch.Tensor] = {}
                ranker.forward(pairs.model_input(which, ranker, batch), caching_hooks(sites, cache), context=shared)
                for sae in saes:
                    latents = sae.encode(flattened(cache[sae.hook_name])).float().cpu()  # [row, position, d_sae]
                    if latents.shape[1] < int(lengths.max()):  # not the pairs' token positions (a decoder site)
                        mask = torch.ones(latents.shape[:2], dtype=torch.bool)
                    else:
                        mask = torch.arange(latents.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
                    active[sae.hook_name] += (latents[mask] > 0).sum(0).double()
                    seen[sae.hook_name] += int(mask.sum())
                    if latents.shape[1] < int(lengths.max()):
                        continue
                    for site, latent in wanted:
                        if site != sae.hook_name:
                            continue
                        values = latents[..., latent].masked_fill(~mask, 0)
                        top = torch.topk(values.flatten(), min(CONTEXTS, values.numel()))
                        for value, flat_index in zip(top.values.tolist(), top.indices.tolist()):
                            if value > 0:
                                row, position = divmod(flat_index, values.shape[1])
                                found[site, latent].append((value, which, batch[row], position))
    for key, candidates in found.items():
        best, taken = [], set()
        for candidate in sorted(candidates, key=lambda item: (-item[0], item[1], item[2], item[3])):
            if (candidate[2], candidate[3]) not in taken:  # a token once, from the input where it is strongest
                best.append(candidate)
                taken.add((candidate[2], candidate[3]))
        found[key] = best[:CONTEXTS]
    return {site: (active[site] / max(seen[site], 1)).numpy() for site in active}, found
