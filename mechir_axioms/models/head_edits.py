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
    if not isinstance(heads, (str, Sequence)):
        raise SettingsError(f"heads={heads!r} is not valid; name heads as \"3.2,3.7\" or a list of \"L.H\" strings or "
                            "(layer, head) pairs")
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


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _check_op(op: str, factor: float | None, reference: Any) -> None:
    if not isinstance(op, str) or op not in OPS:
        raise SettingsError(f"op={op!r} is not valid; use one of {', '.join(OPS)}")
    if op == "scale" and (factor is None or isinstance(factor, bool) or not isinstance(factor, (int, float))
                          or not _finite(factor)):
        raise SettingsError(f"factor={factor!r} is not valid; op='scale' needs a finite number (e.g. factor=2)")
    if op != "scale" and factor is not None:
        raise SettingsError(f"factor={factor!r} applies to op='scale' only; leave it out for op={op!r}")
    if op == "mean" and reference is None:
        raise SettingsError("op='mean' needs reference=(queries, passages): the pairs over which each head's mean is taken")
    if op != "mean" and reference is not None:
        raise SettingsError(f"reference applies to op='mean' only; leave it out for op={op!r}")
    if op == "mean" and not (isinstance(reference, int) and not isinstance(reference, bool)):
        reference_pairs(reference)
    elif op == "mean" and reference < 1:  # assess_intervention's number of judged reference pairs
        raise SettingsError(f"reference={reference!r} is not valid; use a number of reference pairs of at least 1")


def reference_pairs(reference: Any) -> tuple[list[str], list[str]]:
    """op "mean"'s reference=(queries, passages) as two lists of strings; SettingsError unless they are two
    non-empty, equally long sequences of strings."""
    wanted = "op='mean' needs reference=(queries, passages), two equally long, non-empty lists of strings"
    if isinstance(reference, (str, bytes)) or not isinstance(reference, Sequence):
        raise SettingsError(f"reference={_shown(reference)} is not valid; {wanted}")
    parts = list(reference)
    if len(parts) != 2:
        raise SettingsError(f"reference has {len(parts)} parts, not 2; {wanted}")
    texts = []
    for label, part in zip(("queries", "passages"), parts):
        if isinstance(part, (str, bytes)) or not (hasattr(part, "__iter__") and hasattr(part, "__len__")):
            raise SettingsError(f"reference {label} is {_shown(part)}, not a list of strings; {wanted}")
        part = list(part)
        bad = next((i for i, text in enumerate(part) if not isinstance(text, str)), None)
        if bad is not None:
            raise SettingsError(f"reference {label}[{bad}] is {_shown(part[bad])}, not a string; {wanted}")
        texts.append(part)
    queries, passages = texts
    if not queries or not passages:
        raise SettingsError(f"reference has {len(queries)} queries and {len(passages)} passages; {wanted}, as the "
                            "heads' means are taken over those pairs")
    if len(queries) != len(passages):
        raise SettingsError(f"reference has {len(queries)} queries and {len(passages)} passages; {wanted}, "
                            "paired one to one")
    return queries, passages


def _shown(value: Any) -> str:
    """A value for a message: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_factor(ranker: Ranker, op: str, factor: float | None) -> None:
    """Refuse a scale factor that the model's dtype cannot hold (it would make every scaled head inf)."""
    largest = torch.finfo(ranker.dtype).max
    if op == "scale" and factor is not None and abs(factor) > largest:
        raise SettingsError(f"factor={factor!r} is not valid for {ranker.name}: it overflows the model's dtype "
                            f"{_dtype(ranker)} (largest {largest:.3g}); use a much smaller factor")


def _dtype(ranker: Ranker) -> str:
    return str(ranker.dtype).removeprefix("torch.")


def _check_steer(ranker: Ranker, steer: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The steer vectors as 1-D tensors on the ranker's device; SettingsError naming a bad site or shape."""
    if not isinstance(steer, Mapping):
        raise SettingsError(f"steer={_shown(steer)} is not valid; give {{site: vector}}, e.g. "
                            f"{{'{act_name('resid_post', 0)}': a vector of the model's width}}")
    width = ranker.stack.embed.weight.shape[-1]
    vectors = {}
    for site, vector in steer.items():
        known = ranker.sites.get(site)
        if known is None or known.n_heads is not None or known.at == "pattern":
            raise SettingsError(f"steer site {site!r} is not a residual site of {ranker.name}; use one such as "
                                f"{act_name('resid_post', 0)} (layers 0-{ranker.n_layers - 1})")
        try:
            vector = torch.as_tensor(vector).detach()
        except (TypeError, ValueError, RuntimeError):
            vector = None
        if vector is None or vector.dtype == torch.bool or vector.is_complex():
            raise SettingsError(f"steer vector for {site!r} is {_shown(steer[site])}; it must be real numbers "
                                f"(a tensor or list of {width} floats)")
        if tuple(vector.shape) != (width,):
            raise SettingsError(f"steer vector for {site!r} has shape {tuple(vector.shape)}; it must be ({width},), "
                                "the model's width")
        _check_magnitude(ranker, site, vector.to(torch.float64))
        vectors[site] = vector.to(ranker.device, ranker.dtype)
    return vectors


def _check_magnitude(ranker: Ranker, site: str, vector: torch.Tensor) -> None:
    """Refuse a steer vector with NaN or infinite entries, entries the model's dtype cannot hold, or a norm whose
    square (which layer norms sum) overflows the model's arithmetic (at least float32)."""
    finite = torch.isfinite(vector)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0, 0])
        raise SettingsError(f"steer vector for {site!r} has {int((~finite).sum())} non-finite entries (the first at "
                            f"index {first}: {float(vector[first])}); every entry must be a finite number")
    largest, peak = torch.finfo(ranker.dtype).max, float(vector.abs().max())
    if peak > largest:
        raise SettingsError(f"steer vector for {site!r} has entries as large as {peak:.3g}, beyond the model's dtype "
                            f"{_dtype(ranker)} (largest {largest:.3g}); use a much smaller vector")
    limit = math.sqrt(max(largest, torch.finfo(torch.float32).max))
    norm = float(vector.norm())
    if norm > limit:
        raise SettingsError(f"steer vector for {site!r} has norm {norm:.3g}; it must stay below {limit:.3g}, or the "
                            "squares the model's layer norms sum overflow, so use a much smaller vector")


def check_intervention(ranker: Ranker, heads: str | Sequence[HeadLike] = (), op: str = "ablate",
                       factor: float | None = None, reference: Any = None,
                       steer: Mapping[str, torch.Tensor] | None = None) -> tuple[tuple[Head, ...], dict[str, torch.Tensor]]:
    """Raise a SettingsError for an invalid intervention on `ranker`; else its heads and steer vectors."""
    _check_op(op, factor, reference)
    _check_factor(ranker, op, factor)
    chosen = parse_heads(heads)
    check_heads(ranker, chosen)
    vectors = _check_steer(ranker, {} if steer is None else steer)
    if not chosen and not vectors:
        raise SettingsError("the intervention changes nothing; name at least one head (heads=['3.2']) or a steer vector")
    return chosen, vectors


def plan_intervention(ranker: Ranker, heads: str | Sequence[HeadLike] = (), op: str = "ablate",
                      factor: float | None = None, reference: tuple[Sequence[str], Sequence[str]] | None = None,
                      steer: Mapping[str, torch.Tensor] | None = None,
                      batch_size: int | None = None) -> tuple[Intervention, list[tuple[str, HookFn]]]:
    """Validate an intervention and build its hooks (computing the reference means for op "mean")."""
    chosen, vectors = check_intervention(ranker, heads, op, factor, reference, steer)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise SettingsError(f"batch_size={batch_size!r} is not valid; use a positive number of pairs per batch")
    by_layer: dict[int, list[int]] = {}
    for layer, head in chosen:
        by_layer.setdefault(layer, []).append(head)
    means: dict[int, torch.Tensor] = {}
    if op == "mean" and chosen:
        if isinstance(reference, int):
            raise SettingsError(f"reference={reference!r} is not valid here; intervene needs reference=(queries, "
                                "passages), the pairs over which each head's mean is taken")
        queries, passages = reference_pairs(reference)
        means = head_means(ranker, queries, passages, list(by_layer), batch_size)
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
