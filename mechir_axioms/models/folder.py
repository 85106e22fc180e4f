"""What loading learns about a model before it picks a kind: its HF config and sentence-transformers set-up.

Each ranker kind reads what it needs from a `ModelFolder` (which modules a sentence-transformers folder
chains, the options its files declare), so that loading itself knows nothing about any kind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ModelError
from .files import read_json


@dataclass(frozen=True)
class ModelFolder:
    """A model id or folder: its HF config and, for a sentence-transformers model, its module chain."""

    source: str
    config: Any
    modules: tuple[tuple[str, str], ...] | None = None  # (module class name, folder) from modules.json, or None
    subfolder: str = ""  # where the transformer's own files are (sentence-transformers may nest them)
    st_config: dict[str, Any] = field(default_factory=dict)  # config_sentence_transformers.json

    @property
    def module_types(self) -> tuple[str, ...] | None:
        """The class names of the sentence-transformers modules, in order; None for a plain HF model."""
        return None if self.modules is None else tuple(kind for kind, _ in self.modules)

    @property
    def architectures(self) -> list[str]:
        return list(getattr(self.config, "architectures", None) or [])

    def module_path(self, kind: str) -> str | None:
        """The folder of the first module of class `kind`, or None when the chain has none."""
        return next((path for name, path in self.modules or () if name == kind), None)

    def read(self, filename: str) -> Any:
        """One of the model's JSON files (None when absent)."""
        return read_json(self.source, filename)

    def prompt_options(self) -> dict[str, str]:
        """`query_prefix`/`document_prefix` from sentence-transformers' `prompts`: the "query" and "document"
        prompts, or the default prompt for queries; prompts named otherwise (E5-Mistral's per-task ones) are
        left to the user, with a warning naming them."""
        prompts = self.st_config.get("prompts") or {}
        options = {f"{side}_prefix": prompts[side] for side in ("query", "document") if prompts.get(side)}
        default = self.st_config.get("default_prompt_name")
        if "query_prefix" not in options and default and prompts.get(default):
            options["query_prefix"] = prompts[default]
        others = sorted(name for name, text in prompts.items() if text and name not in ("query", "document", default))
        if others and "query_prefix" not in options:
            warnings.warn(f"{self.source}: its prompts {', '.join(others)} are not applied (none is named 'query'); "
                          "pass query_prefix= with the one its queries need", stacklevel=3)
        return options

    def max_seq_length(self) -> int | None:
        """sentence-transformers' max_seq_length for the transformer module, if the folder sets one."""
        prefix = f"{self.subfolder}/" if self.subfolder else ""
        value = (self.read(f"{prefix}sentence_bert_config.json") or {}).get("max_seq_length")
        return int(value) if value else None


TRANSFORMER_MODULES = ("Transformer", "MLMTransformer")
"""sentence-transformers modules that hold the HF model itself."""


def sentence_transformers_modules(source: str) -> tuple[tuple[tuple[str, str], ...], str, dict[str, Any]] | None:
    """(module chain, transformer subfolder, config_sentence_transformers.json), or None without modules.json."""
    modules = read_json(source, "modules.json")
    if modules is None:
        return None
    if not isinstance(modules, list) or not all(isinstance(module, dict) and "type" in module for module in modules):
        raise ModelError(f"{source}/modules.json: expected a list of modules, each with a 'type'")
    chain = tuple((module["type"].rsplit(".", 1)[-1], module.get("path", "")) for module in modules)
    subfolder = next((path for kind, path in chain if kind in TRANSFORMER_MODULES), "")
    return chain, subfolder, read_json(source, "config_sentence_transformers.json") or {}
