"""Reading judged query-passage data from files (JSONL, TSV, CSV, JSON, Parquet, gzipped) and ir_datasets, with
errors that name the file, the line and the field."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.defaults import SAMPLE  # noqa: F401  (re-exported: the sample file, named in core.defaults)
from ..core.errors import DataError

COLUMNS = ("qid", "query", "docno", "text", "relevance")
RANKING = ("rank", "score")
"""The columns that make a frame a ranking, whose documents may be unjudged."""
GRADES = ("relevance", "label")
"""Where a ranking's grades are read from: our column, else PyTerrier's qrels column."""
FORMATS = ".jsonl, .jsonl.gz, .tsv or .parquet (also .csv, .json and gzipped .tsv, .csv or .json)"
"""The supported file formats, as a phrase for messages."""
_KINDS = {
    ".jsonl": "JSON lines", ".jsonl.gz": "JSON lines", ".json": "JSON", ".json.gz": "JSON",
    ".tsv": "TSV", ".tsv.gz": "TSV", ".csv": "CSV", ".csv.gz": "CSV", ".parquet": "Parquet",
}
_MAX_GRADE = 2**31 - 1

DataSource = pd.DataFrame | str | Path | None


def _one_line(text: object, limit: int = 160) -> str:
    """`text` with its whitespace runs collapsed to single spaces, cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _missing(value: Any) -> bool:
    """Is `value` a missing scalar (None, NaN, pd.NA, NaT)?"""
    try:
        return bool(pd.api.types.is_scalar(value) and pd.isna(value))
    except (TypeError, ValueError):
        return False


def _show(value: Any) -> str:
    """A short one-line rendering of a cell for messages."""
    return "missing" if _missing(value) else _one_line(repr(value), 60)


def _empty(path: Path) -> DataError:
    return DataError(f"{path}: the file is empty (no data rows); give at least one judged query-document pair")


def _decoded(path: Path, kind: str) -> str:
    """The file's text (gunzipped when named .gz), UTF-8 with an optional byte-order mark."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # unreadable, or a bad gzip stream
        raise DataError(f"{path}: cannot be read as {kind} ({_one_line(error)})") from error
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        byte = raw[error.start]
        raise DataError(f"{path}: not UTF-8 text (byte {error.start} is {byte:#04x}); save it as UTF-8") from error


def _parse_json(path: Path, text: str, kind: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        at = f"line {error.lineno}, column {error.colno}" if where == "the file" else f"column {error.colno}"
        problem = f"{where} is not valid JSON: {error.msg} at {at}"
        raise DataError(f"{path}: cannot be read as {kind} ({problem})") from error
    except (ValueError, RecursionError) as error:  # e.g. an integer of too many digits, or nesting too deep
        raise DataError(f"{path}: cannot be read as {kind} ({where} is not valid JSON: {_one_line(error)})") from error


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _json_lines(path: Path, text: str) -> tuple[pd.DataFrame, str]:
    """One row object per line; rows are labelled by their line numbers (blank lines are skipped)."""
    records, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        record = _parse_json(path, line, "JSON lines", f"line {number}")
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: cannot be read as JSON lines (line {number} is a JSON {_json_kind(record)}, not an object); "
                "each line must be one row such as {\"qid\": ..., \"query\": ..., \"docno\": ..., \"text\": ..., \"relevance\": ...}"
            )
        records.append(record)
        lines.append(number)
    return pd.DataFrame(records, index=lines, dtype=object), "line"


def _json_document(path: Path, text: str) -> tuple[pd.DataFrame, str]:
    """A list of row objects, or an object of columns as pandas writes it."""
    document = _parse_json(path, text, "JSON", "the file")
    if isinstance(document, list) and all(isinstance(record, dict) for record in document):
        frame = pd.DataFrame(document, dtype=object)
    elif isinstance(document, dict) and all(isinstance(column, (dict, list)) for column in document.values()):
        try:
            frame = pd.DataFrame(document, dtype=object)
        except (ValueError, TypeError) as error:  # columns of different lengths
            raise DataError(f"{path}: its columns cannot form a table ({_one_line(error)})") from error
    else:
        raise DataError(
            f"{path}: holds a JSON {_json_kind(document)} of the wrong shape; give a list of row objects (or use .jsonl)"
        )
    return frame.set_axis(range(1, len(frame) + 1)), "data row"


def _check_delimiter(path: Path, header: str, sep: str) -> None:
    """Refuse a comma-separated file named .tsv (or a tab-separated one named .csv) with a hint."""
    other, named, meant = (",", "tab", "comma") if sep == "\t" else ("\t", "comma", "tab")
    names = [name.strip().strip('"') for name in header.split(sep)]
    if other not in header or all(column in names for column in COLUMNS):
        return
    split = {name.strip().strip('"') for name in header.split(other)}
    if len(names) == 1 or set(COLUMNS) <= split:
        rename = ".csv" if sep == "\t" else ".tsv"
        raise DataError(
            f"{path}: looks {meant}-separated, not {named}-separated (its header is {_one_line(header, 80)!r}); "
            f"rename it to {rename}, or save it with {named}s between the columns"
        )


def _delimited(path: Path, text: str, sep: str, kind: str) -> tuple[pd.DataFrame, str]:
    """TSV (no quoting) or CSV (quoted fields) with a header row; every cell read as text."""
    _check_delimiter(path, text.split("\n", 1)[0].rstrip("\r"), sep)
    quoting = {"quoting": csv.QUOTE_NONE} if sep == "\t" else {}
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, **quoting)
    except pd.errors.EmptyDataError as error:
        raise _empty(path) from error
    except (ValueError, csv.Error) as error:  # ragged rows, unbalanced quotes
        raise DataError(f"{path}: cannot be read as {kind} ({_one_line(error)})") from error
    return frame.set_axis(range(1, len(frame) + 1)), "data row"


def _parquet(path: Path) -> tuple[pd.DataFrame, str]:
    from pyarrow import ArrowException

    try:
        frame = pd.read_parquet(path)
    except (ValueError, OSError, EOFError, ArrowException) as error:  # corrupt or truncated files
        raise DataError(f"{path}: cannot be read as Parquet ({_one_line(error)})") from error
    return frame.set_axis(range(1, len(frame) + 1)), "data row"


def _read_file(path: Path) -> tuple[pd.DataFrame, str]:
    """(frame, the word for its row labels) for a data file; rows are labelled by line or 1-based data row."""
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a data file ({FORMATS})")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; give a data file ({FORMATS}) or an irds: id")
    suffix = next((suffix for suffix in _KINDS if path.name.lower().endswith(suffix)), None)
    if suffix is None:
        raise DataError(f"{path}: unknown data format; use {FORMATS}, or an irds: id")
    kind = _KINDS[suffix]
    if kind == "Parquet":
        frame, rows = _parquet(path)
    else:
        text = _decoded(path, kind)
        if not text.strip():
            raise _empty(path)
        if kind == "JSON lines":
            frame, rows = _json_lines(path, text)
        elif kind == "JSON":
            frame, rows = _json_document(path, text)
        else:
            frame, rows = _delimited(path, text, "\t" if kind == "TSV" else ",", kind)
    if len(frame) == 0:
        raise _empty(path)
    return frame, rows


def _read_ir_datasets(dataset_id: str) -> pd.DataFrame:
    """Queries, judged documents and qrels of an ir_datasets dataset, joined into one row per judgement."""
    source = f"irds:{dataset_id}"
    try:
        import ir_datasets
    except ImportError as error:
        raise DataError(
            f"{source}: ir_datasets is not installed; pip install ir_datasets, or pass a JSONL/TSV/Parquet export"
        ) from error
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError as error:
        raise DataError(f"{source}: ir_datasets does not know this dataset id") from error
    for part in ("queries", "docs", "qrels"):
        if not getattr(dataset, f"has_{part}")():
            raise DataError(f"{source}: the dataset has no {part}; it needs queries, docs and qrels")
    try:
        queries = {query.query_id: query.default_text() for query in dataset.queries_iter()}
        qrels = [qrel for qrel in dataset.qrels_iter() if qrel.query_id in queries]
        wanted = {qrel.doc_id for qrel in qrels}
        documents = {doc_id: doc.default_text() for doc_id, doc in dataset.docs_store().get_many(wanted).items()}
    except (OSError, RuntimeError, EOFError, zlib.error) as error:  # requests' errors are OSErrors
        reason = error.args[0] if error.args and isinstance(error.args[0], str) else error
        raise DataError(
            f"{source}: ir_datasets could not download or find the collection ({_one_line(reason, 120)}); "
            "set the IR_DATASETS_HOME environment variable to a folder holding a local copy of its files, "
            "or pass a JSONL/TSV/Parquet export of the judged pairs instead"
        ) from error
    return pd.DataFrame(
        [
            {
                "qid": qrel.query_id,
                "query": queries[qrel.query_id],
                "docno": qrel.doc_id,
                "text": documents[qrel.doc_id],
                "relevance": qrel.relevance,
            }
            for qrel in qrels
            if qrel.doc_id in documents
        ],
        columns=list(COLUMNS),
    )
