"""`Audit`: the findings of one audit as tidy frames plus provenance, saved to and loaded from a folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.findings import strongest_first
from ..core.errors import DataError, SettingsError
from ..core.outputs import OutputFolder, Writer, writing_to
from .pages import SavedWithPage, render_page
from .steps import STEPS, in_order, steps_of, with_built_in_steps
from .suggestions import Suggestion, suggest_interventions

CORE_FIELDS: dict[str, tuple[str, ...]] = {
    "axioms.parquet": ("axiom", "title", "expect", "n_pairs", "agreement", "agreement_low", "agreement_high",
                       "mean_delta", "mean_low", "mean_high", "median_delta", "median_low", "median_high", "wilcoxon_p",
                       "wilcoxon_alternative", "verdict", "encodes", "violates", "cells_encodes", "cells_violates"),
    "pairs.parquet": ("qid", "docno", "delta", "axiom", "pair"),
    "manifest.json": ("settings", "model", "axioms"),
}
"""What report, compare and figure read from the files every audit has (columns or keys); each step's frame
declares its own (Step.fields). A file lacking one is refused on loading. Columns the readers look for first (a
TOST margin, a head's replication or measured method) are left out, so audits saved before them still load."""
CHANGES = ".changes.parquet"
"""The suffix of a step's per-pair changes (`heads.changes.parquet`)."""
CORE_FILES = ("axioms.parquet", "pairs.parquet", "attention.json", "manifest.json")


@dataclass
class Audit(SavedWithPage):
    """The findings of one audit: `axioms` (one row per axiom: behaviour, verdict, flag counts), `pairs` (every
    pair with its scores), and `frames`, one per audit step that ran (results.steps: heads, cells, blocks, paths,
    or a registered step), plus the attention examples and the manifest (settings and provenance).

    `audit.heads` (or any step's name) reads that step's frame, empty when the step did not run.
    """

    axioms: pd.DataFrame
    pairs: pd.DataFrame
    frames: dict[str, pd.DataFrame]
    attention: dict[str, Any]
    manifest: dict[str, Any]
    folder: Path | None = None
    pair_changes: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Per flagged step, each pair's change per unit (axiom, pair, qid, name, change, size): what `compare` pairs up
    between two audits of the same pairs. Empty for audits saved before it."""

    def __getattr__(self, name: str) -> pd.DataFrame:
        """A registered step's frame by its name (audit.heads); see `frame`."""
        if "frames" in self.__dict__ and name in with_built_in_steps():
            return self.frame(name)
        raise AttributeError(f"'Audit' has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        """Assigning a registered step's frame by its name (audit.heads = edited) replaces it in `frames`."""
        if name in STEPS and "frames" in self.__dict__ and name not in type(self).__dataclass_fields__:
            self.frames[name] = value
        else:
            super().__setattr__(name, value)

    def frame(self, step: str) -> pd.DataFrame:
        """One step's frame; when the step did not run (or measured nothing), an empty frame with the columns
        the step declares, so that readers can select from it."""
        found = self.frames.get(step)
        if found is None or (found.empty and not len(found.columns)):
            return pd.DataFrame(columns=list(STEPS[step].fields) if step in STEPS else [])
        return found

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps this audit ran."""
        return steps_of(self.manifest["settings"])

    def step_lines(self, axiom: str) -> list[str]:
        """One line per step this audit ran, for one axiom: flag counts, or what the step itself says."""
        lines, facts = [], self.manifest["axioms"].get(axiom, {})
        for step in in_order(self.steps):
            frame = self.frame(step.name)
            rows = frame[frame["axiom"] == axiom]
            line = step.line(rows, facts, self.manifest["settings"])
            if line:
                lines.append(line)
        return lines

    def save(self, folder: str | Path | Writer) -> Path:
        """Write the frames (Parquet), attention.json, report.html and, last, manifest.json into `folder`: a path
        (claimed as an audit's output folder, replacing only an audit saved there before) or a held output
        folder (see core.outputs)."""
        with writing_to(folder, "audit") as out:
            for name, frame in (("axioms", self.axioms), *self.frames.items(), ("pairs", self.pairs)):
                out.write_frame(f"{name}.parquet", frame)
            for step, changes in self.pair_changes.items():
                out.write_frame(f"{step}{CHANGES}", changes)
            out.write_json("attention.json", self.attention)
            out.write_text("report.html", render_page(self))
            out.write_json("manifest.json", self.manifest)  # last: a folder with a manifest is a finished audit
            self.folder = out.root
        return self.folder


    def flagged(self, axiom: str | None = None, frame: str = "heads") -> pd.DataFrame:
        """Flagged units of one step (heads by default) of one axiom or all, strongest first."""
        rows = self.frame(frame)
        if rows.empty:
            return rows
        rows = rows[rows["flag"] != ""]
        if axiom is not None:
            rows = rows[rows["axiom"] == axiom]
        return strongest_first(rows)

    def suggest_interventions(self, **options: Any) -> list[Suggestion]:
        """Interventions the flags suggest, as `Suggestion`s (ablate violating heads, scale up encoding ones), each
        with the `mechir-axioms intervene` command that tests it; options: see results.suggestions."""
        return suggest_interventions(self.axioms, self.flagged, self.manifest["settings"], folder=self.folder,
                                     **options)


PAIR_CHANGE_FIELDS = ("axiom", "pair", "qid", "name", "change", "size")
DAMAGED = "the saved audit is damaged; audit again into a new folder"


def _read_frame(path: Path, fields: tuple[str, ...]) -> pd.DataFrame:
    """One saved frame, refused in one sentence when it is no Parquet file or lacks a column the readers need."""
    import pyarrow

    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, ValueError) as error:
        raise DataError(f"{path} cannot be read as a Parquet file (it is truncated or not Parquet); {DAMAGED}") from error
    if frame.empty and not len(frame.columns):  # a step that measured nothing
        return frame
    _check_fields(path, frame.columns, fields)
    return frame


def _read_object(path: Path) -> dict[str, Any]:
    """A saved JSON object, refused in one sentence when it is not valid JSON, not an object or lacks a key."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # invalid JSON or not UTF-8
        raise DataError(f"{path} is not valid JSON ({getattr(error, 'msg', 'not UTF-8 text')}); {DAMAGED}") from error
    if not isinstance(value, dict):
        raise DataError(f"{path} holds a JSON {type(value).__name__}, where a JSON object is needed; {DAMAGED}")
    _check_fields(path, value, CORE_FIELDS.get(path.name, ()))
    return value


def _check_fields(path: Path, present: Any, fields: tuple[str, ...]) -> None:
    missing = [name for name in fields if name not in present]
    if missing:
        what = "column" if path.suffix == ".parquet" else "key"
        raise DataError(f"{path} lacks the {what}(s) {', '.join(map(repr, missing))} that mechir-axioms reads; "
                        f"{DAMAGED}")


def load_audit(folder: str | Path) -> Audit:
    """Read a saved audit back from its folder (of this version or an older one); a damaged file is refused in one
    sentence that names it. Every registered step's frame is read when saved; the steps the audit ran must be."""
    folder = Path(folder)
    with_built_in_steps()
    if not folder.exists():
        raise SettingsError(f"{folder} does not exist; give the folder of a saved audit")
    if not folder.is_dir():
        raise SettingsError(f"{folder} is a file, not a folder; give the folder of a saved audit")
    missing = [name for name in CORE_FILES if not (folder / name).is_file()]
    if missing:
        raise SettingsError(f"{folder} is not a finished audit: missing {', '.join(missing)}")
    manifest = _read_object(folder / "manifest.json")
    ran = [name for name in steps_of(manifest.get("settings", {})) if name in STEPS]
    missing = [f"{name}.parquet" for name in ran if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise SettingsError(f"{folder} is not a finished audit: missing {', '.join(missing)}")
    frames = {name: _read_frame(folder / f"{name}.parquet", step.fields) for name, step in STEPS.items()
              if (folder / f"{name}.parquet").is_file()}
    changes = {name: _read_frame(folder / f"{name}{CHANGES}", PAIR_CHANGE_FIELDS) for name in STEPS
               if (folder / f"{name}{CHANGES}").is_file()}
    return Audit(_read_frame(folder / "axioms.parquet", CORE_FIELDS["axioms.parquet"]),
                 _read_frame(folder / "pairs.parquet", CORE_FIELDS["pairs.parquet"]), frames,
                 _read_object(folder / "attention.json"), manifest, folder, changes)


def rerender(folder: str | Path) -> Path:
    """Re-render report.html of a saved audit from its results (and the spec text saved with it)."""
    audit = load_audit(folder)
    with OutputFolder(folder, "audit", "continue", flag="") as out:
        return out.write_text("report.html", render_page(audit))
