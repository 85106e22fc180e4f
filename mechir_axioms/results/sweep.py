"""`Sweep`: the audits of a design sweep and which flags hold under every variant of an axiom's design."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.outputs import Writer, writing_to
from .audit import Audit
from .pages import SavedWithPage, render_page
from .steps import flagged_steps

STABILITY_COLUMNS = ["axiom", "frame", "name", "flag", "reference_flag", "variants_flagged", "variants", "share",
                     "holds", "lost_under", "depends_on"]


@dataclass
class Sweep(SavedWithPage):
    """The audits of a sweep and what they say together.

    variants: one row per (axiom, variant) with its behaviour and flag counts; stability: one row per unit of
    every flagged step (a head, a block cell, ...) flagged in some variant, with how many variants flag it and
    the variants that do not.
    """

    variants: pd.DataFrame
    stability: pd.DataFrame
    audits: dict[tuple[str, str], Audit]
    manifest: dict[str, Any]
    folder: Path | None = None

    def holding(self, axiom: str, frame: str = "heads") -> list[str]:
        """The units of one step (heads by default) whose flag holds under every variant of `axiom`."""
        rows = self.stability[(self.stability["axiom"] == axiom) & (self.stability["frame"] == frame)]
        return rows.loc[rows["holds"], "name"].tolist()

    def save(self, folder: str | Path | Writer) -> Path:
        """Write variants.parquet, stability.parquet, report.html and, last, sweep.json into `folder` (a path, claimed
        as a sweep's output folder, or a held one; see core.outputs)."""
        with writing_to(folder, "sweep") as out:
            for name in ("variants", "stability"):
                out.write_frame(f"{name}.parquet", getattr(self, name))
            out.write_text("report.html", render_page(self))
            out.write_json("sweep.json", self.manifest)
            self.folder = out.root
        return self.folder



def stability(audits: Mapping[tuple[str, str], Audit], factors: Mapping[str, str | None]) -> pd.DataFrame:
    """Per axiom and unit of every flagged step, flagged in some variant: the variants that give it the
    reference's flag (or, when the reference has none, the most common flag), whether that holds under every
    variant, and the factors whose variants lose it."""
    rows = []
    axioms = dict.fromkeys(axiom for axiom, _ in audits)
    for axiom in axioms:
        labels = [label for name, label in audits if name == axiom]
        frames = dict.fromkeys(name for label in labels for name in audits[axiom, label].frames)
        for step in flagged_steps(frames):
            flags = {label: _flags(audits[axiom, label], step.name) for label in labels}
            table = pd.DataFrame(flags)
            if table.empty:
                continue
            table = table.fillna("")
            for name, row in table.iterrows():
                given = row[row != ""]
                if given.empty:
                    continue
                flag = row["reference"] if row["reference"] else given.value_counts().index[0]
                agreeing = row[row == flag].index.tolist()
                losing = [label for label in labels if label not in agreeing]
                rows.append({
                    "axiom": axiom, "frame": step.name, "name": name, "flag": flag, "reference_flag": row["reference"],
                    "variants_flagged": len(agreeing), "variants": len(labels), "share": len(agreeing) / len(labels),
                    "holds": not losing, "lost_under": losing,
                    "depends_on": sorted({factors[label] for label in losing if factors[label]}),
                })
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)


def _flags(audit: Audit, step: str) -> pd.Series:
    """Each unit's flag in one step's frame of an audit, by name (empty when the step did not run)."""
    frame = audit.frames.get(step, pd.DataFrame())
    if frame.empty:
        return pd.Series(dtype=object)
    return frame.set_index("name")["flag"]
