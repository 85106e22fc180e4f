"""One JSON record per benchmark run, in benchmarks/results/: the source of every performance table.

A record holds one table and what it takes to read it later:

    {"benchmark": "patching", "title": "...", "date": "2026-11-25", "machine": "AMD EPYC, 2 cores",
     "command": "python benchmarks/patching.py", "columns": ["pairs/s", ...], "rows": [{"pairs/s": ..., ...}],
     "notes": ["..."], "tables": [{"title": "...", "columns": [...], "rows": [...]}], "details": {...}}

`benchmark`, `date` (YYYY-MM-DD), `machine`, `command`, `columns` (in order) and `rows` are required; `title`,
`notes` (Markdown sentences about this run), `tables` (further tables of the same run) and `details` (the
script's raw measurements) are optional. The docs' performance page renders every record when the site is built
(docs/hooks.py), and scripts/readme_tables.py takes the README's one number from them, so no table is typed by
hand. A script writes `results/<name>.json`, replacing that benchmark's previous record.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REQUIRED = ("benchmark", "date", "machine", "command", "columns", "rows")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def cpu() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: Any = None) -> str:
    """A short description of where a benchmark ran: the GPU's name for a CUDA device, else the CPU and its cores."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    threads = ""
    if "torch" in sys.modules:
        threads = f", torch {sys.modules['torch'].__version__} with {sys.modules['torch'].get_num_threads()} threads"
    return f"{cpu()}, {os.cpu_count()} cores{threads}"


def command() -> str:
    """This process's command line as a user would type it (`python benchmarks/NAME.py ...`)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


_this_machine, _this_command = machine, command  # write_record's parameters of the same names shadow them


def cell(value: Any) -> str:
    """One table cell as the docs show it: short numbers as written, long ones to 6 significant digits, lists joined,
    '|' escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value) if len(repr(value)) <= 9 else f"{value:g}"  # 5.0 stays 5.0; long floats get 6 digits
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    return " ".join(str(value).replace("|", "\\|").split())


def markdown(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table of `rows` (dicts) in the order of `columns`: what the scripts print and the docs show."""
    lines = ["| " + " | ".join(cell(column) for column in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def check_record(record: Any, where: str) -> dict[str, Any]:
    """`record` if it is a valid record, else a ValueError naming `where` and the field at fault."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a benchmark record is a JSON object, not {type(record).__name__}")
    for field in REQUIRED:
        if field not in record:
            raise ValueError(f"{where}: the record has no field {field!r}; a record needs {', '.join(REQUIRED)}")
    if not isinstance(record["date"], str) or not DATE.match(record["date"]):
        raise ValueError(f"{where}: field 'date' is {record['date']!r}; use YYYY-MM-DD")
    for name, table in [("the record", record), *((f"table {i}", t) for i, t in enumerate(record.get("tables", [])))]:
        columns, rows = table.get("columns"), table.get("rows")
        if not isinstance(columns, list) or not columns or not isinstance(rows, list) or not rows:
            raise ValueError(f"{where}: {name} needs a non-empty list of 'columns' and of 'rows'")
        for row in rows:
            unknown = sorted(set(row) - set(columns)) if isinstance(row, dict) else None
            if unknown is None or unknown:
                raise ValueError(f"{where}: {name} has a row that is not a dict over its columns: {row!r}")
    return record


def _plain(value: Any) -> Any:
    """`value` with NaN as None, so that the record is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def write_record(name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], command: str | None = None, *,
                 title: str | None = None, machine: str | None = None, notes: Sequence[str] = (),
                 tables: Sequence[Mapping[str, Any]] = (), details: Any = None, folder: Path | None = None) -> Path:
    """Write benchmarks/results/<name>.json (replacing it) and return its path.

    rows: the printed table as dicts over `columns`; command: how it was run (default: this process's command
    line); machine: where (default: `machine()`); tables: further tables of this run, each {"title", "columns",
    "rows"}; details: the script's raw measurements, kept beside the table.
    """
    record: dict[str, Any] = {
        "benchmark": name, "title": title or name, "date": time.strftime("%Y-%m-%d"),
        "machine": machine or _this_machine(), "command": command or _this_command(),
        "columns": list(columns), "rows": [{column: row.get(column) for column in columns} for row in rows],
    }
    if notes:
        record["notes"] = list(notes)
    if tables:
        record["tables"] = [{"title": table["title"], "columns": list(table["columns"]),
                             "rows": [{column: row.get(column) for column in table["columns"]} for row in table["rows"]]}
                            for table in tables]
    if details is not None:
        record["details"] = details
    out = (folder or RESULTS) / f"{name}.json"
    record = _plain(json.loads(json.dumps(record, default=str)))
    check_record(record, str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return out


def read_records(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Every record in `folder` by file name (without .json), in name order; an invalid one raises ValueError."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        records[path.stem] = check_record(json.loads(path.read_text(encoding="utf-8")), str(where))
    return records
