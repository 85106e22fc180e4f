"""Work done once instead of several times: clean runs shared through an explicit `CleanRuns` store (between
directions, and between the AtP* screen and the exact verification, in one process or per worker), and scoring
in batches of similar length. Numbers must not move."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from mechir_axioms import LocalExecutor, SettingsError, make_pairs, patch
from mechir_axioms.core.defaults import CLEAN_RUN_BYTES
from mechir_axioms.executing.jobs import Job, Task
from mechir_axioms.models.head_edits import intervene
from mechir_axioms.models.names import act_name
from mechir_axioms.patching.plan import Variant
from mechir_axioms.patching.runs import CleanRuns


@pytest.mark.slow
def test_directions_share_runs_and_interventions_do_not(minilm, short_frame):
    pairs = make_pairs("TFC1", short_frame, minilm, n=6, seed=3)
    alone = {direction: patch(minilm, pairs, "heads", batch_size=4, direction=direction, progress=False)
             for direction in ("to_baseline", "to_perturbed")}
    store = CleanRuns()
    first = patch(minilm, pairs, "heads", batch_size=4, direction="to_baseline", progress=False, clean_runs=store)
    assert store.hits == 0
    second = patch(minilm, pairs, "heads", batch_size=4, direction="to_perturbed", progress=False, clean_runs=store)
    assert store.hits == 2  # two batches of 4 and 2 pairs
    with intervene(minilm, "0.1"):  # another model: nothing may be reused
        ablated = patch(minilm, pairs, "heads", batch_size=4, direction="to_baseline", progress=False,
                        clean_runs=store)
        assert store.hits == 2
        ablated_alone = patch(minilm, pairs, "heads", batch_size=4, direction="to_baseline", progress=False)
    np.testing.assert_array_equal(first.effects, alone["to_baseline"].effects)
    np.testing.assert_array_equal(second.effects, alone["to_perturbed"].effects)
    np.testing.assert_array_equal(ablated.effects, ablated_alone.effects)
    assert not np.array_equal(ablated.effects, first.effects, equal_nan=True)


def test_local_executor_chunks_share_one_store_with_identical_results(minilm, short_frame):
    """An audit's pattern, chunk by chunk on a LocalExecutor: a screen (AtP) in both directions, then the exact
    verification of some heads. The chunks reuse the executor's store, and every result equals the chunk run
    with no store, bit for bit."""
    pairs = make_pairs("TFC1", short_frame, minilm, n=8, seed=4)
    tasks = [Task(pairs.take(range(start, start + 4)), direction)
             for start in (0, 4) for direction in ("to_baseline", "to_perturbed")]
    variants = tuple(Variant(layer, act_name("z", layer), head=head) for layer, head in ((1, 3), (4, 5)))
    jobs = [Job("heads", "attribution", 4, 1e-3), Job("heads", "exact", 4, 1e-3, variants)]
    with LocalExecutor() as executor:
        executor.bind(minilm)
        store = executor.clean_runs
        assert store is not None and store.max_bytes == CLEAN_RUN_BYTES and store.hits == 0
        shared = {job: dict(executor.run(job, tasks)) for job in jobs}
        assert store.hits == 6  # the second direction of each chunk, then both directions again when verifying
        executor.bind(minilm)  # the same ranker again: the store stays
        assert executor.clean_runs is store and store.hits == 6
        executor.bind(minilm, clean_run_bytes=2**20)  # another bound: a new store
        assert executor.clean_runs is not store and executor.clean_runs.max_bytes == 2**20
    for job in jobs:
        for index, task in enumerate(tasks):
            plain = job.run(minilm, task.pairs, task.direction)
            np.testing.assert_array_equal(shared[job][index].effects, plain.effects)
            np.testing.assert_array_equal(shared[job][index].receiver_score, plain.receiver_score)
            if plain.dropped is not None:
                np.testing.assert_array_equal(shared[job][index].dropped, plain.dropped)


def test_a_store_serves_one_ranker(minilm, tiny, short_frame):
    """Runs are never served to another ranker object: the store refuses it, until it is cleared."""
    other = tiny("bert", "cross")[0]
    pairs = make_pairs("TFC1", short_frame, other, n=2, seed=1)
    store = CleanRuns()
    store.check(minilm)
    with pytest.raises(SettingsError, match="this CleanRuns store holds runs of another ranker object"):
        patch(other, pairs, "mlp", progress=False, clean_runs=store)
    store.clear()
    patch(other, pairs, "mlp", progress=False, clean_runs=store)
    assert store.entries and store.held > 0
    with LocalExecutor() as executor:
        executor.bind(minilm)
        first = executor.clean_runs
        executor.bind(other)  # another ranker: a new store
        assert executor.clean_runs is not first


def test_a_ranker_gone_takes_its_runs_along():
    """A store whose ranker no longer exists serves nothing to the next one, even at the same address."""

    class Named:
        name = "stand-in"

    store = CleanRuns()
    gone = Named()
    store.check(gone)
    tensor = torch.zeros(10)
    store.put(("one",), ((tensor, {"a": tensor}, [tensor]), (tensor, {"a": tensor}, [tensor]), None))
    del gone
    gc.collect()
    store.check(Named())
    assert not store.entries and store.held == 0


def test_store_is_bounded_and_needs_the_names():
    def raw(elements: int):
        tensor = torch.zeros(elements)
        return (tensor, {"a": tensor}, [tensor]), (tensor, {"a": tensor}, [tensor]), None

    store = CleanRuns(max_bytes=4 * 100 * 6)  # one entry of 100 float32 elements x 6 tensors
    store.put(("one",), raw(100))
    assert store.get(("one",), ["a"]) is not None and store.held == 2400
    assert store.get(("one",), ["a", "b"]) is None  # cached without "b": must run again
    store.put(("two",), raw(100))  # the least recently used goes
    assert store.get(("one",), ["a"]) is None and store.get(("two",), ["a"]) is not None
    store.put(("big",), raw(1000))  # larger than the bound: not kept, and nothing else lost
    assert store.get(("big",), ["a"]) is None and store.get(("two",), ["a"]) is not None
    assert store.held == 2400
    for bad in (-1, 1.5, True):
        with pytest.raises(SettingsError, match=f"max_bytes={bad!r} is not valid"):
            CleanRuns(bad)


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
