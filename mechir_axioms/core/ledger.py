"""The ledger of an output folder: which files mechir-axioms wrote there, so that it can tell them from a user's.

A ledger (`LEDGER`, JSON) records each file's SHA-256 and the command that wrote it, the folder's owning command
and origin, and its parts (subfolders that keep ledgers of their own). Audit folders written before ledgers
existed are recognised by their known files (`legacy_audit`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .files import TEMPORARY

LEDGER = ".mechir-axioms.json"
"""The ledger of an output folder: {"command", "origin", "files": {path: {"sha256", "command"}}, "parts"}."""
LOCK = ".mechir-axioms.lock"
"""Held (flock) by the process writing a folder; the operating system releases it if that process dies."""
_OWN = (LEDGER, LOCK, ".mechir-audit.lock")  # the tool's bookkeeping (and an older version's lock)
FILES_SHOWN = 3
"""How many foreign files a refusal names."""


def digest(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def recorded(path: Path, entry: dict[str, Any] | None) -> bool:
    """Is the file at `path` the one the ledger entry records (or, mid-replacement, the one it replaces)?"""
    return entry is not None and digest(path) in (entry["sha256"], entry.get("previous"))


def legacy_audit(folder: Path) -> dict[str, Any] | None:
    """The ledger of an audit folder written before ledgers existed (its known files), or None if it holds none."""
    if not ((folder / "manifest.json").is_file() or (folder / "work" / "settings.json").is_file()):
        return None
    known = {"axioms.parquet", "heads.parquet", "cells.parquet", "blocks.parquet", "pairs.parquet", "paths.parquet",
             "attention.json", "manifest.json", "report.html", ".mechir-pytest"}
    files = {}
    for path in walk(folder):
        relative = path.relative_to(folder).as_posix()
        if relative in known or relative.startswith("work/"):
            files[relative] = {"sha256": digest(path), "command": "audit"}
    origin = "pytest" if (folder / ".mechir-pytest").is_file() else None
    return {"command": "audit", "origin": origin, "files": files, "parts": {}}


def walk(folder: Path) -> Iterator[Path]:
    """Every file (and link) under `folder`, without following links."""
    for root, folders, files in os.walk(folder):
        for name in files + [entry for entry in folders if os.path.islink(os.path.join(root, entry))]:
            yield Path(root) / name


def read_ledger(folder: Path) -> dict[str, Any] | None:
    path = folder / LEDGER
    if not path.is_file():
        return None
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SettingsError(f"{path} is damaged ({error}); mechir-axioms cannot tell which files in {folder} it wrote, "
                            "so it writes nothing there: choose another folder") from None
    entries = ledger.get("files") if isinstance(ledger, dict) else None
    if not isinstance(entries, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("command"), str)
            for entry in entries.values()) or not isinstance(ledger.get("parts", {}), dict):
        raise SettingsError(f"{path} is not a mechir-axioms ledger; choose another folder")
    ledger.setdefault("parts", {})
    ledger.setdefault("origin", None)
    ledger.setdefault("command", None)
    return ledger


def foreign_files(folder: Path, ledger: dict[str, Any] | None = None, limit: int = FILES_SHOWN) -> list[str]:
    """Up to `limit` files under `folder` that mechir-axioms did not write or that changed since it wrote them
    (parts are checked against their own ledgers); empty folders count as nothing."""
    if ledger is None:
        ledger = read_ledger(folder) or legacy_audit(folder) or {"files": {}, "parts": {}}
    found: list[str] = []
    parts = ledger.get("parts", {})
    for path in walk(folder):
        relative = path.relative_to(folder).as_posix()
        if relative in _OWN or relative.endswith(TEMPORARY) and not path.is_symlink():
            continue
        part = next((name for name in parts if relative.startswith(name + "/")), None)
        if part is not None:
            continue
        if path.is_symlink() or not recorded(path, ledger["files"].get(relative)):
            found.append(relative)
            if len(found) >= limit:
                return found
    for part in parts:
        if (folder / part).is_dir() and len(found) < limit:
            found += [f"{part}/{name}" for name in foreign_files(folder / part, limit=limit - len(found))]
    return found
