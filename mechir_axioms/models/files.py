"""Model files: tell a folder from a Hub id, and read a Hub file only where the cache (or the Hub) knows it.

A file the Hub cache neither holds nor records as absent (`.no_exist/<revision>/<file>`) is unknown, not
absent: treating it as absent would silently load a model the wrong way (a sentence-transformers model
whose `modules.json` was never cached loads as CLS pooling plus dot product), so with the Hub offline or
unreachable `hub_file` refuses it instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    HFValidationError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import _CACHED_NO_EXIST, repo_folder_name

from ..core.errors import ModelError


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (without its full stop), or its type's name."""
    lines = str(error).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else type(error).__name__


def looks_like_path(source: str) -> bool:
    """A folder, not a Hub id: absolute, relative with ./ or ../, home-relative, or deeper than org/name."""
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1 or "\\" in source


def check_source(source: str) -> None:
    """Refuse a path-like model name that names nothing on disk."""
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise ModelError(
            f"model path {source} does not exist; give a model folder or a Hugging Face id like 'org/name'"
        )


def hub_is_cached(repo_id: str) -> bool:
    """Does the Hub cache hold a snapshot of the repo's main revision?"""
    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = repo / "refs" / "main"
    return ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir()


def not_cached_error(repo_id: str) -> ModelError:
    """The one sentence for a Hub id of which nothing is cached while the Hub cannot be asked."""
    return ModelError(
        f"cannot load model {repo_id!r}: it is not a model folder here, and no Hugging Face Hub copy of it is "
        "cached (the Hub is offline, or the id is unknown)"
    )


def hub_file(repo_id: str, filename: str) -> str | None:
    """Path of a Hub repo's file (cached or downloaded), None if the repo is known to lack it; else ModelError."""
    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return cached
    if cached is _CACHED_NO_EXIST:
        return None
    unknown = ModelError(
        f"model {repo_id!r}: the Hugging Face cache holds neither {filename} nor a record that the model has none, "
        "and the Hub cannot be asked (offline or unreachable), so the model cannot be loaded as it is meant to be; "
        "load it once with the Hub online, or pass a folder that holds all its files"
    )
    if constants.is_offline_mode():
        raise not_cached_error(repo_id) if not hub_is_cached(repo_id) else unknown
    try:
        return hf_hub_download(repo_id, filename)
    except RemoteEntryNotFoundError:
        return None  # the Hub says the file does not exist (and the cache now records it)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelError(
            f"model {repo_id!r} is neither a folder here nor a Hugging Face Hub repository this session can read"
        ) from error
    except HFValidationError as error:
        raise ModelError(f"model {repo_id!r} is neither a folder here nor a valid Hugging Face Hub id") from error
    except OSError as error:  # connection failures, LocalEntryNotFoundError, other HTTP errors
        raise (unknown if hub_is_cached(repo_id) else not_cached_error(repo_id)) from error


def model_file(source: str, filename: str) -> str | None:
    """Path of a model's file in a local folder or Hub repo, None if the model has none (see `hub_file`)."""
    local = Path(source).expanduser()
    if local.is_dir():
        path = local / filename
        return str(path) if path.is_file() else None
    return hub_file(source, filename)


def read_json(source: str, filename: str) -> dict[str, Any] | list[Any] | None:
    """A model's JSON file (folder or Hub repo), None if the model has none; ModelError if it is not JSON."""
    path = model_file(source, filename)
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(
            f"{os.path.join(source, filename)} is not valid JSON ({error}); fix or replace the file"
        ) from error
