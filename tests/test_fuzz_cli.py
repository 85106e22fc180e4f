"""A hypothesis fuzz of the CLI's arguments for `sweep`, `intervene`, `compare` and `figure`: whatever numbers,
paths, names and heads a careless user types, the command ends in its result, a usage error, or one sentence
from the MechirError family; never another exception.

`sweep` and `intervene` stop where their audits would start (a stand-in raises `Reached`): everything they
validate comes before that point, so the fuzz covers it without running audits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechir_axioms import audit
from mechir_axioms.cli import main

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
QUICK_FUZZ = settings(FUZZ, max_examples=200)  # sweep and intervene stop before their audits: cheap examples


class Reached(Exception):
    """The command validated its arguments and reached its audits (not an error of the fuzz)."""


@pytest.fixture(scope="module")
def ground(tiny, tmp_path_factory):
    """A saved audit, a folder of the user's files, a plain file, and the tiny ranker every command loads."""
    ranker, model = tiny("bert", "bi")
    root = tmp_path_factory.mktemp("fuzz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit(ranker, ["TFC1"], n=3, targets=("heads",), method="attribution", examples=0, tolerance=0.0,
              progress=False, folder=root / "audit")
    (root / "users").mkdir()
    (root / "users" / "notes.txt").write_text("mine")
    (root / "file.txt").write_text("a file")
    return root, ranker, model


TRICKY_NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1", "2", "0.5", "1e308", "-1e308", "1e-320", "²", "٣", "", " ",
                  "1_0", "0x10", "99999999999999999999999", "4294967296", "4294967295", "3.0", "+1"]
"""A dictionary of values that broke commands before (as fuzzers keep one): drawn as often as random ones."""


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(TRICKY_NUMBERS),
        st.integers(-(10**25), 10**25).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=5),
    )


def _paths(root: Path) -> st.SearchStrategy[str]:
    fixed = [root / "audit", root / "users", root / "file.txt", root / "file.txt" / "x.png", root / "missing",
             root / "new" / "out.png", root / "new" / "page.html", root / "new" / "out.svg", root / "new.pdf", "", "/",
             "..", root / "audit" / "report.html", root / "users" / "notes.txt", root / "users" / "x.xml"]
    return st.one_of(st.sampled_from([str(path) for path in fixed]),
                     st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=12).map(
                         lambda name: str(root / "new" / name)))


def _names() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["TFC1", "TDC", "..", "../x", "", "tfc1", "TFC1,TFC1", "NOPE", "a/b", "NULL"]),
                     st.text(max_size=8))


def _heads() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["0.0", "1.3", "9.9", "-1.0", "a.b", "0.0,0.0", "", "0", "1.1,", "0.0.0"]),
                     st.text(max_size=6))


def _run(arguments: list[str]) -> None:
    """Run the CLI; only its own outcomes are allowed (exit codes, argparse's SystemExit, Reached)."""
    try:
        code = main(arguments)
    except SystemExit as stopped:  # argparse's usage error
        assert stopped.code == 2, arguments
    except Reached:
        pass
    else:
        assert code in (0, 1, 2, 130), (arguments, code)


@FUZZ
@given(data=st.data())
def test_compare_fuzz(ground, data):
    root, _, _ = ground
    arguments = ["compare", data.draw(st.one_of(st.just(str(root / "audit")), _paths(root))), str(root / "audit")]
    for flag in ("--max-agreement-drop", "--min-head-map-correlation", "--max-lost-flags"):
        if data.draw(st.booleans()):
            arguments += [flag, data.draw(_numbers())]
    for flag in ("--html", "--junit-xml"):
        if data.draw(st.booleans()):
            arguments += [flag, data.draw(_paths(root))]
    _run(arguments)
    assert (root / "users" / "notes.txt").read_text() == "mine" and (root / "file.txt").read_text() == "a file"


@FUZZ
@given(data=st.data())
def test_figure_fuzz(ground, data):
    root, _, _ = ground
    folders = data.draw(st.lists(st.one_of(st.just(str(root / "audit")), _paths(root)), min_size=1, max_size=2))
    arguments = ["figure", *folders, "--out", data.draw(_paths(root))]
    if data.draw(st.booleans()):
        arguments += ["--axioms", data.draw(_names())]
    if data.draw(st.booleans()):
        arguments += ["--frame", data.draw(st.one_of(st.sampled_from(["heads", "cells", "circuit", "blocks"]),
                                                     st.text(max_size=6)))]
    _run(arguments)
    assert (root / "users" / "notes.txt").read_text() == "mine" and (root / "file.txt").read_text() == "a file"


@pytest.fixture()
def stopped_before_audits(ground, monkeypatch):
    """load_ranker gives the tiny ranker; the audits of sweep and intervene raise Reached."""
    import mechir_axioms.auditing.designs as sweeping
    import mechir_axioms.assessing as intervening
    import mechir_axioms.models.loading as loading

    _, ranker, _ = ground

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(loading, "load_ranker", lambda *args, **kwargs: ranker)
    monkeypatch.setattr(sweeping, "audit", reached)
    monkeypatch.setattr(intervening, "audit", reached)
    return ground


@QUICK_FUZZ
@given(data=st.data())
def test_sweep_fuzz(stopped_before_audits, data):
    root, _, model = stopped_before_audits
    arguments = ["sweep", "--model", str(model), "--out", data.draw(_paths(root))]
    for _ in range(data.draw(st.integers(0, 2))):
        factor = data.draw(st.sampled_from(["seed", "seed", "filler", "position", "baseline", "", "colour"]))
        values = data.draw(st.lists(st.one_of(st.sampled_from(TRICKY_NUMBERS), _numbers(), _names(), st.sampled_from(
            ["a", "the", "supercalifragilistic", "[SEP]", "start", "end", "middle", "mask", "zeros", "filler"])),
            max_size=3))
        arguments += ["--vary", f"{factor}={','.join(values)}"]
    for flag in ("--n", "--seed", "--threshold", "--alpha", "--batch-size"):
        if data.draw(st.booleans()):
            arguments += [flag, data.draw(_numbers())]
    if data.draw(st.booleans()):
        arguments += ["--axioms", data.draw(_names())]
    _run(arguments)
    assert (root / "users" / "notes.txt").read_text() == "mine"


@QUICK_FUZZ
@given(data=st.data())
def test_intervene_fuzz(stopped_before_audits, data):
    root, _, model = stopped_before_audits
    arguments = ["intervene", "--model", str(model), "--heads", data.draw(_heads()), "--out", data.draw(_paths(root))]
    if data.draw(st.booleans()):
        arguments += ["--op", data.draw(st.one_of(st.sampled_from(["ablate", "mean", "scale"]), st.text(max_size=5)))]
    for flag in ("--factor", "--reference", "--n", "--seed"):
        if data.draw(st.booleans()):
            arguments += [flag, data.draw(_numbers())]
    for flag in ("--run", "--judged"):
        if data.draw(st.booleans()):
            arguments += [flag, data.draw(_paths(root))]
    _run(arguments)
    assert (root / "users" / "notes.txt").read_text() == "mine"


def test_the_fuzz_reaches_the_work_of_each_command(stopped_before_audits, tmp_path):
    """The stand-ins are really reached by valid arguments (so a passing fuzz is not one that refuses all)."""
    root, _, model = stopped_before_audits
    for arguments in (["sweep", "--model", str(model), "--vary", "seed=1", "--out", str(tmp_path / "s")],
                      ["intervene", "--model", str(model), "--heads", "0.0", "--out", str(tmp_path / "i")]):
        with pytest.raises(Reached):
            main(arguments)
    assert main(["compare", str(root / "audit"), str(root / "audit")]) == 0
