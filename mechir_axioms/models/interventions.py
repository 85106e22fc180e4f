"""`intervene`: change named heads' outputs (hook_z) or steer a residual site, for the duration of a `with` block.

The intervention is a set of persistent module hooks on the ranker's own hook sites (the same sites that
patching uses), so every way of running the ranker (score, patching, PyTerrier) sees the changed model, and
leaving the block removes them: the model is then exactly as before, also when the block raised.

Ops on heads: `ablate` sets a head's z to 0; `mean` sets it to the head's mean z over a reference set of
query-passage pairs (position-agnostic: one vector per head, the mean over every token the attention mask keeps
in the hooked sequence of every reference input); `scale` multiplies it by `factor`. `steer` adds a vector to a
residual site such as `blocks.3.hook_resid_post` at every position.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.defaults import INTERVENTION_OPS
from ..core.errors import SettingsError
from .hooks import HookFn, attached, caching_hooks
from .names import act_name
from .rankers.base import Ranker

OPS = INTERVENTION_OPS

Head = tuple[int, int]
HeadLike = str | Sequence[int]


@dataclass(frozen=True)
class Intervention:
    """One active intervention: the op on the heads (with its factor, or the reference means' digest) and the
    steered sites (with their vectors' digests), as `describe()` records it in the ranker's fingerprint."""

    op: str
    heads: tuple[Head, ...]
    factor: float | None = None
    reference: str | None = None  # digest of the mean vectors (op "mean")
    steer: dict[str, str] = field(default_factory=dict)  # site -> digest of its vector

    def describe(self) -> dict[str, Any]:
        """Plain JSON values: op and heads as "L.H" (when heads are changed), factor, reference digest, steered sites."""
        facts: dict[str, Any] = {}
        if self.heads:
            facts.update(op=self.op, heads=[f"{layer}.{head}" for layer, head in self.heads])
        if self.factor is not None:
            facts["factor"] = self.factor
        if self.reference is not None:
            facts["reference"] = self.reference
        if self.steer:
            facts["steer"] = dict(self.steer)
        return facts

    def label(self) -> str:
        """One line in words: "ablate heads 3.2, 3.7", "scale heads 1.0 by 2", "+ steer blocks.3.hook_resid_post"."""
        parts = []
        if self.heads:
            by = f" by {self.factor:g}" if self.op == "scale" else " to their reference means" if self.op == "mean" else ""
            parts.append(f"{self.op} head{'s' if len(self.heads) > 1 else ''} "
                         f"{', '.join(f'{l}.{h}' for l, h in self.heads)}{by}")
        parts += [f"steer {site}" for site in self.steer]
        return "; ".join(parts)


def parse_head(item: HeadLike) -> Head:
    """A head as (layer, head) from "L.H" or a (layer, head) pair; SettingsError naming a malformed one."""
    if isinstance(item, str):
        layer, dot, head = item.strip().partition(".")
        if dot and layer.isdigit() and head.isdigit():
            return int(layer), int(head)
    elif (isinstance(item, Sequence) and len(item) == 2
          and all(isinstance(value, int) and not isinstance(value, bool) for value in item)):
        return int(item[0]), int(item[1])
    raise SettingsError(f"head {item!r} is not valid; write a head as LAYER.HEAD (e.g. 3.2) or a (layer, head) pair")


def parse_heads(heads: str | Sequence[HeadLike]) -> tuple[Head, ...]:
    """Heads from "3.2,3.7" or a list of "L.H" / (layer, head); duplicates dropped, order kept."""
    items = [part for part in heads.split(",") if part.strip()] if isinstance(heads, str) else list(heads)
    return tuple(dict.fromkeys(parse_head(item) for item in items))


def check_heads(ranker: Ranker, heads: Sequence[Head]) -> None:
    """Raise a SettingsError naming the first head outside the ranker's layers x heads, with the allowed range."""
    for layer, head in heads:
        if not (0 <= layer < ranker.n_layers and 0 <= head < ranker.n_heads):
            raise SettingsError(
                f"head {layer}.{head} is not in {ranker.name}: layers are 0-{ranker.n_layers - 1} and heads "
                f"0-{ranker.n_heads - 1}"
            )


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def head_means(ranker: Ranker, queries: Sequence[str], documents: Sequence[str], layers: Sequence[int],
               batch_size: int | None = None) -> dict[int, torch.Tensor]:
    """Per layer, every head's mean z [n_heads, d_head] over all tokens the attention mask keeps in the hooked
    sequence (a bi-encoder's documents, else the joint input) of the reference pairs."""
    names = {layer: act_name("z", layer) for layer in sorted(set(layers))}
    sums: dict[int, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64)
    size = batch_size or ranker.batch_size
    with torch.no_grad():
        for start in range(0, len(queries), size):
            inputs = ranker.place(ranker.tokenize(queries[start : start + size], documents[start : start + size]))
            cache: dict[str, torch.Tensor] = {}
            ranker.forward(inputs, caching_hooks(names.values(), cache))
            mask = inputs.tokens["attention_mask"].to(torch.float64)[..., None, None]  # [batch, pos, 1, 1]
            for layer, name in names.items():
                total = (cache[name].to(torch.float64) * mask).sum((0, 1))
                sums[layer] = sums[layer] + total if layer in sums else total
            count += mask.sum()
    return {layer: (total / count).to(ranker.dtype) for layer, total in sums.items()}


def _head_hook(op: str, heads: Sequence[int], factor: float | None, mean: torch.Tensor | None) -> HookFn:
    """A hook_z function for one layer: z [..., head, d_head] with `heads` ablated, set to `mean` or scaled."""
    def change(z: torch.Tensor, name: str) -> torch.Tensor:
        chosen = torch.zeros(z.shape[-2], dtype=torch.bool, device=z.device)
        chosen[list(heads)] = True
        chosen = chosen[:, None]
        if op == "scale":
            return torch.where(chosen, z * factor, z)
        replacement = torch.zeros_like(z) if mean is None else mean.to(z).expand_as(z)
        return torch.where(chosen, replacement, z)

    return change


def _steer_hook(vector: torch.Tensor) -> HookFn:
    def add(activation: torch.Tensor, name: str) -> torch.Tensor:
        return activation + vector.to(activation)

    return add


def _check_op(op: str, factor: float | None, reference: Any) -> None:
    if op not in OPS:
        raise SettingsError(f"op={op!r} is not valid; use one of {', '.join(OPS)}")
    if op == "scale" and (factor is None or isinstance(factor, bool) or not isinstance(factor, (int, float))
                          or not math.isfinite(factor)):
        raise SettingsError(f"factor={factor!r} is not valid; op='scale' needs a finite number (e.g. factor=2)")
    if op != "scale" and factor is not None:
        raise SettingsError(f"factor={factor!r} applies to op='scale' only; leave it out for op={op!r}")
    if op == "mean" and reference is None:
        raise SettingsError("op='mean' needs reference=(queries, passages): the pairs over which each head's mean is taken")
    if op != "mean" and reference is not None:
        raise SettingsError(f"reference applies to op='mean' only; leave it out for op={op!r}")


def _check_steer(ranker: Ranker, steer: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The steer vectors as 1-D tensors on the ranker's device; SettingsError naming a bad site or shape."""
    width = ranker.stack.embed.weight.shape[-1]
    vectors = {}
    for site, vector in steer.items():
        known = ranker.sites.get(site)
        if known is None or known.n_heads is not None or known.at == "pattern":
            raise SettingsError(f"steer site {site!r} is not a residual site of {ranker.name}; use one such as "
                                f"{act_name('resid_post', 0)} (layers 0-{ranker.n_layers - 1})")
        vector = torch.as_tensor(vector)
        if tuple(vector.shape) != (width,):
            raise SettingsError(f"steer vector for {site!r} has shape {tuple(vector.shape)}; it must be ({width},), "
                                "the model's width")
        vectors[site] = vector.detach().to(ranker.device, ranker.dtype)
    return vectors


def check_intervention(ranker: Ranker, heads: str | Sequence[HeadLike] = (), op: str = "ablate",
                       factor: float | None = None, reference: Any = None,
                       steer: Mapping[str, torch.Tensor] | None = None) -> tuple[tuple[Head, ...], dict[str, torch.Tensor]]:
    """Raise a SettingsError for an invalid intervention on `ranker`; else its heads and steer vectors."""
    _check_op(op, factor, reference)
    chosen = parse_heads(heads)
    check_heads(ranker, chosen)
    vectors = _check_steer(ranker, steer or {})
    if not chosen and not vectors:
        raise SettingsError("the intervention changes nothing; name at least one head (heads=['3.2']) or a steer vector")
    return chosen, vectors


def plan_intervention(ranker: Ranker, heads: str | Sequence[HeadLike] = (), op: str = "ablate",
                      factor: float | None = None, reference: tuple[Sequence[str], Sequence[str]] | None = None,
                      steer: Mapping[str, torch.Tensor] | None = None,
                      batch_size: int | None = None) -> tuple[Intervention, list[tuple[str, HookFn]]]:
    """Validate an intervention and build its hooks (computing the reference means for op "mean")."""
    chosen, vectors = check_intervention(ranker, heads, op, factor, reference, steer)
    by_layer: dict[int, list[int]] = {}
    for layer, head in chosen:
        by_layer.setdefault(layer, []).append(head)
    means: dict[int, torch.Tensor] = {}
    if op == "mean" and chosen:
        queries, passages = reference  # type: ignore[misc]
        means = head_means(ranker, list(queries), list(passages), list(by_layer), batch_size)
    hooks = [(act_name("z", layer), _head_hook(op, heads_of, factor, means.get(layer)))
             for layer, heads_of in sorted(by_layer.items())]
    hooks += [(site, _steer_hook(vector)) for site, vector in vectors.items()]
    digest = _digest(torch.cat([means[layer].flatten() for layer in sorted(means)])) if means else None
    intervention = Intervention(op, chosen, float(factor) if factor is not None else None, digest,
                                {site: _digest(vector) for site, vector in vectors.items()})
    return intervention, hooks


@contextmanager
def intervene(ranker: Ranker, heads: str | Sequence[HeadLike] = (), op: str = "ablate", factor: float | None = None,
              reference: tuple[Sequence[str], Sequence[str]] | None = None,
              steer: Mapping[str, torch.Tensor] | None = None, batch_size: int | None = None) -> Iterator[Intervention]:
    """Within the block, `ranker` runs with the heads' outputs changed by `op` and each `steer` vector added at its
    site; on leaving (also by an exception) the hooks are removed and the model is exactly as before.

    heads: "3.2,3.7" or ["3.2", (3, 7)]; op: "ablate", "mean" (needs reference=(queries, passages)) or "scale"
    (needs factor); steer: {site: vector of the model's width}. While active, `ranker.fingerprint()` names the
    intervention, so that checkpoints and comparisons do not take the changed model for the plain one."""
    intervention, hooks = plan_intervention(ranker, heads, op, factor, reference, steer, batch_size)
    facts = intervention.describe()
    with ExitStack() as stack:
        stack.enter_context(attached(ranker.sites, hooks))
        ranker.interventions.append(facts)
        stack.callback(ranker.interventions.remove, facts)
        yield intervention
