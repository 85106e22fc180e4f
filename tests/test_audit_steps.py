"""Audit steps are registered, not wired: a throwaway step declared here, and nowhere else, is run by `audit`, saved,
loaded, shown in the report, drawn by `figure`, compared by `compare` and followed by `sweep`, with no edit to any
of those modules. It patches each layer's MLP output exactly, so its findings are real measurements."""

from __future__ import annotations

import pandas as pd
import pytest

from mechir_axioms import audit, compare, load_audit, sweep
from mechir_axioms.auditing.context import AuditContext, AxiomRecord, unit_labels
from mechir_axioms.auditing.registry import audit_step, unregister_step
from mechir_axioms.cli import main
from mechir_axioms.core.errors import SettingsError
from mechir_axioms.results.steps import STEPS

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

SMALL = dict(n=10, seed=0, threshold=0.0, stability=0, examples=0)
"""A cheap audit that still flags: the threshold 0 flags every layer whose MLP carries a significant share."""


@pytest.fixture(scope="module")
def toy_step():
    """The step `mlp`: each layer's MLP output patched exactly on every pair, both ways, with statistics and flags."""
    @audit_step("mlp", title="MLP layers", unit="MLP layer", target="mlp", method="exact", columns=("part", "layer"),
                grid=("layer", "part"), reads=("batch_size",), counts="mlp_",
                fields=("axiom", "layer", "part", "effect", "flag"))
    def mlp(context: AuditContext, records: list[AxiomRecord], frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
        changes, labels = {}, []
        for record in records:
            with context.timed(record, "mlp"):
                changes[record.name], run, _ = context.both_directions(record, "mlp", context.job("mlp", "exact"))
            labels = [{**label, "part": "mlp"} for label in unit_labels(run, ("layer",))]
        for label in labels:
            label["name"] = f"mlp.{label['layer']}"
        return context.findings("mlp", records, changes, labels)

    yield STEPS["mlp"]
    unregister_step("mlp")


@pytest.fixture(scope="module")
def audited(toy_step, minilm, short_frame, tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy") / "audit"
    return audit(minilm, ["TFC1"], short_frame, steps=("mlp",), folder=folder, progress=False, **SMALL), folder


def test_the_step_runs_and_is_saved_and_loaded(audited, minilm):
    result, folder = audited
    frame = result.frames["mlp"]
    assert list(result.frames) == ["mlp"] and result.mlp is frame
    assert len(frame) == minilm.n_layers and set(frame["name"]) == {f"mlp.{layer}" for layer in range(6)}
    assert (frame["flag"] != "").any(), "the MLPs carry TFC1's change: some layer is flagged at threshold 0"
    assert {"mlp_encodes", "mlp_violates"} <= set(result.axioms.columns)
    assert int(result.axioms["mlp_encodes"].iloc[0]) == int((frame["flag"] == "encodes").sum())
    assert result.manifest["settings"]["steps"] == ["mlp"]
    assert "mlp" in result.manifest["step_seconds"]["TFC1"]
    assert (folder / "mlp.parquet").is_file()
    loaded = load_audit(folder)
    pd.testing.assert_frame_equal(loaded.frames["mlp"], frame)


def test_the_report_shows_the_step(audited):
    result, folder = audited
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "MLP layers (mlp step)" in page
    assert "MLP layer" in page and "encoding / violating" in page
    frame = result.frames["mlp"]
    for row in frame.itertuples():  # the map: one cell per layer, its effect and flag in its hover text
        assert f"part mlp, layer {row.layer}: effect {row.effect:+.3f}" in page
    assert page.count("<tr><td>mlp</td>") == (frame["flag"] != "").sum()  # the table of flagged layers


def test_figure_draws_the_step(audited, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, folder = audited
    out = tmp_path / "mlp.svg"
    assert main(["figure", str(folder), "--frame", "mlp", "--axioms", "TFC1", "--out", str(out)]) == 0
    assert out.is_file() and "<svg" in out.read_text(encoding="utf-8")[:500]


def test_compare_reports_the_steps_flag_changes(audited):
    result, folder = audited
    changed = load_audit(folder)
    frame = changed.frames["mlp"]
    flagged = frame.index[frame["flag"] != ""][0]
    lost = frame.loc[flagged, "name"]
    frame.loc[flagged, "flag"] = ""
    comparison = compare(folder, changed)
    row = comparison.axioms[0]
    assert row.changes["mlp"][1] == [f"{lost} ({result.frames['mlp'].loc[flagged, 'flag']})"]
    assert "MLP layer flags lost" in comparison.table()
    assert comparison.ok, "flags of other steps are shown, not gated"
    assert compare(folder, folder).axioms[0].changes == {}


def test_sweep_follows_the_steps_flags(toy_step, minilm, short_frame, tmp_path):
    found = sweep(minilm, "TFC1", {"seed": [1]}, short_frame, folder=tmp_path / "sweep", progress=False,
                  steps=("mlp",), **{key: value for key, value in SMALL.items() if key != "seed"})
    rows = found.stability[found.stability["frame"] == "mlp"]
    assert len(rows) and set(rows["name"]) <= {f"mlp.{layer}" for layer in range(6)}
    assert {"mlp_encodes", "mlp_violates"} <= set(found.variants.columns)
    assert "MLP layers" in (tmp_path / "sweep" / "report.html").read_text(encoding="utf-8")


def test_the_cli_runs_the_step(toy_step, short_frame, tmp_path, capsys):
    data = tmp_path / "short.jsonl"
    short_frame.to_json(data, orient="records", lines=True)
    code = main(["audit", "--axioms", "TFC1", "--steps", "mlp", "--data", str(data), "--n", "10", "--threshold", "0",
                 "--stability", "0", "--examples", "0", "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "MLP layers encoding" in printed


def test_unknown_and_unmeasurable_steps_are_refused(minilm):
    with pytest.raises(SettingsError, match="steps=.*not valid; choose from heads, cells, blocks, paths"):
        audit(minilm, ["TFC1"], steps=("nothing",))
    with pytest.raises(SettingsError, match="paths needs heads too"):
        audit(minilm, ["TFC1"], steps=("paths",))
    with pytest.raises(SettingsError, match="method='nonsense' is not valid; use one of exact, attribution"):
        audit(minilm, ["TFC1"], steps=("heads",), method="nonsense")


def test_a_step_measured_by_the_audits_method_refuses_one_that_cannot(minilm):
    """A step that takes the audit's method asks the method registry who can measure its target."""
    @audit_step("edges_by_method", title="Edges", unit="edge", target="paths", method=None, columns=("name",))
    def edges(context, records, frames):  # never runs: the method is refused first
        raise AssertionError("ran")

    try:
        with pytest.raises(SettingsError, match="cannot measure target 'paths'; methods that can: exact"):
            audit(minilm, ["TFC1"], steps=("edges_by_method",), method="attribution")
    finally:
        unregister_step("edges_by_method")
