"""Axioms as data: TOML specs loaded with tomllib, validated field by field, registered by name.

A spec says which pairs qualify ([select]), how the input changes ([perturb]), how the equal-length
baseline is built ([baseline]) and which way the score should move (expect). No code runs from a spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.defaults import AXIOM_NAME_RULE, is_axiom_name
from ..core.errors import SpecError
from ..core.params import Param
from ..perturb.operators import OPERATORS
from ..perturb.terms import selector_names


def _packaged_axioms() -> Path:
    """The catalogue: inside an installed wheel, or the repository's `axioms/` in a source checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "axioms"
    return installed if installed.is_dir() else package.parent / "axioms"


PACKAGED_AXIOMS = _packaged_axioms()
AXIOM_PATH_VARIABLE = "MECHIR_AXIOMS_PATH"

EXPECTATIONS = ("increase", "decrease", "no_change", "not_increase", "not_decrease")
FILLS = ("filler", "mask", "term")
SIDES = ("document", "query")


_TOP = {
    "name": Param(str, description="the axiom's name (e.g. TFC1); must equal the file name, ignoring case"),
    "title": Param(str, description="one line: what the axiom says"),
    "citation": Param(str, description="where the axiom comes from"),
    "expect": Param(str, None, EXPECTATIONS, description="which way the score should move from baseline to perturbed"),
    "description": Param(str, "", description="how the pair is built, in a sentence"),
    "gains": Param(str, None, ("diminishing",), description="for ladders: each further rung should add less"),
}
_REQUIRED_TOP = ("name", "title", "citation", "expect")
_BASELINE = {
    "fill": Param(str, "filler", FILLS, description="what fills the baseline's slot: filler words, masked padding ('mask' only with maskable operators), or another term; 'filler' when perturb.ladder = true"),
    "filler": Param(str, "a", description="the filler word; override it to sweep fillers"),
    "term": Param(str, None, selector_names, description="the selector of the stand-in term when fill = 'term'"),
}
_SELECT = {
    "relevance": Param(list, None, description="a list of integer relevance grades a pair must have (default: any)"),
    "min_query_terms": Param(int, 1, low=0, high=20, description="fewest non-stopword query terms"),
    "min_document_words": Param(int, 1, low=0, high=10_000, description="shortest document, in words"),
    "max_document_words": Param(int, 10_000, low=1, high=100_000, description="longest document, in words"),
}
TABLES = {"": _TOP, "baseline": _BASELINE, "select": _SELECT}
"""The fields of a spec outside [perturb], by table, for validation and for the generated docs."""


@dataclass(frozen=True)
class Perturbation:
    """How the input changes: an operator name, the side it changes, and its validated parameters."""

    operation: str
    target: str = "document"
    params: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


@dataclass(frozen=True)
class Baseline:
    """How the equal-length baseline slot is filled: filler words, masked padding, or another selected term."""

    fill: str = "filler"
    filler: str = "a"
    term: str | None = None


@dataclass(frozen=True)
class Selection:
    """Preconditions a query-document pair must meet to be used."""

    relevance: tuple[int, ...] | None = None
    min_query_terms: int = 1
    min_document_words: int = 1
    max_document_words: int = 10_000


@dataclass(frozen=True)
class Axiom:
    """A validated axiom spec. Call it with overrides to get a variant: `TFC1(position="start")`."""

    name: str
    title: str
    citation: str
    expect: str
    perturb: Perturbation
    baseline: Baseline = Baseline()
    select: Selection = Selection()
    description: str = ""
    gains: str | None = None
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def spec_hash(self) -> str:
        """sha256 of the effective spec (after overrides), for provenance."""
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()[:16]

    def __call__(self, **overrides: Any) -> Axiom:
        return with_overrides(self, overrides)


def _fail(source: str, where: str, value: Any, allowed: str) -> SpecError:
    where = where if where.isprintable() else repr(where)[1:-1]  # a key with a newline stays on one line
    return SpecError(f"{source}: field '{where}' is {value!r}; allowed: {allowed}")


def _check_table(source: str, prefix: str, table: Any, schema: dict[str, Param]) -> dict[str, Any]:
    """Validate one table against its schema and fill defaults; unknown keys are errors."""
    if not isinstance(table, dict):
        raise _fail(source, prefix.rstrip("."), table, "a table")
    for key, value in table.items():
        if key not in schema:
            raise _fail(source, prefix + key, value, "no such field; known fields are " + ", ".join(schema))
        if not schema[key].check(value):
            raise _fail(source, prefix + key, value, schema[key].describe())
    return {key: table.get(key, param.default) for key, param in schema.items()}


def parse_axiom(raw: dict[str, Any], source: str) -> Axiom:
    """Build an Axiom from a parsed TOML document, raising SpecError on the first invalid field."""
    tables = {"perturb", "baseline", "select"}
    top = _check_table(source, "", {k: v for k, v in raw.items() if k not in tables}, _TOP)
    for key in _REQUIRED_TOP:
        if top[key] is None:
            raise _fail(source, key, None, "a required field; " + _TOP[key].describe())
    if not is_axiom_name(top["name"]):  # the name becomes a folder of results: nothing that escapes it
        raise _fail(source, "name", top["name"], AXIOM_NAME_RULE)
    if "perturb" not in raw:
        raise _fail(source, "perturb", None, "a required table with an 'operation'")
    perturb_raw = dict(raw["perturb"]) if isinstance(raw["perturb"], dict) else raw["perturb"]
    if not isinstance(perturb_raw, dict):
        raise _fail(source, "perturb", perturb_raw, "a table")
    operation = perturb_raw.pop("operation", None)
    if not isinstance(operation, str) or operation not in OPERATORS:
        raise _fail(source, "perturb.operation", operation, "one of " + ", ".join(map(repr, OPERATORS)))
    target = perturb_raw.pop("target", "document")
    if target not in SIDES:
        raise _fail(source, "perturb.target", target, "one of " + ", ".join(map(repr, SIDES)))
    params = _check_table(source, "perturb.", perturb_raw, OPERATORS[operation].params)
    baseline = _check_table(source, "baseline.", raw.get("baseline", {}), _BASELINE)
    if baseline["fill"] == "term" and baseline["term"] is None:
        raise _fail(source, "baseline.term", None, "a term selector when fill = 'term': " + _BASELINE["term"].describe())
    select = _check_table(source, "select.", raw.get("select", {}), _SELECT)
    if select["relevance"] is not None:
        if not all(isinstance(grade, int) and not isinstance(grade, bool) for grade in select["relevance"]):
            raise _fail(source, "select.relevance", select["relevance"], "a list of integer relevance grades")
        select["relevance"] = tuple(select["relevance"])
    if baseline["fill"] == "mask" and not OPERATORS[operation].maskable:
        maskable = ", ".join(name for name, registered in OPERATORS.items() if registered.maskable)
        raise _fail(source, "baseline.fill", "mask", f"'mask' only with the operations {maskable}")
    if params.get("ladder") and baseline["fill"] != "filler":
        raise _fail(source, "baseline.fill", baseline["fill"], "'filler' when perturb.ladder = true")
    if top["gains"] and not params.get("ladder"):
        raise _fail(source, "gains", top["gains"], "only with perturb.ladder = true")
    if not baseline["filler"].strip():
        raise _fail(source, "baseline.filler", baseline["filler"], "a non-empty word")
    return Axiom(
        name=top["name"],
        title=top["title"],
        citation=top["citation"],
        expect=top["expect"],
        description=top["description"],
        gains=top["gains"],
        perturb=Perturbation(operation, target, params),
        baseline=Baseline(**baseline),
        select=Selection(**select),
        source=source,
        raw=raw,
    )


def _folder(path: Path, named: str) -> Path:
    """`path`, refused with a SpecError unless it is an existing folder; `named` says where it came from."""
    if not path.exists():
        raise SpecError(f"axiom folder {path}{named} does not exist; give a folder of .toml axiom specs")
    if not path.is_dir():
        raise SpecError(f"axiom folder {path}{named} is not a folder; give a folder of .toml axiom specs")
    return path


def axiom_folders(extra: Iterable[str | Path] | str | Path = ()) -> list[Path]:
    """Where specs are looked up: user folders first, then $MECHIR_AXIOMS_PATH, then the packaged catalogue."""
    given = [extra] if isinstance(extra, (str, os.PathLike)) else list(extra or ())
    from_env = [p for p in os.environ.get(AXIOM_PATH_VARIABLE, "").split(os.pathsep) if p]
    folders = [_folder(Path(p), "") for p in given]
    folders += [_folder(Path(p), f" (named in ${AXIOM_PATH_VARIABLE})") for p in from_env]
    return folders + [PACKAGED_AXIOMS]


def _spec_files(folders: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in reversed(folders):  # earlier folders win
        for path in sorted(folder.glob("*.toml")):
            found[path.stem.upper()] = path
    return found


def read_axiom_file(path: str | Path) -> Axiom:
    """Parse and validate one spec file."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"axiom spec {path} is a folder; give a .toml spec file")
    if not path.is_file():
        raise SpecError(f"axiom spec {path} does not exist; give a .toml spec file or an axiom name")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise SpecError(f"axiom spec {path} cannot be read ({' '.join(str(error).split())})") from error
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start} cannot be decoded); save the spec as UTF-8") from error
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {' '.join(str(error).split())}") from error
    axiom = parse_axiom(raw, str(path))
    if axiom.name.upper() != path.stem.upper():
        raise _fail(str(path), "name", axiom.name, f"the file's own name, {path.stem!r}")
    return axiom


def load_axiom(name_or_path: str | Path, folders: Iterable[str | Path] = (), **overrides: Any) -> Axiom:
    """Load an axiom by name (`"TFC1"`, case-insensitive) or spec path, with optional parameter overrides."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise SpecError(f"axiom {name_or_path!r} is neither an axiom name nor a spec path")
    path = Path(name_or_path)
    if path.suffix.lower() == ".toml" or path.is_file():
        axiom = read_axiom_file(path)
    else:
        files = _spec_files(axiom_folders(folders))
        key = str(name_or_path).upper()
        if key not in files:
            raise SpecError(f"no axiom named {name_or_path!r}; known axioms: {', '.join(sorted(files))}")
        axiom = read_axiom_file(files[key])
    return with_overrides(axiom, overrides) if overrides else axiom


def list_axioms(folders: Iterable[str | Path] = ()) -> list[Axiom]:
    """Every axiom in the catalogue and the given folders, sorted by name."""
    return [read_axiom_file(path) for _, path in sorted(_spec_files(axiom_folders(folders)).items())]


def with_overrides(axiom: Axiom, overrides: dict[str, Any]) -> Axiom:
    """Re-validate the spec with some parameters replaced; each key goes to the table that defines it."""
    raw = json.loads(json.dumps(axiom.raw or _raw_of(axiom)))
    operation = axiom.perturb.operation
    tables: list[tuple[str | None, Callable[[str], bool]]] = [
        ("perturb", lambda key: key in OPERATORS[operation].params or key == "target"),
        ("baseline", lambda key: key in _BASELINE),
        ("select", lambda key: key in _SELECT),
        (None, lambda key: key in ("expect", "title", "gains")),
    ]
    for key, value in overrides.items():
        table = next((name for name, owns in tables if owns(key)), "unknown")
        if table == "unknown":
            known = sorted({*OPERATORS[operation].params, "target", *_BASELINE, *_SELECT, "expect", "title"})
            raise _fail(f"{axiom.name} (override)", key, value, "no such parameter; known: " + ", ".join(known))
        if table is None:
            raw[key] = value
        else:
            raw.setdefault(table, {})[key] = value
    return replace(parse_axiom(raw, f"{axiom.source or axiom.name} (with overrides {overrides})"), source=axiom.source)


def _raw_of(axiom: Axiom) -> dict[str, Any]:
    """The spec document of an Axiom built in code (without a parsed spec), for overriding it."""
    perturb = {"operation": axiom.perturb.operation, "target": axiom.perturb.target, **axiom.perturb.params}
    relevance = None if axiom.select.relevance is None else list(axiom.select.relevance)
    select = {**vars(axiom.select), "relevance": relevance}
    top = {key: getattr(axiom, key) for key in _TOP}
    tables = {"perturb": perturb, "baseline": vars(axiom.baseline), "select": select}
    return {key: value for key, value in top.items() if value is not None} | {
        name: {key: value for key, value in table.items() if value is not None} for name, table in tables.items()
    }
