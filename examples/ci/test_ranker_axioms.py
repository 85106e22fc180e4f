"""Axiom tests for a ranker, as a team would keep them beside its training code.

Run with the packaged MiniLM (the default) or your own checkpoint:

    pytest examples/ci                                   # the packaged all-MiniLM-L6-v2
    pytest examples/ci --mechir-model path/to/checkpoint # a retrained ranker

Each axiom is audited once per session (the `axiom_audit` fixture caches it) and saved with its HTML
report under examples/ci/reports/<AXIOM>/; failing assertions print the measurement and the report path.
"""

from pathlib import Path

import pytest

from mechir_axioms import compare

BASELINE = Path(__file__).parent / "baseline"


@pytest.mark.axioms("TFC1", "STMC1")
def test_the_ranker_satisfies_the_axiom(axiom_audit, axiom):
    axiom_audit(axiom).assert_satisfied()


def test_tfc1_is_carried_by_layer_four(axiom_audit):
    result = axiom_audit("TFC1")
    result.assert_agreement(at_least=0.7)
    result.assert_heads_flagged(["4.6", "4.7"])
    result.assert_no_violating_heads()


def test_tfc1_has_not_drifted_from_the_baseline(axiom_audit):
    """The CI gate: the same check as `mechir-axioms compare baseline/TFC1 reports/TFC1`."""
    comparison = compare(BASELINE / "TFC1", axiom_audit("TFC1").folder)
    assert comparison.ok, comparison.table()
