"""Output folders: the one way mechir-axioms writes files, so that no command loses or overwrites a user's files.

Every folder the tool writes keeps a ledger (`LEDGER`) of the files it wrote, with their SHA-256 and the command
that wrote them. A command writes into a folder only when everything in it is in the ledger and unchanged since
(nothing of the user's is ever replaced, deleted or mixed in), the folder belongs to no other command, and no
other process holds the folder's lock. Each file is written atomically. A run that fails before it has anything
worth keeping (see `OutputFolder.keep`) removes what it created and leaves the ledger as it found it.

A folder belongs to one command (an audit, a sweep, an intervention, a set of pairs). Single files (a figure,
a comparison page) are written with `write_file`: they may be replaced only by the command that wrote them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .errors import OutputError, SettingsError
from .files import plain, write_atomically
from .ledger import LEDGER, LOCK, digest, foreign_files, legacy_audit, read_ledger, recorded, walk

_SAFE_PART = re.compile(r"[A-Za-z0-9_+=.,@-]+")
NAME_RULE = "letters, digits and . _ + - = , @, not '.' or '..', without path separators"
"""What a name joined into an output path may contain (axiom names, variant labels, file names)."""

Existing = Literal["refuse", "continue", "replace"]
"""What to do with a folder that already holds this command's output: refuse it, continue it (--resume), or
replace it (remove the files this command wrote there, then write afresh)."""


def safe_name(name: str) -> bool:
    """Can `name` be joined into an output path as one part, without escaping the folder?"""
    return isinstance(name, str) and bool(_SAFE_PART.fullmatch(name)) and name not in (".", "..")


def _relative(parts: tuple[str, ...] | str) -> str:
    """'a/b' from ("a", "b") or "a/b", each part checked with safe_name (nothing absolute, no '..')."""
    pieces = [piece for part in ((parts,) if isinstance(parts, str) else parts) for piece in str(part).split("/")]
    bad = [piece for piece in pieces if not safe_name(piece)]
    if bad or not pieces:
        raise SettingsError(f"{'/'.join(pieces)!r} cannot name a file in an output folder: each part must be {NAME_RULE}")
    return "/".join(pieces)


class _Writes:
    """write_text, write_json and write_frame, each through the class's atomic, recorded `write`."""

    def write(self, relative: str, write: Callable[[Path], object]) -> Path:
        raise NotImplementedError

    def write_text(self, relative: str, text: str) -> Path:
        return self.write(relative, lambda temporary: temporary.write_text(text, encoding="utf-8"))

    def write_json(self, relative: str, value: Any) -> Path:
        return self.write_text(relative, json.dumps(value, indent=2, default=plain))

    def write_frame(self, relative: str, frame: Any) -> Path:
        """A pandas DataFrame as Parquet, without its index."""
        return self.write(relative, lambda temporary: frame.to_parquet(temporary, index=False))


class OutputFolder(_Writes):
    """A folder one command writes: claimed on entry (refused when it holds files the tool did not write, another
    command's output, or this command's output that `existing` does not allow), locked while in use, written
    file by file atomically, and cleaned of what the run created if it fails before `keep()` is called.

    `flag` names the folder where messages speak of it (--out, --mechir-report); `origin` tells folders of one
    command apart that must not replace each other (the pytest plugin's audits from a user's)."""

    def __init__(self, path: str | Path, command: str, existing: Existing = "refuse", *, flag: str = "--out",
                 origin: str | None = None, parent: OutputFolder | None = None, advice: str = "",
                 claim: bool = True):
        self.root, self.command, self.existing, self.flag = Path(path), command, existing, flag
        self.origin, self.parent, self.advice, self.claim = origin, parent, advice, claim
        self.ledger: dict[str, Any] = {}
        self._found_ledger = False  # was there a ledger (or an older audit) when the folder was entered?
        self._created: list[Path] = []
        self._lock: Any = None
        self._kept = False
        self._depth = 0  # nested entries of a held folder
        self._new_parts: list[str] = []
        self.continued = False  # True when the folder held this command's output and it is being continued

    # -- claiming ----------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse now, creating nothing, if this folder cannot be claimed (so a command fails before loading
        a model); entering the folder checks again."""
        self._inspect()

    @property
    def named(self) -> str:
        """The folder as messages name it: "--out reports/x", or the path alone."""
        return f"{self.flag} {self.root}".strip()

    def _inspect(self) -> dict[str, Any] | None:
        root, named = self.root, self.named
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise SettingsError(f"{named} is a file, not a folder; choose a folder")
        if not root.exists():
            return None
        ledger = read_ledger(root) or legacy_audit(root)
        foreign = foreign_files(root, ledger)
        if foreign:
            raise SettingsError(
                f"{named} holds files mechir-axioms did not write, or changed since it wrote them "
                f"({', '.join(foreign)}); choose an empty or new folder (mechir-axioms never replaces or deletes "
                "files it did not write)")
        if ledger is None:
            return None
        owner = ledger.get("command")
        holds = any(entry["command"] == owner for entry in ledger["files"].values()) or bool(ledger["parts"])
        if owner not in (None, self.command) and holds:
            raise SettingsError(f"{named} holds the output of `mechir-axioms {owner}`; choose another folder "
                                f"for `mechir-axioms {self.command}`")
        if owner == self.command and holds:
            if self.existing == "refuse":
                raise SettingsError(f"{named} already holds {_a(self.command)}; "
                                    f"{self.advice or 'choose another folder'}")
            if self.existing == "replace" and ledger["parts"]:
                raise SettingsError(f"{named} holds {_a(self.command)} of {len(ledger['parts'])} audits; it is not "
                                    "replaced: choose another folder")
            if self.existing == "replace" and ledger.get("origin") != self.origin:
                raise SettingsError(f"{named} holds {_a(self.command)} that {_by(ledger.get('origin'))} wrote; "
                                    f"{_by(self.origin)} does not replace it: choose another folder")
        return ledger

    def __enter__(self) -> OutputFolder:
        if self._lock is not None:  # already held (passed to a function that enters it again): as it is
            self._depth += 1
            return self
        if self.claim:
            self._inspect()  # refuse before creating anything
        elif self.root.exists() and not self.root.is_dir():
            raise SettingsError(f"{self.named} is a file, not a folder")
        self._make(self.root)
        self._take_lock()
        try:
            # read (and, when claiming, check) under the lock: another process may have written meanwhile
            found = self._inspect() if self.claim else read_ledger(self.root) or legacy_audit(self.root)
            self._found_ledger = found is not None
            self.ledger = found or {"command": None, "origin": None, "files": {}, "parts": {}}
            if self.claim:
                holds = self.ledger["command"] == self.command and bool(self.ledger["files"] or self.ledger["parts"])
                if holds and self.existing == "replace":
                    self._remove_own()
                self.continued = holds and self.existing == "continue"
                if not self.continued:  # continuing keeps whose output it is (the plugin's, or a user's)
                    self.ledger.update(command=self.command, origin=self.origin)
                if self.parent is not None:
                    self.parent._add_part(self)
                self._save_ledger()
        except BaseException:
            self._release(failed=True)
            raise
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> None:
        if self._depth:
            self._depth -= 1
            return
        self._release(failed=error is not None)

    def keep(self) -> None:
        """Something worth keeping is written (a checkpoint): a later failure leaves the folder for --resume."""
        self._kept = True
        if self.parent is not None:
            self.parent.keep()

    def part(self, relative: str, command: str, existing: Existing = "refuse") -> OutputFolder:
        """A subfolder that another command's output fills (a sweep's audits, an intervention's before/after),
        with its own ledger and lock; enter it to claim it."""
        return OutputFolder(self.root / _relative(relative), command, existing, flag=self.flag, origin=self.origin,
                            parent=self)

    # -- writing -----------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        """The path of a file or subfolder in this folder; every part is checked (see NAME_RULE)."""
        return self.root / _relative(parts)

    def write(self, relative: str, write: Callable[[Path], object]) -> Path:
        """Write one file atomically with write(temporary path) and record it in the ledger."""
        self._require_held()
        path = self.path(relative)
        name = path.relative_to(self.root).as_posix()
        entry = self.ledger["files"].get(name)
        if path.exists() and (path.is_symlink() or not recorded(path, entry)):
            raise SettingsError(f"{path} was not written by mechir-axioms, or changed since; it is left as it is "
                                "(choose another folder)")
        if path.is_dir():
            raise SettingsError(f"{path} is a folder; mechir-axioms writes a file there only where there is none")
        self._make(path.parent)
        created = not path.exists()
        previous = None if created else digest(path)

        def record(temporary: Path) -> None:  # before the move: a kill in between leaves a file the ledger knows
            self.ledger["files"][name] = {"sha256": digest(temporary), "command": self.command,
                                          **({"previous": previous} if previous else {})}
            self._save_ledger()

        write_atomically(path, write, record)
        if created:
            self._created.append(path)
        if previous:
            del self.ledger["files"][name]["previous"]
            self._save_ledger()
        return path

    def at(self, relative: str) -> Subfolder:
        """A view of a subfolder of this folder, written through this folder's ledger and lock."""
        return Subfolder(self, _relative(relative))

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _require_held(self) -> None:
        if self._lock is None:
            raise RuntimeError(f"{self.root} is written only inside `with OutputFolder(...)`")

    def _add_part(self, child: OutputFolder) -> None:
        self._require_held()
        name = child.root.relative_to(self.root).as_posix()
        if name not in self.ledger["parts"]:
            self.ledger["parts"][name] = child.command
            self._new_parts.append(name)
            self._save_ledger()

    def _save_ledger(self) -> None:
        path = self.root / LEDGER
        created = not path.exists()
        write_atomically(path, lambda temporary: temporary.write_text(json.dumps(self.ledger, indent=1, sort_keys=True)))
        if created:
            self._created.append(path)

    def _remove_own(self) -> None:
        """Replace: remove this command's earlier files and parts (all checked unchanged by _inspect)."""
        for name, entry in list(self.ledger["files"].items()):
            if entry["command"] == self.command:
                (self.root / name).unlink(missing_ok=True)
                del self.ledger["files"][name]
        for name in list(self.ledger["parts"]):
            part = self.root / name
            for path in sorted(walk(part), key=lambda path: len(path.parts), reverse=True) if part.is_dir() else ():
                path.unlink()
            del self.ledger["parts"][name]
        _remove_empty_folders(self.root)

    def _make(self, folder: Path) -> None:
        """Create a folder and its missing parents, remembering them for the clean-up of an early failure."""
        missing = [path for path in (folder, *folder.parents) if not path.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot create {folder}: {error.strerror or error}") from None
        self._created.extend(missing)

    def _take_lock(self) -> None:
        import fcntl

        path = self.root / LOCK
        while True:
            try:
                handle = open(path, "a+")  # noqa: SIM115  (held for the whole run)
            except OSError as error:
                raise OutputError(f"cannot write in {self.root}: {error.strerror or error}") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise SettingsError(f"another mechir-axioms command is writing {self.root} right now; wait for it or "
                                    "choose another folder") from None
            try:  # the holder before us may have removed the file after we opened it: lock the one on disk
                if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        self._lock = handle

    def _release(self, failed: bool) -> None:
        if self._lock is None:
            return
        try:
            if failed and not self._kept:  # nothing worth keeping: remove what this run created, and only that
                self._forget_created()
            elif self.parent is not None and not self._kept:  # a finished part of a run that may still fail
                self.parent._created.extend(self._created)
            (self.root / LOCK).unlink(missing_ok=True)
            if failed and not self._kept:
                for path in sorted(self._created, key=lambda path: len(path.parts), reverse=True):
                    if path.is_dir() and not any(path.iterdir()):
                        path.rmdir()
        finally:
            self._lock.close()
            self._lock = None

    def _forget_created(self) -> None:
        """Delete the files this run created (its parts' too) and their ledger entries; files it replaced keep
        their new contents, recorded as they are. A ledger this run created goes with them."""
        for path in sorted(self._created, key=lambda path: len(path.parts), reverse=True):
            if path.is_file() and path.name != LOCK:
                path.unlink()
                if self.root in path.parents:
                    self.ledger["files"].pop(path.relative_to(self.root).as_posix(), None)
        for name in self._new_parts:
            self.ledger["parts"].pop(name, None)
        if self._found_ledger:
            self._save_ledger()


class Subfolder(_Writes):
    """A subfolder of a held OutputFolder: the same write methods, with paths relative to the subfolder."""

    def __init__(self, folder: OutputFolder, relative: str):
        self.folder, self.relative = folder, relative

    @property
    def root(self) -> Path:
        return self.folder.root / self.relative

    def path(self, *parts: str) -> Path:
        return self.folder.path(self.relative, *parts)

    def write(self, relative: str, write: Callable[[Path], object]) -> Path:
        return self.folder.write(f"{self.relative}/{_relative(relative)}", write)

    def at(self, relative: str) -> Subfolder:
        return Subfolder(self.folder, f"{self.relative}/{_relative(relative)}")

    def keep(self) -> None:
        self.folder.keep()


Writer = OutputFolder | Subfolder
"""Where a result's `save` writes: a held output folder or a subfolder of one."""


def write_file(path: str | Path, command: str, write: Callable[[Path], object], flag: str = "--out") -> Path:
    """Write one file the user named (a figure, a comparison page): created, or replacing a file that this same
    command wrote there and nobody changed since; anything else at `path` is refused, and left as it is. The
    folder around it is not claimed: its other files are neither checked nor touched."""
    path = check_file(path, command, flag)
    with OutputFolder(path.parent, command, flag=flag, claim=False) as folder:
        check_file(path, command, flag, folder.ledger)  # again under the lock
        return folder.write(path.name, write)


def check_file(path: str | Path, command: str, flag: str = "--out", ledger: dict[str, Any] | None = None) -> Path:
    """`path` as a Path if `write_file` may write it, else a SettingsError saying why (nothing is created)."""
    path = Path(path)
    if path.is_dir():
        raise SettingsError(f"{flag} {path} is a folder; give a file name")
    if not safe_name(path.name):
        raise SettingsError(f"{flag} {path}: a file name here must be {NAME_RULE}")
    if path.parent.exists() and not path.parent.is_dir():
        raise SettingsError(f"{flag} {path}: {path.parent} is a file, not a folder")
    if path.exists() or path.is_symlink():
        if ledger is None:
            ledger = read_ledger(path.parent) or {"files": {}}
        entry = ledger["files"].get(path.name)
        if path.is_symlink() or not recorded(path, entry) or entry["command"] != command:
            raise SettingsError(f"{flag} {path} exists and was not written by `mechir-axioms {command}` (or was changed "
                                "since); mechir-axioms does not replace it: delete it or choose another name")
    return path


def _remove_empty_folders(folder: Path) -> None:
    for root, _, _ in sorted(os.walk(folder), key=lambda item: len(Path(item[0]).parts), reverse=True):
        if Path(root) != folder and not any(Path(root).iterdir()):
            Path(root).rmdir()


def _a(command: str) -> str:
    return {"audit": "an audit", "sweep": "a sweep", "intervene": "an intervention", "pairs": "saved pairs"}.get(
        command, f"the output of `mechir-axioms {command}`")


def _by(origin: str | None) -> str:
    return "the pytest plugin" if origin == "pytest" else "a mechir-axioms command"


@contextmanager
def writing_to(target: str | Path | Writer, command: str) -> Iterator[Writer]:
    """The writer for a result's `save(target)`: a held folder (or subfolder) as it is, or a path claimed as
    `command`'s output folder, replacing only that command's own earlier output there."""
    if isinstance(target, (OutputFolder, Subfolder)):
        yield target
        return
    with OutputFolder(target, command, "replace", flag="folder") as folder:
        yield folder
