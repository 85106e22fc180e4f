"""Audits on a local Ray cluster (2 CPUs): every frame and checkpoint equals a one-process run, bitwise, and a
worker killed midway is replaced with nothing lost and nothing counted twice. Tests that start a cluster carry
the `ray` marker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mechir_axioms import RayExecutor, SettingsError, audit
from mechir_axioms.auditing.checkpoints import Checkpoints
from processes import kill_once_written

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

FRAMES = ("axioms", "heads", "cells", "blocks", "pairs")
OPTIONS = {"axioms": ["TFC1"], "n": 40, "method": "verified", "cell_pairs": 8, "examples": 0, "stability": 2,
           "progress": False}
CLI_OPTIONS = ["--axioms", "TFC1", "--n", "40", "--method", "verified", "--cell-pairs", "8", "--examples", "0",
               "--stability", "2"]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data_file(short_frame, tmp_path_factory) -> str:
    """Real TREC DL pairs with short passages, as a file the CLI reads too."""
    path = tmp_path_factory.mktemp("data") / "short.jsonl"
    short_frame.to_json(path, orient="records", lines=True)
    return str(path)


@pytest.fixture(scope="module")
def one_process(minilm, data_file, one_torch_thread, tmp_path_factory):
    """The reference: the audit in this process, with one torch thread like each worker below."""
    return audit(minilm, data=data_file, folder=tmp_path_factory.mktemp("local") / "audit", **OPTIONS)


def _same_everywhere(ours, reference) -> None:
    """Every frame, the attention plots, the manifest's numbers and every checkpointed array, bitwise."""
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(ours, name), getattr(reference, name), check_exact=True)
    assert ours.attention == reference.attention
    for key in ("axioms", "examples", "settings"):
        assert ours.manifest[key] == reference.manifest[key]
    ours_work, reference_work = Path(ours.folder) / "work", Path(reference.folder) / "work"
    arrays = sorted(path.relative_to(reference_work) for path in reference_work.rglob("effects.npz"))
    assert arrays == sorted(path.relative_to(ours_work) for path in ours_work.rglob("effects.npz"))
    for relative in arrays:
        with np.load(ours_work / relative) as mine, np.load(reference_work / relative) as theirs:
            assert sorted(mine.files) == sorted(theirs.files)
            for key in theirs.files:
                np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{relative}:{key}")


@pytest.mark.ray
def test_ray_audit_equals_one_process_bitwise_though_a_worker_is_killed(ray_cluster, minilm, data_file, one_process,
                                                                       tmp_path, monkeypatch):
    """Two workers of one thread each; one is SIGKILLed once the first chunk is back. Ray restarts it and reruns
    its chunks; every frame and checkpoint still equals the one-process run's bit for bit, and each chunk is
    written once."""
    folder = tmp_path / "killed-worker"
    stored: list[tuple[str, float]] = []
    store = Checkpoints.store

    def counting(self, axiom, name, result):
        stored.append((name, time.monotonic()))
        store(self, axiom, name, result)

    monkeypatch.setattr(Checkpoints, "store", counting)
    executor = RayExecutor(workers=2, threads=1)
    first_chunk = folder / "work" / "TFC1" / "heads-screen-to_baseline"
    killed: dict[str, float] = {}

    def kill_a_worker_midway() -> None:
        deadline = time.monotonic() + 120
        while not list(first_chunk.rglob("result.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        killed["pid"] = executor.described[0]["pid"]
        os.kill(killed["pid"], signal.SIGKILL)
        killed["at"] = time.monotonic()

    with executor:
        killer = threading.Thread(target=kill_a_worker_midway)
        killer.start()
        ours = audit(minilm, data=data_file, folder=folder, executor=executor, **OPTIONS)
        killer.join()
        replaced = ray_cluster.get(executor.actors[0].describe.remote())["pid"]
        workers = executor.described
    assert len({worker["pid"] for worker in workers}) == 2 and os.getpid() not in {w["pid"] for w in workers}
    assert {worker["threads"] for worker in workers} == {1} and {worker["device"] for worker in workers} == {"cpu"}
    assert ours.manifest["executor"] == {"name": "ray", "workers": 2, "devices": ["cpu"], "threads": [1]}
    assert one_process.manifest["executor"] == {"name": "local"}
    assert "at" in killed and replaced != killed["pid"], "the worker was not killed, or not replaced"
    assert any(moment > killed["at"] for _, moment in stored), "the worker was killed after the last chunk"
    names = [name for name, _ in stored]
    assert len(names) == len(set(names)), "a chunk was written twice"
    _same_everywhere(ours, one_process)


@pytest.mark.ray
def test_killed_driver_resumes_on_ray_to_the_same_results(ray_cluster, data_file, one_process, tmp_path):
    """`mechir-axioms audit --executor ray --ray-address A`, its driver killed midway, then `--resume`d on the
    same cluster: every frame equals the one-process run's bitwise, and no finished checkpoint is recomputed.
    OMP_NUM_THREADS=1 gives the CLI one torch thread, so its workers run one thread each, as the reference did."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed-driver"
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "mechir_axioms.cli", "audit", *CLI_OPTIONS, "--data", data_file, "--executor", "ray",
               "--ray-address", address, "--out", str(killed)]
    checkpoint = killed / "work" / "TFC1" / "heads-screen-to_baseline" / "chunk-0000" / "result.json"
    kill_once_written(command, checkpoint, env=environment)
    assert checkpoint.exists() and not (killed / "manifest.json").exists(), "the audit was not killed midway"
    stamps = {path: path.stat().st_mtime_ns for path in (killed / "work").rglob("result.json")}
    subprocess.run([*command, "--resume"], check=True, env=environment, capture_output=True)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items()), "resume recomputed a checkpoint"
    for name in FRAMES:
        pd.testing.assert_frame_equal(pd.read_parquet(killed / f"{name}.parquet"),
                                      pd.read_parquet(Path(one_process.folder) / f"{name}.parquet"), check_exact=True)


@pytest.mark.ray
def test_sweep_runs_its_variants_on_one_set_of_workers(ray_cluster, minilm, short_frame, one_torch_thread):
    from mechir_axioms import sweep

    options = {"n": 8, "targets": ("heads",), "method": "attribution", "stability": 0, "progress": False}
    vary = {"filler": ["the"]}
    local = sweep(minilm, "TFC1", vary, short_frame, **options)
    with RayExecutor(workers=2, threads=1) as executor:
        distributed = sweep(minilm, "TFC1", vary, short_frame, executor=executor, **options)
        assert len(executor.described) == 2
    pd.testing.assert_frame_equal(distributed.variants, local.variants, check_exact=True)
    for key, result in local.audits.items():
        pd.testing.assert_frame_equal(distributed.audits[key].heads, result.heads, check_exact=True)


@pytest.mark.ray
def test_ray_workers_share_clean_runs_and_match_one_process(ray_cluster, minilm, short_frame, one_torch_thread):
    """Each worker holds its own store of the bound size for its copy of the ranker: a chunk's second direction
    reuses the first's clean runs there, and every result equals the chunk patched in this process, bitwise."""
    from mechir_axioms import make_pairs
    from mechir_axioms.executing.jobs import Job, Task

    pairs = make_pairs("TFC1", short_frame, minilm, n=4, seed=2)
    tasks = [Task(pairs, direction) for direction in ("to_baseline", "to_perturbed")]
    job = Job("heads", "attribution", 4, 1e-3)
    with RayExecutor(workers=1, threads=1) as executor:
        executor.bind(minilm, clean_run_bytes=2**28)
        results = dict(executor.run(job, tasks))
        facts = ray_cluster.get(executor.actors[0].describe.remote())
    assert facts["clean_run_bytes"] == 2**28 and facts["clean_run_hits"] == 1
    for index, task in enumerate(tasks):
        np.testing.assert_array_equal(results[index].effects, job.run(minilm, task.pairs, task.direction).effects)


@pytest.mark.ray
def test_a_cluster_too_small_for_the_workers_is_refused_not_waited_for(ray_cluster, minilm):
    executor = RayExecutor(workers=3, threads=1)  # the cluster has 2 CPUs
    executor.bind(minilm)
    with pytest.raises(SettingsError, match="workers=3 x threads=1 needs 3 CPUs, but the Ray cluster has 2"):
        executor.start()
    assert executor.actors == []


def test_the_cli_offers_every_registered_executor():
    from mechir_axioms.core.defaults import EXECUTORS as OFFERED
    from mechir_axioms.executing.registry import EXECUTORS

    assert tuple(EXECUTORS) == OFFERED


def test_without_ray_one_sentence_says_how_to_install_it(monkeypatch, minilm):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SettingsError, match=r"pip install 'mechir-axioms\[ray\]'"):
        audit(minilm, ["TFC1"], n=4, executor="ray", progress=False)
    with pytest.raises(SettingsError, match="executor='dask' is not valid; use one of local, ray"):
        audit(minilm, ["TFC1"], n=4, executor="dask", progress=False)


def test_cli_refuses_ray_options_without_ray_and_bad_worker_counts(capsys):
    from mechir_axioms.cli import main

    assert main(["audit", "--workers", "2", "--out", "never-written"]) == 2
    assert "--workers applies to --executor ray only" in capsys.readouterr().err
    assert main(["audit", "--executor", "ray", "--workers", "0", "--out", "never-written"]) == 2
    assert "workers=0 is not valid; use an integer of at least 1" in capsys.readouterr().err
    assert not Path("never-written").exists()
