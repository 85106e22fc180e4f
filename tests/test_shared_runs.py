"""Work an audit does once instead of several times: clean runs shared between directions and between the
AtP* screen and the exact verification, and scoring in batches of similar length. Numbers must not move."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest
import torch

from mechir_axioms import make_pairs, patch
from mechir_axioms.auditing import run
from mechir_axioms.models.interventions import intervene
from mechir_axioms.patching.runs import CleanRunStore, sharing_clean_runs


def test_audit_with_shared_runs_is_identical_and_shares(minilm, short_frame, monkeypatch):
    """The verified audit (screen and verification, both directions, cells) gives bit-identical frames with
    and without sharing, and the sharing is real: runs are reused."""
    options = dict(axioms=["TFC1"], data=short_frame, n=16, method="verified", cell_pairs=6, examples=1,
                   stability=2, progress=False)
    stores: list[CleanRunStore] = []

    @contextlib.contextmanager
    def watched():
        with sharing_clean_runs() as store:
            stores.append(store)
            yield store

    monkeypatch.setattr(run, "sharing_clean_runs", watched)
    shared = run.audit(minilm, **options)
    monkeypatch.setattr(run, "sharing_clean_runs", contextlib.nullcontext)
    plain = run.audit(minilm, **options)
    for frame in ("axioms", "heads", "cells", "blocks", "pairs"):
        pd.testing.assert_frame_equal(getattr(shared, frame), getattr(plain, frame), check_exact=True)
    assert stores and stores[0].hits > 0
    assert not stores[0].entries  # emptied on leaving
    seconds = shared.manifest["step_seconds"]["TFC1"]  # where the time went, step by step
    assert set(seconds) == {"pairs", "scores", "heads screen", "heads verification", "cells", "blocks"}
    assert all(value >= 0 for value in seconds.values()) and seconds["heads screen"] > 0
    assert "seconds" not in shared.manifest["axioms"]["TFC1"]["verification"]


def test_directions_share_runs_and_interventions_do_not(minilm, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=6, seed=3)
    alone = {direction: patch(minilm, pairs, "heads", batch_size=4, direction=direction, progress=False)
             for direction in ("to_baseline", "to_perturbed")}
    with sharing_clean_runs() as store:
        first = patch(minilm, pairs, "heads", batch_size=4, direction="to_baseline", progress=False)
        assert store.hits == 0
        second = patch(minilm, pairs, "heads", batch_size=4, direction="to_perturbed", progress=False)
        assert store.hits == 2  # two batches of 4 and 2 pairs
        with intervene(minilm, "0.1"):  # another model: nothing may be reused
            ablated = patch(minilm, pairs, "heads", batch_size=4, direction="to_baseline", progress=False)
        assert store.hits == 2
    with intervene(minilm, "0.1"):
        ablated_alone = patch(minilm, pairs, "heads", batch_size=4, direction="to_baseline", progress=False)
    np.testing.assert_array_equal(first.effects, alone["to_baseline"].effects)
    np.testing.assert_array_equal(second.effects, alone["to_perturbed"].effects)
    np.testing.assert_array_equal(ablated.effects, ablated_alone.effects)
    assert not np.array_equal(ablated.effects, first.effects, equal_nan=True)


def test_store_is_bounded_and_needs_the_names():
    def raw(elements: int):
        tensor = torch.zeros(elements)
        return (tensor, {"a": tensor}, [tensor]), (tensor, {"a": tensor}, [tensor]), None

    store = CleanRunStore(max_bytes=4 * 100 * 6)  # one entry of 100 float32 elements x 6 tensors
    store.put(("one",), raw(100))
    assert store.get(("one",), ["a"]) is not None
    assert store.get(("one",), ["a", "b"]) is None  # cached without "b": must run again
    store.put(("two",), raw(100))  # the least recently used goes
    assert store.get(("one",), ["a"]) is None and store.get(("two",), ["a"]) is not None
    store.put(("big",), raw(1000))  # larger than the bound: not kept, and nothing else lost
    assert store.get(("big",), ["a"]) is None and store.get(("two",), ["a"]) is not None


def test_scoring_in_length_order_keeps_pair_order(minilm, short_frame):
    """Scores come back in pair order: each equals the pair scored alone (float32, so within 1e-5)."""
    pairs = make_pairs("TFC1", short_frame, minilm, n=10, seed=5)
    lengths = pairs.tensors["length"]
    assert not torch.equal(torch.argsort(lengths, stable=True), torch.arange(len(pairs)))  # the order matters
    scored = pairs.score(minilm, batch_size=4)
    for row in range(len(pairs)):
        alone = pairs.take([row]).score(minilm)
        for column in ("baseline_score", "perturbed_score"):
            assert scored[column].iloc[row] == pytest.approx(alone[column].iloc[0], abs=1e-5)
