"""Paired comparisons on real TREC DL pairs: an audit compared with itself changes by exactly nothing, and a
copy of the packaged MiniLM with one flagged head cut out is told apart (issue 27)."""

from __future__ import annotations

import pytest
import torch

from mechir_axioms import audit, compare, load_ranker

pytestmark = pytest.mark.slow  # real-model audits

OPTIONS = dict(n=60, steps=("heads",), method="attribution", stability=0, examples=0, progress=False)


@pytest.fixture(scope="module")
def baseline(minilm, tmp_path_factory):
    return audit(minilm, ["TFC1"], folder=tmp_path_factory.mktemp("paired") / "old", **OPTIONS)


def test_an_audit_compared_with_itself_changes_by_exactly_nothing(baseline):
    comparison = compare(baseline.folder, baseline.folder)
    row = comparison.axioms[0]
    assert row.paired and row.heads_tested
    assert (row.difference_low, row.difference_high) == (0.0, 0.0)
    assert comparison.ok and "†" not in comparison.table()


def test_one_flagged_head_cut_out_is_told_apart(baseline, tmp_path):
    strongest = baseline.flagged("TFC1").iloc[0]
    layer, head = int(strongest["layer"]), int(strongest["head"])
    ranker = load_ranker()
    width = ranker.model.config.hidden_size // ranker.model.config.num_attention_heads
    with torch.no_grad():
        ranker.model.base_model.encoder.layer[layer].attention.output.dense.weight[:, head * width:(head + 1) * width] = 0
    ablated = audit(ranker, ["TFC1"], folder=tmp_path / "new", **OPTIONS)
    comparison = compare(baseline, ablated)
    table = comparison.table()
    assert not comparison.ok, table
    assert f"{layer}.{head} (encodes) †" in table, table
    unchanged = [entry for entry in comparison.axioms[0].lost if not entry.endswith("†")]
    assert all(name.split(" (")[0] != f"{layer}.{head}" for name in unchanged)
