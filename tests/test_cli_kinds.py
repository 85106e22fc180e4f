"""The CLI opens every ranker kind: inferred from the model folder, or forced with --kind."""

from __future__ import annotations

import pytest

from mechir_axioms import PairSet
from mechir_axioms.cli import main


def test_pairs_command_infers_an_llm_reranker(decoder_model, tmp_path, capsys):
    folder = decoder_model("qwen3", "causal-lm")
    assert main(["pairs", "--model", str(folder), "--axioms", "TFC1", "--n", "4", "--out", str(tmp_path)]) == 0
    pairs = PairSet.load(tmp_path / "TFC1")
    assert pairs.provenance["ranker_kind"] == "llm" and len(pairs) == 4
    assert "TFC1: 4 pairs" in capsys.readouterr().out


def test_kind_flag_forces_and_refuses(decoder_model, tmp_path, capsys):
    folder = decoder_model("qwen3", "causal-lm")
    assert main(["pairs", "--model", str(folder), "--kind", "bi", "--axioms", "TFC1", "--n", "2",
                 "--out", str(tmp_path / "bi")]) == 0
    assert PairSet.load(tmp_path / "bi" / "TFC1").provenance["ranker_kind"] == "bi"
    assert main(["pairs", "--model", str(folder), "--kind", "sparse", "--axioms", "TFC1", "--n", "2",
                 "--out", str(tmp_path / "sparse")]) == 2
    error = capsys.readouterr().err
    assert "kind='sparse' does not fit a qwen3 model (decoder); kinds for decoder models: bi, cross, llm" in error
    with pytest.raises(SystemExit):  # argparse refuses a kind that is not registered
        main(["pairs", "--model", str(folder), "--kind", "dual"])
