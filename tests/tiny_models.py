"""Tiny random-weight models of every supported architecture, saved as ordinary HF folders.

Tokenizers are real: the MiniLM WordPiece vocabulary for the BERT family, and a byte-level BPE or a
Unigram model trained here on TREC DL passages for RoBERTa/ModernBERT and T5.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizer,
    DistilBertConfig,
    DistilBertTokenizer,
    ElectraConfig,
    ElectraTokenizer,
    ModernBertConfig,
    MPNetConfig,
    MPNetTokenizer,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

ENCODER_FAMILIES = ("bert", "distilbert", "electra", "roberta", "mpnet", "modernbert")
SIZE = {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64}


def _bpe(texts: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def _unigram(texts: list[str]) -> list[tuple[str, float]]:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=1500, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(texts + ["true false"] * 50, trainer)
    return [tuple(item) for item in json.loads(tokenizer.to_str())["model"]["vocab"]]


def _tokenizer(family: str, texts: list[str], wordpiece_vocab: Path):
    if family == "bert":
        return BertTokenizer(vocab=str(wordpiece_vocab))
    if family == "distilbert":
        return DistilBertTokenizer(vocab=str(wordpiece_vocab))
    if family == "electra":
        return ElectraTokenizer(vocab=str(wordpiece_vocab))
    if family == "mpnet":  # MPNet keeps <s> <pad> </s> <unk> at ids 0-3, so padding_idx is 1 as in real MPNet
        words = ["<s>", "<pad>", "</s>", "<unk>"] + wordpiece_vocab.read_text().split("\n")[:-1] + ["<mask>"]
        return MPNetTokenizer(vocab={word: index for index, word in enumerate(words)})
    if family == "t5":
        return T5Tokenizer(vocab=_unigram(texts), extra_ids=0)
    vocab, merges = _bpe(texts)
    if family == "roberta":
        return RobertaTokenizer(vocab=vocab, merges=merges)
    roberta = RobertaTokenizer(vocab=vocab, merges=merges, cls_token="[CLS]", sep_token="[SEP]",
                               pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]")
    return PreTrainedTokenizerFast(
        tokenizer_object=roberta.backend_tokenizer,
        cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]",
        model_input_names=["input_ids", "attention_mask"],
    )


def _config(family: str, tokenizer, num_labels: int):
    h, n, a, i = SIZE["hidden"], SIZE["layers"], SIZE["heads"], SIZE["intermediate"]
    vocab = len(tokenizer)
    common = {"vocab_size": vocab, "num_labels": num_labels, "pad_token_id": tokenizer.pad_token_id}
    if family == "distilbert":
        return DistilBertConfig(dim=h, n_layers=n, n_heads=a, hidden_dim=i, **common)
    if family == "modernbert":
        return ModernBertConfig(
            hidden_size=h, num_hidden_layers=n, num_attention_heads=a, intermediate_size=i,
            global_attn_every_n_layers=2, local_attention=8, max_position_embeddings=512,
            cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **common,
        )
    classes = {"bert": BertConfig, "electra": ElectraConfig, "roberta": RobertaConfig, "mpnet": MPNetConfig}
    extra = {"embedding_size": 24} if family == "electra" else {}
    if family == "roberta":
        extra = {"max_position_embeddings": 514, "type_vocab_size": 1}
    if family == "mpnet":
        extra = {"max_position_embeddings": 514}
    return classes[family](
        hidden_size=h, num_hidden_layers=n, num_attention_heads=a, intermediate_size=i, **extra, **common
    )


def build(family: str, kind: str, folder: Path, texts: list[str], wordpiece_vocab: Path) -> Path:
    """Save a random-weight `family` model of `kind` ("bi", "cross" or "t5") with its tokenizer into folder."""
    torch.manual_seed(0)
    tokenizer = _tokenizer(family, texts, wordpiece_vocab)
    tokenizer.model_max_length = 512
    if family == "t5":
        config = T5Config(
            vocab_size=len(tokenizer), d_model=SIZE["hidden"], d_kv=8, d_ff=SIZE["intermediate"],
            num_layers=SIZE["layers"], num_decoder_layers=SIZE["layers"], num_heads=SIZE["heads"],
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = T5ForConditionalGeneration(config)
    else:
        config = _config(family, tokenizer, num_labels=1)
        model = (AutoModelForSequenceClassification if kind == "cross" else AutoModel).from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
