"""`InterventionResult`: what an intervention on heads did to axioms and to ranking effectiveness, saved with
both audits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.effectiveness import MEASURES
from ..core.outputs import OutputFolder
from .audit import Audit
from .pages import render_page
from .text import percent

PRIMARY = str(MEASURES[0])
"""The measure the summary line names: nDCG@10."""


@dataclass
class InterventionResult:
    """An intervention's effect: per axiom (agreement and mean change, before and after, paired), per measure
    (before, after, paired), per query and measure, the two audits, and provenance."""

    intervention: dict[str, Any]
    axioms: pd.DataFrame
    measures: pd.DataFrame
    queries: pd.DataFrame
    before: Audit
    after: Audit
    manifest: dict[str, Any]
    folder: Path | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.intervention["label"]

    @property
    def summary(self) -> str:
        """One sentence: what the intervention cost or gained in nDCG@10, and how each axiom's agreement moved."""
        alpha = self.manifest["alpha"]
        row = self.measures.set_index("measure").loc[PRIMARY]
        if row["p_value"] <= alpha:
            done = f"{'cost' if row['difference'] < 0 else 'gained'} {abs(row['difference']):.3f} {PRIMARY}"
        else:
            done = f"made no significant change to {PRIMARY}"
        effect = (f"The intervention ({self.label}) {done} ({row['before']:.3f} -> {row['after']:.3f}, "
                  f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}], p = {row['p_value']:.2g} over "
                  f"{int(row['n'])} queries)")
        axioms = [f"{a.axiom} agreement {percent(a.agreement_before)} -> {percent(a.agreement_after)} "
                  f"({percent(a.agreement_change, True)} [{percent(a.agreement_low, True)}, "
                  f"{percent(a.agreement_high, True)}], p = {a.agreement_p:.2g})" for a in self.axioms.itertuples()]
        return f"{effect}; {'; '.join(axioms)}."

    def table(self) -> str:
        """A plain-text report: the summary, the axioms before and after, the measures before and after."""
        lines = [f"mechir-axioms intervene: {self.label}", f"  model: {self.manifest['model']['name']}", ""]
        header = f"{'axiom':<8} {'agreement before -> after':<26} {'change [95% CI]':<26} {'p':>8}  mean change before -> after"
        lines += [header, "-" * len(header)]
        for a in self.axioms.itertuples():
            interval = f"{percent(a.agreement_change, True)} [{percent(a.agreement_low, True)}, {percent(a.agreement_high, True)}]"
            lines.append(f"{a.axiom:<8} {percent(a.agreement_before):>9} -> {percent(a.agreement_after):<13} {interval:<26} "
                         f"{a.agreement_p:>8.2g}  {a.mean_before:+.3g} -> {a.mean_after:+.3g} "
                         f"({a.mean_change:+.3g} [{a.mean_low:+.3g}, {a.mean_high:+.3g}], p = {a.mean_p:.2g})")
        header = f"{'measure':<14} {'before':>7} {'after':>7}  {'change [95% CI]':<28} {'rand. p':>8} {'t-test p':>9}"
        lines += ["", header, "-" * len(header)]
        for m in self.measures.itertuples():
            interval = f"{m.difference:+.4f} [{m.low:+.4f}, {m.high:+.4f}]"
            lines.append(f"{m.measure:<14} {m.before:>7.4f} {m.after:>7.4f}  {interval:<28} {m.p_value:>8.2g} {m.t_test_p:>9.2g}")
        lines += ["", f"over {int(self.measures['n'].iloc[0])} queries of {self.manifest['judged']}", "", self.summary]
        return "\n".join(lines)

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def save(self, folder: str | Path | OutputFolder) -> Path:
        """Write before/ and after/ (the audits), effectiveness.parquet (per query and measure), intervention.json
        (provenance, per axiom, per measure) and report.html into `folder`: a path, claimed as an intervention's
        output folder (refused if it holds one, or anything the tool did not write), or a held one."""
        with folder if isinstance(folder, OutputFolder) else intervention_folder(folder) as out:
            for name, audited in (("before", self.before), ("after", self.after)):
                with out.part(name, "audit") as part:
                    audited.save(part)
            out.write_frame("effectiveness.parquet", self.queries)
            out.write_json("intervention.json", {**self.manifest, "axioms": _records(self.axioms),
                                                 "measures": _records(self.measures)})
            self.folder = out.root
            out.write_text("report.html", render_page(self))
        return self.folder


def intervention_label(manifest: dict[str, Any]) -> str | None:
    """The label of the intervention an audit was made under ("ablate heads 4.4, 4.6", from its manifest's
    "intervention"), or None for an audit of the model as it is (and for audits saved before audits recorded it)."""
    facts = manifest.get("intervention")
    if not facts:
        return None
    return str(facts.get("label") or "an intervention") if isinstance(facts, dict) else "an intervention"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-ready records (NaN as null)."""
    return json.loads(frame.to_json(orient="records"))


def intervention_folder(folder: str | Path) -> OutputFolder:
    """The output folder of an intervention (not yet claimed): refused if it holds one, or anything else."""
    return OutputFolder(folder, "intervene", "refuse")
