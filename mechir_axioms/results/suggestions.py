"""Interventions an audit's flags suggest: ablate the heads that violate an axiom, scale up the heads that encode it.

Each suggestion is one `mechir-axioms intervene` command that re-audits the axiom with and without the change on
the audit's own data, pair count and seed, and measures the ranking effectiveness before and after.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.defaults import DEFAULT_MODEL, SAMPLE_NAME
from .settings import Settings, flag_name

CARRIED = ("threshold", "alpha", "tolerance", "equivalence")
"""Audit settings that decide agreement, verdicts and flags: a suggestion repeats those the audit changed."""
MAX_HEADS = 4
"""The strongest flagged heads of one kind a suggestion names."""
SCALE_UP = 2.0
"""The factor a suggestion scales encoding heads by."""


@dataclass(frozen=True)
class Suggestion:
    """One proposed intervention: what it changes, why, and the command that tests it."""

    axiom: str
    op: str
    heads: tuple[str, ...]
    reason: str
    command: str
    factor: float | None = None


def intervene_command(heads: Sequence[str], op: str, axioms: Sequence[str], *, model: str | None = None,
                      factor: float | None = None, data: str | None = None, n: int | None = None,
                      seed: int | None = None, out: str | None = None, settings: Mapping[str, Any] | None = None,
                      features: Sequence[str] = (), saes: Sequence[str] = (), chosen_by: str | None = None) -> str:
    """The `mechir-axioms intervene` command line (model and data only when not the defaults; `settings` as their
    audit flags; `features` by name with the folders of their `saes`), shell-quoted."""
    parts = ["mechir-axioms", "intervene"]
    if model not in (None, DEFAULT_MODEL):
        parts += ["--model", str(model)]
    if features:
        parts += ["--features", ",".join(features), "--saes", ",".join(saes), "--op", op]
    else:
        parts += ["--heads", ",".join(heads), "--op", op]
    if factor is not None:
        parts += ["--factor", f"{factor:g}"]
    parts += ["--axioms", ",".join(axioms)]
    if data not in (None, SAMPLE_NAME):
        parts += ["--data", str(data)]
    for name, value in (settings or {}).items():
        parts += [f"--{flag_name(name)}", ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    for flag, value in (("--n", n), ("--seed", seed), ("--chosen-by", chosen_by), ("--out", out)):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(part) for part in parts)


def held_out_seed(seed: int) -> int:
    """The seed a suggested intervention draws its pairs with: not the audit's, so that they are a fresh draw."""
    return (seed + 1) % 2**32


def _changed(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The CARRIED settings whose value differs from the default."""
    defaults = Settings()
    return {name: settings[name] for name in CARRIED if name in settings and settings[name] != getattr(defaults, name)}


def _listed(rows: pd.DataFrame) -> str:
    """The flagged heads with their effects: "heads 3.2 (effect -0.081), 3.7 (-0.060)"."""
    named = [f"{row.name} ({'effect ' if i == 0 else ''}{row.effect:+.3f})" for i, row in enumerate(rows.itertuples())]
    return f"head{'s' if len(named) > 1 else ''} {', '.join(named)}"


def suggest_interventions(axioms: pd.DataFrame, flagged_heads: Callable[[str], pd.DataFrame],
                          settings: Mapping[str, Any], max_heads: int = MAX_HEADS,
                          factor: float = SCALE_UP, folder: str | Path | None = None) -> list[Suggestion]:
    """Per axiom of an audit (its axioms frame, its flagged heads of an axiom strongest first, its settings, its
    folder): ablate the violating heads (the `max_heads` strongest), and scale the encoding heads by `factor`; an
    axiom without flagged heads gets no suggestion. The command measures on pairs of another seed than the audit's
    (a fresh draw, not the pairs that chose the heads) and names the audit (--chosen-by), so that the intervention
    report says how many pairs and queries both share."""
    suggestions = []
    for axiom in axioms["axiom"]:
        flagged = flagged_heads(axiom)
        if flagged.empty:
            continue
        for flag, op, scale in (("violates", "ablate", None), ("encodes", "scale", factor)):
            rows = flagged[flagged["flag"] == flag]
            if rows.empty:
                continue
            shown = rows.head(max_heads)
            among = f" (the {len(shown)} strongest of {len(rows)})" if len(rows) > len(shown) else ""
            effect = "against it" if flag == "violates" else "the way it expects"
            hope = "ablating them should raise" if op == "ablate" else f"scaling them by {factor:g} should raise"
            reason = (f"{_listed(shown)}{among} {flag.removesuffix('s')} {axiom}: they move the score "
                      f"{effect}; {hope} its agreement")
            heads = tuple(str(name) for name in shown["name"])
            seed = settings.get("seed")
            command = intervene_command(heads, op, [axiom], model=settings.get("model"), factor=scale,
                                        data=settings.get("data"), n=settings.get("n"),
                                        seed=None if seed is None else held_out_seed(int(seed)),
                                        out=f"reports/intervene-{axiom}-{op}", settings=_changed(settings),
                                        chosen_by=None if folder is None else str(folder))
            suggestions.append(Suggestion(axiom, op, heads, reason, command, scale))
    return suggestions
