"""Model loading refuses what it cannot load for sure: one test per case of the reliability issue.

Each test damages a copy of a real model folder (or a fake Hugging Face cache) the way users' models get
damaged, and checks that loading refuses it with one `ModelError` sentence naming the model and the fault
(or warns, where the model still works), instead of scoring it wrongly.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification

from mechir_axioms import load_ranker
from mechir_axioms.core.errors import ModelError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WEIGHTS = ("model.safetensors",)


def _copy(source: Path, target: Path, skip: tuple[str, ...] = (), copy_weights: bool = False) -> Path:
    """A writable copy of a model folder; weights are symlinked (left untouched) unless copy_weights."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name in skip:
            continue
        if item.is_dir():
            _copy(item, target / item.name, skip, copy_weights)
        elif item.name in WEIGHTS and not copy_weights:
            (target / item.name).symlink_to(item.resolve())
        else:
            (target / item.name).write_bytes(item.read_bytes())
    return target


def _edit_config(folder: Path, edit: Callable[[dict], object]) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config, indent=2))


def _refused(call: Callable[[], object], *fragments: str) -> str:
    """Run call; it must raise one ModelError sentence (one line) holding every fragment."""
    with pytest.raises(ModelError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_model_without_architectures_needs_kind(cross_encoder_path, tmp_path, trec_pairs):
    folder = _copy(cross_encoder_path, tmp_path / "cross")
    _edit_config(folder, lambda config: config.pop("architectures"))
    _refused(lambda: load_ranker(folder), str(folder), "names no architectures", "pass kind= one of bi, cross, t5")
    queries, documents = trec_pairs[0][:4], trec_pairs[1][:4]
    explicit = load_ranker(folder, kind="cross")  # an explicit kind still loads it, as the cross-encoder it is
    assert explicit.kind == "cross"
    expected = load_ranker(cross_encoder_path).score(queries, documents)
    assert torch.allclose(explicit.score(queries, documents), expected, atol=1e-5)


def test_unused_or_missing_weights_are_flagged(cross_encoder_path, minilm_path, tiny_model, tmp_path):
    # a cross-encoder loaded as a bi-encoder leaves its classifier unused: the wrong head was loaded
    unused = r"2 weights of the checkpoint are not used by a bi ranker \(classifier\.bias, classifier\.weight\)"
    with pytest.warns(UserWarning, match=unused):
        load_ranker(cross_encoder_path, kind="bi")
    # a bi-encoder loaded as a cross-encoder lacks the classifier, which would be random
    _refused(
        lambda: load_ranker(minilm_path, kind="cross"),
        str(minilm_path),
        "lacks 2 weights that a cross ranker needs (classifier.bias, classifier.weight)",
        "kind='cross'",
    )
    # harmless: a masked-LM checkpoint's head and missing pooler, for a bi-encoder (a *ForMaskedLM checkpoint is
    # inferred as SPLADE, kind "sparse", which reads that head; as a bi-encoder it is asked for by name)
    folder = _copy(tiny_model("bert", "bi"), tmp_path / "mlm", skip=WEIGHTS + ("config.json",))
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(tiny_model("bert", "bi"))).save_pretrained(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranker = load_ranker(folder, kind="bi")
        inferred = load_ranker(folder)
        load_ranker(cross_encoder_path)
    assert (ranker.kind, inferred.kind) == ("bi", "sparse")
    assert not [str(w.message) for w in caught if "weights of the checkpoint" in str(w.message)]


def test_tokenizer_without_files_is_refused(cross_encoder_path, tmp_path):
    from mechir_axioms.models.loading import check_vocabulary

    folder = _copy(cross_encoder_path, tmp_path / "cross", skip=TOKENIZER_FILES)
    _refused(lambda: load_ranker(folder), str(folder), "tokenizer has 5 tokens but config.json's vocab_size is 30522")
    # the normal small differences pass: T5's 32100 tokens for 32128 embedding rows; more tokens than rows do not
    check_vocabulary("t5-like", list(range(32100)), SimpleNamespace(vocab_size=32128))
    _refused(lambda: check_vocabulary("m", list(range(30523)), SimpleNamespace(vocab_size=30522)), "30523", "30522")


def test_uncached_modules_json_offline_is_refused(minilm_path, tmp_path, monkeypatch):
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--fake-org--minilm"
    snapshot = _copy(minilm_path, repo / "snapshots" / revision, skip=("modules.json",))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # config and weights cached, modules.json unknown: refused, not loaded as CLS plus dot product
    _refused(lambda: load_ranker("fake-org/minilm"), "'fake-org/minilm'", "holds neither modules.json nor a record")
    # a recorded miss is a known absence: a plain BertModel, claimed by the bi-encoder with its defaults
    (repo / ".no_exist" / revision).mkdir(parents=True)
    (repo / ".no_exist" / revision / "modules.json").touch()
    plain = load_ranker("fake-org/minilm")
    assert (plain.kind, plain.pooling, plain.similarity) == ("bi", "cls", "dot")
    # and once modules.json is cached, the sentence-transformers set-up is read from it
    (repo / ".no_exist" / revision / "modules.json").unlink()
    (snapshot / "modules.json").write_bytes((minilm_path / "modules.json").read_bytes())
    assert (load_ranker("fake-org/minilm").pooling, load_ranker("fake-org/minilm").similarity) == ("mean", "cosine")


@pytest.mark.parametrize("damage", ["truncated weights", "label count mismatch", "five labels"])
def test_corrupt_weights_or_label_count_is_refused(cross_encoder_path, tiny_model, tmp_path, damage):
    if damage == "truncated weights":
        folder = _copy(cross_encoder_path, tmp_path / "cross", skip=WEIGHTS)
        with open(cross_encoder_path / "model.safetensors", "rb") as weights:
            (folder / "model.safetensors").write_bytes(weights.read(1_000_000))
        _refused(lambda: load_ranker(folder), str(folder / "model.safetensors"), "weights file is truncated or corrupt")
    elif damage == "label count mismatch":  # config.json edited to 3 labels, the classifier has 1 row
        folder = _copy(cross_encoder_path, tmp_path / "cross")
        _edit_config(folder, lambda config: config.update(num_labels=3))
        fragments = ("label count mismatch", "config.json gives 3 labels", "classifier.weight holds 1")
        _refused(lambda: load_ranker(folder), str(folder), *fragments)
    else:  # a consistent 5-label classifier is no cross-encoder
        folder = _copy(tiny_model("bert", "cross"), tmp_path / "five", skip=WEIGHTS + ("config.json",))
        config = AutoConfig.from_pretrained(tiny_model("bert", "cross"))
        config.num_labels = 5
        AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
        _refused(lambda: load_ranker(folder), str(folder), "a cross-encoder needs 1 or 2 labels", "give 5")


def test_missing_path_or_config_is_a_model_error(cross_encoder_path, tmp_path):
    _refused(lambda: load_ranker(tmp_path / "nowhere"), f"model path {tmp_path / 'nowhere'} does not exist")
    _refused(lambda: load_ranker(tmp_path), f"model folder {tmp_path} holds no model config (config.json)")
    folder = _copy(cross_encoder_path, tmp_path / "no-weights", skip=WEIGHTS)  # a config but no weights
    _refused(lambda: load_ranker(folder), f"cannot load the weights of model {folder}", "model.safetensors")
