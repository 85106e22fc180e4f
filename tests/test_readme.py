"""The README is the front door: short, its commands parse, its Python compiles, its links resolve, and its one
measured number, like every table of the performance page, is generated from the benchmark records."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from mechir_axioms.cli import parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = {"bash", "sh", "shell", "console", ""}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _module(path: Path, name: str) -> ModuleType:
    """A module of the repository that is not in a package (docs/hooks.py, scripts/, benchmarks/), by path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(language: set[str]) -> list[str]:
    """The README's fenced code blocks in these languages."""
    return [body for kind, body in FENCE.findall(TEXT) if kind in language]


def cli_commands() -> list[str]:
    """Every `mechir-axioms ...` invocation in the README's shell blocks, continuations joined, comments dropped,
    split at `&&`, `||` and `;`, with any leading `VAR=value` assignments kept (they are skipped when parsing)."""
    found = []
    for body in blocks(SHELL):
        for line in body.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;", line):
                words = shlex.split(part, comments=True)
                while words and ASSIGNMENT.match(words[0]):
                    words = words[1:]
                if words and words[0] == "mechir-axioms":
                    found.append(shlex.join(words))
    return found


COMMANDS = cli_commands()


def test_readme_is_at_most_300_lines():
    lines = TEXT.count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move the detail into docs/ (at most 300)"


def test_readme_shows_the_main_commands():
    assert len(COMMANDS) >= 8, COMMANDS  # audit, its variants, sweep, report, list, compare
    assert {shlex.split(command)[1] for command in COMMANDS} >= {"audit", "sweep", "report", "list", "compare"}
    shell = "\n".join(blocks(SHELL))
    assert "pip install torch==2.13.0 && pip install -e '.[default-model]' && mechir-axioms audit" in shell
    assert "lint-imports && python -m pytest && python -m pytest examples/ci && .ci/wheel-smoke" in shell
    assert 'python -m pytest -m "not slow"' in shell


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    """The CLI's own parser accepts each README command as written (argparse exits on an unknown flag)."""
    try:
        arguments = parser().parse_args(shlex.split(command)[1:])
    except SystemExit as error:
        pytest.fail(f"README.md command does not parse (exit {error.code}): {command}")
    assert callable(arguments.run)


@pytest.mark.parametrize("index", range(len(blocks({"python"}))))
def test_readme_python_compiles(index):
    source = blocks({"python"})[index]
    compile(source, f"README.md, Python block {index + 1}", "exec")


def test_readme_links_resolve():
    """Every relative link and image of the README names a file or folder of the repository."""
    targets = re.findall(r"\]\(([^)\s]+)\)", TEXT)
    local = [target.split("#")[0] for target in targets if not re.match(r"[a-z]+:", target)]
    assert any(target.endswith((".png", ".svg")) for target in local), "the README shows no picture"
    missing = [target for target in local if target and not (ROOT / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_refusals_live_in_the_docs():
    assert "## What it refuses" not in TEXT and "docs/guide/reliability.md" in TEXT
    assert "--targets" not in TEXT, "the README shows the audit's steps as --steps"


def test_readme_numbers_match_the_records():
    tables = _module(ROOT / "scripts" / "readme_tables.py", "readme_tables")
    assert "<!-- generated: main-job -->" in TEXT
    stale = tables.stale(TEXT)
    assert not stale, f"README.md blocks {stale} disagree with benchmarks/results/; run `{tables.REGENERATE}`"


# --- the performance page ------------------------------------------------------------------------

RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "guide" / "performance.md"


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    return _module(ROOT / "docs" / "hooks.py", "docs_hooks")


@pytest.fixture(scope="module")
def record_module() -> ModuleType:
    return _module(ROOT / "benchmarks" / "record.py", "benchmark_record")


def _render(hooks: ModuleType, markdown: str) -> str:
    page = SimpleNamespace(file=SimpleNamespace(src_path="guide/performance.md"))
    return hooks.on_page_markdown(markdown, page, None, None)


def test_every_record_has_its_fields():
    paths = sorted(RESULTS.glob("*.json"))
    assert len(paths) >= 10, paths
    for path in paths:
        record = json.loads(path.read_text(encoding="utf-8"))
        for field in ("benchmark", "date", "machine", "command", "columns", "rows"):
            assert record.get(field), f"{path.name}: no {field!r}"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"]), f"{path.name}: date {record['date']!r}"
        assert all(set(row) <= set(record["columns"]) for row in record["rows"]), path.name


def test_the_performance_page_shows_every_record(hooks, record_module):
    records = record_module.read_records(RESULTS)
    rendered = _render(hooks, PAGE.read_text(encoding="utf-8"))
    assert "<!-- benchmark:" not in rendered and "<!-- generate:" not in rendered
    for name, record in records.items():
        assert hooks.record_markdown(record) in rendered, f"{name}.json is not on the performance page"
        table = record_module.markdown(record["columns"], record["rows"])
        assert table in rendered, name
        assert f"{record['date']}, {record['machine']}" in rendered, name
    assert "## Other records" not in rendered  # the page places every record under its own section


def test_a_new_record_appears_without_editing_the_page(hooks, record_module, tmp_path):
    path = record_module.write_record("toy", [{"run": "a", "seconds": 1.5}], ["run", "seconds"], "python toy.py",
                                      title="A toy benchmark", machine="a test machine", folder=tmp_path)
    records = record_module.read_records(tmp_path)
    assert records["toy"]["date"] and records["toy"]["machine"] == "a test machine"
    rendered = hooks.render_benchmarks("# Performance\n\n<!-- generate: other-benchmarks -->\n", records=records)
    assert "## Other records" in rendered and "### A toy benchmark" in rendered
    assert "| run | seconds |\n|---|---|\n| a | 1.5 |" in rendered
    assert "*Benchmark `toy`," in rendered and "a test machine" in rendered
    path.write_text(json.dumps({"benchmark": "toy", "date": "yesterday"}))
    with pytest.raises(ValueError, match="toy.json: the record has no field 'machine'"):
        record_module.read_records(tmp_path)


def test_an_unknown_record_fails_the_page(hooks):
    with pytest.raises(KeyError, match="no benchmark record 'nothing'"):
        hooks.render_benchmarks("<!-- benchmark: nothing -->\n", "guide/x.md", records={})
