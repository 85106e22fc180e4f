"""One guarded output folder for every writer (core.outputs): nothing of the user's is replaced or deleted,
no name escapes the folder, a failed run leaves no trace, and each refusal is one sentence.

Each case of issue 25's "data loss", "path escape" and "smaller" lists is a test here; each failed on the code
before the output folder existed.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from mechir_axioms import SettingsError, audit
from mechir_axioms.cli import main
from mechir_axioms.core.errors import MechirError, OutputError, SpecError
from mechir_axioms.core.outputs import LEDGER, LOCK, OutputFolder, check_file, foreign_files, write_file

pytest_plugins = ["pytester"]
QUICK = dict(n=3, seed=0, targets=("heads",), method="attribution", examples=0, tolerance=0.0, progress=False)


@pytest.fixture(scope="module")
def bi(tiny):
    return tiny("bert", "bi")


@pytest.fixture(scope="module")
def saved(bi, tmp_path_factory) -> Path:
    """A small finished audit folder, copied by the tests that change it."""
    folder = tmp_path_factory.mktemp("saved") / "audit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit(bi[0], ["TFC1"], folder=folder, **QUICK)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _cli(capsys, *arguments: str) -> tuple[int, str]:
    code = main([str(argument) for argument in arguments])
    return code, capsys.readouterr().err


# --- the mechanism -------------------------------------------------------------------------------------------
def test_a_folder_knows_what_it_wrote_and_refuses_anything_else(tmp_path):
    with OutputFolder(tmp_path / "out", "pairs") as out:
        out.write_text("a.txt", "ours")
        out.at("sub").write_text("b.txt", "ours too")
    assert foreign_files(tmp_path / "out") == []
    (tmp_path / "out" / "sub" / "mine.txt").write_text("the user's")
    assert foreign_files(tmp_path / "out") == ["sub/mine.txt"]
    with pytest.raises(SettingsError, match=r"did not write.*sub/mine.txt"):
        OutputFolder(tmp_path / "out", "pairs", "replace").__enter__()
    assert (tmp_path / "out" / "sub" / "mine.txt").read_text() == "the user's"
    assert (tmp_path / "out" / "a.txt").read_text() == "ours"


def test_a_file_changed_after_it_was_written_is_the_users(tmp_path):
    with OutputFolder(tmp_path / "out", "pairs") as out:
        out.write_text("report.html", "ours")
    (tmp_path / "out" / "report.html").write_text("ours, with my notes")
    with pytest.raises(SettingsError, match="changed since"):
        OutputFolder(tmp_path / "out", "pairs", "replace").check()


def test_replace_removes_only_the_commands_own_files(tmp_path):
    with OutputFolder(tmp_path / "out", "pairs") as out:
        out.write_text("TFC1/frame.txt", "old")
    write_file(tmp_path / "out" / "figure.svg", "figure", lambda path: path.write_text("<svg/>"))
    with OutputFolder(tmp_path / "out", "pairs", "replace") as out:
        out.write_text("TDC/frame.txt", "new")
    assert sorted(_files(tmp_path / "out")) == [LEDGER, "TDC/frame.txt", "figure.svg"]


def test_another_commands_folder_is_refused(tmp_path):
    with OutputFolder(tmp_path / "out", "audit") as out:
        out.write_text("report.html", "an audit's report")
    for command in ("intervene", "sweep", "pairs"):
        with pytest.raises(SettingsError, match="holds the output of `mechir-axioms audit`"):
            OutputFolder(tmp_path / "out", command, "replace").check()


def test_an_early_failure_removes_what_the_run_created_and_nothing_else(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with OutputFolder(tmp_path / "kept" / "new" / "out", "pairs") as out:
            out.write_text("a/b.txt", "half of a result")
            raise RuntimeError("the run broke")
    assert sorted(os.listdir(tmp_path)) == ["kept"] and not any((tmp_path / "kept").iterdir())


def test_a_failure_after_keep_leaves_the_folder_for_resume(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputFolder(tmp_path / "out", "audit") as out:
            out.write_text("work/settings.json", "{}")
            out.keep()
            raise RuntimeError("killed")
    assert (tmp_path / "out" / "work" / "settings.json").is_file() and not (tmp_path / "out" / LOCK).exists()
    with OutputFolder(tmp_path / "out", "audit", "continue") as out:
        assert out.continued


def test_a_failed_continuation_keeps_the_earlier_ledger(tmp_path):
    with OutputFolder(tmp_path / "out", "audit") as out:
        out.write_text("work/a.json", "{}")
        out.keep()
    with pytest.raises(RuntimeError):
        with OutputFolder(tmp_path / "out", "audit", "continue") as out:
            out.write_text("work/b.json", "{}")
            raise RuntimeError("killed before the next checkpoint")
    assert sorted(_files(tmp_path / "out")) == [LEDGER, "work/a.json"]
    assert foreign_files(tmp_path / "out") == []


def test_parts_are_checked_against_their_own_ledgers(tmp_path):
    with OutputFolder(tmp_path / "sweep", "sweep") as sweep:
        with sweep.part("TFC1/seed=1", "audit") as part:
            part.write_text("manifest.json", "{}")
        sweep.write_text("sweep.json", "{}")
    assert foreign_files(tmp_path / "sweep") == []
    (tmp_path / "sweep" / "TFC1" / "seed=1" / "notes.txt").write_text("mine")
    assert foreign_files(tmp_path / "sweep") == ["TFC1/seed=1/notes.txt"]


@pytest.mark.parametrize("name", ["..", "../escape", "/abs", "a/../../b", ".", ""])
def test_no_name_escapes_the_folder(tmp_path, name):
    with OutputFolder(tmp_path / "out", "pairs") as out:
        with pytest.raises(SettingsError, match="cannot name a file"):
            out.write_text(name, "x")
        with pytest.raises(SettingsError, match="cannot name a file"):
            out.at(name)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_damaged_ledger_is_refused_not_trusted(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LEDGER).write_text("{not json")
    with pytest.raises(SettingsError, match="damaged"):
        OutputFolder(tmp_path / "out", "pairs").check()


def test_single_files_replace_only_their_own_commands_output(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"the user's own figure")
    with pytest.raises(SettingsError, match="not written by `mechir-axioms figure`"):
        write_file(target, "figure", lambda path: path.write_bytes(b"ours"))
    assert target.read_bytes() == b"the user's own figure"
    ours = tmp_path / "ours.png"
    write_file(ours, "figure", lambda path: path.write_bytes(b"first"))
    write_file(ours, "figure", lambda path: path.write_bytes(b"second"))  # its own file: replaced
    assert ours.read_bytes() == b"second"
    with pytest.raises(SettingsError, match="not written by `mechir-axioms compare`"):
        write_file(ours, "compare", lambda path: path.write_bytes(b"a page"))


def test_unwritable_paths_name_the_path_given_and_leave_no_temporary_file(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    target = locked / "page.html"

    def fails(path: Path) -> None:
        path.write_text("partial")
        raise PermissionError(13, "Permission denied")

    with pytest.raises(OutputError) as caught:
        write_file(target, "compare", fails)
    assert str(target) in str(caught.value) and ".mechir-tmp" not in str(caught.value)
    assert [path.name for path in locked.iterdir() if "tmp" in path.name] == []


# --- each command ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_plugin_rerun_keeps_files_the_user_added(pytester, bi):
    """A user's notes and figures added to the plugin's report folder are never deleted by the next run."""
    _, model = bi
    pytester.makepyfile(test_inner="def test_it(axiom_audit):\n    axiom_audit('TFC1')\n")
    report = pytester.path / "rep"
    arguments = ["-p", "no:cacheprovider", f"--mechir-model={model}", "--mechir-n=3", "--mechir-method=attribution",
                 "--mechir-steps=heads", "--mechir-axioms=TFC1", f"--mechir-report={report}"]
    pytester.runpytest_subprocess(*arguments).assert_outcomes(passed=1)
    (report / "TFC1" / "my_notes.txt").write_text("notes")
    (report / "TFC1" / "figs").mkdir()
    (report / "TFC1" / "figs" / "mine.png").write_bytes(b"png")
    outcome = pytester.runpytest_subprocess(*arguments)
    assert "holds files mechir-axioms did not write" in outcome.stdout.str() + outcome.stderr.str()
    assert (report / "TFC1" / "my_notes.txt").read_text() == "notes"
    assert (report / "TFC1" / "figs" / "mine.png").read_bytes() == b"png"
    assert (report / "TFC1" / "manifest.json").is_file()  # the earlier audit is still there too


def test_pairs_out_never_overwrites_the_users_files(bi, tmp_path, capsys):
    _, model = bi
    out = tmp_path / "pairs"
    (out / "TFC1").mkdir(parents=True)
    (out / "TFC1" / "provenance.json").write_text('{"mine": true}')
    (out / "TFC1" / "frame.parquet").write_bytes(b"my frame")
    code, err = _cli(capsys, "pairs", "--axioms", "TFC1", "--model", model, "--n", "3", "--out", out)
    assert code == 2 and "did not write" in err and err.count("\n") == 1
    assert (out / "TFC1" / "provenance.json").read_text() == '{"mine": true}'
    assert (out / "TFC1" / "frame.parquet").read_bytes() == b"my frame"


def test_pairs_out_replaces_its_own_earlier_pairs(bi, tmp_path, capsys):
    _, model = bi
    out = tmp_path / "pairs"
    for _ in range(2):
        code, _ = _cli(capsys, "pairs", "--axioms", "TFC1", "--model", model, "--n", "3", "--out", out)
        assert code == 0
    assert (out / "TFC1" / "provenance.json").is_file() and foreign_files(out) == []


def test_pairs_warnings_are_one_line_each(tmp_path, capsys, cross_encoder_path):
    code, err = _cli(capsys, "pairs", "--axioms", "TFC1", "--kind", "bi", "--model", cross_encoder_path, "--n", "2",
                     "--out", tmp_path / "pairs")
    assert code == 0, err
    assert "UserWarning" not in err and "warnings.warn" not in err
    assert any(line.startswith("warning: ") for line in err.splitlines())


def test_a_spec_named_dot_dot_cannot_write_beside_the_output(bi, tmp_path, capsys):
    _, model = bi
    specs = tmp_path / "specs"
    specs.mkdir()
    text = (Path(__file__).parents[1] / "axioms" / "TFC1.toml").read_text()
    (specs / "...toml").write_text(text.replace('name = "TFC1"', 'name = ".."'))
    out = tmp_path / "area" / "out"
    code, err = _cli(capsys, "pairs", "--axioms", "..", "--axiom-folder", specs, "--model", model, "--n", "3",
                     "--out", out)
    assert code == 2 and "field 'name'" in err
    assert not (tmp_path / "area").exists()
    with pytest.raises(SpecError, match="field 'name'"):
        from mechir_axioms.specs.axiom import read_axiom_file

        read_axiom_file(specs / "...toml")


def test_figure_and_compare_refuse_to_overwrite_a_users_file(saved, tmp_path, capsys):
    figure, page, xml = tmp_path / "fig.png", tmp_path / "page.html", tmp_path / "junit.xml"
    for path in (figure, page, xml):
        path.write_text("the user's")
    code, err = _cli(capsys, "figure", saved, "--out", figure)
    assert code == 2 and "not written by `mechir-axioms figure`" in err
    code, err = _cli(capsys, "compare", saved, saved, "--html", page)
    assert code == 2 and "--html" in err and "not written by" in err
    code, err = _cli(capsys, "compare", saved, saved, "--junit-xml", xml)
    assert code == 2 and "--junit-xml" in err
    assert all(path.read_text() == "the user's" for path in (figure, page, xml))


def test_figure_and_compare_replace_their_own_files(saved, tmp_path, capsys):
    figure, page = tmp_path / "fig.svg", tmp_path / "page.html"
    for _ in range(2):
        assert _cli(capsys, "figure", saved, "--out", figure)[0] == 0
        assert _cli(capsys, "compare", saved, saved, "--html", page)[0] == 0
    assert figure.read_text().lstrip().startswith("<?xml") and "<html" in page.read_text()


def test_compare_html_naming_a_folder_is_refused_without_a_stray_file(saved, tmp_path, capsys):
    folder = tmp_path / "DIR.png"
    folder.mkdir()
    code, err = _cli(capsys, "compare", saved, saved, "--html", folder)
    assert code == 2 and "is a folder" in err
    assert list(folder.iterdir()) == [] and sorted(os.listdir(tmp_path)) == ["DIR.png"]


def test_report_refuses_to_replace_a_report_the_user_edited(saved, tmp_path, capsys):
    folder = tmp_path / "audit"
    shutil.copytree(saved, folder)
    assert _cli(capsys, "report", folder)[0] == 0  # its own report: re-rendered
    (folder / "report.html").write_text("my edited report")
    code, err = _cli(capsys, "report", folder)
    assert code == 2 and "report.html" in err
    assert (folder / "report.html").read_text() == "my edited report"


def test_audit_into_another_commands_folder_is_refused(bi, saved, tmp_path):
    with OutputFolder(tmp_path / "pairs", "pairs") as out:
        out.write_text("TFC1/provenance.json", "{}")
    with pytest.raises(SettingsError, match="holds the output of `mechir-axioms pairs`"):
        audit(bi[0], ["TFC1"], folder=tmp_path / "pairs", **QUICK)


def test_an_audit_saved_before_ledgers_existed_is_still_resumed_and_rerendered(saved, tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(saved, folder)
    (folder / LEDGER).unlink()  # as an earlier version left it: no ledger, no per-pair changes
    for changes in folder.glob("*.changes.parquet"):
        changes.unlink()
    assert _cli(capsys, "report", folder)[0] == 0
    (folder / "notes.txt").write_text("mine")
    code, err = _cli(capsys, "report", folder)
    assert code == 2 and "notes.txt" in err


def test_a_selection_of_no_pair_is_one_sentence(bi, tmp_path, capsys):
    _, model = bi
    specs = tmp_path / "specs"
    specs.mkdir()
    text = (Path(__file__).parents[1] / "axioms" / "TFC1.toml").read_text()
    (specs / "ZERO.toml").write_text(text.replace('name = "TFC1"', 'name = "ZERO"') + "\n[select]\nrelevance = [99]\n")
    for command in ("audit", "pairs"):
        code, err = _cli(capsys, command, "--axioms", "ZERO", "--axiom-folder", specs, "--model", model, "--n", "3",
                         "--out", tmp_path / command)
        errors = [line for line in err.splitlines() if line.startswith("mechir-axioms: error: ")]
        assert code == 2 and len(errors) == 1 and "selects no row" in errors[0] and "Traceback" not in err, err
        assert not (tmp_path / command).exists()


def test_ctrl_c_says_what_was_kept_and_exits_130(monkeypatch, tmp_path, capsys):
    import mechir_axioms.cli.arguments as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_intervene", interrupted)
    code = main(["intervene", "--heads", "0.0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and "interrupted; nothing was written" in err


def test_check_file_creates_nothing(tmp_path):
    check_file(tmp_path / "new" / "fig.png", "figure")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MechirError):
        check_file(tmp_path, "figure")


def test_sweep_out_never_overwrites_the_users_report(bi, tmp_path, capsys):
    _, model = bi
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "report.html").write_text("my report")
    (out / "sweep.json").write_text('{"mine": 1}')
    code, err = _cli(capsys, "sweep", "--model", model, "--n", "3", "--targets", "heads", "--method", "attribution",
                     "--vary", "seed=1", "--out", out)
    assert code == 2 and "did not write" in err and "Loading" not in err  # refused before the model loads
    assert (out / "report.html").read_text() == "my report" and (out / "sweep.json").read_text() == '{"mine": 1}'


def test_a_sweeps_folder_holds_only_what_it_recorded_and_resumes(bi, tmp_path):
    from mechir_axioms import sweep

    options = dict(QUICK, n=3)
    options.pop("seed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = sweep(bi[0], "TFC1", {"seed": [1]}, folder=tmp_path / "sweep", **options)
        assert foreign_files(tmp_path / "sweep") == []
        with pytest.raises(SettingsError, match="already holds a sweep; pass --resume"):
            sweep(bi[0], "TFC1", {"seed": [1]}, folder=tmp_path / "sweep", **options)
        again = sweep(bi[0], "TFC1", {"seed": [1]}, folder=tmp_path / "sweep", resume=True, **options)
    assert first.variants.equals(again.variants)
    ledger = json.loads((tmp_path / "sweep" / LEDGER).read_text())
    assert ledger["command"] == "sweep" and sorted(ledger["parts"]) == ["TFC1/reference", "TFC1/seed=1"]


def test_intervene_out_never_overwrites_the_users_files_nor_an_audit(bi, saved, tmp_path, capsys):
    _, model = bi
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my report")
    (out / "effectiveness.parquet").write_bytes(b"my numbers")
    base = ("intervene", "--model", model, "--heads", "0.0", "--axioms", "TFC1", "--n", "3")
    code, err = _cli(capsys, *base, "--out", out)
    assert code == 2 and "did not write" in err and "Loading" not in err
    assert (out / "report.html").read_text() == "my report"
    assert (out / "effectiveness.parquet").read_bytes() == b"my numbers"
    audited = tmp_path / "audit"
    shutil.copytree(saved, audited)
    before = _files(audited)
    code, err = _cli(capsys, *base, "--out", audited)
    assert code == 2 and "holds the output of `mechir-axioms audit`" in err
    assert _files(audited) == before


def test_an_intervention_folder_records_its_audits_as_parts(bi, tmp_path, capsys):
    _, model = bi
    out = tmp_path / "intervened"
    code, err = _cli(capsys, "intervene", "--model", model, "--heads", "0.0", "--axioms", "TFC1", "--n", "3",
                     "--out", out)
    assert code == 0, err
    assert foreign_files(out) == [] and sorted(json.loads((out / LEDGER).read_text())["parts"]) == ["after", "before"]
    code, err = _cli(capsys, "intervene", "--model", model, "--heads", "0.0", "--axioms", "TFC1", "--n", "3",
                     "--out", out)
    assert code == 2 and "already holds an intervention" in err


def test_a_failed_continuation_that_replaced_a_file_stays_resumable(tmp_path):
    with OutputFolder(tmp_path / "out", "audit") as out:
        out.write_text("report.html", "first")
        out.keep()
    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(tmp_path / "out", "audit", "continue") as out:
            out.write_text("report.html", "second")  # replaced, then the run is interrupted
            out.write_text("manifest.json", "{}")
            raise KeyboardInterrupt
    assert foreign_files(tmp_path / "out") == [] and not (tmp_path / "out" / "manifest.json").exists()
    with OutputFolder(tmp_path / "out", "audit", "continue") as out:
        assert out.continued


def test_parts_of_a_run_that_fails_afterwards_are_removed_with_it(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputFolder(tmp_path / "out", "intervene") as out:
            with out.part("before", "audit") as part:
                part.write_text("manifest.json", "{}")
            raise RuntimeError("failed after its first part")
    assert not (tmp_path / "out").exists()


def test_a_figure_in_an_old_audit_folder_keeps_it_an_audit(saved, tmp_path, capsys):
    folder = tmp_path / "old"
    shutil.copytree(saved, folder)
    (folder / LEDGER).unlink()  # as an earlier version left it: no ledger, no per-pair changes
    for changes in folder.glob("*.changes.parquet"):
        changes.unlink()
    assert _cli(capsys, "figure", folder, "--out", folder / "heads.svg")[0] == 0
    assert foreign_files(folder) == [] and _cli(capsys, "report", folder)[0] == 0


def test_continuing_keeps_whose_output_it_is(tmp_path):
    with OutputFolder(tmp_path / "out", "audit", origin="pytest") as out:
        out.write_text("manifest.json", "{}")
    with OutputFolder(tmp_path / "out", "audit", "continue"):
        pass  # `mechir-axioms report` re-rendering the plugin's audit
    assert json.loads((tmp_path / "out" / LEDGER).read_text())["origin"] == "pytest"


def test_a_folder_of_parts_is_never_replaced(tmp_path):
    with OutputFolder(tmp_path / "sweep", "sweep") as sweep:
        with sweep.part("TFC1/reference", "audit") as part:
            part.write_text("manifest.json", "{}")
    with pytest.raises(SettingsError, match="is not replaced"):
        OutputFolder(tmp_path / "sweep", "sweep", "replace").check()
    assert (tmp_path / "sweep" / "TFC1" / "reference" / "manifest.json").is_file()


def test_a_held_folder_passed_on_is_used_as_it_is(tmp_path):
    with OutputFolder(tmp_path / "out", "audit") as out:
        with out as again:  # audit(folder=held) and InterventionResult.save(held) enter it again
            again.write_text("a.txt", "x")
        out.write_text("b.txt", "y")  # still held after the inner exit
    assert foreign_files(tmp_path / "out") == [] and not (tmp_path / "out" / LOCK).exists()
