"""Issue 25, odds and ends: PyTerrier qids of mixed types rank per query, joining an unreachable Ray cluster gives up
after a bounded time, and reports of byte-level BPE models show tokens as text ("Ġthe" as " the")."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from mechir_axioms import DataError, SettingsError, make_pairs


@pytest.fixture(scope="module")
def bert(tiny):
    """A tiny random BERT cross-encoder with the MiniLM WordPiece vocabulary, and its folder."""
    return tiny("bert", "cross")


# 4. RankerTransformer: qids '1' and 1 are one query

def test_pyterrier_qids_of_mixed_types_are_one_query(bert):
    pytest.importorskip("pyterrier")
    from mechir_axioms.pyterrier import RankerTransformer

    ranker, _ = bert
    frame = pd.DataFrame({
        "qid": ["1", 1, "1", 2.0, 2],
        "query": ["cheap flights"] * 3 + ["red wine"] * 2,
        "docno": ["d1", "d2", "d3", "d4", "d5"],
        "text": ["cheap flights to paris", "flights are cheap", "wine and cheese", "red wine list", "flights"],
    }, dtype=object)
    ranked = RankerTransformer(ranker)(frame)
    assert ranked["qid"].tolist() == ["1", "1", "1", "2", "2"]
    assert sorted(ranked.loc[:2, "rank"]) == [0, 1, 2] and sorted(ranked.loc[3:, "rank"]) == [0, 1]
    for _, group in ranked.groupby("qid"):
        assert group.sort_values("rank")["score"].is_monotonic_decreasing
    text_qids = RankerTransformer(ranker)(frame.assign(qid=["1", "1", "1", "2", "2"]))
    assert text_qids["rank"].tolist() == ranked["rank"].tolist()
    with pytest.raises(DataError, match=r"row 1 \(docno 'd2'\): qid is missing; every row needs its qid as text or an "
                                        r"integer"):
        RankerTransformer(ranker)(frame.assign(qid=["1", None, "1", "2", "2"]))
    with pytest.raises(DataError, match=r"row 3 \(docno 'd4'\): qid is 2.5; every row"):
        RankerTransformer(ranker)(frame.assign(qid=["1", "1", "1", 2.5, "2"]))


# 5. Ray: a bounded wait for the cluster at --ray-address

def test_ray_connect_timeout_is_a_setting_and_a_flag():
    pytest.importorskip("ray")
    from mechir_axioms.cli import parser
    from mechir_axioms.cli.commands import _executor
    from mechir_axioms.executing.cluster import CONNECT_TIMEOUT, RayExecutor

    assert RayExecutor().connect_timeout == CONNECT_TIMEOUT == 30
    for bad in (0, -1, float("inf"), float("nan"), "30", True):
        with pytest.raises(SettingsError, match=r"connect_timeout=.* is not valid; use a number of seconds above 0"):
            RayExecutor(connect_timeout=bad)
    given = parser().parse_args(["audit", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--ray-timeout", "3"])
    assert _executor(given).connect_timeout == 3
    assert _executor(parser().parse_args(["audit", "--executor", "ray"])).connect_timeout == CONNECT_TIMEOUT
    with pytest.raises(SystemExit):
        parser().parse_args(["audit", "--ray-timeout", "0"])


CONNECT = """
import sys, time
from mechir_axioms import WorkerError, load_ranker
from mechir_axioms.executing.cluster import RayExecutor

executor = RayExecutor("127.0.0.1:1", connect_timeout=float(sys.argv[2]))
executor.bind(load_ranker(sys.argv[1]))
print("connecting", flush=True)
started = time.monotonic()
try:
    executor.start()
except WorkerError as error:
    print(f"{time.monotonic() - started:.2f}", error, sep="\\n", flush=True)
"""


def _without_ray_address() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}


@pytest.mark.ray
def test_joining_an_unreachable_ray_address_gives_up_after_the_timeout(bert):
    """Without a bound Ray retries 'Failed to connect to GCS' for many minutes."""
    pytest.importorskip("ray")
    _, folder = bert
    done = subprocess.run([sys.executable, "-c", CONNECT, str(folder), "3"], capture_output=True, text=True,
                          timeout=150, env=_without_ray_address())
    lines = done.stdout.splitlines()
    assert lines[:1] == ["connecting"] and len(lines) == 3, done.stderr[-2000:]
    assert 3 <= float(lines[1]) < 10
    assert lines[2] == ("cannot reach a Ray cluster at 127.0.0.1:1 within 3 seconds (connect_timeout, --ray-timeout); "
                        "check the address and that `ray start --head` runs there, or allow longer")


@pytest.mark.ray
def test_sigterm_ends_a_process_waiting_for_a_ray_cluster_at_once(bert):
    """The issue: SIGTERM took 36 s to act while ray.init retried inside native code."""
    pytest.importorskip("ray")
    _, folder = bert
    process = subprocess.Popen([sys.executable, "-c", CONNECT, str(folder), "60"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=_without_ray_address())
    try:
        assert process.stdout.readline() == "connecting\n"
        time.sleep(2)  # inside the wait for the cluster
        process.terminate()
        started = time.monotonic()
        process.wait(timeout=30)
        assert time.monotonic() - started < 5
    finally:
        process.kill()
        process.wait()


@pytest.mark.ray
def test_the_cli_ray_timeout_bounds_the_wait_for_ray_address(bert, tmp_path):
    """The issue's command, with --ray-timeout 3: exit status 2 and one sentence naming the address and timeout."""
    pytest.importorskip("ray")
    _, folder = bert
    command = [sys.executable, "-m", "mechir_axioms.cli", "audit", "--executor", "ray", "--ray-address", "127.0.0.1:1",
               "--ray-timeout", "3", "--model", str(folder), "--axioms", "TFC1", "--n", "4", "--targets", "heads",
               "--method", "exact", "--stability", "0", "--examples", "0", "--out", str(tmp_path / "audit")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=_without_ray_address())
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("mechir-axioms: error: cannot reach a Ray cluster at 127.0.0.1:1 within 3 seconds (connect_timeout, "
            "--ray-timeout); check the address and that `ray start --head` runs there, or allow longer"
            ) in done.stderr.splitlines()  # Ray's own log lines may follow it


# 6. Report tokens: byte-level BPE decoded, WordPiece as it is

def test_byte_level_bpe_tokens_are_shown_as_text(decoder_model):
    from mechir_axioms import load_ranker
    from mechir_axioms.auditing.examples import byte_level, pair_tokens

    ranker = load_ranker(decoder_model("qwen3", "causal-lm"))
    assert byte_level(ranker.tokenizer)
    pairs = make_pairs("TFC1", ranker=ranker, n=2)
    baseline, perturbed = pair_tokens(ranker, pairs, 0)
    length = int(pairs.tensors["length"][0])
    ids = pairs.tensors["perturbed_input_ids"][0, :length].tolist()
    raw = ranker.tokenizer.convert_ids_to_tokens(ids)
    assert any(token.startswith("Ġ") for token in raw), "the fixture's raw tokens carry the space marker"
    assert not any("Ġ" in token or "Ċ" in token for token in perturbed + baseline)
    assert any(token.startswith(" ") and token.strip() for token in perturbed)
    assert "".join(perturbed) == ranker.tokenizer.decode(ids)  # one decoded token per position, nothing lost
    assert len(perturbed) == len(baseline) == length
    assert ([a != b for a, b in zip(perturbed, baseline)]
            == [a != b for a, b in zip(raw, ranker.tokenizer.convert_ids_to_tokens(
                pairs.tensors["baseline_input_ids"][0, :length].tolist()))])  # the same positions count as changed


def test_wordpiece_tokens_are_shown_as_before(bert):
    from mechir_axioms.auditing.examples import byte_level, pair_tokens

    ranker, _ = bert
    assert not byte_level(ranker.tokenizer)
    pairs = make_pairs("TFC1", ranker=ranker, n=2)
    baseline, perturbed = pair_tokens(ranker, pairs, 0)
    length = int(pairs.tensors["length"][0])
    assert perturbed == ranker.tokenizer.convert_ids_to_tokens(pairs.tensors["perturbed_input_ids"][0, :length].tolist())
    assert baseline == ranker.tokenizer.convert_ids_to_tokens(pairs.tensors["baseline_input_ids"][0, :length].tolist())
    assert perturbed[0] == "[CLS]"
