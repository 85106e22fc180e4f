"""Judged query-passage data as a validated DataFrame with the columns IR people expect.

Sources: a pandas DataFrame, a JSONL / TSV / Parquet file, an ir_datasets id (`irds:...`), or None for
the bundled sample of TREC Deep Learning 2019/2020 judged passages.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.defaults import SAMPLE_NAME
from ..core.errors import DataError

COLUMNS = ("qid", "query", "docno", "text", "relevance")
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "trec-dl-sample.jsonl.gz"

DataSource = pd.DataFrame | str | Path | None


def _read_file(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a data file (.jsonl, .jsonl.gz, .tsv or .parquet)")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        kind, read = "JSON lines" if ".jsonl" in name else "JSON", lambda: pd.read_json(path, lines=".jsonl" in name, dtype=False)
    elif name.endswith((".tsv", ".tsv.gz")):
        kind, read = "TSV", lambda: pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    elif name.endswith(".parquet"):
        kind, read = "Parquet", lambda: pd.read_parquet(path)
    else:
        raise DataError(f"{path}: unknown data format; use .jsonl, .jsonl.gz, .tsv or .parquet, or an irds: id")
    try:
        return read()
    except (ValueError, OSError, EOFError) as error:  # malformed lines, a bad gzip stream, unreadable bytes
        raise DataError(f"{path}: cannot be read as {kind} ({error})") from error


def _read_ir_datasets(dataset_id: str) -> pd.DataFrame:
    """Queries, judged documents and qrels of an ir_datasets dataset, joined into one row per judgement."""
    import ir_datasets

    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError as error:
        raise DataError(f"irds:{dataset_id}: ir_datasets does not know this dataset id") from error
    for part in ("queries", "docs", "qrels"):
        if not getattr(dataset, f"has_{part}")():
            raise DataError(f"irds:{dataset_id}: the dataset has no {part}; it needs queries, docs and qrels")
    queries = {query.query_id: query.default_text() for query in dataset.queries_iter()}
    qrels = [qrel for qrel in dataset.qrels_iter() if qrel.query_id in queries]
    wanted = {qrel.doc_id for qrel in qrels}
    documents = {doc_id: doc.default_text() for doc_id, doc in dataset.docs_store().get_many(wanted).items()}
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


def validate(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check columns and values; return qid/docno as strings and relevance as integers."""
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; required columns are {', '.join(COLUMNS)}"
        )
    if frame.empty:
        raise DataError(f"{source}: no rows; give at least one judged query-document pair")
    frame = frame.loc[:, list(COLUMNS)].reset_index(drop=True)
    for column in ("query", "text"):
        for row, value in enumerate(frame[column]):
            if not isinstance(value, str):
                shown = "missing" if pd.isna(value) else repr(value)
                raise DataError(f"{source}: row {row}, column '{column}' is {shown}; it must be text")
            if not value.strip():
                raise DataError(f"{source}: row {row} (qid {frame['qid'][row]}) has an empty {column}")
    relevance = pd.to_numeric(frame["relevance"], errors="coerce")
    bad = relevance.isna() | (relevance != relevance.round())
    if bad.any():
        row = int(bad.idxmax())
        raise DataError(
            f"{source}: row {row}, column 'relevance' is {frame['relevance'][row]!r}; it must be an integer grade"
        )
    return frame.assign(qid=frame["qid"].astype(str), docno=frame["docno"].astype(str), relevance=relevance.astype(int))


def load_data(data: DataSource = None) -> tuple[pd.DataFrame, str]:
    """(validated frame, a label naming the source) for any supported data source."""
    if data is None:
        source, frame = SAMPLE_NAME, _read_file(SAMPLE)
    elif isinstance(data, pd.DataFrame):
        source, frame = "DataFrame", data
    elif str(data).startswith("irds:"):
        source, frame = str(data), _read_ir_datasets(str(data).removeprefix("irds:"))
    else:
        source, frame = str(data), _read_file(Path(data))
    return validate(frame, source), source


def data_hash(frame: pd.DataFrame) -> str:
    """sha256 over the rows' canonical JSON, for provenance."""
    payload: Any = frame.loc[:, list(COLUMNS)].to_json(orient="records", force_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
