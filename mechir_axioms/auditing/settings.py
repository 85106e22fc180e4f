"""`Settings`: every number-deciding choice of an audit, with its default declared once.

The Python `audit` signature's defaults, the CLI's flags, the pytest plugin's options, the manifest and
the command that reproduces an audit are all derived from the fields below.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..core.defaults import AUDIT_METHODS, DEFAULT_AXIOMS, DEFAULT_MODEL, SAMPLE_NAME
from ..core.errors import SettingsError

TARGETS = ("heads", "blocks", "paths")
"""What an audit can measure: every head, block cells, and paths from every head into the flagged heads and the score."""
DEFAULT_TARGETS = ("heads", "blocks")


def _setting(default: Any, help: str, *, kind: type = str, choices: tuple[str, ...] | None = None,
             low: float | None = None, cli_default: Any = MISSING, flag: bool = True) -> Any:
    """A Settings field with what the CLI and the plugin need to offer it: help, type, bounds, choices."""
    metadata = {"help": help, "kind": kind, "choices": choices, "low": low, "flag": flag,
                "cli_default": default if cli_default is MISSING else cli_default}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything that decides an audit's numbers; a resumed audit must match them exactly."""

    axioms: tuple[str, ...] = _setting(DEFAULT_AXIOMS, "comma-separated axiom names", kind=tuple)
    model: str | None = _setting(None, "HF or sentence-transformers id or folder (default: packaged MiniLM)")
    data: str | None = _setting(None, f"JSONL/TSV/CSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    n: int = _setting(200, "pairs per axiom", kind=int, low=1)
    seed: int = _setting(0, "seed for pair selection, cell pairs and resampling", kind=int, low=0)
    targets: tuple[str, ...] = _setting(
        DEFAULT_TARGETS, "heads, blocks and/or paths (comma-separated); paths need heads", kind=tuple, choices=TARGETS)
    method: str = _setting(
        "exact", "how heads are measured: exact on every head, attribution (AtP) or atp* estimates, or verified "
        "(AtP* screens every head and each head that could reach a flag is patched "
        "exactly, so every flag rests on exact effects); blocks are always exact", choices=AUDIT_METHODS,
        cli_default="verified")
    verify: int = _setting(16, "method verified: at most this many heads per axiom are patched exactly", kind=int, low=0)
    margin: float = _setting(
        0.025, "method verified: heads whose screened effect is within this of the threshold are patched exactly",
        kind=float, low=0.0)
    threshold: float = _setting(0.05, "effect size a flagged head or cell must exceed", kind=float, low=0.0)
    alpha: float = _setting(0.05, "Benjamini-Hochberg FDR over all heads (cells)", kind=float)
    tolerance: float = _setting(1e-3, "score change that counts as a change", kind=float, low=0.0)
    equivalence: float = _setting(
        0.1, "no_change axioms (NULL): the equivalence margin of the mean change, as a fraction of the standard "
        "deviation of the audited pairs' scores", kind=float, low=0.0)
    cell_pairs: int = _setting(
        48, "random pairs per axiom on which block cells (component x layer x token region) are patched", kind=int, low=2)
    path_pairs: int = _setting(
        200, "targets paths: random pairs per axiom on which every head is path-patched into the flagged heads and the "
        "score (all of them when fewer)", kind=int, low=2)
    examples: int = _setting(2, "example pairs per axiom for per-position blocks and attention", kind=int, low=0)
    stability: int = _setting(
        10, "random query-disjoint half splits over which each flag's replication rate is measured (0: none)", kind=int,
        low=0)
    batch_size: int = _setting(8, "sequences per forward pass", kind=int, low=1)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a SettingsError naming the first invalid setting and what is allowed."""
        for spec in fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if spec.name in ("model", "data") or meta.get("kind") is None:
                continue
            if meta["kind"] is int and (isinstance(value, bool) or not isinstance(value, int) or value < meta["low"]):
                raise SettingsError(f"{spec.name}={value!r} is not valid; use an integer of at least {meta['low']}")
            if meta["kind"] is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise SettingsError(f"{spec.name}={value!r} is not valid; use a finite number")
                if meta["low"] is not None and value < meta["low"]:
                    raise SettingsError(f"{spec.name}={value!r} is not valid; use a number of at least {meta['low']}")
            if meta["kind"] is str and meta["choices"] and value not in meta["choices"]:
                raise SettingsError(f"{spec.name}={value!r} is not valid; use one of {', '.join(meta['choices'])}")
            if meta["kind"] is tuple and meta["choices"]:
                unknown = sorted(set(value) - set(meta["choices"]))
                if unknown or not value:
                    raise SettingsError(f"{spec.name}={list(value)!r} is not valid; choose from {', '.join(meta['choices'])}")
        if not 0 < self.alpha < 1:
            raise SettingsError(f"alpha={self.alpha!r} is not valid; use a number between 0 and 1")
        if "paths" in self.targets and "heads" not in self.targets:
            raise SettingsError(f"targets={list(self.targets)!r} is not valid: paths run into the flagged heads, so "
                                "they need heads too (use heads,paths)")
        if not self.axioms:
            raise SettingsError("axioms is empty; name at least one axiom (see `mechir-axioms list`)")

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists), as stored in the manifest."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def command(self) -> str:
        """The CLI command that repeats this audit (the model and data options only when not the defaults)."""
        parts = ["mechir-axioms audit"]
        if self.model not in (None, DEFAULT_MODEL):
            parts.append(f"--model '{self.model}'")
        if self.data not in (None, SAMPLE_NAME):
            parts.append(f"--data '{self.data}'")
        for spec in fields(self):
            if spec.name in ("model", "data"):
                continue
            value = getattr(self, spec.name)
            parts.append(f"--{flag_name(spec.name)} {','.join(value) if isinstance(value, tuple) else value}")
        return " ".join(parts)


def flag_name(setting: str) -> str:
    """The CLI flag of a setting, without dashes: cell_pairs -> cell-pairs."""
    return setting.replace("_", "-")


def setting_fields() -> list[Any]:
    """The dataclass fields of Settings, in declaration order, for interfaces that offer them."""
    return list(fields(Settings))


def parse_names(value: str) -> tuple[str, ...]:
    """A comma-separated list of names as a tuple, blanks dropped."""
    return tuple(name.strip() for name in value.split(",") if name.strip())
