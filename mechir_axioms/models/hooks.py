"""Canonical hook points attached to a real Hugging Face module tree.

A `Site` says where an activation lives (a module's input, its output, or an attention pattern);
`attach` puts a user function there for one forward pass. Nothing re-implements the model's forward:
the functions run inside PyTorch module hooks, or inside the model's own eager attention function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import AttentionInterface

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]
"""A hook gets (activation, name) and returns None to only read it, or a tensor of the same shape to replace it."""

Hooks = Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]

ATTENTION_BACKEND = "mechir"
_PATTERN_FNS = "_mechir_pattern_fns"


@dataclass(frozen=True)
class Site:
    """Where one canonical activation lives in the module tree.

    at="input": the first positional argument (or `hidden_states`) of `module`;
    at="output": the module's output (its first element if it returns a tuple);
    at="pattern": the softmaxed attention weights computed for the attention module `module`.
    n_heads splits the last dimension into [head, d_head] (for `hook_z`, `hook_q`, ...).
    scope restricts the site to calls made while `scope` is running (T5's shared embedding).
    part=(i, n): the activation is the i-th of n equal slices of the last dimension (a fused q/k/v projection).
    """

    module: nn.Module
    at: Literal["input", "output", "pattern"]
    n_heads: int | None = None
    scope: nn.Module | None = None
    part: tuple[int, int] | None = None


def _hooked_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """Attention backend: the model's own eager attention, with the pattern exposed to hooks."""
    eager = importlib.import_module(type(module).__module__).eager_attention_forward  # robust to sys.modules resets
    if attention_mask is not None and attention_mask.dtype == torch.float64:
        # Eager attention takes its softmax in float32, where float64's most negative mask value is -inf: a query
        # that may see no key (a left pad's, or one past a sliding window) would get NaN weights and gradients.
        # Float32's own minimum masks as well and keeps every row finite, as in a float32 model.
        attention_mask = attention_mask.clamp(min=torch.finfo(torch.float32).min)
    output, pattern = eager(module, query, key, value, attention_mask, **kwargs)
    fns = list(getattr(module, _PATTERN_FNS, None) or [])
    if fns:
        new_pattern = pattern
        for fn in fns:
            new_pattern = fn(new_pattern)
        if new_pattern is not pattern:
            groups = new_pattern.shape[1] // value.shape[1]  # grouped-query attention shares a value head
            values = value.repeat_interleave(groups, dim=1) if groups > 1 else value
            output = torch.matmul(new_pattern.to(values.dtype), values).transpose(1, 2).contiguous()
        pattern = new_pattern
    return output, pattern


AttentionInterface.register(ATTENTION_BACKEND, _hooked_attention)
AttentionMaskInterface.register(ATTENTION_BACKEND, eager_mask)


def use_hooked_attention(model: nn.Module) -> None:
    """Route every attention layer of `model` (and its sub-configs) through the pattern-exposing backend."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = ATTENTION_BACKEND


def _call(fn: HookFn, name: str, activation: torch.Tensor, n_heads: int | None) -> torch.Tensor | None:
    """Run one user hook, splitting heads for hook_z and checking that a replacement keeps its shape."""
    shaped = activation.unflatten(-1, (n_heads, -1)) if n_heads else activation
    result = fn(shaped, name)
    if result is None:
        return None
    if result.shape != shaped.shape:
        raise ValueError(
            f"hook for {name!r} returned shape {tuple(result.shape)}; it must keep the shape {tuple(shaped.shape)}"
        )
    return result.flatten(-2) if n_heads else result


class _Scope:
    """Tracks whether a module's forward is running, so a shared module can be hooked for one caller only."""

    def __init__(self, module: nn.Module):
        self.active = False
        self.handles = [
            module.register_forward_pre_hook(lambda *_: setattr(self, "active", True)),
            module.register_forward_hook(lambda *_: setattr(self, "active", False)),
        ]


def _attach_one(site: Site, name: str, fn: HookFn, handles: list[Any]) -> None:
    scope = None
    if site.scope is not None:
        scope = _Scope(site.scope)
        handles.extend(scope.handles)

    def live() -> bool:
        return scope is None or scope.active

    if site.at == "pattern":
        fns = site.module.__dict__.setdefault(_PATTERN_FNS, [])

        def on_pattern(pattern: torch.Tensor) -> torch.Tensor:
            result = _call(fn, name, pattern, None) if live() else None
            return pattern if result is None else result

        fns.append(on_pattern)
        handles.append(_PatternHandle(site.module, on_pattern))
    elif site.at == "input":

        def on_input(module, args, kwargs):
            if not live():
                return None
            activation = args[0] if args else kwargs["hidden_states"]
            result = _call(fn, name, activation, site.n_heads)
            if result is None:
                return None
            if args:
                return (result, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": result}

        handles.append(site.module.register_forward_pre_hook(on_input, with_kwargs=True))
    else:

        def on_output(module, args, output):
            if not live():
                return None
            is_tuple = isinstance(output, tuple)
            activation = output[0] if is_tuple else output
            pieces = activation.chunk(site.part[1], dim=-1) if site.part else None
            result = _call(fn, name, pieces[site.part[0]] if pieces else activation, site.n_heads)
            if result is None:
                return None
            if pieces:
                result = torch.cat([result if i == site.part[0] else piece for i, piece in enumerate(pieces)], dim=-1)
            return (result, *output[1:]) if is_tuple else result

        handles.append(site.module.register_forward_hook(on_output))


class _PatternHandle:
    """Removes one pattern function from an attention module, like a torch RemovableHandle."""

    def __init__(self, module: nn.Module, fn: Callable):
        self.module, self.fn = module, fn

    def remove(self) -> None:
        fns = self.module.__dict__.get(_PATTERN_FNS, [])
        if self.fn in fns:
            fns.remove(self.fn)


def hook_items(hooks: Hooks | None) -> list[tuple[str, HookFn]]:
    """Normalise a {name: fn} mapping or a list of (name, fn) pairs."""
    if hooks is None:
        return []
    return list(hooks.items()) if isinstance(hooks, Mapping) else list(hooks)


@contextmanager
def attached(sites: Mapping[str, Site], hooks: Hooks | None):
    """Attach hooks by canonical name for the duration of a `with` block; unknown names are an error."""
    items = hook_items(hooks)
    unknown = sorted({name for name, _ in items} - set(sites))
    if unknown:
        raise KeyError(f"unknown hook name(s) {unknown}; valid names look like {_examples(sites)}")
    handles: list[Any] = []
    try:
        for name, fn in items:
            _attach_one(sites[name], name, fn, handles)
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()


def _examples(sites: Mapping[str, Site]) -> str:
    names = list(sites)
    return ", ".join(names[:3] + ["..."] + names[-2:]) if len(names) > 5 else ", ".join(names)


def caching_hooks(names: Iterable[str], cache: dict[str, torch.Tensor]) -> list[tuple[str, HookFn]]:
    """Hooks that store a detached copy of each named activation into `cache`."""

    def store(activation: torch.Tensor, name: str) -> None:
        cache[name] = activation.detach().clone()

    return [(name, store) for name in names]
