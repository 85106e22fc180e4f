"""Bad input to load_ranker and Ranker gets one clear sentence."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2Model

from mechir_axioms import load_ranker
from mechir_axioms.core.errors import ModelError, SettingsError


def test_unsupported_architecture_is_named(tmp_path):
    GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ValueError) as error:
        load_ranker(tmp_path)
    message = str(error.value)
    assert "architecture 'gpt2' is not supported" in message
    assert "bert, distilbert, electra, roberta, mpnet, modernbert, t5" in message


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelError, match=r"model path .*nowhere does not exist"):
        load_ranker(tmp_path / "nowhere")


def test_folder_without_a_model(tmp_path):
    with pytest.raises(ModelError, match=r"model folder .* holds no model config \(config.json\)"):
        load_ranker(tmp_path)


@pytest.mark.slow  # the hub client's own retries take about 20 s here
def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot load model 'no-such-org/no-such-model': it is not a model folder here"):
        load_ranker("no-such-org/no-such-model")


def test_bad_kind_and_options(minilm_path):
    with pytest.raises(ValueError, match=r"kind='dual' is not valid; use one of bi, cross, t5"):
        load_ranker(kind="dual")
    with pytest.raises(SettingsError, match=r"unknown option\(s\) pooling for a cross ranker"):
        load_ranker(minilm_path, kind="cross", pooling="mean")
    with pytest.raises(ValueError, match=r"pooling='max' is not supported; use one of cls, mean, last"):
        load_ranker(pooling="max")
    with pytest.raises(ValueError, match=r"kind='t5' does not fit a bert model \(encoder\); kinds for encoder models: bi, cross"):
        load_ranker(minilm_path, kind="t5")


@pytest.mark.parametrize(
    ("queries", "documents", "message"),
    [
        ([], [], "queries is empty; give at least one query-document pair"),
        (["a", "b"], ["x"], "got 2 queries and 1 documents; they must pair up one to one"),
        ("a query", ["x"], "queries must be a list of strings, got str"),
        (["a"], [None], r"documents\[0\] is NoneType, not a string"),
    ],
)
def test_bad_pairs(minilm, queries, documents, message):
    with pytest.raises(ValueError, match=message):
        minilm.score(queries, documents)
    with pytest.raises(ValueError, match=message):
        minilm.run_with_cache(queries, documents)


def test_long_texts_are_truncated_with_a_count(minilm):
    long_text = "passage " * 400
    with pytest.warns(UserWarning, match=r"^2 of 3 inputs were longer than 256 tokens and were truncated"):
        scores = minilm.score(["q", "q", "q"], [long_text, "short", long_text + "more"])
    assert scores.shape == (3,)
    # truncation is the model's own: the 400-word passage scores as its first 254 word pieces do
    clipped = " ".join(["passage"] * 254)
    assert abs(float(scores[0]) - float(minilm.score(["q"], [clipped])[0])) < 1e-5
