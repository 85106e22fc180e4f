"""Reliability of user inputs: every mistake in a spec, an axiom folder, a data source or a filler is a
MechirError told in one sentence that names the file, field or value. One test per case of the issue."""

from __future__ import annotations

import json
import math
import socket
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechir_axioms import DataError, MechirError, SpecError, load_axiom, load_data, make_pairs
from mechir_axioms.perturb.operators import OPERATORS
from mechir_axioms.perturb.terms import selector_names
from mechir_axioms.specs.axiom import (
    EXPECTATIONS, FILLS, SIDES, TABLES, Axiom, Perturbation, axiom_folders, list_axioms, read_axiom_file,
    with_overrides,
)

COLUMNS = ("qid", "query", "docno", "text", "relevance")
ROW = {"qid": "q1", "query": "cheap flights", "docno": "d1", "text": "Cheap flights to Paris and Rome.", "relevance": 2}
GOOD_SPEC = """name = "MINE"
title = "t"
citation = "Someone (2020). A paper."
expect = "increase"

[perturb]
operation = "insert"
"""


def rows(*changes: dict) -> list[dict]:
    """Copies of ROW, each updated with one dict of changes."""
    return [{**ROW, **change} for change in changes]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def one_sentence(error: BaseException) -> str:
    message = str(error)
    assert isinstance(error, MechirError), f"{type(error).__name__}: {message}"
    assert message and "\n" not in message, repr(message)
    return message


# 1. Duplicate (qid, docno) rows


def test_duplicate_rows_are_dropped_with_a_warning(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", rows({}, {"docno": "d2"}, {}, {}))
    with pytest.warns(UserWarning, match=r"pairs.jsonl: dropped 2 duplicate \(qid, docno\) rows"):
        frame, _ = load_data(path)
    assert list(frame["docno"]) == ["d1", "d2"]


def test_conflicting_relevance_grades_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", rows({}, {"docno": "d2"}, {"relevance": 0}))
    with pytest.raises(DataError) as error:
        load_data(path)
    assert one_sentence(error.value) == (
        f"{path}: qid 'q1', docno 'd1' has conflicting relevance grades 2 (line 1) and 0 (line 3); "
        "keep one grade per (qid, docno)"
    )
    frame = pd.DataFrame(rows({}, {"relevance": 1}), index=[10, 20])
    with pytest.raises(DataError, match=r"grades 2 \(row 10\) and 1 \(row 20\)"):
        load_data(frame)


# 2. Empty files


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", b""),
    ("blank.jsonl", b"\n  \n"),
    ("empty.tsv", b""),
    ("header-only.tsv", b"qid\tquery\tdocno\ttext\trelevance\n"),
    ("no-rows.parquet", None),
])
def test_empty_files_say_they_are_empty(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        pd.DataFrame(columns=list(COLUMNS)).to_parquet(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_data(path)
    assert one_sentence(error.value).startswith(f"{path}: the file is empty")


# 3. A comma-separated file named .tsv


def test_comma_separated_tsv_gets_a_hint(tmp_path):
    frame = pd.DataFrame(rows({}, {"docno": "d2", "text": "no, commas, here"}))
    frame.to_csv(tmp_path / "pairs.tsv", index=False)
    with pytest.raises(DataError) as error:
        load_data(tmp_path / "pairs.tsv")
    message = one_sentence(error.value)
    assert message.startswith(f"{tmp_path / 'pairs.tsv'}: looks comma-separated, not tab-separated")
    assert "rename it to .csv" in message
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    assert list(load_data(tmp_path / "pairs.csv")[0]["text"]) == list(frame["text"])


# 4. ir_datasets offline


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty IR_DATASETS_HOME; where this machine is online, downloads fail as they do offline."""
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ir_datasets"))
    try:
        socket.getaddrinfo("trec.nist.gov", 443)
    except OSError:
        return  # really offline: ir_datasets fails on its own
    import requests
    from ir_datasets.util.download import RequestsDownload

    def refuse(self):
        raise requests.ConnectionError(f"Failed to resolve {self.url} (offline)")

    monkeypatch.setattr(RequestsDownload, "stream", refuse)


def test_offline_ir_datasets_id_says_how_to_use_a_local_copy(offline):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as error:
            load_data("irds:msmarco-passage/trec-dl-2019/judged")
    message = one_sentence(error.value)
    assert message.startswith("irds:msmarco-passage/trec-dl-2019/judged: ir_datasets could not download or find")
    assert "IR_DATASETS_HOME" in message and "JSONL/TSV/Parquet export" in message


# 5. A spec file that is not UTF-8


def test_non_utf8_spec_names_the_file(tmp_path):
    path = tmp_path / "MINE.toml"
    path.write_bytes(GOOD_SPEC.replace('"t"', '"caf\xe9"').encode("latin-1"))
    with pytest.raises(SpecError) as error:
        load_axiom(path)
    assert one_sentence(error.value).startswith(f"{path}: not UTF-8 text")


# 6. Unknown axiom names and missing spec paths


def test_unknown_axiom_name_is_a_spec_error():
    with pytest.raises(SpecError, match=r"no axiom named 'TFC9'; known axioms: LNC1, LNC2"):
        load_axiom("TFC9")


def test_missing_spec_path_is_a_spec_error(tmp_path):
    for call in (lambda: load_axiom(tmp_path / "NOPE.toml"), lambda: read_axiom_file(tmp_path / "NOPE.toml")):
        with pytest.raises(SpecError) as error:
            call()
        assert str(tmp_path / "NOPE.toml") in one_sentence(error.value)
    with pytest.raises(SpecError, match="is a folder"):
        read_axiom_file(tmp_path)


def test_overrides_of_an_axiom_built_in_code_are_validated():
    axiom = Axiom(name="MINE", title="t", citation="c", expect="increase", perturb=Perturbation("insert"))
    assert with_overrides(axiom, {"count": 2}).perturb["count"] == 2
    with pytest.raises(SpecError, match=r"MINE \(with overrides \{'count': 99\}\): field 'perturb.count' is 99"):
        with_overrides(axiom, {"count": 99})


# 7. Axiom folders that do not exist


def test_missing_axiom_folder_is_refused(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    for call in (lambda: axiom_folders([missing]), lambda: load_axiom("TFC1", [missing]), lambda: list_axioms([missing])):
        with pytest.raises(SpecError) as error:
            call()
        assert one_sentence(error.value).startswith(f"axiom folder {missing} does not exist")
    (tmp_path / "file.toml").write_text(GOOD_SPEC)
    with pytest.raises(SpecError, match="is not a folder"):
        list_axioms([tmp_path / "file.toml"])


def test_missing_folder_in_axiom_path_variable_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHIR_AXIOMS_PATH", str(tmp_path / "gone"))
    with pytest.raises(SpecError) as error:
        load_axiom("TFC1")
    assert "MECHIR_AXIOMS_PATH" in one_sentence(error.value) and str(tmp_path / "gone") in str(error.value)


# 8. Special-token fillers


@pytest.mark.parametrize("family, filler", [
    ("bert", "[SEP]"), ("bert", "[PAD]"), ("bert", "[CLS]"), ("bert", "[MASK]"), ("bert", "a [SEP] b"),
    ("bert", "\u2603"),  # the snowman is [UNK] in the WordPiece vocabulary
    ("t5", "</s>"), ("t5", "<pad>"),
])
def test_special_token_filler_is_refused(tiny, family, filler):
    ranker = tiny("bert", "cross")[0] if family == "bert" else tiny("t5", "t5")[0]
    with pytest.raises(SpecError) as error:
        make_pairs("TFC1", pd.DataFrame(rows({})), ranker, n=1, filler=filler)
    message = one_sentence(error.value)
    assert message.startswith(f"TFC1: baseline.filler {filler!r} is or holds a special token")
    assert (ranker.tokenizer.sep_token or ranker.tokenizer.eos_token) in message


# 9. Data loading errors in general


def test_missing_data_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as error:
        load_data(tmp_path / "missing.jsonl")
    assert one_sentence(error.value).startswith(f"data file {tmp_path / 'missing.jsonl'} does not exist")


def test_bad_json_line_is_named_by_number(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(ROW) + "\n\n" + '{"qid": "q2", broken\n')
    with pytest.raises(DataError) as error:
        load_data(path)
    assert one_sentence(error.value).startswith(f"{path}: cannot be read as JSON lines (line 3 is not valid JSON: ")
    path.write_text(json.dumps(ROW) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"\(line 2 is a JSON array, not an object\)"):
        load_data(path)


def test_corrupt_parquet_and_non_utf8_data_are_data_errors(tmp_path):
    pd.DataFrame(rows({})).to_parquet(tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2] + data[-8:])
    with pytest.raises(DataError, match="cut.parquet: cannot be read as Parquet"):
        load_data(tmp_path / "cut.parquet")
    (tmp_path / "latin.tsv").write_bytes("qid\tquery\tdocno\ttext\trelevance\nq\tcaf\xe9\td\tt\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.tsv: not UTF-8 text"):
        load_data(tmp_path / "latin.tsv")


def test_unsupported_extension_lists_supported_ones(tmp_path):
    (tmp_path / "pairs.xlsx").write_text("x")
    with pytest.raises(DataError) as error:
        load_data(tmp_path / "pairs.xlsx")
    assert all(kind in one_sentence(error.value) for kind in (".jsonl", ".tsv", ".csv", ".parquet", "irds:"))
    with pytest.raises(DataError, match="data=42 is not a data source"):
        load_data(42)


# 10. Fuzzing specs and data


FIELDS = {table: sorted(schema) for table, schema in TABLES.items()}  # "" is the top level
FIELDS["perturb"] = sorted({"operation", "target"}.union(*(operator.params for operator in OPERATORS.values())))
KNOWN_KEYS = sorted({key for keys in FIELDS.values() for key in keys} | {"perturb", "baseline", "select"})
PLAUSIBLE = st.sampled_from(
    [*EXPECTATIONS, *FILLS, *SIDES, *OPERATORS, *selector_names(), "start", "end", "offset", "diminishing",
     "a", "[SEP]", "", " ", True, False, 0, 1, 2, 3, 10, 11, -1, [0, 1], [2, "high"], []]
)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.datetimes().map(lambda moment: moment.replace(microsecond=0))
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(KNOWN_KEYS) | st.text(max_size=4), inner, max_size=3), max_leaves=6)
FIELD_VALUES = (
    PLAUSIBLE | VALUES | st.lists(PLAUSIBLE, max_size=2)
    | st.dictionaries(st.sampled_from(KNOWN_KEYS), PLAUSIBLE, max_size=2)
)


def toml_value(value) -> str:
    """A TOML rendering of a Python value (None has no TOML form: it becomes an empty inline table)."""
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(key)} = {toml_value(item)}" for key, item in value.items()) + "}"
    return value.isoformat()


def toml_document(document: dict) -> str:
    lines = [f"{toml_value(key)} = {toml_value(value)}" for key, value in document.items() if not isinstance(value, dict)]
    for key, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_value(key)}]")
            lines += [f"{toml_value(inner)} = {toml_value(value)}" for inner, value in table.items()]
    return "\n".join(lines) + "\n"


@st.composite
def mutated_specs(draw) -> bytes:
    """A valid spec with keys set, replaced or deleted in random tables: mostly known keys and plausible values."""
    document = {"name": "MINE", "title": "t", "citation": "c", "expect": "increase", "perturb": {"operation": "insert"}}
    for _ in range(draw(st.integers(1, 5))):
        tables = [""] + [name for name, value in document.items() if isinstance(value, dict)]
        table = draw(st.sampled_from(tables) | st.sampled_from(list(TABLES) + ["perturb"]) | st.text(max_size=4))
        target = document if not table else document.setdefault(table, {})
        if not isinstance(target, dict):
            continue
        present = sorted(target) or KNOWN_KEYS
        key = draw(st.sampled_from(present) | st.sampled_from(FIELDS.get(table, KNOWN_KEYS)) | st.text(max_size=4))
        if draw(st.integers(0, 3)) == 0 and key in target:
            del target[key]
        else:
            target[key] = draw(FIELD_VALUES)
    return toml_document(document).encode("utf-8", "surrogatepass")


SPEC_BYTES = (
    mutated_specs()
    | st.binary(max_size=200)
    | st.lists(st.sampled_from(list('ab=[]{}"\'.#,\n 01-_\xe9') + ["\\u", "perturb", "name", "operation"]), max_size=60)
      .map(lambda pieces: "".join(pieces).encode("utf-8"))
)


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=SPEC_BYTES)
def test_fuzzed_spec_files_fail_as_one_sentence_spec_errors(fuzz_folder, content):
    path = fuzz_folder / "MINE.toml"
    path.write_bytes(content)
    try:
        load_axiom(path)
    except Exception as error:  # noqa: BLE001 - the point: which exception escapes
        assert isinstance(error, SpecError), f"{type(error).__name__}: {error}"
        assert str(path) in one_sentence(error)


CELLS = (
    st.none() | st.just(float("nan")) | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=6) | st.sampled_from(["1", "2.0", " 3 ", "", " ", "high", "inf", "nan"])
    | st.lists(st.integers() | st.text(max_size=3), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
MISSING = object()


@st.composite
def data_rows(draw) -> list[dict]:
    """Rows with random column sets and missing, None, NaN or wrong-typed values (some rows fully valid)."""
    records = []
    for _ in range(draw(st.integers(1, 5))):
        row = dict(ROW, docno=draw(st.sampled_from(["d1", "d2", "d3"])))
        for column in draw(st.lists(st.sampled_from(COLUMNS + ("extra",)), max_size=3, unique=True)):
            value = draw(CELLS | st.just(MISSING))
            if value is MISSING:
                row.pop(column, None)
            else:
                row[column] = value
        records.append(row)
    return records


def check_data_error(error: Exception, source: str) -> None:
    message = one_sentence(error)
    assert isinstance(error, DataError), f"{type(error).__name__}: {message}"
    assert message.startswith(f"{source}: ") and any(column in message for column in COLUMNS), message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=data_rows())
def test_fuzzed_data_rows_fail_as_one_sentence_data_errors(fuzz_folder, records):
    path = fuzz_folder / "rows.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            load_data(path)
        except Exception as error:  # noqa: BLE001
            check_data_error(error, str(path))
        try:
            frame = pd.DataFrame(records)
        except Exception:  # noqa: BLE001 - a frame pandas itself cannot build is no input of ours
            return
        try:
            load_data(frame)
        except Exception as error:  # noqa: BLE001
            check_data_error(error, "DataFrame")


@pytest.mark.parametrize("text", [
    GOOD_SPEC.replace('operation = "insert"', "operation = [1]"),
    GOOD_SPEC.replace('operation = "insert"', "operation = {}"),
])
def test_fuzzer_finding_unhashable_operation_is_a_spec_error(tmp_path, text):
    (tmp_path / "MINE.toml").write_text(text)
    with pytest.raises(SpecError, match="field 'perturb.operation' is"):
        load_axiom(tmp_path / "MINE.toml")


def test_fuzzer_finding_key_with_a_newline_stays_on_one_line(tmp_path):
    (tmp_path / "MINE.toml").write_text(GOOD_SPEC.replace("[perturb]", '"\\nodd" = 1\n[perturb]'))
    with pytest.raises(SpecError) as error:
        load_axiom(tmp_path / "MINE.toml")
    assert "field '\\nodd' is 1" in one_sentence(error.value)


def test_repeated_frame_columns_are_refused():
    frame = pd.DataFrame([["q1", "q2", "cheap flights", "d1", "text", 1]],
                         columns=["qid", "qid", "query", "docno", "text", "relevance"])
    with pytest.raises(DataError, match=r"DataFrame: column\(s\) 'qid' appear more than once"):
        load_data(frame)


@pytest.mark.parametrize("change, column", [
    ({"text": []}, "text"), ({"query": [1, 2]}, "query"), ({"qid": ["q"]}, "qid"), ({"relevance": float("inf")}, "relevance"),
    ({"relevance": True}, "relevance"), ({"docno": None}, "docno"), ({"text": "\ud800"}, "text"),
])
def test_fuzzer_findings_in_cells_are_data_errors(tmp_path, change, column):
    path = write_jsonl(tmp_path / "rows.jsonl", rows(change))
    with pytest.raises(DataError, match=f"line 1, column '{column}' is"):
        load_data(path)
