"""Path patching: the batched engine equals the literal two-pass reference in float64, on every ranker kind, and
the invariants that pin its definition hold: a sender into "all" receivers is plain activation patching of the
sender, an empty receiver set gives 0, and receivers before the sender receive nothing."""

from __future__ import annotations

import numpy as np
import pytest

from mechir_axioms import load_ranker, make_pairs, patch
from mechir_axioms.core.errors import SettingsError
from mechir_axioms.patching.naive import patch_paths_naive
from mechir_axioms.patching.paths import PathSpec, Receiver, patch_paths

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

TOLERANCE = 1e-9

# name -> (how to get its folder from the session fixtures, kind, delta: tiny random models barely move)
KINDS = {
    "minilm": (lambda get: None, "bi", 1e-3),
    "cross-encoder": (lambda get: get("cross_encoder_path"), "cross", 1e-3),
    "t5": (lambda get: get("tiny")("t5", "t5")[1], "t5", 1e-9),
    "llm-qwen3": (lambda get: get("decoder_model")("qwen3", "causal-lm"), "llm", 1e-9),
    "bi-last-qwen3": (lambda get: get("decoder_model")("qwen3", "base"), "bi", 1e-9),
    "sparse-splade": (lambda get: get("splade_real_path"), "sparse", 1e-9),
    "late-colbert": (lambda get: get("colbert_path"), "late", 1e-9),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Small models and three short pairs: one intra-op thread (see conftest's one_torch_thread)."""


@pytest.fixture(scope="module")
def case(request, short_frame):
    """case(name) -> (float64 ranker, 3 TFC1 pairs, delta), built once per module."""
    built = {}

    def get(name: str):
        if name not in built:
            locate, kind, delta = KINDS[name]
            folder = locate(request.getfixturevalue)
            ranker = load_ranker() if folder is None else load_ranker(folder)
            assert ranker.kind == kind
            ranker.model.double()
            built[name] = (ranker, make_pairs("TFC1", short_frame, ranker, n=3, seed=11), delta)
        return built[name]

    return get


def _senders(ranker) -> list[tuple[int, int]]:
    """A few senders across the stack: the first, a middle and the last layer."""
    last = ranker.n_layers - 1
    return sorted({(0, 1 % ranker.n_heads), (last // 2, 0), (last, ranker.n_heads - 1)})


@pytest.mark.parametrize("name", list(KINDS))
def test_all_receivers_equal_activation_patching(case, name):
    ranker, pairs, delta = case(name)
    senders = [(layer, head) for layer in range(ranker.n_layers) for head in (0, ranker.n_heads - 1)]
    paths = patch_paths(ranker, pairs, senders, "all", batch_size=4, delta=delta, progress=False)
    heads = patch(ranker, pairs, "heads", batch_size=4, delta=delta, progress=False)
    expected = heads.effects[:, [layer for layer, _ in senders], [head for _, head in senders]]
    assert paths.included.any(), "some pair must be patched"
    assert paths.effects.shape == (len(pairs), len(senders))
    assert np.array_equal(np.isnan(paths.effects), np.isnan(expected))
    assert np.nanmax(np.abs(paths.effects - expected)) <= TOLERANCE
    assert np.nanmax(np.abs(paths.effects)) > 0


@pytest.mark.parametrize("name", list(KINDS))
def test_batched_equals_naive_and_empty_gives_zero(case, name):
    ranker, pairs, delta = case(name)
    senders = _senders(ranker)
    # Left-padded decoders shift RoPE positions with the padding, which moves float64 scores by ~1e-7 between
    # a padded batch and a single row (patch() shows the same): compare them one pair per batch.
    batch_size = 1 if ranker.tokenizer.padding_side == "left" else 3
    last = ranker.n_layers - 1
    receivers = {"final": "final", "heads": [(last, 0), (max(last - 1, 1), 1 % ranker.n_heads)],
                 "q and final": [(last, 0, "q"), "final"], "empty": []}
    for label, receiving in receivers.items():
        fast = patch_paths(ranker, pairs, senders, receiving, batch_size=batch_size, delta=delta, progress=False)
        naive = patch_paths_naive(ranker, pairs, senders, receiving, delta=delta)
        assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects)), label
        difference = float(np.nanmax(np.abs(fast.effects - naive.effects)))
        print(f"\n[paths vs naive] {name:14s} {label:12s} max |diff| {difference:.2e}")
        assert difference <= TOLERANCE, label
        if label == "empty":
            assert np.all(fast.effects[fast.included] == 0)
        elif label in ("final", "q and final"):
            assert np.nanmax(np.abs(fast.effects)) > 0, label


def test_paths_sharing_a_sender_pass_equal_the_reference_one_by_one(case):
    """An audit's edge list: each sender into the score and into single heads, sharing one sender pass, next to
    receiver sets that keep a head live; each column equals the reference for its receiver set alone."""

    ranker, pairs, delta = case("minilm")
    senders = [(0, 1), (2, 5), (3, 2)]
    sets = [("final",), ((3, 2),), ((4, 4),), ((4, 4, "q"), "final"), ((3, 7), (5, 1))]
    parsed = {index: tuple(Receiver(ranker.n_layers) if item == "final" else Receiver(item[0], item[1],
                                                                                      tuple(item[2]) if len(item) == 3 else ("q", "k", "v"))
                           for item in receivers) for index, receivers in enumerate(sets)}
    paths = [PathSpec(sender, parsed[index]) for sender in senders for index in parsed]
    fast = patch_paths(ranker, pairs, paths, batch_size=4, delta=delta, progress=False)
    for index, receivers in enumerate(sets):
        naive = patch_paths_naive(ranker, pairs, senders, list(receivers), delta=delta)
        columns = [i for i, path in enumerate(paths) if path.receivers == parsed[index]]
        assert np.nanmax(np.abs(fast.effects[:, columns] - naive.effects)) <= TOLERANCE, receivers


def test_receivers_before_the_sender_receive_nothing(case):
    ranker, pairs, delta = case("minilm")
    late = patch_paths(ranker, pairs, [(4, 3), (5, 0)], [(3, 2), (4, 3)], delta=delta, progress=False)
    assert np.all(late.effects[late.included] == 0)  # (4, 3) and (5, 0) reach neither (3, 2) nor (4, 3) itself


def test_a_head_receiver_carries_part_of_the_direct_route(case):
    """Into one later head, a sender passes on part of what it passes to the score; the sum over every later
    head and the final stream (each alone) is not the total, but each path stays within the total's order."""
    ranker, pairs, delta = case("minilm")
    total = patch_paths(ranker, pairs, [(2, 5)], "all", delta=delta, progress=False).effects[:, 0]
    direct = patch_paths(ranker, pairs, [(2, 5)], "final", delta=delta, progress=False).effects[:, 0]
    assert not np.allclose(total[~np.isnan(total)], direct[~np.isnan(direct)])  # later heads matter


def test_bad_senders_and_receivers(case):
    ranker, pairs, _ = case("minilm")
    for senders, receivers, message in [
        ([(9, 0)], "final", "does not exist"),
        ("everything", "final", "senders="),
        ([(0, 0)], "the score", "receivers="),
        ([(0, 0)], [(5, 0, "x")], "not valid"),
        ([], "final", "senders is empty"),
    ]:
        with pytest.raises(SettingsError, match=message):
            patch_paths(ranker, pairs, senders, receivers, progress=False)
    with pytest.raises(SettingsError, match="method='attribution' cannot measure target 'paths'; methods that can: exact"):
        patch_paths(ranker, pairs, [(0, 0)], "final", method="attribution", progress=False)
    path = PathSpec((0, 0), (Receiver(ranker.n_layers),))
    with pytest.raises(SettingsError, match="with a list of PathSpec, which name their own receivers"):
        patch_paths(ranker, pairs, [path], "final", progress=False)
    with pytest.raises(SettingsError, match="senders mixes PathSpec and"):
        patch_paths(ranker, pairs, [path, (0, 1)], progress=False)


def test_both_forms_are_one_verb(case):
    """Senders into one receiver set give what the same paths given as PathSpec give, labelled by sender."""
    ranker, pairs, delta = case("minilm")
    senders = [(0, 1), (3, 2)]
    by_sender = patch_paths(ranker, pairs, senders, [(4, 4, "q"), "final"], delta=delta, progress=False)
    receivers = (Receiver(4, 4, ("q",)), Receiver(ranker.n_layers))
    by_path = patch_paths(ranker, pairs, [PathSpec(sender, receivers) for sender in senders], delta=delta,
                          progress=False)
    np.testing.assert_array_equal(by_sender.effects, by_path.effects)
    assert by_sender.dims == ("pair", "sender") and by_sender.labels["sender"] == ["0.1", "3.2"]
    assert by_path.dims == ("pair", "path") and by_path.labels["path"] == ["0.1>4.4.q,score", "3.2>4.4.q,score"]
    assert by_path.target == by_sender.target == "paths" and by_path.method == "exact"


# --- the audit's paths step, its report and its figure ------------------------------------------------------
@pytest.fixture(scope="module")
def path_audit(minilm, short_frame, tmp_path_factory):
    """A small real audit with paths: attribution heads on 32 TFC1 pairs (flags 4.6 and 4.9), paths (exact) on 6."""
    from mechir_axioms import audit

    folder = tmp_path_factory.mktemp("paths") / "audit"
    result = audit(minilm, ["TFC1"], short_frame, n=32, targets=("heads", "paths"), method="attribution",
                   cell_pairs=6, path_pairs=6, threshold=0.02, stability=0, folder=folder, progress=False)
    return result, folder


def test_audit_paths_are_the_edges_into_flagged_heads_and_the_score(path_audit, minilm, short_frame):
    from mechir_axioms.analysis.findings import symmetric_change
    from mechir_axioms.auditing.context import sample_rows as _cell_rows
    from mechir_axioms.auditing.verified import share

    result, _ = path_audit
    receivers = sorted((int(r.layer), int(r.head)) for r in result.flagged("TFC1").itertuples())
    assert receivers, "the audit must flag a head for this test to check edges into it"
    expected = 72 + sum(12 * layer for layer, _ in receivers)
    facts = result.manifest["axioms"]["TFC1"]["paths"]
    assert len(result.paths) == facts["edges"] == expected
    assert facts["receivers"] == [f"{l}.{h}" for l, h in receivers] + ["score"]
    into_score = result.paths[result.paths["receiver"] == "score"]
    assert len(into_score) == 72 and (into_score["receiver_layer"] == minilm.n_layers).all()
    for layer, head in receivers:
        into = result.paths[result.paths["receiver"] == f"{layer}.{head}"]
        assert (into["sender_layer"] < layer).all() and len(into) == 12 * layer
    # the audit's edge effects are the symmetric share of patch_paths's own effects on the same pairs
    pairs = make_pairs("TFC1", short_frame, minilm, n=32, seed=0).take(_cell_rows(32, 6, 0))
    paths = [PathSpec((3, 2), (Receiver(minilm.n_layers),)), PathSpec((5, 0), (Receiver(minilm.n_layers),))]
    runs = [patch_paths(minilm, pairs, paths, batch_size=8, direction=d, delta=1e-3, progress=False)
            for d in ("to_baseline", "to_perturbed")]
    change, size = symmetric_change(*runs, "increase")
    shares = share(change, size)
    stored = into_score.set_index("sender")["effect"]
    assert np.allclose([stored["3.2"], stored["5.0"]], shares, rtol=0, atol=1e-6)


def test_paths_survive_save_and_load_and_old_audits_still_load(path_audit, tmp_path):
    import shutil

    from mechir_axioms import load_audit

    result, folder = path_audit
    loaded = load_audit(folder)
    assert loaded.paths.equals(result.paths)
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    import json

    (old / "paths.parquet").unlink()  # an audit saved before paths existed: no paths file, targets in its settings
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["settings"].pop("steps")
    manifest["settings"]["targets"] = ["heads"]  # this audit ran heads (and paths), no blocks
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_audit(old).paths.empty


def test_report_draws_the_circuit_and_the_figure_command_writes_it(path_audit, tmp_path):
    from xml.etree import ElementTree

    from mechir_axioms.cli import main

    result, folder = path_audit
    report = (folder / "report.html").read_text()
    assert "Circuit: paths from every head" in report and 'aria-label="TFC1 circuit"' in report
    flagged_edges = int((result.paths["flag"] != "").sum())
    svg = tmp_path / "circuit.svg"  # 6 path pairs may flag no edge: draw the 2 strongest unflagged ones too
    assert main(["figure", str(folder), "--axioms", "TFC1", "--frame", "circuit", "--unflagged", "2",
                 "--out", str(svg)]) == 0
    root = ElementTree.parse(svg).getroot()  # well-formed, standalone SVG
    namespace = "{http://www.w3.org/2000/svg}"
    paths = root.findall(f"{namespace}path")
    assert len(paths) == flagged_edges + 2 and sum(bool(path.get("stroke-dasharray")) for path in paths) == 2
    labels = {text.text for text in root.iter(f"{namespace}text")}
    assert "score" in labels and {row.name for row in result.flagged("TFC1").itertuples()} <= labels
    assert main(["figure", str(folder), "--axioms", "TFC1", "--frame", "circuit", "--out", str(tmp_path / "c.png")]) == 2


def test_a_circuit_without_flagged_edges_is_refused_or_drawn_dashed_on_request(path_audit, tmp_path):
    """No flagged edge, no circuit: the figure is refused with the strongest edges named, and nothing is written;
    asked for the strongest unflagged edges, it draws them dashed, with a legend that says they are not findings."""
    import shutil
    from xml.etree import ElementTree

    import pandas as pd

    from mechir_axioms.cli import main
    from mechir_axioms.plot import write_circuit

    _, folder = path_audit
    unflagged = tmp_path / "unflagged"
    shutil.copytree(folder, unflagged)
    paths = pd.read_parquet(unflagged / "paths.parquet")
    paths.assign(flag="").to_parquet(unflagged / "paths.parquet")
    svg = tmp_path / "circuit.svg"
    with pytest.raises(SettingsError, match="no edge of TFC1 is flagged, so there is no circuit to draw; its "
                                            "strongest edges are .+ \\([+-]0\\.\\d{3}\\)"):
        write_circuit(unflagged, "TFC1", [svg])
    assert not svg.exists()
    assert main(["figure", str(unflagged), "--axioms", "TFC1", "--frame", "circuit", "--out", str(svg)]) == 2
    assert main(["figure", str(unflagged), "--axioms", "TFC1", "--frame", "circuit", "--unflagged", "3",
                 "--out", str(svg)]) == 0
    namespace = "{http://www.w3.org/2000/svg}"
    root = ElementTree.parse(svg).getroot()
    dashed = [path for path in root.findall(f"{namespace}path") if path.get("stroke-dasharray")]
    assert len(dashed) == len(root.findall(f"{namespace}path")) == 3
    legend = [text.text for text in root.iter(f"{namespace}text") if text.text and text.text.startswith("Arrows")]
    assert legend and "dashed: the 3 strongest unflagged edge(s), not findings" in legend[0]


def test_paths_need_heads(minilm):
    from mechir_axioms import audit

    with pytest.raises(SettingsError, match="paths needs heads too \\(use heads,paths\\)"):
        audit(minilm, ["TFC1"], steps=("paths",))


def test_the_circuit_opens_in_chromium(path_audit):
    from browser import chromium, open_page

    result, folder = path_audit
    report = folder / "report.html"
    with chromium() as browser:
        page, errors, _ = open_page(browser, report)
        nodes = page.locator("svg.circuit g rect").count()
        box = page.locator("svg.circuit").bounding_box()
        hover = page.locator("svg.circuit g title").first.text_content()
    assert errors == []
    assert nodes == len(result.flagged("TFC1")) + len({*result.flagged("TFC1", frame="paths")["sender"]} -
                                                       {*result.flagged("TFC1")["name"]}) + 1  # + the score
    assert box is not None and box["width"] > 400 and box["height"] > 40
    assert "effect" in hover and "q =" in hover
