"""Refusals on saved things (issue 25): a damaged saved audit read by report, figure and compare, a planted
pickle in a checkpoint, compare's thresholds, hand-edited head names and a folder that does not exist are each
one sentence naming the file or flag (exit 2 from the CLI), never a traceback or a silent pass."""

from __future__ import annotations

import pickle
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from mechir_axioms import DataError, MechirError, SettingsError, audit, compare, load_audit
from mechir_axioms.cli import main
from mechir_axioms.pairs.pairset import PairSet
from mechir_axioms.patching.result import PatchResult

QUICK = dict(n=3, seed=0, targets=("heads",), method="attribution", examples=0, tolerance=0.0, progress=False)


def _audit(ranker, folder, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit(ranker, ["TFC1"], None, folder=folder, **{**QUICK, **options})


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """One small finished audit (a tiny random bi-encoder, TFC1, 3 pairs, heads), copied by each test."""
    folder = tmp_path_factory.mktemp("saved") / "audit"
    _audit(tiny("bert", "bi")[0], folder)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "copy")


def _refused(capsys, argv, *named):
    """Run the CLI; it must exit 2 with one line `mechir-axioms: error: ...` naming each of `named`."""
    code = main([str(arg) for arg in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("mechir-axioms: error: "), lines
    for name in named:
        assert str(name) in lines[0], lines[0]
    return lines[0]


# --- 1. a damaged saved audit -------------------------------------------------------------------------------
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_effect(path):
    pd.read_parquet(path).drop(columns=["effect"]).to_parquet(path, index=False)


DAMAGE = {
    "truncated-heads": ("heads.parquet", _truncate, "Parquet"),
    "manifest-not-json": ("manifest.json", lambda path: path.write_text("{not json"), "not valid JSON"),
    "manifest-a-list": ("manifest.json", lambda path: path.write_text("[1,2]"), "JSON object"),
    "attention-a-list": ("attention.json", lambda path: path.write_text("[1,2]"), "JSON object"),
    "heads-without-effect": ("heads.parquet", _drop_effect, "effect"),
}
COMMANDS = {
    "report": lambda folder, saved, tmp_path: ["report", folder],
    "figure": lambda folder, saved, tmp_path: ["figure", folder, "--out", tmp_path / "x.png"],
    "compare-new": lambda folder, saved, tmp_path: ["compare", saved, folder],
    "compare-old": lambda folder, saved, tmp_path: ["compare", folder, saved],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_saved_audit_is_one_sentence_naming_the_file(capsys, saved, copy, tmp_path, damage, command):
    name, spoil, says = DAMAGE[damage]
    spoil(copy / name)
    line = _refused(capsys, COMMANDS[command](copy, saved, tmp_path), copy / name, says)
    assert "damaged" in line


def test_an_audit_saved_before_paths_existed_still_loads(copy, capsys):
    """Audits that did not run the paths step (all of them, before paths existed) have no paths.parquet."""
    assert not (copy / "paths.parquet").exists()
    assert load_audit(copy).paths.empty
    assert main(["report", str(copy)]) == 0
    assert main(["compare", str(copy), str(copy)]) == 0


# --- 2. a planted pickle in a checkpoint --------------------------------------------------------------------
BUILT: list[str] = []


def _build() -> str:
    BUILT.append("built")
    return "built"


class Planted:
    """An arbitrary object; unpickling it would call _build, which a weights-only load never does."""

    def __reduce__(self):
        return _build, ()


PLANTS = [pickle.dumps({"input_ids": Planted()}), b"\x00garbage bytes, not a checkpoint"]


@pytest.mark.parametrize("content", PLANTS, ids=["pickle", "garbage"])
def test_planted_pickle_in_a_pairs_checkpoint_is_refused(copy, content):
    planted = copy / "work" / "TFC1" / "pairs" / "tensors.pt"
    planted.write_bytes(content)
    with pytest.raises(DataError, match="damaged") as refused:
        PairSet.load(planted.parent)
    message = str(refused.value)
    assert str(planted) in message and f"delete {copy / 'work'}" in message and "\n" not in message
    assert not BUILT


@pytest.mark.parametrize("content", PLANTS, ids=["pickle", "garbage"])
def test_planted_pickle_in_a_checkpoint_stops_a_resume(tiny, copy, content):
    """Through the API as the user meets it: whichever layer refuses, it is one sentence naming the file."""
    (copy / "work" / "TFC1" / "pairs" / "tensors.pt").write_bytes(content)
    with pytest.raises(MechirError, match="work/TFC1/pairs/tensors.pt") as refused:
        _audit(tiny("bert", "bi")[0], copy, resume=True)
    assert "\n" not in str(refused.value)
    assert not BUILT


def test_pickled_object_in_a_patching_checkpoint_is_refused(copy):
    chunk = next((copy / "work" / "TFC1").glob("heads-*/chunk-*"))
    with (chunk / "effects.npz").open("wb") as handle:
        np.savez(handle, effects=np.array([Planted()], dtype=object), receiver_score=np.zeros(1),
                 donor_score=np.zeros(1))
    with pytest.raises(DataError, match="damaged") as refused:
        PatchResult.load(chunk)
    assert str(chunk / "effects.npz") in str(refused.value)
    assert not BUILT


def test_a_broken_patching_record_is_refused(copy):
    chunk = next((copy / "work" / "TFC1").glob("heads-*/chunk-*"))
    (chunk / "result.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="damaged") as refused:
        PatchResult.load(chunk)
    assert str(chunk / "result.json") in str(refused.value)


def test_checkpoints_still_load_what_they_saved(copy):
    """weights_only and allow_pickle=False still read what PairSet.save and PatchResult.save write."""
    pairs = PairSet.load(copy / "work" / "TFC1" / "pairs")
    assert len(pairs) == 3 and all(value.shape[0] == 3 for value in pairs.tensors.values())
    for chunk in (copy / "work" / "TFC1").glob("heads-*/chunk-*"):
        result = PatchResult.load(chunk)
        assert result.effects.shape[0] == len(result.receiver_score) == len(result.donor_score)


# --- 3. compare's thresholds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--max-agreement-drop", "nan"), ("--max-agreement-drop", "1.5"), ("--max-agreement-drop", "-0.1"),
    ("--min-head-map-correlation", "nan"), ("--min-head-map-correlation", "2"), ("--max-lost-flags", "-1"),
])
def test_compare_refuses_a_threshold_out_of_range(capsys, saved, flag, value):
    _refused(capsys, ["compare", saved, saved, flag, value], f"{flag} {value}", "is not valid")


@pytest.mark.parametrize("option", [dict(max_agreement_drop=float("nan")), dict(min_head_map_correlation=float("inf")),
                                    dict(max_lost_flags=1.5)])
def test_compare_api_refuses_a_threshold_out_of_range(saved, option):
    with pytest.raises(SettingsError, match=next(iter(option))):
        compare(saved, saved, **option)


# --- 4. a hand-edited head name -------------------------------------------------------------------------------
def test_compare_names_the_heads_only_one_audit_has(saved, copy):
    heads = pd.read_parquet(copy / "heads.parquet")
    original = heads.loc[0, "name"]
    heads.loc[0, "name"] = f"{original}6"
    heads.to_parquet(copy / "heads.parquet", index=False)
    comparison = compare(saved, copy)
    assert not comparison.ok
    failure = next(failure for failure in comparison.failures if "different heads" in failure)
    assert f"only in the old: {original}" in failure and f"only in the new: {original}6" in failure


# --- 5. a folder that does not exist --------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_folder_is_said_not_to_exist(capsys, saved, tmp_path, command):
    missing = tmp_path / "no-such-audit"
    line = _refused(capsys, COMMANDS[command](missing, saved, tmp_path), missing, "does not exist")
    assert not (tmp_path / "x.png").exists()
