"""Issue 25, sweeps: a `vary` that is not a sweep, a variant the ranker cannot run, or a seed out of range is refused
with one sentence before the first audit runs (the audits are replaced by a stand-in that fails if reached)."""

from __future__ import annotations

import pytest

import mechir_axioms.auditing.designs as sweeping
from mechir_axioms import MechirError, SettingsError, sweep
from mechir_axioms.cli import main
from mechir_axioms.cli.commands import _vary


class Reached(Exception):
    """Raised by the stand-in audit: validation let the sweep through to its first audit."""


@pytest.fixture
def no_audit(monkeypatch):
    """Replace the sweep's audit by one that raises Reached, so that no test here runs an audit."""

    def stand_in(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(sweeping, "audit", stand_in)


@pytest.fixture(scope="module")
def bert(tiny):
    """A tiny random BERT cross-encoder with the MiniLM WordPiece vocabulary, and its folder."""
    return tiny("bert", "cross")


def test_an_empty_vary_is_refused_and_none_keeps_the_default_sweep(bert, no_audit):
    ranker, _ = bert
    with pytest.raises(SettingsError, match=r"vary=\{\} names no factor to vary.*vary=None for the default sweep"):
        sweep(ranker, "TFC1", {}, progress=False)
    with pytest.raises(Reached):  # the default sweep still starts
        sweep(ranker, "TFC1", None, progress=False)


def test_a_vary_under_which_nothing_varies_is_not_a_sweep(bert, no_audit):
    ranker, _ = bert
    with pytest.raises(SettingsError, match=r"is not a sweep of TFC1: every value equals its reference "
                                            r"\(seed=0, filler='a'\); give at least one other value"):
        sweep(ranker, "TFC1", {"seed": [0], "filler": ["a"]}, progress=False)
    with pytest.raises(SettingsError, match="is not a sweep of TFC1"):  # the reference seed is the sweep's seed
        sweep(ranker, "TFC1", {"seed": [7]}, seed=7, progress=False)


def test_the_cli_says_a_vary_without_variants_is_not_a_sweep(bert, no_audit, tmp_path, capsys):
    _, folder = bert
    code = main(["sweep", "--model", str(folder), "--vary", "seed=0", "--vary", "filler=a",
                 "--out", str(tmp_path / "sweep")])
    assert code == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the model's loading bar (the CLI loads it first)
    assert error.startswith("mechir-axioms: error: vary={'seed': [0], 'filler': ['a']} is not a sweep of TFC1")
    assert not (tmp_path / "sweep").exists()


def test_a_filler_of_several_tokens_is_refused_before_any_audit(bert, no_audit):
    ranker, _ = bert
    with pytest.raises(SettingsError, match=r"vary\['filler'\] holds 'supercalifragilistic', which is \d+ tokens for "
                                            r".*; sweep fillers must be single tokens"):
        sweep(ranker, "TFC1", {"filler": ["a", "supercalifragilistic"]}, progress=False)
    with pytest.raises(MechirError, match=r"baseline.filler '\[SEP\]' is or holds a special token"):
        sweep(ranker, "TFC1", {"filler": ["[SEP]"]}, progress=False)
    with pytest.raises(SettingsError, match=r"vary\['filler'\] holds ''; fillers are non-empty words"):
        sweep(ranker, "TFC1", {"filler": ["the", ""]}, progress=False)
    with pytest.raises(Reached):  # single-token fillers pass
        sweep(ranker, "TFC1", {"filler": ["a", "the", "and"]}, progress=False)


def test_the_cli_refuses_a_filler_of_several_tokens_in_one_sentence(bert, no_audit, tmp_path, capsys):
    _, folder = bert
    code = main(["sweep", "--model", str(folder), "--vary", "filler=a,supercalifragilistic",
                 "--out", str(tmp_path / "sweep")])
    assert code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("mechir-axioms: error: vary['filler'] holds 'supercalifragilistic', which is")
    assert error.endswith("must be single tokens (such as 'a', 'the', 'and')")


def test_positions_and_baselines_are_checked_against_the_spec_before_any_audit(bert, no_audit):
    ranker, _ = bert
    with pytest.raises(SettingsError, match=r"vary\['position'\] holds 'middle'; positions are start, end, offset"):
        sweep(ranker, "TFC1", {"position": ["end", "middle"]}, progress=False)
    with pytest.raises(SettingsError, match=r"vary\['position'\] holds 'start', but WORD-ORDER's operation 'shuffle' "
                                            r"takes no position"):
        sweep(ranker, "WORD-ORDER", {"position": ["start"]}, progress=False)
    with pytest.raises(SettingsError, match=r"vary\['baseline'\] holds 'zeros'; baselines are filler, mask, term"):
        sweep(ranker, "TFC1", {"baseline": ["zeros"]}, progress=False)
    with pytest.raises(SettingsError, match=r"vary\['baseline'\] holds 'mask', which WORD-ORDER does not allow"):
        sweep(ranker, "WORD-ORDER", {"baseline": ["mask"]}, progress=False)
    with pytest.raises(Reached):
        sweep(ranker, "TFC1", {"position": ["end", "start"], "baseline": ["filler", "mask"]}, progress=False)


@pytest.mark.parametrize("seed", ["²", "٣", "99999999999999999999999", "4294967296", "-1", "1e3", "0x10"])
def test_cli_seeds_are_ascii_integers_up_to_2_32_minus_1(seed):
    with pytest.raises(SettingsError, match=r"--vary 'seed=.*' is not valid; seeds are integers from 0 to 4294967295"):
        _vary([f"seed={seed}"])


def test_cli_seed_bounds_and_factors_are_those_of_the_library():
    assert _vary(["seed=0,4294967295", "filler=a,the"]) == {"seed": [0, 4294967295], "filler": ["a", "the"]}
    with pytest.raises(SettingsError, match="cannot vary colour"):  # refused before any model loads
        _vary(["colour=red"])
    with pytest.raises(SettingsError, match=r"vary\['seed'\]=\[\] is not valid; give a non-empty list"):
        _vary(["seed=,"])


def test_the_cli_refuses_a_unicode_digit_seed_in_one_sentence(tmp_path, capsys):
    code = main(["sweep", "--model", str(tmp_path / "never-loaded"), "--vary", "seed=0,²",
                 "--out", str(tmp_path / "sweep")])
    assert code == 2
    assert capsys.readouterr().err == ("mechir-axioms: error: --vary 'seed=0,²' is not valid; seeds are integers "
                                       "from 0 to 4294967295 (2**32 - 1), written in the digits 0-9\n")


def test_library_seeds_out_of_range_are_refused_before_any_audit(bert, no_audit):
    ranker, _ = bert
    for seeds in ([1, 2**32], [99999999999999999999999], [-1], [True], [1.5]):
        with pytest.raises(SettingsError, match=r"vary\['seed'\] holds .*; seeds are integers from 0 to 4294967295"):
            sweep(ranker, "TFC1", {"seed": seeds}, progress=False)
    with pytest.raises(SettingsError, match=r"seed=4294967296 is not valid; seeds are integers from 0 to 4294967295"):
        sweep(ranker, "TFC1", {"seed": [1]}, seed=2**32, progress=False)
    with pytest.raises(Reached):  # the largest seed is a seed, and its default sweep stays within range
        sweep(ranker, "TFC1", None, seed=2**32 - 1, progress=False)
    assert sweeping.default_vary(sweeping.load_axiom("TFC1"), 2**32 - 1)["seed"] == [2**32 - 1, 2**32 - 2, 2**32 - 3]
