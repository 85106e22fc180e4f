"""The registry of audit steps: what each step measures and the frame it writes, for every reader of results.

A step is declared once, where it runs (`auditing.steps.audit_step`); the declaration lands here, below the
report, so that the report, the figures, `compare`, the sweep, the CLI and the pytest plugin loop over the
registered steps instead of naming heads, cells and paths one by one.
"""

from __future__ import annotations

import importlib

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core.errors import SettingsError

STATISTICS = ("effect", "ci_low", "ci_high", "p_value", "q_value", "flag", "n")
"""The columns every flagged step's frame carries for each unit (analysis.findings.effects_frame)."""


@dataclass(frozen=True)
class Step:
    """One registered audit step: its unit of analysis, how it measures it and the frame it writes."""

    name: str
    """The step's name in Settings.steps, its frame's key in Audit.frames and its file, `<name>.parquet`."""
    title: str
    """A heading for the report and the sweep ("Heads", "Block cells")."""
    unit: str
    """One unit of analysis in words ("head", "block cell", "edge")."""
    target: str
    """The patching target it measures (patching.plan.TARGETS, or "paths")."""
    method: str | None
    """The patching method it always uses, or None: the audit's `method` setting."""
    columns: tuple[str, ...]
    """The label columns that name one unit in its frame (its `name` joins them)."""
    grid: tuple[str, str] | None = None
    """(row, column) of its map in the report and figures: rows are "layer"; None: no map."""
    reads: tuple[str, ...] = ()
    """The Settings fields it reads, besides the statistics' (threshold, alpha, tolerance, seed, stability)."""
    provenance: tuple[str, ...] = ()
    """The keys it adds to each axiom's provenance in the manifest."""
    needs: tuple[str, ...] = ()
    """Steps that must run before it (paths run into the flagged heads)."""
    flags: bool = True
    """Whether its units get statistics and flags (False: a map of effects, such as per-position blocks)."""
    counts: str | None = None
    """The prefix of its flag counts in the axioms frame (`<prefix>encodes`); None: not counted there."""
    fields: tuple[str, ...] = ()
    """The columns readers need in its saved frame (a saved frame lacking one is refused as damaged)."""
    sample: str | None = None
    """The Settings field capping the pairs it patches per axiom (a seeded random sample), or None: every pair."""
    summary: Callable[[pd.DataFrame, dict[str, Any], dict[str, Any]], str | None] | None = field(default=None,
                                                                                                  compare=False)
    """summary(rows of one axiom, that axiom's provenance, the settings) -> one line, or None for the default."""
    run: Callable[..., pd.DataFrame] | None = field(default=None, compare=False, repr=False)
    """run(context, records, frames) -> its frame; set where the step is implemented (auditing.steps)."""

    def line(self, rows: pd.DataFrame, facts: dict[str, Any], settings: dict[str, Any]) -> str | None:
        """The step's summary line for one axiom: its own, or flag counts; then how many units are fragile (their
        test flags them, stability selection does not) and a warning when too few queries allow any flag."""
        if self.summary is not None:
            line = self.summary(rows, facts, settings)
        elif not self.flags:
            return None
        else:
            flags = rows["flag"] if "flag" in rows else pd.Series(dtype=str)
            line = (f"{self.unit}s encoding {int((flags == 'encodes').sum())}, "
                    f"violating {int((flags == 'violates').sum())}")
        if line is None or not self.flags:
            return line
        if "test" in rows and len(rows):
            fragile = int(((rows["test"] != "") & (rows["flag"] == "")).sum())
            line += f"; fragile {fragile}" if fragile else ""
        inference = facts.get("inference", {}).get(self.name)
        if inference:
            alpha, smallest = settings["alpha"], inference["smallest_p"]
            if smallest > alpha or inference.get("smallest_p_half", 0.0) > alpha:
                line += (f"; too few queries ({inference['queries']}) for any flag: the smallest p-value "
                         f"{'a half allows' if smallest <= alpha else 'they allow'} is "
                         f"{inference.get('smallest_p_half', 0.0) if smallest <= alpha else smallest:.2g} > alpha {alpha}")
        return line

    def option(self) -> str:
        """The option that turns the step on, for messages."""
        return f"--steps {','.join((*self.needs, self.name))}"


STEPS: dict[str, Step] = {}
"""The one audit-step registry: name -> Step, in registration order (the order of frames and reports)."""
BUILT_IN = "mechir_axioms.auditing.steps"
"""Where the built-in steps register themselves; imported on first need by readers of saved results."""


def with_built_in_steps() -> dict[str, Step]:
    """The registry, with the built-in steps registered: reading a saved audit must not depend on whether this
    process ran one (the import is by name, as results.pages imports the report: the steps live above)."""
    if "heads" not in STEPS:
        importlib.import_module(BUILT_IN)
    return STEPS


def register_step(step: Step) -> Step:
    """Add `step` to STEPS (a second step of one name is refused)."""
    if step.name in STEPS:
        raise ValueError(f"audit step {step.name!r} is registered twice")
    if step.name in ("axioms", "pairs"):
        raise ValueError(f"{step.name!r} names a frame every audit has; choose another step name")
    STEPS[step.name] = step
    return step


def check_steps(names: Sequence[str]) -> tuple[str, ...]:
    """The names, checked against the registry and their needs; a SettingsError names what is wrong."""
    unknown = [name for name in names if name not in STEPS]
    if unknown or not names:
        raise SettingsError(f"steps={list(names)!r} is not valid; choose from {', '.join(STEPS)}")
    for name in names:
        missing = [need for need in STEPS[name].needs if need not in names]
        if missing:
            raise SettingsError(f"steps={list(names)!r} is not valid: {name} needs {', '.join(missing)} too (use "
                                f"{','.join(dict.fromkeys((*missing, *names)))})")
    return tuple(names)


def in_order(names: Iterable[str]) -> list[Step]:
    """The registered steps among `names`, in registration order (a step's needs are registered before it)."""
    chosen = set(names)
    return [step for name, step in STEPS.items() if name in chosen]


def flagged_steps(frames: Iterable[str]) -> list[Step]:
    """The registered steps with flags among the frames given, in registration order."""
    return [step for step in in_order(frames) if step.flags]


LEGACY_TARGETS = {"heads": ("heads",), "blocks": ("cells", "blocks"), "paths": ("paths",)}
"""What the old `targets` setting named, in steps: "blocks" measured block cells and per-position blocks."""


def steps_from_targets(targets: Iterable[str]) -> tuple[str, ...]:
    """Old `targets` as steps (an old manifest, an old command, `targets=` in Python)."""
    targets = list(targets)
    unknown = [target for target in targets if target not in LEGACY_TARGETS]
    if unknown:
        raise SettingsError(f"targets={targets!r} is not valid; targets are {', '.join(LEGACY_TARGETS)} (now named "
                            "steps: heads, cells, blocks, paths)")
    return tuple(dict.fromkeys(step for target in targets for step in LEGACY_TARGETS[target]))


def steps_of(settings: dict[str, Any]) -> tuple[str, ...]:
    """The steps a saved audit's settings ran (old audits name targets)."""
    if "steps" in settings:
        return tuple(settings["steps"])
    return steps_from_targets(settings.get("targets", ("heads", "blocks")))
