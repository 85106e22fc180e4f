"""Features as an audit step: a real MiniLM audit with an SAE at blocks.3.hook_resid_post, exact and verified,
saved and loaded, reported (dashboards of top-activating contexts, in headless Chromium), compared and driven from
the CLI; feature interventions through the spliced SAE; and refusals before any work."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mechir_axioms import MechirError, audit, compare, intervene, load_audit, save_sae
from mechir_axioms.cli import main
from mechir_axioms.core.errors import SettingsError
from mechir_axioms.features.interventions import parse_features
from test_sae import random_sae

SITE = "blocks.3.hook_resid_post"
SMALL = dict(n=16, seed=0, threshold=0.0, stability=0, examples=0, unit="pair", steps=("features",))
"""A cheap audit that still flags: at threshold 0 every latent whose share of the change is significant."""


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae") / "sae"
    save_sae(random_sae(384, 48, "topk", SITE, k=8, seed=1), folder)
    return folder


@pytest.fixture(scope="module")
def exact_audit(minilm, short_frame, sae_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("features") / "audit"
    result = audit(minilm, ["TFC1"], short_frame, method="exact", saes=(str(sae_folder),), folder=folder,
                   progress=False, **SMALL)
    return result, folder


@pytest.mark.slow
def test_the_features_step_measures_saves_and_loads(exact_audit):
    result, folder = exact_audit
    frame = result.frames["features"]
    assert len(frame) == 48 and set(frame["site"]) == {SITE} and list(frame["latent"]) == list(range(48))
    assert frame["name"].iloc[17] == "3.resid_post:17"
    assert (frame["measured"] == "exact").all()
    assert (frame["flag"] != "").any(), "at threshold 0 some latent carries a significant share"
    assert frame["fires"].between(0, 1).all() and (frame["fires"] > 0).any()
    shown = frame[frame["contexts"] != ""]
    assert set(frame.index[frame["flag"] != ""]) <= set(shown.index)
    for contexts in shown["contexts"]:
        for context in json.loads(contexts):
            assert context["activation"] > 0 and 0 <= context["focus"] < len(context["tokens"])
    assert int(result.axioms["features_encodes"].iloc[0]) == int((frame["flag"] == "encodes").sum())
    assert result.manifest["axioms"]["TFC1"]["features"]["saes"][SITE]
    loaded = load_audit(folder)
    pd.testing.assert_frame_equal(loaded.frames["features"], frame)
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "Features (features step)" in page and 'class="dashboard"' in page and "<mark>" in page
    assert compare(folder, folder).ok


@pytest.mark.slow
def test_verified_feature_flags_equal_exact_ones(exact_audit, minilm, short_frame, sae_folder):
    """Verified screens every latent by AtP* and patches exactly those that could reach a flag: with a budget that
    covers the candidates, its flags are the exact audit's, each resting on an exact effect."""
    exact, _ = exact_audit
    verified = audit(minilm, ["TFC1"], short_frame, method="verified", verify=48, saes=(str(sae_folder),),
                     progress=False, **SMALL)
    frame, reference = verified.frames["features"], exact.frames["features"]
    checked = verified.manifest["axioms"]["TFC1"]["feature_verification"]
    assert checked["bound_below_threshold"] or checked["candidates"] <= 48
    flagged = frame["flag"] != ""
    assert (frame.loc[flagged, "measured"] == "exact").all()
    measured = frame["measured"] == "exact"
    assert np.allclose(frame.loc[measured, "effect"], reference.loc[measured, "effect"], rtol=0, atol=1e-6)
    assert list(frame.loc[measured, "flag"]) == list(reference.loc[measured, "flag"])


@pytest.mark.slow
def test_the_report_with_features_opens_in_chromium(exact_audit):
    from browser import chromium, open_page

    _, folder = exact_audit
    report = folder / "report.html"
    with chromium() as browser:
        page, errors, requests = open_page(browser, report)
        cards = page.locator(".dashboard").count()
        marked = page.locator(".dashboard mark").count()
    assert errors == [] and requests == [report.as_uri()]
    assert cards >= 1 and marked >= cards


@pytest.mark.slow
def test_the_cli_audits_features(short_frame, sae_folder, tmp_path, capsys):
    data = tmp_path / "short.jsonl"
    short_frame.to_json(data, orient="records", lines=True)
    code = main(["audit", "--axioms", "TFC1", "--steps", "heads,features", "--saes", str(sae_folder), "--data",
                 str(data), "--n", "12", "--stability", "0", "--examples", "0", "--method", "attribution",
                 "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "features encoding" in printed
    assert (tmp_path / "cli" / "features.parquet").is_file()


def test_features_without_saes_and_saes_without_features_are_refused(minilm, sae_folder, tmp_path):
    with pytest.raises(SettingsError, match="steps has features but saes is empty"):
        audit(minilm, ["TFC1"], steps=("features",))
    with pytest.raises(SettingsError, match="lacks features; add it"):
        audit(minilm, ["TFC1"], steps=("heads",), saes=(str(sae_folder),))
    wrong = tmp_path / "wrong"
    save_sae(random_sae(100, 8, site=SITE), wrong)
    with pytest.raises(MechirError, match="d_in 100"):
        audit(minilm, ["TFC1"], steps=("features",), saes=(str(wrong),), folder=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(MechirError, match="missing"):
        audit(minilm, ["TFC1"], steps=("features",), saes=(str(tmp_path / "missing"),))


def test_feature_interventions_change_the_scores_and_restore_them(minilm):
    sae = random_sae(384, 48, "topk", SITE, k=8, seed=1)
    queries, passages = ["what is the capital of france"] * 2, ["paris is the capital of france", "berlin is big"]
    plain = minilm.score(queries, passages)
    with intervene(minilm, features=[(sae, j) for j in range(48)], op="scale", factor=1.0) as facts:
        same = minilm.score(queries, passages)
        assert facts["op"] == "scale" and len(facts["features"]) == 48
        assert any("saes" in item for item in minilm.interventions)
    assert torch.equal(same, plain)
    with intervene(minilm, features=[(sae, j) for j in range(48)], op="steer", factor=0.0):
        assert torch.equal(minilm.score(queries, passages), plain)
    with intervene(minilm, features=[(sae, j) for j in range(48)], op="ablate"):
        ablated = minilm.score(queries, passages)
    assert not torch.allclose(ablated, plain)
    with intervene(minilm, features=[(sae, 3)], op="steer", factor=5.0):
        steered = minilm.score(queries, passages)
    assert not torch.allclose(steered, plain)
    assert torch.equal(minilm.score(queries, passages), plain) and minilm.interventions == []


def test_bad_feature_interventions_are_refused(minilm):
    sae = random_sae(384, 8, site=SITE)
    with pytest.raises(SettingsError, match="op='mean' is not valid for features"):
        with intervene(minilm, features=[(sae, 1)], op="mean"):
            pass
    with pytest.raises(SettingsError, match="needs a finite factor"):
        with intervene(minilm, features=[(sae, 1)], op="scale"):
            pass
    with pytest.raises(SettingsError, match="latent 8 is not a latent"):
        with intervene(minilm, features=[(sae, 8)]):
            pass
    assert parse_features("3.resid_post:2, blocks.3.hook_resid_post:5,7", [sae]) == [(sae, 2), (sae, 5), (sae, 7)]
    with pytest.raises(SettingsError, match="feature '4.resid_post:2' is not valid"):
        parse_features("4.resid_post:2", [sae])


@pytest.mark.slow
def test_the_cli_intervenes_on_features(short_frame, sae_folder, tmp_path, capsys):
    data = tmp_path / "short.jsonl"
    short_frame.to_json(data, orient="records", lines=True)
    code = main(["intervene", "--features", "3.resid_post:1,3.resid_post:2", "--saes", str(sae_folder), "--op",
                 "ablate", "--axioms", "TFC1", "--data", str(data), "--n", "8", "--method", "attribution",
                 "--out", str(tmp_path / "intervene")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "ablate features 3.resid_post:1, 3.resid_post:2" in printed
    saved = json.loads((tmp_path / "intervene" / "intervention.json").read_text())
    assert saved["intervention"]["features"] == ["3.resid_post:1", "3.resid_post:2"]
    assert f"--features 3.resid_post:1,3.resid_post:2 --saes {sae_folder} --op ablate" in saved["command"]
    assert main(["intervene", "--features", "3.resid_post:1", "--out", str(tmp_path / "x")]) != 0
    assert "--features needs the folders of their SAEs: --saes DIR[,DIR]" in capsys.readouterr().err


@pytest.mark.slow
def test_figure_draws_the_strongest_features(exact_audit, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from mechir_axioms.plot import feature_bars

    result, folder = exact_audit
    out = tmp_path / "features.svg"
    assert main(["figure", str(folder), "--frame", "features", "--out", str(out)]) == 0
    assert out.is_file() and "<svg" in out.read_text(encoding="utf-8")[:500]
    figure = feature_bars([result], shown=False)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    frame = result.frames["features"]
    strongest = frame.assign(size=frame["effect"].abs(), flagged=frame["flag"] != "").sort_values(
        ["flagged", "size"], ascending=False)["name"].head(12)
    assert set(labels) == set(strongest)


def test_the_saes_setting_is_left_out_where_unused():
    """Audits saved before `saes` existed resume (their stored settings lack it), and the reproducing command
    names --saes only when there are SAEs."""
    from mechir_axioms import Settings

    plain = Settings()
    assert "saes" not in plain.deciding() and "--saes" not in plain.command()
    with_saes = Settings(steps=("heads", "features"), saes=("saes/a", "saes/b"))
    assert with_saes.deciding()["saes"] == ["saes/a", "saes/b"]
    assert "--saes saes/a,saes/b" in with_saes.command()


def test_latents_may_be_numpy_integers(minilm):
    sae = random_sae(384, 8, site=SITE)
    with intervene(minilm, features=[(sae, np.int64(2))], op="ablate") as facts:
        assert facts["features"] == ["3.resid_post:2"]
    with pytest.raises(SettingsError, match="latent 2.5 is not valid; give a whole number"):
        with intervene(minilm, features=[(sae, 2.5)]):
            pass


def test_the_cli_names_bad_feature_flags(capsys):
    base = ["intervene", "--axioms", "TFC1", "--out", "/nonexistent"]
    assert main([*base, "--features", "3.resid_post:1", "--saes", "x", "--factor", "2"]) == 2
    assert "--factor applies to --op scale or steer only; leave it out for --op ablate" in capsys.readouterr().err
    assert main([*base, "--features", "3.resid_post:1", "--saes", "x", "--op", "mean"]) == 2
    assert "--op mean applies to --heads" in capsys.readouterr().err
    assert main([*base, "--heads", "0.1", "--op", "steer", "--factor", "1"]) == 2
    assert "--op steer applies to --features" in capsys.readouterr().err
    assert main([*base, "--heads", "0.1", "--saes", "x"]) == 2
    assert "--saes x is given with --heads" in capsys.readouterr().err
