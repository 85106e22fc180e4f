"""Device and precision choices for a ranker: `--device auto` and `--dtype` resolved in one place."""

from __future__ import annotations

import torch

from ..core.defaults import DEVICES, DTYPES as DTYPE_NAMES
from ..core.errors import SettingsError

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from a name: "auto" (or None) picks CUDA, then MPS, then the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise SettingsError(f"device={device!r} is not a torch device; use {DEVICES}") from error


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A torch dtype from a name ("float32", "bfloat16", "float16"); None is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise SettingsError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}")
