"""The Stanford `colbert-ir` checkpoint layout (HF_ColBERT, artifact.metadata) scores as its own tokenizer
and model code would, and as the same weights in PyLate's layout."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, BertTokenizerFast

from mechir_axioms import load_ranker

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

QUERY_MAXLEN, DOC_MAXLEN = 32, 64


@pytest.fixture(scope="module")
def stanford_path(tmp_path_factory, colbert_path, minilm_path) -> Path:
    """The PyLate fixture's encoder and projection rewritten as a Stanford checkpoint (markers [unused0/1])."""
    folder = tmp_path_factory.mktemp("stanford-colbert")
    encoder = AutoModel.from_pretrained(colbert_path)
    state = {f"bert.{key}": value.contiguous() for key, value in encoder.state_dict().items()}
    state["bert.embeddings.word_embeddings.weight"] = state["bert.embeddings.word_embeddings.weight"][:30522].clone()
    state["linear.weight"] = load_file(str(colbert_path / "1_Dense" / "model.safetensors"))["linear.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = encoder.config.to_dict()
    config.update(architectures=["HF_ColBERT"], vocab_size=30522)
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = BertTokenizerFast(vocab=str(minilm_path / "vocab.txt"))
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    (folder / "artifact.metadata").write_text(json.dumps({
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]", "doc_token": "[D]",
        "query_maxlen": QUERY_MAXLEN, "doc_maxlen": DOC_MAXLEN, "dim": 16, "similarity": "cosine",
        "attend_to_mask_tokens": False, "mask_punctuation": True,
    }))
    return folder


def _stanford_scores(folder: Path, queries: list[str], documents: list[str]) -> torch.Tensor:
    """ColBERT's own recipe: ". " + text, the marker written over position 1, queries padded with [MASK] to
    query_maxlen (all scored), documents' padding and punctuation masked out of MaxSim."""
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    linear = load_file(str(folder / "model.safetensors"))["linear.weight"]
    q = tokenizer([". " + text for text in queries], padding="max_length", truncation=True,
                  max_length=QUERY_MAXLEN, return_tensors="pt")
    q["input_ids"][:, 1] = tokenizer.convert_tokens_to_ids("[unused0]")
    q["input_ids"][q["input_ids"] == tokenizer.pad_token_id] = tokenizer.mask_token_id
    d = tokenizer([". " + text for text in documents], padding="longest", truncation=True, max_length=DOC_MAXLEN,
                  return_tensors="pt")
    d["input_ids"][:, 1] = tokenizer.convert_tokens_to_ids("[unused1]")
    skip = {tokenizer.convert_tokens_to_ids(symbol) for symbol in string.punctuation}
    with torch.no_grad():
        qv = torch.nn.functional.normalize(encoder(**q).last_hidden_state @ linear.T, dim=-1)
        dv = torch.nn.functional.normalize(encoder(**d).last_hidden_state @ linear.T, dim=-1)
    keep = (d["attention_mask"] > 0) & ~torch.isin(d["input_ids"], torch.tensor(sorted(skip)))
    similarity = torch.einsum("bqd,bkd->bqk", qv, dv).masked_fill(~keep[:, None], -9999)
    return similarity.max(-1).values.sum(-1)


def test_stanford_checkpoint_scores_as_colbert_does(stanford_path, colbert_path, trec_rows):
    rows = trec_rows[:16]
    queries, documents = [row["query"] for row in rows], [row["text"] for row in rows]
    ranker = load_ranker(stanford_path)
    assert ranker.kind == "late"
    assert (ranker.query_length, ranker.max_length) == (QUERY_MAXLEN, DOC_MAXLEN)
    reference = _stanford_scores(stanford_path, queries, documents)
    with pytest.warns(UserWarning, match="6 of 16 inputs were longer than 64 tokens"):  # truncated as ColBERT does
        assert (ranker.score(queries, documents) - reference).abs().max() <= 1e-4
    # the same weights in PyLate's layout, told to use Stanford's markers and lengths, score the same
    pylate = load_ranker(colbert_path, query_marker="[unused0]", document_marker="[unused1]",
                         max_length=DOC_MAXLEN)
    with pytest.warns(UserWarning, match="truncated"):
        assert (pylate.score(queries, documents) - reference).abs().max() <= 1e-4


def test_stanford_checkpoint_without_projection_is_refused(stanford_path, tmp_path):
    broken = tmp_path / "no-linear"
    broken.mkdir()
    for path in stanford_path.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    state = load_file(str(broken / "model.safetensors"))
    del state["linear.weight"]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="linear.weight"):
        load_ranker(broken)
