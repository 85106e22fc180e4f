"""Shared fixtures: real TREC DL pairs, the real models, and tiny random models of every architecture."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tiny_models import build

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TREC_DL = SHARED / "data" / "trec-dl-passages.jsonl.gz"
CROSS_ENCODER = SHARED / "models" / "minilm-l6-cross-encoder-trecdl"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the project's shared/ folder beside the repository")
    return path


@pytest.fixture(scope="session")
def trec_rows() -> list[dict]:
    """All judged TREC DL query-passage pairs."""
    with gzip.open(_require(TREC_DL), "rt") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="session")
def trec_pairs(trec_rows) -> tuple[list[str], list[str]]:
    """24 real pairs from 24 different queries, short and long passages alike."""
    seen, queries, documents = set(), [], []
    for row in trec_rows:
        if row["qid"] not in seen:
            seen.add(row["qid"])
            queries.append(row["query"])
            documents.append(row["text"])
        if len(queries) == 24:
            break
    return queries, documents


@pytest.fixture(scope="session")
def cross_encoder_path() -> Path:
    return _require(CROSS_ENCODER)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from mechir_axioms.models.loading import default_model_path

    return Path(default_model_path())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, trec_rows, minilm_path):
    """tiny_model(family, kind) -> folder of a random-weight model, built once per session."""
    built: dict[tuple[str, str], Path] = {}
    texts = [row["text"] for row in trec_rows[:2000]]

    def make(family: str, kind: str) -> Path:
        if (family, kind) not in built:
            folder = tmp_path_factory.mktemp(f"{family}-{kind}")
            built[family, kind] = build(family, kind, folder, texts, minilm_path / "vocab.txt")
        return built[family, kind]

    return make


@pytest.fixture(scope="session")
def tiny(tiny_model):
    """tiny(family, kind) -> (loaded ranker, folder), loaded once per session."""
    from mechir_axioms import load_ranker

    loaded = {}

    def get(family: str, kind: str):
        if (family, kind) not in loaded:
            loaded[family, kind] = (load_ranker(tiny_model(family, kind)), tiny_model(family, kind))
        return loaded[family, kind]

    return get


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 bi-encoder."""
    from mechir_axioms import load_ranker

    return load_ranker()
