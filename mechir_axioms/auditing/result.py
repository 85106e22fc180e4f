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
from ..report.render import render
from ..report.summary import audit_summary

FRAMES = ("axioms", "heads", "cells", "blocks", "pairs", "paths")
OPTIONAL_FRAMES = ("paths",)
"""Frames an audit saved before they existed lacks; they load as empty frames."""
RESULT_FILES = (*(f"{name}.parquet" for name in FRAMES if name not in OPTIONAL_FRAMES), "attention.json",
                "manifest.json")
READ_FIELDS: dict[str, tuple[str, ...]] = {
    "axioms.parquet": ("axiom", "title", "expect", "n_pairs", "agreement", "agreement_low", "agreement_high",
                       "mean_delta", "mean_low", "mean_high", "median_delta", "median_low", "median_high", "wilcoxon_p",
                       "wilcoxon_alternative", "verdict", "encodes", "violates", "cells_encodes", "cells_violates"),
    "heads.parquet": ("axiom", "layer", "head", "name", "effect", "ci_low", "ci_high", "p_value", "q_value", "flag"),
    "cells.parquet": ("axiom", "component", "layer", "region", "effect", "ci_low", "ci_high", "p_value", "q_value",
                      "flag", "n"),
    "blocks.parquet": ("axiom", "example", "pair", "component", "layer", "position", "token", "baseline_token", "effect"),
    "pairs.parquet": ("qid", "docno", "delta", "axiom", "pair"),
    "paths.parquet": ("axiom", "sender", "sender_layer", "sender_head", "receiver", "effect", "ci_low", "ci_high",
                      "q_value", "flag", "name", "n"),
    "manifest.json": ("settings", "model", "axioms"),
}
"""What report, compare and figure read from each saved file, unconditionally (columns or keys): a file lacking
one is refused on loading. Columns the readers look for first (a TOST margin, a head's replication or measured
method) are left out, so audits saved before them still load."""
UNMEASURED = ("blocks", "paths")
"""Frames an audit saves with no rows and no columns when it did not measure them."""


@dataclass
class Audit:
    """The findings of one audit as tidy frames, plus provenance; `save` writes them and the report.

    axioms: one row per axiom (behaviour, verdict, flag counts); heads: one row per (axiom, layer, head);
    cells: one row per (axiom, component, layer, token region); blocks: per-position effects on the example
    pairs; pairs: every pair with its scores; paths: one row per (axiom, sender head, receiver) edge when the
    audit targeted paths (the receiver is a flagged head, or "score": the final residual stream).
    """

    axioms: pd.DataFrame
    heads: pd.DataFrame
    cells: pd.DataFrame
    blocks: pd.DataFrame
    pairs: pd.DataFrame
    attention: dict[str, Any]
    manifest: dict[str, Any]
    folder: Path | None = None
    paths: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, folder: str | Path | Writer) -> Path:
        """Write the frames (Parquet), attention.json, report.html and, last, manifest.json into `folder`: a path
        (claimed as an audit's output folder, replacing only an audit saved there before) or a held output
        folder (see core.outputs)."""
        with writing_to(folder, "audit") as out:
            for name in FRAMES:
                out.write_frame(f"{name}.parquet", getattr(self, name))
            out.write_json("attention.json", self.attention)
            out.write_text("report.html", render(self))
            out.write_json("manifest.json", self.manifest)  # last: a folder with a manifest is a finished audit
            self.folder = out.root
        return self.folder

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: per axiom its verdict, agreement [95% CI] and flag counts."""
        return audit_summary(self)

    def flagged(self, axiom: str | None = None, frame: str = "heads") -> pd.DataFrame:
        """Flagged heads (or cells) of one axiom or all, strongest first."""
        rows = getattr(self, frame)
        rows = rows[rows["flag"] != ""]
        if axiom is not None:
            rows = rows[rows["axiom"] == axiom]
        return strongest_first(rows)

    def suggest_interventions(self, **options: Any) -> list[Any]:
        """Interventions the flags suggest, as `Suggestion`s (ablate violating heads, scale up encoding ones), each
        with the `mechir-axioms intervene` command that tests it; options: see auditing.suggestions."""
        from .suggestions import suggest_interventions

        return suggest_interventions(self, **options)


DAMAGED = "the saved audit is damaged; audit again into a new folder"


def _read_frame(path: Path) -> pd.DataFrame:
    """One saved frame, refused in one sentence when it is no Parquet file or lacks a column the readers need."""
    import pyarrow

    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, ValueError) as error:
        raise DataError(f"{path} cannot be read as a Parquet file (it is truncated or not Parquet); {DAMAGED}") from error
    if path.stem in UNMEASURED and frame.empty and not len(frame.columns):
        return frame
    _check_fields(path, frame.columns)
    return frame


def _read_object(path: Path) -> dict[str, Any]:
    """A saved JSON object, refused in one sentence when it is not valid JSON, not an object or lacks a key."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # invalid JSON or not UTF-8
        raise DataError(f"{path} is not valid JSON ({getattr(error, 'msg', 'not UTF-8 text')}); {DAMAGED}") from error
    if not isinstance(value, dict):
        raise DataError(f"{path} holds a JSON {type(value).__name__}, where a JSON object is needed; {DAMAGED}")
    _check_fields(path, value)
    return value


def _check_fields(path: Path, present: Any) -> None:
    missing = [name for name in READ_FIELDS.get(path.name, ()) if name not in present]
    if missing:
        what = "column" if path.suffix == ".parquet" else "key"
        raise DataError(f"{path} lacks the {what}(s) {', '.join(map(repr, missing))} that mechir-axioms reads; "
                        f"{DAMAGED}")


def load_audit(folder: str | Path) -> Audit:
    """Read a saved audit back from its folder; a damaged file is refused in one sentence that names it."""
    folder = Path(folder)
    if not folder.exists():
        raise SettingsError(f"{folder} does not exist; give the folder of a saved audit")
    if not folder.is_dir():
        raise SettingsError(f"{folder} is a file, not a folder; give the folder of a saved audit")
    missing = [name for name in RESULT_FILES if not (folder / name).is_file()]
    if missing:
        raise SettingsError(f"{folder} is not a finished audit: missing {', '.join(missing)}")
    return Audit(
        **{name: _read_frame(folder / f"{name}.parquet") if (folder / f"{name}.parquet").is_file()
           else pd.DataFrame() for name in FRAMES},
        attention=_read_object(folder / "attention.json"),
        manifest=_read_object(folder / "manifest.json"),
        folder=folder,
    )


def rerender(folder: str | Path) -> Path:
    """Re-render report.html of a saved audit from its results (and the spec text saved with it)."""
    audit = load_audit(folder)
    with OutputFolder(folder, "audit", "continue", flag="") as out:
        return out.write_text("report.html", render(audit))
