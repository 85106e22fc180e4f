"""The checkpoint folder of an audit: every finished step on disk, so that a killed audit resumes.

Each step (an axiom's pairs, its scores, one chunk of patching) is written atomically through the audit's
output folder (core.outputs) and only read back, never recomputed, by a resumed audit with the same settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.errors import SettingsError
from ..core.outputs import OutputFolder
from ..pairs.pairset import PairSet, read_saved
from ..patching.result import PatchResult
from ..results.settings import with_earlier_defaults


RESUME_ADVICE = "pass --resume (resume=True) to continue it, or choose another folder"


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{key} was {before.get(key)!r}, now {value!r}" for key, value in now.items() if before.get(key) != value]


class Checkpoints:
    """`work/` of an audit's held output folder, or nothing (folder None: an audit kept in memory computes every
    step).

    Used as a context manager inside the output folder's: it refuses a resume whose settings or identity (model,
    data and spec hashes) differ, and otherwise records them. The first checkpoint marks the folder worth
    keeping; a run that fails before it leaves the folder as it found it (see core.outputs).
    """

    def __init__(self, folder: OutputFolder | None, settings: dict[str, Any], identity: dict[str, Any] | None = None):
        self.folder, self.settings, self.identity = folder, settings, identity or {}
        self.root = folder.at("work") if folder is not None else None
        self.started, self.earlier_seconds, self.runs = time.perf_counter(), 0.0, 1
        """This run's start; the seconds earlier runs spent up to their last checkpoint, and this run's number."""

    def __enter__(self) -> Checkpoints:
        if self.folder is not None:
            self._check_or_start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        return None

    def _check_or_start(self) -> None:
        stored, identity = self.root.path("settings.json"), self.root.path("identity.json")
        if self.folder.continued and stored.is_file():
            changed = _differences(with_earlier_defaults(_read_json(stored)), self.settings)
            if changed:
                raise SettingsError(f"cannot resume the audit in {self.folder.root}: its settings differ "
                                    f"({'; '.join(changed)})")
            before = _read_json(identity) if identity.is_file() else {}
            changed = _differences(before, self.identity) if before else []
            if changed:
                raise SettingsError(
                    f"cannot resume the audit in {self.folder.root}: what it audits has changed ({'; '.join(changed)})")
            elapsed = self.root.path("elapsed.json")
            if elapsed.is_file():
                earlier = _read_json(elapsed)
                self.earlier_seconds, self.runs = float(earlier["seconds"]), int(earlier["runs"]) + 1
            else:  # begun before runs were counted: its earlier time is unknown
                self.runs = 2
            return
        self.root.write_json("settings.json", self.settings)
        self.root.write_json("identity.json", self.identity)

    def _checkpointed(self) -> None:
        self.folder.keep()
        self.root.write_json("elapsed.json", {"seconds": round(self.seconds_all_runs(), 1), "runs": self.runs})

    def seconds_all_runs(self) -> float:
        """The audit's computing time over every run so far: earlier runs' up to their last checkpoint (what they
        left unfinished is redone), and this run's until now."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def pairs(self, axiom: str, build: Callable[[], PairSet]) -> PairSet:
        if self.root is None:
            return build()
        folder = self.root.at(f"{axiom}/pairs")
        if folder.path("provenance.json").is_file():  # written last by PairSet.save
            return PairSet.load(folder.root)
        pairs = build()
        pairs.save(folder)
        self._checkpointed()
        return pairs

    def scores(self, axiom: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        if self.root is None:
            return compute()
        path = self.root.path(axiom, "scores.parquet")
        if path.is_file():
            return read_saved(path, pd.read_parquet)
        scored = compute()
        self.root.write_frame(f"{axiom}/scores.parquet", scored)
        self._checkpointed()
        return scored

    def patched(self, axiom: str, name: str, compute: Callable[[], PatchResult]) -> PatchResult:
        stored = self.stored(axiom, name)
        if stored is not None:
            return stored
        result = compute()
        self.store(axiom, name, result)
        return result

    def stored(self, axiom: str, name: str) -> PatchResult | None:
        """The checkpointed result `name` of `axiom`, or None when it was not finished (or nothing is kept)."""
        if self.root is None:
            return None
        folder = self.root.path(axiom, name)
        return PatchResult.load(folder) if (folder / "result.json").is_file() else None

    def store(self, axiom: str, name: str, result: PatchResult) -> None:
        """Checkpoint one result: effects.npz first, result.json last, so a chunk counts only when both are there."""
        if self.root is None:
            return
        result.save(self.root.at(f"{axiom}/{name}"))
        self._checkpointed()



def saved_settings(folder: str | Path) -> dict[str, Any] | None:
    """The deciding settings an audit in `folder` started with (work/settings.json), or None when it holds none:
    what `--resume` with `--out` alone continues with."""
    stored = Path(folder) / "work" / "settings.json"
    return with_earlier_defaults(_read_json(stored)) if stored.is_file() else None


def _read_json(path: Path) -> Any:
    return read_saved(path, lambda path: json.loads(path.read_text(encoding="utf-8")))
