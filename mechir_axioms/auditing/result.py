"""`Audit`: the findings of one audit as tidy frames plus provenance, saved to and loaded from a folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..analysis.findings import strongest_first
from ..core.errors import SettingsError
from ..core.files import write_atomically, write_json
from ..report.render import render
from ..report.summary import audit_summary

FRAMES = ("axioms", "heads", "cells", "blocks", "pairs", "paths")
OPTIONAL_FRAMES = ("paths",)
"""Frames an audit saved before they existed lacks; they load as empty frames."""
RESULT_FILES = (*(f"{name}.parquet" for name in FRAMES if name not in OPTIONAL_FRAMES), "attention.json",
                "manifest.json")


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

    def save(self, folder: str | Path) -> Path:
        """Write the frames (Parquet), attention.json, report.html and, last, manifest.json into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in FRAMES:
            frame: pd.DataFrame = getattr(self, name)
            write_atomically(folder / f"{name}.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
        write_json(folder / "attention.json", self.attention)
        write_atomically(folder / "report.html", lambda path: path.write_text(render(self), encoding="utf-8"))
        write_json(folder / "manifest.json", self.manifest)  # last: a folder with a manifest is a finished audit
        self.folder = folder
        return folder

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


def load_audit(folder: str | Path) -> Audit:
    """Read a saved audit back from its folder."""
    folder = Path(folder)
    missing = [name for name in RESULT_FILES if not (folder / name).is_file()]
    if missing:
        raise SettingsError(f"{folder} is not a finished audit: missing {', '.join(missing)}")
    return Audit(
        **{name: pd.read_parquet(folder / f"{name}.parquet") if (folder / f"{name}.parquet").is_file()
           else pd.DataFrame() for name in FRAMES},
        attention=json.loads((folder / "attention.json").read_text()),
        manifest=json.loads((folder / "manifest.json").read_text()),
        folder=folder,
    )


def rerender(folder: str | Path) -> Path:
    """Re-render report.html of a saved audit from its results (and the spec text saved with it)."""
    audit = load_audit(folder)
    path = Path(folder) / "report.html"
    write_atomically(path, lambda temporary: temporary.write_text(render(audit), encoding="utf-8"))
    return path
