"""MkDocs hook: fills a page's generated blocks from the package, the README and the benchmark records.

A page asks for a block with a line `<!-- generate: NAME -->` (NAME one of BLOCKS), so the axiom catalogue, the
spec reference, the CLI reference and the quick start cannot drift from the code and the README they come from.
A line `<!-- benchmark: NAME -->` becomes the table of the record benchmarks/results/NAME.json (written by the
scripts in benchmarks/, see benchmarks/record.py), titled with its benchmark, date and machine; a line
`<!-- generate: other-benchmarks -->` becomes every record the page has not shown yet, so a new record is never
left out of the performance page.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the source tree's package, even where it is not installed

MARKER = re.compile(r"^<!-- generate: ([\w-]+) -->$", re.MULTILINE)
BENCHMARK = re.compile(r"^<!-- benchmark: ([\w.-]+) -->$", re.MULTILINE)
OTHER_BENCHMARKS = "<!-- generate: other-benchmarks -->"
HEADING = re.compile(r"^(#+) ", re.MULTILINE)
QUICK_START = ("Two commands on a fresh machine", "Score a pair with the default model")  # README sections
README_MARKS = re.compile(r"^<!-- (generated: [\w-]+|end generated) -->\n", re.MULTILINE)


def _demote(markdown: str, levels: int) -> str:
    """Headings `levels` deeper, so included text nests under the page's own headings (code blocks untouched)."""
    lines, fenced = [], False
    for line in markdown.split("\n"):
        fenced ^= line.startswith("```")
        lines.append(line if fenced else HEADING.sub("#" * levels + r"\1 ", line))
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def axiom_table() -> str:
    """One row per packaged axiom, then where each comes from."""
    from mechir_axioms.specs.axiom import list_axioms

    axioms = list_axioms()
    rows = ["| axiom | expect | operation | what it says | how the pair is built |", "|---|---|---|---|---|"]
    rows += [f"| `{a.name}` | `{a.expect}` | `{a.perturb.operation}` | {_cell(a.title)} | {_cell(a.description)} |"
             for a in axioms]
    sources = [f"- **{a.name}**: {_cell(a.citation)}" for a in axioms]
    return "\n".join([*rows, "", "Sources:", "", *sources])


def spec_reference() -> str:
    """axioms/README.md with its field tables regenerated from the registries, under the page's own title."""
    from mechir_axioms.specs.docs import README, render_readme

    text = render_readme(README.read_text(encoding="utf-8"))
    return _demote(text.split("\n", 1)[1].lstrip(), 1)  # without its "# Axiom specs" title


def cli_reference() -> str:
    """`--help` of every subcommand, as argparse prints it at 100 columns and without colour."""
    import argparse

    from mechir_axioms.cli import parser

    main = parser()
    (commands,) = [action for action in main._actions if isinstance(action, argparse._SubParsersAction)]
    saved = {name: os.environ.get(name) for name in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS="100", NO_COLOR="1")
    try:
        parts = [f"```text\n{main.format_help()}```"]
        for name, command in commands.choices.items():
            parts.append(f"## `mechir-axioms {name}`\n\n```text\n{command.format_help()}```")
            for action in command._actions:  # a command of commands (`sae train`): each of them too
                if isinstance(action, argparse._SubParsersAction):
                    parts += [f"## `mechir-axioms {name} {job}`\n\n```text\n{sub.format_help()}```"
                              for job, sub in action.choices.items()]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return "\n\n".join(parts)


def quick_start() -> str:
    """The README's quick-start sections, verbatim; a renamed section fails the build rather than vanish.

    Links into docs/ are made relative to the site (the README links `docs/guide/x.md`, the site `guide/x.md`), and
    the README's own generated-block marks (scripts/readme_tables.py) are left out."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = {}
    for section in re.split(r"^(?=## )", readme, flags=re.MULTILINE)[1:]:
        title, _, body = section.partition("\n")
        sections[title[3:].strip()] = body
    missing = [title for title in QUICK_START if title not in sections]
    if missing:
        raise KeyError(f"README.md has no section {', '.join(missing)}; update QUICK_START in {__file__}")
    text = "\n".join(f"### {title}\n{_demote(sections[title], 1)}" for title in QUICK_START)
    return README_MARKS.sub("", text).replace("](docs/", "](")


@cache
def _record_module() -> ModuleType:
    """benchmarks/record.py, loaded by path (benchmarks/ is not a package, and its scripts' names are generic)."""
    spec = importlib.util.spec_from_file_location("mechir_benchmark_record", ROOT / "benchmarks" / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_records() -> dict[str, dict[str, Any]]:
    """Every record in benchmarks/results/, by name; an invalid one fails the build, naming its file and field."""
    return _record_module().read_records()


def record_markdown(record: dict[str, Any]) -> str:
    """One record as the docs show it: its title, then its benchmark, date, machine and command, its table, its notes
    and its further tables."""
    table = _record_module().markdown
    parts = [f"### {record.get('title') or record['benchmark']}",
             f"*Benchmark `{record['benchmark']}`, {record['date']}, {record['machine']}.* Command: `{record['command']}`",
             table(record["columns"], record["rows"])]
    parts += [" ".join(note.split()) for note in record.get("notes", [])]
    for extra in record.get("tables", []):
        parts += [f"**{extra['title']}** ({record['date']}, {record['machine']})", table(extra["columns"], extra["rows"])]
    return "\n\n".join(parts)


def render_benchmarks(markdown: str, where: str = "page", records: dict[str, dict[str, Any]] | None = None) -> str:
    """`markdown` with each `<!-- benchmark: NAME -->` line replaced by that record, and the other-benchmarks block by
    every record not shown above it."""
    if not BENCHMARK.search(markdown) and OTHER_BENCHMARKS not in markdown:
        return markdown
    records = benchmark_records() if records is None else records
    shown: set[str] = set()

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in records:
            raise KeyError(f"{where}: no benchmark record {name!r} in benchmarks/results/; there are {', '.join(records)}")
        shown.add(name)
        return record_markdown(records[name])

    markdown = BENCHMARK.sub(one, markdown)
    rest = [record_markdown(record) for name, record in records.items() if name not in shown]
    other = "\n\n".join(["## Other records", *rest]) if rest else ""
    return markdown.replace(OTHER_BENCHMARKS, other)


BLOCKS = {"axiom-table": axiom_table, "spec-reference": spec_reference, "cli": cli_reference,
          "quick-start": quick_start}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = render_benchmarks(markdown, page.file.src_path)

    def block(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            raise KeyError(f"{page.file.src_path}: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return BLOCKS[name]()

    return MARKER.sub(block, markdown)
