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

from ..core.errors import SettingsError
from ..core.files import write_atomically, write_json
from ..pairs.pairset import PairSet
from ..patching.result import PatchResult


LOCK = ".mechir-audit.lock"
"""Held (flock) by the process writing an audit folder; the operating system releases it if that process dies."""


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{key} was {before.get(key)!r}, now {value!r}" for key, value in now.items() if before.get(key) != value]


class Checkpoints:
    """`folder/work` of one audit, or nothing (folder None: an audit kept in memory computes every step).

    Used as a context manager: it takes the folder's lock for the whole run, refuses a folder that holds
    anything but an audit (unless empty), refuses a resume whose settings or identity (model, data and spec
    hashes) differ, and, when a run fails before its first checkpoint, leaves the folder as it found it.
    """

    def __init__(self, folder: Path | None, settings: dict[str, Any], resume: bool,
                 identity: dict[str, Any] | None = None):
        self.folder, self.settings, self.resume, self.identity = folder, settings, resume, identity or {}
        self.root = folder / "work" if folder else None
        self._created: list[Path] = []
        self._lock: Any = None
        self._checkpointed = False

    def __enter__(self) -> Checkpoints:
        if self.folder is None:
            return self
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise SettingsError(f"--out {folder} is a file, not a folder; choose a folder for the audit")
        holds_audit = (folder / "work" / "settings.json").is_file() or (folder / "manifest.json").is_file()
        if folder.is_dir() and not holds_audit and any(p.name != LOCK for p in folder.iterdir()):
            raise SettingsError(
                f"{folder} already holds files that are not an audit; choose an empty or new folder for --out "
                "(mechir-axioms never replaces files it did not write)")
        if holds_audit and not self.resume:
            raise SettingsError(
                f"{folder} already holds an audit; pass --resume (resume=True) to continue it, or choose another folder")
        if not folder.exists():
            self._make(folder)
        self._take_lock()
        try:
            self._check_or_start()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        self._release(failed=error is not None)

    def _make(self, path: Path) -> None:
        """Create a folder (and its missing parents), remembering what to remove after an early failure."""
        missing = [parent for parent in (path, *path.parents) if not parent.exists()]
        path.mkdir(parents=True, exist_ok=True)
        self._created.extend(missing)  # deepest first, the order to remove them in

    def _take_lock(self) -> None:
        import fcntl

        path = self.folder / LOCK
        handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SettingsError(f"another audit is writing {self.folder} right now; wait for it or choose another folder") from None
        self._lock = handle

    def _check_or_start(self) -> None:
        stored, identity = self.root / "settings.json", self.root / "identity.json"
        if self.resume and stored.is_file():
            changed = _differences(json.loads(stored.read_text()), self.settings)
            if changed:
                raise SettingsError(f"cannot resume the audit in {self.folder}: its settings differ ({'; '.join(changed)})")
            before = json.loads(identity.read_text()) if identity.is_file() else {}
            changed = _differences(before, self.identity) if before else []
            if changed:
                raise SettingsError(
                    f"cannot resume the audit in {self.folder}: what it audits has changed ({'; '.join(changed)})")
            return
        if not self.root.exists():
            self._make(self.root)
        write_json(stored, self.settings)
        write_json(identity, self.identity)
        self._created[:0] = [stored, identity]

    def _release(self, failed: bool) -> None:
        if self._lock is None:
            return
        (self.folder / LOCK).unlink(missing_ok=True)
        if failed and not self._checkpointed:  # nothing worth keeping: leave the folder as it was found
            for path in sorted(self._created, key=lambda path: len(path.parts), reverse=True):
                if path.is_file():
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        self._lock.close()
        self._lock = None

    def pairs(self, axiom: str, build: Callable[[], PairSet]) -> PairSet:
        if self.root is None:
            return build()
        folder = self.root / axiom / "pairs"
        if (folder / "provenance.json").is_file():  # written last by PairSet.save
            return PairSet.load(folder)
        pairs = build()
        pairs.save(folder)
        self._checkpointed = True
        return pairs

    def scores(self, axiom: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        if self.root is None:
            return compute()
        path = self.root / axiom / "scores.parquet"
        if path.is_file():
            return pd.read_parquet(path)
        scored = compute()
        write_atomically(path, lambda temporary: scored.to_parquet(temporary, index=False))
        self._checkpointed = True
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
        folder = self.root / axiom / name
        return PatchResult.load(folder) if (folder / "result.json").is_file() else None

    def store(self, axiom: str, name: str, result: PatchResult) -> None:
        """Checkpoint one result: effects.npz first, result.json last, so a chunk counts only when both are there."""
        if self.root is None:
            return
        result.save(self.root / axiom / name)
        self._checkpointed = True
