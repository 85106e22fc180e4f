"""Tiny random-weight demo rankers built offline: a Qwen3 LLM reranker (causal LM answering yes/no) with a
byte-level BPE tokenizer trained on the bundled passages, to try the LLM kind end to end without downloading a
model. Its scores mean nothing; its shapes, hooks and prompt are those of a real Qwen3 reranker."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Tokenizer, Qwen3Config

from ..core.defaults import DEMO_MODELS, SAMPLE
from ..core.errors import SettingsError

VOCAB = 2000
"""Pieces of the demo tokenizers."""
ANSWER_LINES = ["yes no", "no yes", "Yes No", "No Yes", "true false", "false true"] * 100
"""Lines added to the training texts so that "yes" and "no" (with and without a leading space) are learned pieces:
an LLM reranker scores by them."""
SIZE = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 32, "intermediate": 128, "positions": 512}
"""The demo Qwen3's shape: 4 query heads over 2 key-value heads (GQA), head_dim 32 != 64 / 4 as in real Qwen3."""


def train_bpe(tokenizer: Tokenizer, texts: list[str], specials: list[str], byte_level: bool) -> tuple[dict, list]:
    """Train a BPE on `texts` (and ANSWER_LINES) through the tokenizer's normalizer and pre-tokenizer,
    deterministically: (vocab, merges)."""
    from tokenizers import pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tokenizer.train_from_iterator(texts + ANSWER_LINES, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def qwen_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A Qwen2/Qwen3-style byte-level BPE trained on `texts`: no BOS, <|endoftext|> pad and eos, left padding, the
    chat markers special and <think> and </think> ordinary added tokens, as in Qwen3."""
    template = Qwen2Tokenizer().backend_tokenizer  # Qwen's own NFC normalizer + regex/ByteLevel pre-tokenizer
    trainee = Tokenizer(models.BPE())
    trainee.normalizer, trainee.pre_tokenizer = template.normalizer, template.pre_tokenizer
    vocab, merges = train_bpe(trainee, texts, [], byte_level=True)
    vocab = {"<|endoftext|>": len(vocab), **vocab} if "<|endoftext|>" not in vocab else vocab
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, padding_side="left", model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens([AddedToken("<think>", special=False, normalized=False),
                          AddedToken("</think>", special=False, normalized=False)])
    return tokenizer


def demo_qwen3_config(tokenizer: PreTrainedTokenizerFast) -> Qwen3Config:
    """The demo Qwen3's config (SIZE) with the tokenizer's vocabulary and special ids."""
    return Qwen3Config(vocab_size=len(tokenizer), hidden_size=SIZE["hidden"], num_hidden_layers=SIZE["layers"],
                       num_attention_heads=SIZE["heads"], num_key_value_heads=SIZE["kv_heads"],
                       head_dim=SIZE["head_dim"], intermediate_size=SIZE["intermediate"],
                       max_position_embeddings=SIZE["positions"], pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=True)


def demo_model(kind: str, out: str | Path, seed: int = 0) -> Path:
    """Build the demo ranker of `kind` ("llm": a tiny random Qwen3 reranker) into the folder `out`, which must not
    exist or be empty; `load_ranker(out)` opens it. Deterministic for a seed."""
    if kind not in DEMO_MODELS:
        raise SettingsError(f"demo model {kind!r} is not one we build; choose from {', '.join(DEMO_MODELS)}")
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise SettingsError(f"{folder} already exists and is not an empty folder; give a new folder for the demo model")
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as lines:
        texts = [str(json.loads(line)["text"]) for line in lines if line.strip()]
    tokenizer = qwen_tokenizer(texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(demo_qwen3_config(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
