"""Issue 31, a newcomer's first hour: --help and the light commands import no torch, --threads and --quiet on the
commands that load a model, a missing audit folder named as missing, and every flag's default in --help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from mechir_axioms.cli import main, parser
from mechir_axioms.cli.arguments import COMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import sys
from mechir_axioms.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("loaded:", *sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""
BAR_MARKS = ("\r", "%|", "it/s", "s/it")
"""What a tqdm bar writes to stderr: carriage returns, the bar's frame and its rate."""


def _python(*arguments: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    """A fresh interpreter, so that what this test process imported does not count."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)


def _loaded(argv: list[str]) -> str:
    run = _python("-c", PROBE.format(argv=argv))
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["report", "--help"], ["compare", "--help"],
                                  ["figure", "--help"]])
def test_help_and_the_saved_audit_commands_import_no_torch(argv):
    """Before: the parser was built whole, and --kind's choices (models.rankers) and `sae train`'s flags
    (features.training) imported torch and transformers for any command, --help included."""
    assert _loaded(argv) == "loaded:"


EVERY_HELP = """
import contextlib, io, sys
from mechir_axioms.cli import main
from mechir_axioms.cli.arguments import COMMANDS
for argv in (["--help"], *([name, "--help"] for name in COMMANDS), ["sae", "train", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as done:
            assert done.code == 0, (argv, done.code)
    print(" ".join(argv), "loaded:", *sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""


def test_every_commands_help_imports_no_torch():
    """Each command's --help (and `sae train --help`), in one interpreter, in COMMANDS' order: before, --kind's
    choices (models.rankers) and `sae train`'s flags (features.training) imported torch and transformers."""
    run = _python("-c", EVERY_HELP)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == len(COMMANDS) + 2
    loaded = [line for line in lines if not line.endswith("loaded:")]
    assert not loaded, f"the first --help to import them: {loaded[0]}"


def test_kind_choices_are_the_registered_ranker_kinds():
    """--kind's choices come from core.defaults (no torch); they must stay the kinds models.rankers registers."""
    from mechir_axioms.core.defaults import RANKER_KIND_NAMES
    from mechir_axioms.models.rankers import RANKER_KINDS

    assert tuple(RANKER_KINDS) == RANKER_KIND_NAMES
    offered = {name: tuple(action.choices) for name, command in _commands().items() for action in command._actions
               if action.dest == "kind" and action.option_strings}
    assert set(offered) == {"pairs", "audit", "sweep", "intervene", "sae train"}
    assert set(offered.values()) == {RANKER_KIND_NAMES}


def test_list_imports_no_transformers():
    """`list` builds only its own flags: no transformers (before: imported by the parser, about 5 s)."""
    assert "transformers" not in _loaded(["list"])


def test_list_imports_no_torch():
    assert _loaded(["list"]) == "loaded:"


MODEL_COMMANDS = {
    "audit": [],
    "sweep": [],
    "pairs": [],
    "intervene": ["--heads", "0.1"],
    "sae": ["train", "--site", "blocks.0.hook_resid_post", "--out", "sae"],
}


@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
def test_each_model_command_takes_threads_and_quiet(command):
    argv = [command, *MODEL_COMMANDS[command]]
    plain = parser([command]).parse_args(argv)
    assert plain.threads is None and plain.quiet is False
    given = parser([command]).parse_args([*argv, "--threads", "2", "--quiet"])
    assert given.threads == 2 and given.quiet is True


@pytest.mark.parametrize("threads", ["0", "-1", "two", "1.5", "٣", ""])
def test_threads_must_be_a_whole_number_of_at_least_one(threads, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["audit", "--threads", threads])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"argument --threads: {threads!r} is not valid; give a whole number of threads of at least 1 "
                          "(e.g. 4)")


def _tiny_audit(path, out, *extra: str) -> list[str]:
    return ["audit", "--model", str(path), "--axioms", "TFC1", "--n", "8", "--targets", "heads", "--method",
            "attribution", "--stability", "0", "--out", str(out), *extra]


def test_quiet_audit_draws_no_progress_bar_and_threads_apply_while_it_runs(tiny, tmp_path, capsys, monkeypatch):
    """--quiet: not one bar on stderr (the audit's nor transformers' "Loading weights"); without it there are bars.
    --threads 1: torch runs on one thread during the command, and on as many as before after it."""
    import torch

    _, path = tiny("bert", "bi")
    capsys.readouterr()  # the fixture's own bars, writing and loading the tiny model
    before = torch.get_num_threads()
    seen = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda count: (seen.append(count), original(count))[1])
    assert main(_tiny_audit(path, tmp_path / "quiet", "--quiet", "--threads", "1")) == 0
    captured = capsys.readouterr()
    assert "report:" in captured.out
    assert not [mark for mark in BAR_MARKS if mark in captured.err], captured.err
    assert seen == [1, before] and torch.get_num_threads() == before
    assert main(_tiny_audit(path, tmp_path / "loud")) == 0
    assert "\r" in capsys.readouterr().err  # the same audit without --quiet does draw bars


@pytest.mark.parametrize("argv", [["report", "{missing}"], ["compare", "{missing}", "{missing}"],
                                  ["figure", "{missing}", "--out", "{tmp}/f.png"],
                                  ["figure", "{missing}", "--frame", "features", "--out", "{tmp}/f.png"],
                                  ["figure", "{missing}", "--frame", "circuit", "--axioms", "TFC1",
                                   "--out", "{tmp}/c.svg"]])
def test_a_missing_audit_folder_is_named_as_missing(argv, tmp_path):
    """In a fresh process (before: `figure` said "frame='heads' cannot be drawn as a grid; use one of , or features"
    there, whatever the folder)."""
    missing = str(tmp_path / "no-such-audit")
    run = _python("-m", "mechir_axioms.cli", *(word.format(missing=missing, tmp=tmp_path) for word in argv))
    assert run.returncode == 2
    assert run.stderr == f"mechir-axioms: error: {missing} does not exist; give the folder of a saved audit\n"


def test_compare_names_the_missing_one_of_two(tiny, tmp_path, capsys):
    _, path = tiny("bert", "bi")
    assert main(_tiny_audit(path, tmp_path / "old", "--quiet")) == 0
    capsys.readouterr()
    missing = str(tmp_path / "new")
    assert main(["compare", str(tmp_path / "old"), missing]) == 2
    error = capsys.readouterr().err
    assert error == f"mechir-axioms: error: {missing} does not exist; give the folder of a saved audit\n"
    assert main(["report", str(tmp_path / "old")]) == 0
    run = _python("-m", "mechir_axioms.cli", "figure", str(tmp_path / "old"), "--out", str(tmp_path / "heads.png"))
    assert run.returncode == 0, run.stderr  # a fresh process draws the registered steps (before: no frame at all)
    assert (tmp_path / "heads.png").stat().st_size > 0


def _options(command: argparse.ArgumentParser):
    """The optional flags of a command: not -h, not hidden, not required alone or as one of a required group."""
    needed = {action for group in command._mutually_exclusive_groups if group.required
              for action in group._group_actions}
    for action in command._actions:
        if action.option_strings and action.help != argparse.SUPPRESS and not action.required and action not in needed \
                and not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            yield action


def _commands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [action for action in parser()._actions if isinstance(action, argparse._SubParsersAction)]
    found = dict(commands.choices)
    (jobs,) = [action for action in found["sae"]._actions if isinstance(action, argparse._SubParsersAction)]
    found.update({f"sae {name}": job for name, job in jobs.choices.items()})
    return found


@pytest.mark.parametrize("name", ["audit", "sweep", "intervene", "pairs", "compare", "figure", "list", "sae train"])
def test_help_shows_every_flags_default(name):
    """Every optional flag says "(default: ...)", never an empty one (before: audit's --out, --resume,
    --axiom-folder and --ray-address did not; --saes said "(default: )")."""
    command = _commands()[name]
    missing = [action.option_strings[0] for action in _options(command) if "(default: " not in (action.help or "")]
    empty = [action.option_strings[0] for action in _options(command) if "(default: )" in (action.help or "")]
    assert not missing and not empty, (missing, empty)


def test_sweeps_help_shows_its_own_defaults():
    """sweep audits TFC1 without examples unless told otherwise, and its --help says so (before: the audit's)."""
    command = _commands()["sweep"]
    helps = {action.dest: action.help for action in command._actions}
    assert helps["axioms"].endswith("(default: TFC1)") and helps["examples"].endswith("(default: 0)")
    args = command.parse_args([])
    assert args.axioms == ("TFC1",) and args.examples == 0
    assert "(default: reports/audit)" in " ".join(_commands()["audit"].format_help().split())


def test_the_null_axioms_line_shows_the_equivalence_interval_that_decided_it(tiny, tmp_path, capsys):
    """NULL's verdict comes from its equivalence test (TOST), so its line shows that interval and margin, not the
    share of pairs within the tolerance (which a directional axiom's line shows)."""
    from mechir_axioms import load_audit

    _, path = tiny("bert", "bi")
    assert main(["audit", "--model", str(path), "--axioms", "TFC1,NULL", "--n", "8", "--steps", "heads",
                 "--method", "attribution", "--stability", "0", "--quiet", "--out", str(tmp_path / "a")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:1].isalpha()}
    null = load_audit(tmp_path / "a").axioms.set_index("axiom").loc["NULL"]
    assert f"mean change {null['mean_delta']:+.2g}, 90% interval [{null['tost_low']:+.2g}" in lines["NULL"]
    assert f"+/-{null['margin']:.2g} (TOST)" in lines["NULL"] and "agreement" not in lines["NULL"]
    assert "agreement" in lines["TFC1"] and "TOST" not in lines["TFC1"]


def test_demo_model_builds_the_tiny_qwen3_reranker_offline_and_it_audits(tmp_path, capsys):
    """`mechir-axioms demo-model llm --out DIR` needs neither ../shared nor the tests' helpers: a Qwen3 causal LM
    with GQA and a tokenizer trained on the bundled passages, which loads as an LLM reranker and audits; the same
    seed gives the same weights, and a folder in use is refused."""
    import torch
    from safetensors.torch import load_file

    from mechir_axioms import load_ranker

    out = tmp_path / "llm"
    assert main(["demo-model", "llm", "--out", str(out)]) == 0
    assert f"demo model: {out}" in capsys.readouterr().out
    ranker = load_ranker(out)
    assert ranker.kind == "llm" and ranker.n_layers == 2 and ranker.n_heads == 4
    scores = ranker.score(["what is a cat"], ["A cat is a small domesticated carnivorous mammal."])
    assert scores.shape == (1,) and torch.isfinite(scores).all()
    assert main(["demo-model", "llm", "--out", str(tmp_path / "again")]) == 0
    first, second = (load_file(str(folder / "model.safetensors")) for folder in (out, tmp_path / "again"))
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)
    assert main(["demo-model", "llm", "--out", str(out)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert main(["audit", "--model", str(out), "--axioms", "TFC1", "--n", "6", "--steps", "heads", "--method",
                 "attribution", "--stability", "0", "--quiet", "--out", str(tmp_path / "audit")]) == 0
