"""Load a ranker's Hugging Face model and check that its checkpoint really fills it.

`from_pretrained(..., output_loading_info=True)` reports which weights were missing from the checkpoint
(randomly initialised), unused by the model class, or of another shape. A ranker kind says which of them
are harmless for it (matched by any dotted component of a weight's name, e.g. "pooler" or "position_ids");
the rest mean the wrong head was loaded or the scores would be meaningless:
- a mismatched shape or a missing weight is refused with a ModelError (a random weight gives random scores);
- unused weights give a UserWarning (the checkpoint has a part, often a scoring head, that is not loaded).
A truncated or corrupt weights file, or one that cannot be found, is a ModelError naming the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from torch import nn

from ..core.errors import ModelError
from .files import first_line

_SHOWN = 3  # weight names quoted in a message


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _harmless(key: str, names: Iterable[str]) -> bool:
    return not set(key.split(".")).isdisjoint(names)


def _corrupt_file(source: str, subfolder: str) -> str:
    """The first weights file of the model that safetensors cannot open, else the model folder or id."""
    local = Path(source).expanduser()
    if local.is_dir():
        folder: Path | None = local / subfolder
    else:
        config = try_to_load_from_cache(source, str(Path(subfolder, "config.json")))
        folder = Path(config).parent if isinstance(config, str) else None
    for path in sorted(folder.glob("*.safetensors")) if folder else []:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError):
            return str(path)
    return str(Path(source, subfolder)) if subfolder else source


def load_checked(
    model_class: Any,
    source: str,
    kind: str,
    *,
    unused_ok: Iterable[str] = ("position_ids",),
    missing_ok: Iterable[str] = ("position_ids",),
    labels: bool = False,
    **load: Any,
) -> nn.Module:
    """`model_class.from_pretrained(source)`, refused (ModelError) or flagged (UserWarning) as the module says.

    unused_ok / missing_ok: weight-name components that may be unused / missing; labels: a shape mismatch in
    the first dimension of config.num_labels is told as a label-count mismatch."""
    try:
        model, info = model_class.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **load
        )
    except SafetensorError as error:
        path = _corrupt_file(source, load.get("subfolder", ""))
        raise ModelError(
            f"{path}: the weights file is truncated or corrupt ({error}); download or save the model again"
        ) from error
    except OSError as error:
        raise ModelError(f"cannot load the weights of model {source}: {first_line(error)}") from error
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda item: (item[0].endswith("bias"), item[0]))
    for key, saved, expected in mismatched:  # weights before biases: "classifier.weight holds 1" (rows)
        count = model.config.num_labels
        if labels and tuple(expected)[:1] == (count,) and tuple(saved)[1:] == tuple(expected)[1:]:
            raise ModelError(
                f"{source}: label count mismatch: config.json gives {count} labels but the checkpoint's {key} holds "
                f"{tuple(saved)[0]}; restore num_labels/id2label in config.json to match the weights"
            )
        raise ModelError(
            f"{source}: the checkpoint's {key} has shape {tuple(saved)} but config.json implies {tuple(expected)}; "
            "the weights do not belong to this config"
        )
    missing = [key for key in info.get("missing_keys") or () if not _harmless(key, missing_ok)]
    if missing:
        raise ModelError(
            f"{source} lacks {len(missing)} weights that a {kind} ranker needs ({_names(missing)}), so they would be "
            f"randomly initialised and its scores meaningless; check that kind={kind!r} fits this model"
        )
    unused = [key for key in info.get("unexpected_keys") or () if not _harmless(key, unused_ok)]
    if unused:
        warnings.warn(
            f"{source}: {len(unused)} weights of the checkpoint are not used by a {kind} ranker ({_names(unused)}), "
            f"so part of the model, perhaps its scoring head, is not loaded; check that kind={kind!r} fits this model",
            UserWarning,
            stacklevel=4,
        )
    return model
