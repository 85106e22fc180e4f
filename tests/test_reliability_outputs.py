"""Reliability checklist, outputs side: nothing lost, nothing silently wrong, one sentence per mistake.

Each test reproduces one case of the reliability issue and passes only with its fix: folders the package
did not write are never replaced, a failed run leaves --out as it found it, two runs on one folder are
refused, non-finite settings are refused, a resume or a comparison of different things is refused, the
report describes the spec that was audited, and the CLI prints user mistakes as one line (exit 2) while
a genuine bug keeps its traceback.
"""

from __future__ import annotations

import fcntl
import json
import math
import shutil
import warnings

import pytest

from mechir_axioms import SettingsError, audit, compare, load_audit, load_axiom, load_ranker
from mechir_axioms.core.outputs import LEDGER, LOCK
from mechir_axioms.cli import main

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

pytest_plugins = ["pytester"]
QUICK = dict(n=3, seed=0, targets=("heads",), method="attribution", examples=0, tolerance=0.0, progress=False)


@pytest.fixture(scope="module")
def bi(tiny):
    return tiny("bert", "bi")[0]


def _audit(ranker, folder, axioms=("TFC1",), data=None, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit(ranker, list(axioms), data, folder=folder, **{**QUICK, **options})


# --- nothing lost ----------------------------------------------------------------------------------------
def test_plugin_never_deletes_a_folder_it_did_not_write(pytester, tiny, tmp_path):
    _, model = tiny("bert", "bi")
    notes = tmp_path / "reports" / "TFC1" / "my_notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    pytester.makepyfile(test_inner="def test_it(axiom_audit):\n    axiom_audit('TFC1')\n")
    outcome = pytester.runpytest("-p", "no:cacheprovider", f"--mechir-model={model}", "--mechir-axioms=TFC1",
                                 "--mechir-n=3", f"--mechir-report={tmp_path / 'reports'}")
    outcome.assert_outcomes(errors=0, failed=1)
    assert "holds files mechir-axioms did not write" in outcome.stdout.str()
    assert notes.read_text() == "mine"


@pytest.mark.parametrize("name", ["/some/absolute/path", "../TFC1", "TFC1/x", ".."])
def test_plugin_refuses_path_like_axiom_names_before_touching_files(pytester, tiny, tmp_path, name):
    _, model = tiny("bert", "bi")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    pytester.makepyfile(test_inner=f"def test_it(axiom_audit):\n    axiom_audit({name!r})\n")
    outcome = pytester.runpytest("-p", "no:cacheprovider", f"--mechir-model={model}",
                                 f"--mechir-report={victim}")
    assert "an axiom name is letters, digits" in outcome.stdout.str()
    assert (victim / "keep.txt").read_text() == "keep"


def test_plugin_replaces_its_own_stale_audit(pytester, tiny, tmp_path):
    _, model = tiny("bert", "bi")
    pytester.makepyfile(test_inner="def test_it(axiom_audit):\n    assert axiom_audit('TFC1').folder.is_dir()\n")
    arguments = ["-p", "no:cacheprovider", f"--mechir-model={model}", "--mechir-axioms=TFC1", "--mechir-n=3",
                 f"--mechir-report={tmp_path}"]
    pytester.runpytest_subprocess(*arguments).assert_outcomes(passed=1)
    pytester.runpytest_subprocess(*arguments).assert_outcomes(passed=1)  # the second replaces the first's folder
    assert json.loads((tmp_path / "TFC1" / LEDGER).read_text())["origin"] == "pytest"


def test_audit_out_refuses_a_folder_of_user_files(bi, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    with pytest.raises(SettingsError, match="did not write"):
        _audit(bi, out)
    assert (out / "report.html").read_text() == "my own report"
    assert sorted(path.name for path in out.iterdir()) == ["report.html"]


def test_audit_out_accepts_an_empty_folder(bi, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    _audit(bi, out)
    assert (out / "manifest.json").is_file() and not (out / LOCK).exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_trace(bi, tmp_path):
    out = tmp_path / "new" / "audit"
    unbuildable = load_axiom("TFC1", filler="supercalifragilistic")  # several wordpieces: fails inside the run
    with pytest.raises(ValueError):
        _audit(bi, out, axioms=[unbuildable])
    assert not (tmp_path / "new").exists()
    _audit(bi, out)  # and the rerun is not blocked by the failed one
    assert (out / "manifest.json").is_file()


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(bi, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / LOCK, "a+") as held:  # stands for a first audit holding the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SettingsError, match="another mechir-axioms command is writing"):
            _audit(bi, out)
        with pytest.raises(SettingsError, match="another mechir-axioms command is writing"):
            _audit(bi, out, resume=True)


# --- nothing silently wrong --------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["threshold", "tolerance", "alpha"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_settings_are_refused(bi, setting, value):
    with pytest.raises(SettingsError, match=f"{setting}="):
        audit(bi, ["TFC1"], **{**QUICK, setting: value})


@pytest.mark.parametrize("flag", ["--threshold", "--tolerance", "--alpha"])
def test_cli_refuses_nan_in_one_line(flag, tmp_path, capsys):
    assert main(["audit", flag, "nan", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "finite" in error
    assert not (tmp_path / "out").exists()


def test_plugin_refuses_a_bad_option_value(pytester, tiny):
    _, model = tiny("bert", "bi")
    pytester.makepyfile(test_inner="def test_it(axiom_audit):\n    axiom_audit('TFC1')\n")
    outcome = pytester.runpytest("-p", "no:cacheprovider", f"--mechir-model={model}", "--mechir-n=0")
    assert "n=0 is not valid" in outcome.stdout.str()


def test_resume_refuses_an_edited_spec(bi, tmp_path):
    out = tmp_path / "audit"
    _audit(bi, out)
    shutil.rmtree(out / "work" / "TFC1")  # as if killed before TFC1's pairs were built
    (out / "manifest.json").unlink()
    with pytest.raises(SettingsError, match="spec_hashes"):
        _audit(bi, out, axioms=[load_axiom("TFC1", position="start")], resume=True)


def test_resume_refuses_changed_data_at_the_same_path(bi, tmp_path, trec_rows):
    import pandas as pd

    data = tmp_path / "data.jsonl"
    pd.DataFrame(trec_rows[:200]).to_json(data, orient="records", lines=True)
    out = tmp_path / "audit"
    _audit(bi, out, data=str(data))
    (out / "manifest.json").unlink()
    pd.DataFrame(trec_rows[200:400]).to_json(data, orient="records", lines=True)
    with pytest.raises(SettingsError, match="data_hash"):
        _audit(bi, out, data=str(data), resume=True)


def test_resume_refuses_a_different_model(tiny, tmp_path):
    out = tmp_path / "audit"
    first = tiny("bert", "bi")[0]
    _audit(first, out)
    (out / "manifest.json").unlink()
    other = load_ranker(tiny("bert", "bi")[1])
    with torch_no_grad():
        next(other.model.parameters()).add_(1.0)  # same architecture and name, other weights
    with pytest.raises(SettingsError, match="model"):
        _audit(other, out, resume=True)


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_compare_refuses_different_kinds_and_specs_unless_allowed(tiny, tmp_path, capsys):
    bi_audit = _audit(tiny("bert", "bi")[0], tmp_path / "bi")
    cross_audit = _audit(tiny("bert", "cross")[0], tmp_path / "cross")
    with pytest.raises(SettingsError, match="different kinds"):
        compare(bi_audit, cross_audit)
    assert main(["compare", str(tmp_path / "bi"), str(tmp_path / "cross")]) == 2
    assert "--allow-different-models" in capsys.readouterr().err
    assert compare(bi_audit, cross_audit, allow_different_models=True).axioms
    edited = _audit(tiny("bert", "bi")[0], tmp_path / "edited", axioms=[load_axiom("TFC1", position="start")])
    with pytest.raises(SettingsError, match="different specs"):
        compare(bi_audit, edited)
    table = compare(bi_audit, edited, allow_different_specs=True).table()
    assert "(bi, weights " in table  # both models are named in the table


def test_report_describes_the_spec_saved_with_the_audit(bi, tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    packaged = load_axiom("TFC1")
    text = (packaged.source and open(packaged.source, encoding="utf-8").read())
    (folder / "TFC1.toml").write_text(text.replace(packaged.description, "MY OWN TFC1 VARIANT"), encoding="utf-8")
    out = tmp_path / "audit"
    _audit(bi, out, axioms=[load_axiom("TFC1", folders=[folder])])
    assert "MY OWN TFC1 VARIANT" in (out / "report.html").read_text()
    assert main(["report", str(out)]) == 0  # re-rendered without the user's folder: still the saved spec
    assert "MY OWN TFC1 VARIANT" in (out / "report.html").read_text()
    assert load_audit(out).manifest["axioms"]["TFC1"]["spec"]["description"] == "MY OWN TFC1 VARIANT"


# --- one sentence for a mistake, a traceback for a bug ------------------------------------------------------------
def test_cli_prints_user_mistakes_as_one_line(tmp_path, capsys):
    assert main(["audit", "--n", "0", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mechir-axioms: error: ") and "\n" not in error


def test_cli_keeps_the_traceback_of_a_genuine_bug(monkeypatch, tmp_path):
    import mechir_axioms.specs.axiom as specs

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the package")

    monkeypatch.setattr(specs, "list_axioms", broken)
    with pytest.raises(ZeroDivisionError):
        main(["list"])


def test_manifest_names_model_data_and_spec_hashes(bi, tmp_path):
    out = tmp_path / "audit"
    _audit(bi, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["model"]["weights_digest"]) == 16 and len(manifest["model"]["config_hash"]) == 16
    assert len(manifest["data_hash"]) >= 12 and manifest["axioms"]["TFC1"]["spec_hash"]


def test_plugin_steps_option_sets_what_each_audit_patches(pytester, tiny, tmp_path):
    _, model = tiny("bert", "bi")
    pytester.makepyfile(test_inner="def test_it(axiom_audit):\n    axiom_audit('TFC1')\n")
    arguments = ["-p", "no:cacheprovider", f"--mechir-model={model}", "--mechir-axioms=TFC1", "--mechir-n=3",
                 f"--mechir-report={tmp_path}"]
    pytester.runpytest_subprocess(*arguments, "--mechir-steps=heads").assert_outcomes(passed=1)
    audited = load_audit(tmp_path / "TFC1")
    assert audited.manifest["settings"]["steps"] == ["heads"] and audited.cells.empty
    outcome = pytester.runpytest_subprocess(*arguments, "--mechir-steps=heads,nerves")
    outcome.assert_outcomes(failed=1)
    assert "steps=['heads', 'nerves'] is not valid; choose from heads, cells, blocks, paths" in outcome.stdout.str()
