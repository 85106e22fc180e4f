"""Data sources: files, DataFrames and a real ir_datasets dataset, with exact error messages."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from mechir_axioms import DataError, load_data
from mechir_axioms.core.defaults import SAMPLE_NAME


@pytest.fixture(scope="module")
def frame(trec_rows) -> pd.DataFrame:
    return pd.DataFrame(trec_rows[:40])


def test_bundled_sample_is_balanced():
    sample, source = load_data()
    assert source == SAMPLE_NAME
    counts = sample["relevance"].value_counts()
    assert set(counts.index) == {0, 1, 2, 3} and counts.min() >= 100


def test_file_formats_round_trip(tmp_path, frame):
    frame.to_json(tmp_path / "pairs.jsonl", orient="records", lines=True)
    frame.to_csv(tmp_path / "pairs.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "pairs.parquet")
    loaded = [load_data(tmp_path / name)[0] for name in ("pairs.jsonl", "pairs.tsv", "pairs.parquet")]
    expected = load_data(frame)[0]
    for other in loaded:
        pd.testing.assert_frame_equal(other, expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["relevance", "docno"]),
         "DataFrame: missing column(s) docno, relevance; required columns are qid, query, docno, text, relevance"),
        (lambda f: f.assign(query=[""] + list(f["query"][1:])), "DataFrame: row 0 (qid 1030303) has an empty query"),
        (lambda f: f.assign(text=[None] + list(f["text"][1:])), "DataFrame: row 0, column 'text' is missing; it must be text"),
        (lambda f: f.assign(relevance=["high"] + list(f["relevance"][1:])),
         "DataFrame: row 0, column 'relevance' is 'high'; it must be an integer grade"),
        (lambda f: f.iloc[:0], "DataFrame: no rows; give at least one judged query-document pair"),
    ],
)
def test_bad_frames(frame, change, message):
    with pytest.raises(DataError) as error:
        load_data(change(frame))
    assert str(error.value) == message


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="data file .*missing.jsonl does not exist"):
        load_data(tmp_path / "missing.jsonl")
    (tmp_path / "pairs.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"pairs.xlsx: unknown data format; use .jsonl, .jsonl.gz, .tsv or .parquet"):
        load_data(tmp_path / "pairs.xlsx")
    with pytest.raises(DataError, match="irds:no/such-dataset: ir_datasets does not know this dataset id"):
        load_data("irds:no/such-dataset")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataError, match="folder.jsonl is a folder; give a data file"):
        load_data(tmp_path / "folder.jsonl")


@pytest.mark.parametrize("name, content, kind", [
    ("broken.jsonl", b'{"qid": 1, "query": "q", "docno": "d", "text": "t", "relevance": 1}\n{broken\n', "JSON lines"),
    ("plain.jsonl.gz", b"not gzip at all", "JSON lines"),
    ("bad.parquet", b"PAR1 but no parquet", "Parquet"),
])
def test_unreadable_files_are_named(tmp_path, name, content, kind):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=f"{name}: cannot be read as {kind} "):
        load_data(tmp_path / name)


@pytest.fixture(scope="module")
def irds_dataset(tmp_path_factory, trec_rows):
    """A dataset registered with ir_datasets from files in its own formats (TSV docs/queries, TREC qrels)."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    folder = tmp_path_factory.mktemp("irds")
    rows = trec_rows[:300]
    clean = lambda text: " ".join(text.split())  # noqa: E731
    docs = {row["docno"]: clean(row["text"]) for row in rows}
    queries = {row["qid"]: clean(row["query"]) for row in rows}
    (folder / "docs.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in docs.items()))
    (folder / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries.items()))
    (folder / "qrels").write_text("".join(f"{r['qid']} 0 {r['docno']} {r['relevance']}\n" for r in rows))
    name = f"mechir-test/{uuid.uuid4().hex[:8]}"
    ir_datasets.registry.register(
        name,
        Dataset(
            TsvDocs(LocalDownload(folder / "docs.tsv"), namespace="mechir-test", lang="en"),
            TsvQueries(LocalDownload(folder / "queries.tsv"), namespace="mechir-test", lang="en"),
            TrecQrels(LocalDownload(folder / "qrels"), {0: "not", 1: "related", 2: "highly", 3: "perfectly"}),
        ),
    )
    return name, rows


def test_ir_datasets_id_joins_queries_docs_and_qrels(irds_dataset):
    name, rows = irds_dataset
    frame, source = load_data(f"irds:{name}")
    assert source == f"irds:{name}"
    assert len(frame) == len({(row["qid"], row["docno"]) for row in rows})
    first = rows[0]
    match = frame[(frame["qid"] == first["qid"]) & (frame["docno"] == first["docno"])].iloc[0]
    assert match["query"] == first["query"] and match["relevance"] == first["relevance"]
    assert match["text"] == " ".join(first["text"].split())
