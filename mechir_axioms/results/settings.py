"""`Settings`: every choice of an audit, with its default declared once.

`audit()` takes a Settings (or overrides of its fields); the CLI's flags, the pytest plugin's options and ini
keys, the manifest and the command that reproduces an audit are all derived from the fields below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..core.defaults import DEFAULT_AXIOMS, DEFAULT_MODEL, SAMPLE_NAME
from ..core.errors import SettingsError
from .steps import steps_from_targets

DEFAULT_STEPS = ("heads", "cells", "blocks")
"""What an audit measures unless told otherwise: every head, block cells and per-position blocks."""


def _setting(default: Any, help: str, *, kind: type = str, choices: tuple[str, ...] | None = None,
             low: float | None = None, decides: bool = True, method: str | None = None) -> Any:
    """A Settings field with what the CLI and the plugin need to offer it: help, type, bounds, choices, and
    whether it decides the audit's numbers (a resumed audit must match those); `method`: it decides them only
    when the audit's method is that one (the verified method's screen and budget mean nothing to exact patching)."""
    return field(default=default, metadata={"help": help, "kind": kind, "choices": choices, "low": low,
                                            "decides": decides, "method": method})


@dataclass(frozen=True)
class Settings:
    """Everything that decides an audit's numbers; a resumed audit must match them exactly."""

    axioms: tuple[str, ...] = _setting(DEFAULT_AXIOMS, "comma-separated axiom names", kind=tuple)
    model: str | None = _setting(None, "HF or sentence-transformers id or folder (default: packaged MiniLM)")
    data: str | None = _setting(None, f"JSONL/TSV/CSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    n: int = _setting(200, "pairs per axiom", kind=int, low=1)
    seed: int = _setting(0, "seed for pair selection, cell pairs and resampling", kind=int, low=0)
    steps: tuple[str, ...] = _setting(
        DEFAULT_STEPS, "audit steps (comma-separated): heads, cells (block component x layer x token region), blocks "
        "(per-position maps of example pairs), paths (needs heads), features (the latents of the saes), or a "
        "registered step", kind=tuple)
    saes: tuple[str, ...] = _setting(
        (), "SAE folders (comma-separated; SAELens or sparsify format, see `mechir-axioms sae train`) whose latents "
        "the features step patches", kind=tuple)
    method: str = _setting(
        "verified", "how heads are measured: verified (a screen estimates every head and each head that could reach a flag "
        "is patched exactly, so every flag rests on exact effects), exact on every head, or the attribution (AtP) "
        "and atp* estimates; block cells are always exact")
    screen: str = _setting(
        "attribution", "method verified: how every head (feature) is screened: attribution (AtP), or atp* (AtP with "
        "GradDrop: one more partial backward pass per layer, for paths that cancel in AtP; on the 6-layer rankers "
        "measured it screened in no exact flag that AtP missed)", choices=("attribution", "atp*"), method="verified")
    verify: int = _setting(
        48, "method verified: at most this many heads (features) per axiom are patched exactly; verification goes on "
        "in rounds until the missed-flag bound is below the threshold or this many are patched", kind=int, low=0,
        method="verified")
    margin: float = _setting(
        0.025, "method verified: heads whose screened effect is within this of the threshold are patched exactly",
        kind=float, low=0.0, method="verified")
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
    unit: str = _setting(
        "query", "the unit of inference: query (the pairs of one query are resampled and sign-flipped together, so a "
        "flag is a claim about new queries) or pair (for data that holds one pair per query)", choices=("query", "pair"))
    stability: int = _setting(
        25, "random query-disjoint half splits (twice as many half samples) for stability selection; a flag needs "
        "its test in at least `selection` of the halves (0: flags rest on the test alone)", kind=int, low=0)
    selection: float = _setting(
        0.9, "the share of half samples in which a flagged unit's test must flag it too (above one half): about the "
        "chance that an audit of half as many new queries finds the flag again",
        kind=float, low=0.5)
    batch_size: int = _setting(8, "sequences per forward pass", kind=int, low=1)
    cache_mib: int = _setting(
        1024, "MiB of clean runs (activations) each process keeps for reuse across the steps; 0: none", kind=int,
        low=0, decides=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a SettingsError naming the first invalid setting and what is allowed."""
        for spec in fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if spec.name in ("model", "data"):
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
            if meta["kind"] is tuple and (not isinstance(value, tuple) or not all(isinstance(v, str) for v in value)):
                raise SettingsError(f"{spec.name}={value!r} is not valid; use a tuple of names")
        if not 0.5 < self.selection <= 1:
            raise SettingsError(f"selection={self.selection!r} is not valid; use a number above 0.5 and at most 1")
        if not 0 < self.alpha < 1:
            raise SettingsError(f"alpha={self.alpha!r} is not valid; use a number between 0 and 1")
        if not self.steps:
            raise SettingsError("steps is empty; name at least one step (heads, cells, blocks, paths)")
        if not self.axioms:
            raise SettingsError("axioms is empty; name at least one axiom (see `mechir-axioms list`)")
        if "features" in self.steps and not self.saes:
            raise SettingsError("steps has features but saes is empty; give the SAE folders (--saes DIR[,DIR])")

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists), as stored in the manifest."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def deciding(self) -> dict[str, Any]:
        """The settings that decide the numbers, as JSON values: what a resumed audit must match."""
        decides = {spec.name for spec in fields(self) if spec.metadata["decides"]
                   and spec.metadata["method"] in (None, self.method)}
        if not self.saes:  # added after audits were saved without it: those resume while it is unused
            decides.discard("saes")
        return {key: value for key, value in self.describe().items() if key in decides}

    def but(self, **overrides: Any) -> Settings:
        """These settings with some fields replaced; `targets` (the old name of steps) is translated, and an
        unknown name is refused with the list of settings."""
        if "targets" in overrides:
            targets = overrides.pop("targets")
            overrides["steps"] = steps_from_targets([targets] if isinstance(targets, str) else targets)
        unknown = sorted(set(overrides) - {spec.name for spec in fields(self)})
        if unknown:
            raise SettingsError(f"{', '.join(unknown)} is not an audit setting; settings are "
                                f"{', '.join(spec.name for spec in fields(self))}")
        return replace(self, **{key: tuple(value) if isinstance(value, list) else value
                                for key, value in overrides.items()})

    def command(self) -> str:
        """The CLI command that repeats this audit (the model and data options only when not the defaults)."""
        parts = ["mechir-axioms audit"]
        if self.model not in (None, DEFAULT_MODEL):
            parts.append(f"--model '{self.model}'")
        if self.data not in (None, SAMPLE_NAME):
            parts.append(f"--data '{self.data}'")
        for spec in fields(self):
            if spec.name in ("model", "data") or not spec.metadata["decides"]:
                continue
            value = getattr(self, spec.name)
            if value == ():  # an empty list (no SAEs) is the default and has no flag value
                continue
            parts.append(f"--{flag_name(spec.name)} {','.join(value) if isinstance(value, tuple) else value}")
        return " ".join(parts)


EARLIER_DEFAULTS = {"screen": "atp*"}
"""What an audit saved before a setting existed used in its place: a resumed audit continues with it."""


def with_earlier_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """Deciding settings as an audit saved them, with EARLIER_DEFAULTS for those it predates that decide its
    numbers (a verified audit's screen; an exact audit has none)."""
    applies = {spec.name for spec in fields(Settings) if spec.metadata["method"] in (None, saved.get("method"))}
    return {**{key: value for key, value in EARLIER_DEFAULTS.items() if key in applies}, **saved}
SCREEN_NAMES = {"attribution": "AtP", "atp*": "AtP*"}


def screen_name(settings: dict[str, Any]) -> str:
    """The name of the screen a verified audit's settings (as saved) used: AtP or AtP*."""
    return SCREEN_NAMES[settings.get("screen", EARLIER_DEFAULTS["screen"])]


INTERVENTION_DEFAULTS = Settings(steps=("heads",), stability=0)
"""What the re-audits of an intervention measure unless told otherwise: the heads, without replication splits
(the flags that matter there are the heads')."""


def flag_name(setting: str) -> str:
    """The CLI flag of a setting, without dashes: cell_pairs -> cell-pairs."""
    return setting.replace("_", "-")


def setting_fields() -> list[Any]:
    """The dataclass fields of Settings, in declaration order, for interfaces that offer them."""
    return list(fields(Settings))


def parse_setting(name: str, text: str) -> Any:
    """A setting's value from text (a flag, a pytest option or ini key): numbers as numbers, lists split on commas;
    a SettingsError names the setting when the text is not of its kind."""
    spec = {spec.name: spec for spec in fields(Settings)}[name]
    kind = spec.metadata["kind"]
    if kind is tuple:
        return parse_names(text)
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not valid; use {'an integer' if kind is int else 'a number'}") \
                from None
    return text


def parse_names(value: str) -> tuple[str, ...]:
    """A comma-separated list of names as a tuple, blanks dropped."""
    return tuple(name.strip() for name in value.split(",") if name.strip())
