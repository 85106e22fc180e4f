"""Emulate a separate accelerator on a CPU-only machine, to test device-correctness without a GPU.

On a GPU, an op that mixes a CUDA tensor with a CPU tensor fails (a 0-dim CPU tensor, a "CPU scalar",
is the one exception).  ``VirtualDevice`` is a ``TorchFunctionMode`` that tags every tensor it sees as
*device* (the model's side) or *host* and raises ``DeviceMismatch`` where real hardware would raise.

Tagging rules (everything physically stays on the CPU):

* parameters and buffers of the modules given (or later passed to ``place``) are device-tagged;
* ``t.to(<device>)`` / ``t.to(device=...)`` / ``t.cuda()`` give device tensors, ``t.to(other)`` and
  ``t.type_as(other)`` take ``other``'s tag, ``t.to(dtype)`` keeps the tag, ``t.cpu()`` gives a host tensor;
  a move that changes the tag returns a copy, as a real transfer does;
* a function called with ``device=`` (factories, ``*_like``, ``new_*``) gives a device tensor; without it,
  a factory gives a host tensor and ``*_like`` / ``new_*`` inherit their input's tag;
* every other result is device-tagged when any tensor input is, else host-tagged; tensors made outside the
  mode, or by functions it cannot see (``torch.from_numpy``, ``torch.load``), count as host.

Checks: an op mixing a device tensor with a host tensor of dim > 0 (or an in-place op / ``out=`` writing
into a host tensor from device inputs, of any dim) is a mismatch, as is ``.numpy()`` or ``np.asarray``
of a device tensor.  Allowed, as CUDA allows them: ``copy_``, ``torch.tensor``/``as_tensor``/``new_tensor``
of other data, ``.item()``/``.tolist()`` of device tensors, and host index tensors in ``device_t[idx]``
(the *value* of ``device_t[idx] = value`` must still be on the device or 0-dim).

Conventions for package code: move inputs with ``.to(device)`` where ``device`` is the model's device,
and bring results back with ``.cpu()`` (never ``.to("cpu")``: the stand-in device *is* the CPU, so any
explicit device counts as the model's device); create host tensors without ``device=``.

Usage::

    with VirtualDevice(model) as vd:          # raises DeviceMismatch at the first mixed op
        scores = model(**batch.to(device)).logits.cpu().numpy()
    with VirtualDevice(model, raise_on_mismatch=False) as vd:
        ...
    assert not vd.mismatches
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

Tensor = torch.Tensor
_MOVES = {Tensor.to, Tensor.cuda, Tensor.cpu, Tensor.type_as}
_TO_NUMPY = {Tensor.numpy, Tensor.__array__}
_COPIES = {Tensor.copy_, Tensor.new_tensor}
_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}
_INDEXING = {Tensor.__getitem__, Tensor.__setitem__}
_SHALLOW_COPY_CHECK = torch._has_compatible_shallow_copy_type  # Module.to asks it: metadata, not arithmetic
_SET_DATA = Tensor.data.__set__  # Module.to swaps a parameter's data for the moved copy: the tag moves with it
_INPLACE_DUNDERS = {f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                             "matmul", "and", "or", "xor", "lshift", "rshift")}


class DeviceMismatch(AssertionError):
    """An op combined tensors that would live on different devices on real hardware."""


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple, dict)):
        return [leaf for leaf in tree_leaves(obj) if isinstance(leaf, Tensor)]
    return []


def _describe(tensors: Iterable[Tensor]) -> str:
    return ", ".join(str(tuple(t.shape)) for t in tensors)


class VirtualDevice(TorchFunctionMode):
    """Tag tensors as device/host while active and report ops that mix the two (see module docstring)."""

    def __init__(self, *modules: torch.nn.Module, raise_on_mismatch: bool = True) -> None:
        super().__init__()
        self.raise_on_mismatch = raise_on_mismatch
        self.mismatches: list[str] = []
        self._tags: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._modules = modules

    def __enter__(self) -> VirtualDevice:
        self.place(*self._modules)
        return super().__enter__()

    def place(self, *objs: torch.nn.Module | Any) -> None:
        """Device-tag every parameter and buffer of the modules, and every tensor in the other objects."""
        for obj in objs:
            if isinstance(obj, torch.nn.Module):
                tensors: list[Tensor] = [*obj.parameters(), *obj.buffers()]
            else:
                tensors = _tensors(dict(obj) if isinstance(obj, Mapping) else obj)
            for tensor in tensors:
                self._tags[tensor] = True

    def on_device(self, tensor: Tensor) -> bool:
        """True where ``tensor`` is device-tagged; untagged tensors are host tensors."""
        return self._tags.get(tensor, False)

    def _mismatch(self, func: Callable, why: str) -> None:
        try:
            name = resolve_name(func) or repr(func)
        except Exception:  # resolve_name walks torch's whole API; never let it hide the real report
            name = getattr(func, "__qualname__", repr(func))
        message = f"{name}: {why}"
        self.mismatches.append(message)
        if self.raise_on_mismatch:
            raise DeviceMismatch(message)

    def _check(self, func: Callable, args: tuple, kwargs: dict) -> bool:
        """Report a mix of device and host tensors among the inputs; return whether the result is on the device."""
        if func in _INDEXING:
            self_on = self.on_device(args[0])
            index = _tensors(args[1]) if len(args) > 1 else []
            if not self_on and any(self.on_device(t) for t in index):
                self._mismatch(func, f"host tensor {tuple(args[0].shape)} indexed by device indices")
            inputs = [args[0], *_tensors(args[2:])]  # host indices into a device tensor are fine
        else:
            inputs = [*_tensors(args), *_tensors(kwargs)]
        device = [t for t in inputs if self.on_device(t)]
        if not device:
            return False
        name = getattr(func, "__name__", "")
        written = {id(t) for t in _tensors(kwargs.get("out"))}
        if args and isinstance(args[0], Tensor) and (
            name in _INPLACE_DUNDERS or name == "__setitem__" or (name.endswith("_") and not name.startswith("_"))
        ):
            written.add(id(args[0]))
        host = [t for t in inputs if not self.on_device(t) and (t.dim() > 0 or id(t) in written)]
        if host:
            self._mismatch(func, f"device tensors {_describe(device)} mixed with host tensors {_describe(host)}")
        return True

    def _move(self, func: Callable, args: tuple, kwargs: dict) -> bool:
        if func is Tensor.cpu:
            return False
        if func is Tensor.cuda:
            return True
        for arg in (*args[1:], *kwargs.values()):
            if isinstance(arg, Tensor):
                return self.on_device(arg)
            if isinstance(arg, (torch.device, str)) or type(arg) is int:
                return True
        return self.on_device(args[0])

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _MOVES:
            on = self._move(func, args, kwargs)
            result = args[0] if func is Tensor.cuda else func(*args, **kwargs)  # no CUDA here
            if result is args[0] and on != self.on_device(result):
                result = result.clone()  # a real transfer returns a new tensor, not an alias
            self._tags[result] = on
            return result
        if func is _SHALLOW_COPY_CHECK:
            return func(*args, **kwargs)
        if func == _SET_DATA:
            self._tags[args[0]] = self.on_device(args[1])
            return func(*args, **kwargs)
        if func in _TO_NUMPY:
            if self.on_device(args[0]):
                self._mismatch(func, f"device tensor {tuple(args[0].shape)} to numpy; call .cpu() first")
            return func(*args, **kwargs)
        if kwargs.get("device") is not None:
            on = True
        elif func in _FROM_DATA:
            on = bool(args) and isinstance(args[0], Tensor) and self.on_device(args[0])
        elif func in _COPIES:
            on = self.on_device(args[0])
        else:
            on = self._check(func, args, kwargs)
        result = func(*args, **kwargs)
        for tensor in _tensors(result):
            self._tags[tensor] = on
        return result
