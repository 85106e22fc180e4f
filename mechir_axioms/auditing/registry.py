"""`audit_step`: declare an audit step where it is implemented; the declaration joins results.steps.STEPS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pandas as pd

from ..results.steps import STEPS, Step, register_step

StepRun = Callable[..., pd.DataFrame]


def audit_step(name: str, **declaration: Any) -> Callable[[StepRun], StepRun]:
    """Register the decorated `run(context, records, frames) -> frame` as the audit step `name`; `declaration`
    holds the other fields of results.steps.Step (title, unit, target, method, columns, grid, reads, provenance,
    needs, flags, counts, fields, summary).

    `context` is the AuditContext, `records` one AxiomRecord per axiom, `frames` the frames of the steps that ran
    before it (those it `needs` among them); the frame it returns is saved as `<name>.parquet`, shown in the
    report and read by figures, compare and sweep."""
    def register(run: StepRun) -> StepRun:
        register_step(replace(Step(name, **declaration), run=run))
        return run

    return register


def unregister_step(name: str) -> None:
    """Remove a step from the registry (a step registered for a test or a notebook experiment)."""
    STEPS.pop(name, None)
