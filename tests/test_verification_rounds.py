"""Method verified in rounds: while the missed-flag bound still reaches the threshold, the next units within the
screen's measured error of it are patched exactly, up to the budget. The screen and the exact runs are stood in
for by fixed numbers, so each case is known by construction."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mechir_axioms.auditing import verified
from mechir_axioms.patching.plan import Variant

EXACT = np.array([[0.20, 0.06, 0.01, 0.00], [0.00, 0.01, 0.00, 0.02]])
"""Each unit's exact share of the score change (layer x head). Unit (0, 1) carries a flag (0.06 > 0.05)."""
SCREEN = np.array([[0.10, 0.03, 0.02, 0.00], [0.01, 0.015, 0.00, 0.025]])
"""Its screen: the strongest unit is underestimated by 0.10, and (0, 1) is screened below threshold - margin."""
PAIRS = 2


class StandIn:
    """An audit context whose screening run returns SCREEN and whose exact runs return EXACT, for one axiom whose
    pairs move the score by 1 each (so a unit's share is its mean change)."""

    def __init__(self, verify: int) -> None:
        self.settings = SimpleNamespace(threshold=0.05, margin=0.01, verify=verify, screen="attribution")
        self.runs: list[tuple[tuple[int, int], ...]] = []
        self.methods: list[str] = []

    def job(self, target: str, method: str, variants: tuple[Variant, ...] = (), **_: object) -> tuple:
        self.methods.append(method)
        return tuple((variant.layer, variant.head) for variant in variants)

    def both_directions(self, record: object, name: str, units: tuple) -> tuple:
        size = np.ones(PAIRS)
        if not units:  # the screening run
            return (np.repeat(SCREEN[None], PAIRS, axis=0), size), None, None
        self.runs.append(units)
        exact = np.stack([EXACT[unit] for unit in units])
        return (np.repeat(exact[None], PAIRS, axis=0), size), None, None


REAL_SCREEN = verified.screen


@pytest.fixture(autouse=True)
def fixed_screen(monkeypatch):
    monkeypatch.setattr(verified, "screen", lambda denoising, noising, expect: (SCREEN, SCREEN.copy()))
    monkeypatch.setitem(verified.METHODS, "verified", SimpleNamespace(screen="atp*", verify="exact"))


def run(verify: int) -> tuple[StandIn, np.ndarray, dict]:
    context = StandIn(verify)
    record = SimpleNamespace(spec=SimpleNamespace(expect="increase"))
    (change, _), _, facts = verified.verified_units(record, context, "heads", "verified",
                                                    lambda unit: Variant(unit[0], "z", head=unit[1]),
                                                    lambda unit: f"{unit[0]}.{unit[1]}")
    return context, change.mean(axis=0), facts


def test_a_second_round_finds_the_flag_the_first_margin_missed():
    context, share, facts = run(verify=4)
    assert context.runs[0] == ((0, 0),)  # round 1: the only screen within the margin
    assert context.runs[1] == ((0, 1), (1, 3), (0, 2))  # round 2 reaches 0.10 (the error seen) below threshold
    assert facts["rounds"] == 2 and facts["margin_reached"] == pytest.approx(0.10)
    assert share[0, 1] == pytest.approx(0.06)  # exact now, so the flag is there to be found
    assert share[1, 1] == pytest.approx(0.015)  # unverified: its screen
    assert facts["verified"] == ["0.0", "0.1", "1.3", "0.2"]
    assert not facts["bound_below_threshold"]  # 0.015 left, plus an error of up to 0.10


def test_the_budget_stops_the_rounds_and_the_bound_says_so():
    context, share, facts = run(verify=1)
    assert context.runs == [((0, 0),)] and facts["rounds"] == 1
    assert share[0, 1] == pytest.approx(0.03)  # screened only: the flag is missed, and the bound admits it
    assert facts["missed_flag_bound"] == pytest.approx(0.03 + 0.10)
    assert not facts["bound_below_threshold"]


def test_no_second_round_when_the_first_bound_is_below_the_threshold(monkeypatch):
    monkeypatch.setattr(verified, "screen", lambda denoising, noising, expect: (EXACT, EXACT.copy()))
    context, share, facts = run(verify=16)  # a perfect screen: error 0, bound = the largest unverified screen
    assert context.runs == [((0, 0), (0, 1))] and facts["rounds"] == 1
    assert facts["missed_flag_bound"] == pytest.approx(0.02) and facts["bound_below_threshold"]


def test_progress_bars_name_a_verification_by_its_size_not_its_units():
    from mechir_axioms.auditing.chunks import progress_label

    many = SimpleNamespace(variants=tuple(range(16)))
    assert progress_label("heads-verify-" + "-".join(f"4.{i}" for i in range(16)), many) == "heads verify 16"
    assert progress_label("features-verify-1f2e3d4c5b6a7988", SimpleNamespace(variants=(1, 2))) == "features verify 2"
    assert progress_label("heads-screen", SimpleNamespace(variants=None)) == "heads screen"


@pytest.mark.parametrize("chosen", ["attribution", "atp*"])
def test_the_screen_setting_chooses_the_screening_method(chosen):
    context = StandIn(16)
    context.settings.screen = chosen
    record = SimpleNamespace(spec=SimpleNamespace(expect="increase"))
    _, _, facts = verified.verified_units(record, context, "heads", "verified",
                                          lambda unit: Variant(unit[0], "z", head=unit[1]), lambda unit: f"{unit[0]}.{unit[1]}")
    assert context.methods[0] == chosen and set(context.methods[1:]) == {"exact"}
    assert facts["screened_by"] == chosen


def test_an_atp_screen_without_graddrop_is_the_size_of_the_atp_estimate():
    from mechir_axioms.patching.result import PatchResult

    rng = np.random.default_rng(0)
    def result(effects, receiver, donor):
        return PatchResult("heads", "attribution", effects, ("pair", "layer", "head"), receiver, donor,
                           0, 1e-3, {}, {})
    receiver, donor = np.zeros(6), np.linspace(1, 2, 6)
    denoising = result(rng.normal(size=(6, 2, 3)), receiver, donor)
    noising = result(rng.normal(size=(6, 2, 3)), donor, receiver)
    signed, values = REAL_SCREEN(denoising, noising, "increase")
    assert denoising.dropped is None
    np.testing.assert_array_equal(values, np.abs(signed))
    assert (values > 0).all()


def test_a_bound_just_below_the_threshold_is_not_printed_as_the_threshold():
    import pandas as pd

    from mechir_axioms.auditing.steps.heads import verified_summary
    from mechir_axioms.results.text import shown_bound

    assert shown_bound(0.0499, 0.05) == "0.0499" and shown_bound(0.039, 0.05) == "0.039"
    facts = {"verification": {"verified": ["3.7"], "missed_flag_bound": 0.0499, "bound_below_threshold": True,
                              "budget": 48}}
    line = verified_summary("head", "verification")(pd.DataFrame({"flag": ["violates"]}), facts, {"threshold": 0.05})
    assert "missed-flag bound 0.0499, below the threshold 0.05" in line
