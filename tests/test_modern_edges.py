"""Edges of the modern kinds that a real checkpoint reaches: masked spans at a decoder's readout, SPLADE's
activations, bfloat16 scores, prompts named by task, PEFT adapters, ColBERT lengths and prompt spacing."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from mechir_axioms import load_ranker, make_pairs
from mechir_axioms.core.errors import ModelError


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one intra-op thread (see conftest's one_torch_thread)."""


def _copy(folder, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def test_masked_span_at_a_decoders_readout_is_dropped(decoder_model):
    """LNC1 masks a span that ends a plain decoder embedder's input, where its score is read: the baseline
    would be read at another token than the perturbed input, so every such pair is refused by name."""
    ranker = load_ranker(decoder_model("qwen3", "base"))
    assert ranker.pooling == "last" and ranker.reads_last_token
    with pytest.raises(ValueError, match="a masked span would end the input"):
        make_pairs("LNC1", ranker=ranker, n=4)
    llm = load_ranker(decoder_model("qwen3", "causal-lm"))  # the prompt's suffix follows the document
    pairs = make_pairs("LNC1", ranker=llm, n=4)
    assert len(pairs) == 4 and not any("masked span" in reason for reason in pairs.dropped)


def test_splade_log1p_relu_activation_matches_sentence_transformers(splade_st_path, tmp_path, trec_rows):
    from sentence_transformers import SparseEncoder

    folder = _copy(splade_st_path, tmp_path, "opensearch-like")
    config_path = next(folder.glob("*SpladePooling/config.json"))
    config = json.loads(config_path.read_text())
    config["activation_function"] = "log1p_relu"
    config_path.write_text(json.dumps(config))
    ranker = load_ranker(folder)
    assert (ranker.kind, ranker.activation) == ("sparse", "log1p_relu")
    rows = trec_rows[:16]
    queries, documents = [row["query"] for row in rows], [row["text"][:300] for row in rows]
    reference = SparseEncoder(str(folder), device="cpu")
    q = reference.encode_query(queries, convert_to_tensor=True).to_dense()
    d = reference.encode_document(documents, convert_to_tensor=True).to_dense()
    expected = (q * d).sum(-1)
    got = ranker.score(queries, documents)
    assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))
    plain = load_ranker(splade_st_path).score(queries, documents)
    assert (plain - got).abs().max() > 1e-3  # the second log1p changes the scores
    config["activation_function"] = "softplus"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="SPLADE activation 'softplus' is not supported; supported: relu, log1p_relu"):
        load_ranker(folder)


def test_bfloat16_llm_scores_are_taken_in_float32(decoder_model, trec_rows):
    folder = decoder_model("qwen3", "causal-lm")
    rows = trec_rows[:8]
    queries, documents = [row["query"] for row in rows], [row["text"] for row in rows]
    wide, narrow = load_ranker(folder), load_ranker(folder, dtype="bfloat16")
    inputs = narrow.tokenize(queries, documents)
    with torch.no_grad():
        scores = narrow.forward(inputs)
    assert scores.dtype == torch.float32
    # bfloat16 logits near 1 are 2^-7 apart; the difference is taken from the float32 head instead
    assert len(set(scores.tolist())) == len(rows)
    assert (scores.cpu() - wide.score(queries, documents)).abs().max() < 0.05


def test_prompts_named_by_task(st_embedder_path, tmp_path):
    folder = _copy(st_embedder_path, tmp_path, "e5-like")
    path = folder / "config_sentence_transformers.json"
    config = json.loads(path.read_text())
    config["prompts"] = {"web_search_query": "Instruct: search the web\nQuery: "}
    path.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="its prompts web_search_query are not applied"):
        ranker = load_ranker(folder)
    assert ranker.prefixes == {"query": "", "document": ""}
    config["default_prompt_name"] = "web_search_query"
    path.write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert load_ranker(folder).prefixes["query"] == "Instruct: search the web\nQuery: "
    assert load_ranker(folder, query_prefix="query: ").prefixes["query"] == "query: "  # explicit options win


def test_peft_adapter_folder_is_refused_with_its_base(tmp_path):
    folder = tmp_path / "rankllama-lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "peft_type": "LORA"}))
    with pytest.raises(ModelError, match="is a PEFT adapter .* over 'meta-llama/Llama-2-7b-hf'.*merge it"):
        load_ranker(folder)


def test_colbert_document_length_is_max_length_and_explicit_wins(colbert_path):
    assert load_ranker(colbert_path).max_length == 180  # the checkpoint's document_length
    assert load_ranker(colbert_path, max_length=100).max_length == 100


def test_first_word_after_a_newline_opens_a_word(decoder_model):
    """Byte-level BPE marks a word after a space, not after a newline: fillers count the first word as
    the model reads it."""
    folder = decoder_model("qwen3", "causal-lm")
    assert load_ranker(folder).changed_text_follows_space("document")
    body = "<Query>: {query}\n<Document>:\n{document}"
    assert not load_ranker(folder, template=("", body, "")).changed_text_follows_space("document")
