"""The decoder, embedder, ColBERT and SPLADE fixtures load offline and look like the real checkpoints they stand for."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from decoder_models import FAMILIES, FAMILY_STYLE, HEADS, QWEN3_EMBEDDING_QUERY_PROMPT, SIZE, STYLES, qwen3_0_6b_config

AUTO = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification,
        "base": AutoModel}
CLASS_SUFFIX = {"causal-lm": "ForCausalLM", "sequence-classification": "ForSequenceClassification", "base": "Model"}
TEXTS = ["is it yes or no", "what is the capital of france and why does paris have so many bridges over the seine"]


def _outputs(model, batch) -> torch.Tensor:
    """Logits, or the last hidden state for a bare model."""
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("style", STYLES)
def test_tokenizer_yes_no_offsets_and_round_trip(style, decoder_tokenizer, tmp_path):
    tokenizer = decoder_tokenizer(style)
    assert tokenizer.is_fast
    for word in ("yes", "no"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1
        assert len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1
    encoded = tokenizer(TEXTS[1], return_offsets_mapping=True)
    pieces = [TEXTS[1][start:end] for start, end in encoded["offset_mapping"] if end > start]
    assert "".join(pieces).replace(" ", "") == TEXTS[1].replace(" ", "")
    bos = {"qwen": None, "llama3": "<|begin_of_text|>", "gemma": "<bos>", "llama2": "<s>"}[style]
    first = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert (first == bos) if bos else (first not in tokenizer.all_special_tokens)
    assert tokenizer.padding_side == ("left" if style in ("qwen", "gemma") else "right")
    tokenizer.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert back.is_fast and type(back) is type(tokenizer)
    again = back(TEXTS, TEXTS[::-1], return_offsets_mapping=True)
    assert again == tokenizer(TEXTS, TEXTS[::-1], return_offsets_mapping=True)
    assert back.get_vocab() == tokenizer.get_vocab()
    assert back.special_tokens_map == tokenizer.special_tokens_map
    assert back.all_special_ids == tokenizer.all_special_ids
    assert back.padding_side == tokenizer.padding_side and back.model_max_length == 512


def test_special_token_ids(decoder_tokenizer):
    gemma = decoder_tokenizer("gemma")
    assert gemma.convert_tokens_to_ids(["<pad>", "<eos>", "<bos>", "<unk>"]) == [0, 1, 2, 3]
    assert gemma.unk_token_id not in gemma.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    llama2 = decoder_tokenizer("llama2")
    assert llama2.convert_tokens_to_ids(["<unk>", "<s>", "</s>"]) == [0, 1, 2]
    assert llama2.pad_token == "<pad>"
    qwen = decoder_tokenizer("qwen")
    assert qwen.bos_token is None and qwen.pad_token == qwen.eos_token == "<|endoftext|>"
    chat = "<|im_start|>user\nis it?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    for marker in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert qwen.convert_tokens_to_ids(marker) in qwen(chat)["input_ids"]
    llama3 = decoder_tokenizer("llama3")
    for marker in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"):
        assert llama3.convert_tokens_to_ids(marker) != llama3.convert_tokens_to_ids("<|begin_of_text|>")


def test_tokenizers_are_deterministic(decoder_texts):
    from decoder_models import train_tokenizer

    first, second = train_tokenizer("gemma", decoder_texts), train_tokenizer("gemma", decoder_texts)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_folder_loads_eager_and_matches_sdpa(family, head, decoder_model):
    folder = decoder_model(family, head)
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert config.num_key_value_heads < config.num_attention_heads == SIZE["heads"]
    assert config.vocab_size == len(tokenizer) and config.pad_token_id == tokenizer.pad_token_id
    assert config.eos_token_id == tokenizer.eos_token_id and config.bos_token_id == tokenizer.bos_token_id
    if family == "qwen3":
        assert config.head_dim == 32 != config.hidden_size // config.num_attention_heads
    if family in ("mistral", "gemma2", "gemma3"):
        assert config.sliding_window == 8
    if family in ("gemma2", "gemma3"):
        assert config.layer_types == ["sliding_attention", "full_attention"]
    if head == "sequence-classification":
        assert config.num_labels == 1
    eager = AUTO[head].from_pretrained(folder, attn_implementation="eager").eval()
    assert type(eager).__name__.endswith(CLASS_SUFFIX[head])
    assert eager.config._attn_implementation == "eager"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    reference = _outputs(eager, batch)
    assert torch.isfinite(reference).all()
    if family == "gemma2":  # transformers refuses sdpa for Gemma2 (attention logit soft-capping)
        with pytest.raises(ValueError):
            AUTO[head].from_pretrained(folder, attn_implementation="sdpa")
        return
    sdpa = _outputs(AUTO[head].from_pretrained(folder, attn_implementation="sdpa").eval(), batch)
    if head == "sequence-classification":
        assert torch.allclose(reference, sdpa, atol=1e-5)
    else:
        mask = batch["attention_mask"].bool()
        assert torch.allclose(reference[mask], sdpa[mask], atol=1e-5)


def test_mistral_sliding_window_is_in_effect(decoder_model):
    folder = decoder_model("mistral", "base")
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(TEXTS[1] * 2, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 4 * 8
    changed = ids.clone()
    changed[0, 1] = tokenizer.convert_tokens_to_ids("yes")
    with torch.no_grad():
        before, after = model(input_ids=ids).last_hidden_state, model(input_ids=changed).last_hidden_state
    assert not torch.allclose(before[0, 2], after[0, 2])
    assert torch.allclose(before[0, -1], after[0, -1])  # two layers of window 8 cannot see back that far


def test_llama_with_llama2_tokenizer(decoder_model):
    folder = decoder_model("llama", "causal-lm", style="llama2")
    config, tokenizer = AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert (config.bos_token_id, config.eos_token_id) == (1, 2) and tokenizer.padding_side == "right"
    assert AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").config.vocab_size == len(tokenizer)


def test_qwen3_0_6b_config():
    config = qwen3_0_6b_config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1024, 28, 16)
    assert (config.num_key_value_heads, config.head_dim, config.intermediate_size) == (8, 128, 3072)
    assert config.vocab_size == 151936 and config.tie_word_embeddings and config.max_position_embeddings == 40960
    assert config.rope_parameters["rope_theta"] == 1e6 and config.rms_norm_eps == 1e-6


def test_st_embedder_loads_and_encodes(st_embedder_path):
    from sentence_transformers import SentenceTransformer

    modules = json.loads((st_embedder_path / "modules.json").read_text())
    assert [module["type"].rsplit(".", 1)[1] for module in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((st_embedder_path / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "lasttoken"
    settings = json.loads((st_embedder_path / "config_sentence_transformers.json").read_text())
    assert settings["prompts"] == {"query": QWEN3_EMBEDDING_QUERY_PROMPT, "document": ""}
    assert settings["similarity_fn_name"] == "cosine"
    assert AutoConfig.from_pretrained(st_embedder_path).model_type == "qwen3"
    tokenizer = AutoTokenizer.from_pretrained(st_embedder_path)
    assert tokenizer.padding_side == "left"
    assert tokenizer("hello")["input_ids"][-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model = SentenceTransformer(str(st_embedder_path), device="cpu")
    queries = model.encode(TEXTS, prompt_name="query", convert_to_tensor=True)
    documents = model.encode(TEXTS, convert_to_tensor=True)
    assert queries.shape == documents.shape == (2, SIZE["hidden"])
    assert torch.allclose(queries.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(queries, documents)


def test_colbert_folder_matches_pylate_format(colbert_path):
    from safetensors.torch import load_file

    modules = json.loads((colbert_path / "modules.json").read_text())
    assert [(m["path"], m["type"]) for m in modules] == [
        ("", "sentence_transformers.models.Transformer"), ("1_Dense", "pylate.models.Dense.Dense")]
    dense = json.loads((colbert_path / "1_Dense" / "config.json").read_text())
    assert dense == {"in_features": 32, "out_features": 16, "bias": False,
                     "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False}
    weights = load_file(colbert_path / "1_Dense" / "model.safetensors")
    assert list(weights) == ["linear.weight"] and weights["linear.weight"].shape == (16, 32)
    settings = json.loads((colbert_path / "config_sentence_transformers.json").read_text())
    assert settings["model_type"] == "ColBERT" and settings["similarity_fn_name"] == "MaxSim"
    assert (settings["query_prefix"], settings["document_prefix"]) == ("[Q] ", "[D] ")
    assert (settings["query_length"], settings["document_length"]) == (32, 180)
    assert settings["do_query_expansion"] and not settings["attend_to_expansion_tokens"]
    assert "." in settings["skiplist_words"]
    tokenizer = AutoTokenizer.from_pretrained(colbert_path)
    assert tokenizer.is_fast and tokenizer.pad_token == "[MASK]"
    q_id, d_id = tokenizer.convert_tokens_to_ids(["[Q] ", "[D] "])
    assert {q_id, d_id} == {len(tokenizer) - 2, len(tokenizer) - 1}
    model = AutoModel.from_pretrained(colbert_path, attn_implementation="eager")
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)
    batch = tokenizer(["a query"], return_tensors="pt")
    ids = torch.cat([batch["input_ids"][:, :1], torch.tensor([[q_id]]), batch["input_ids"][:, 1:]], dim=1)
    with torch.no_grad():
        vectors = model(input_ids=ids).last_hidden_state @ weights["linear.weight"].T
    assert vectors.shape == (1, ids.shape[1], 16)


def test_splade_st_folder_loads_and_encodes(splade_st_path):
    from sentence_transformers import SparseEncoder

    modules = json.loads((splade_st_path / "modules.json").read_text())
    assert [module["type"].rsplit(".", 1)[1] for module in modules] == ["MLMTransformer", "SpladePooling"]
    pooling = json.loads((splade_st_path / "1_SpladePooling" / "config.json").read_text())
    assert (pooling["pooling_strategy"], pooling["activation_function"]) == ("max", "relu")
    model = SparseEncoder(str(splade_st_path), device="cpu")
    embeddings = model.encode(TEXTS, convert_to_tensor=True).to_dense()
    assert embeddings.shape == (2, AutoConfig.from_pretrained(splade_st_path).vocab_size)
    assert (embeddings >= 0).all() and (embeddings > 0).any()


def test_splade_real_path(splade_real_path):
    config = AutoConfig.from_pretrained(splade_real_path)
    assert config.architectures == ["BertForMaskedLM"]
    tokenizer = AutoTokenizer.from_pretrained(splade_real_path)
    model = AutoModelForMaskedLM.from_pretrained(splade_real_path, attn_implementation="eager")
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits
    assert logits.shape[-1] == config.vocab_size


def test_family_styles_cover_every_family():
    assert set(FAMILY_STYLE) == set(FAMILIES) and set(FAMILY_STYLE.values()) <= set(STYLES)
