"""The checkpoint folder of an audit: every finished step on disk, so that a killed audit resumes.

Each step (an axiom's pairs, its scores, one chunk of patching) is written atomically and only read
back, never recomputed, by a resumed audit with the same settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.files import write_atomically, write_json
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult


class Checkpoints:
    """`folder/work` of one audit, or nothing (folder None: an audit kept in memory computes every step)."""

    def __init__(self, folder: Path | None, settings: dict[str, Any], resume: bool):
        self.root = folder / "work" if folder else None
        if folder is None:
            return
        stored = self.root / "settings.json"
        if resume and stored.is_file():
            before = json.loads(stored.read_text())
            changed = [f"{key} was {before.get(key)!r}, now {value!r}" for key, value in settings.items()
                       if before.get(key) != value]
            if changed:
                raise ValueError(f"cannot resume the audit in {folder}: its settings differ ({'; '.join(changed)})")
            return
        if not resume and (self.root.exists() or (folder / "manifest.json").exists()):
            raise FileExistsError(
                f"{folder} already holds an audit; pass --resume (resume=True) to continue it, or choose another folder"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(stored, settings)

    def pairs(self, axiom: str, build: Callable[[], PairSet]) -> PairSet:
        if self.root is None:
            return build()
        folder = self.root / axiom / "pairs"
        if (folder / "provenance.json").is_file():  # written last by PairSet.save
            return PairSet.load(folder)
        pairs = build()
        pairs.save(folder)
        return pairs

    def scores(self, axiom: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        if self.root is None:
            return compute()
        path = self.root / axiom / "scores.parquet"
        if path.is_file():
            return pd.read_parquet(path)
        scored = compute()
        write_atomically(path, lambda temporary: scored.to_parquet(temporary, index=False))
        return scored

    def patched(self, axiom: str, name: str, compute: Callable[[], PatchResult]) -> PatchResult:
        if self.root is None:
            return compute()
        folder = self.root / axiom / name
        if (folder / "result.json").is_file():
            return PatchResult.load(folder)
        result = compute()
        result.save(folder)  # effects.npz first, result.json last: a chunk counts only when both are there
        return result
