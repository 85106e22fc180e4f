"""The field tables of axioms/README.md, generated from the registries that also validate specs.

Each table sits between `<!-- generated: NAME -->` and `<!-- end generated -->`; `--write` rewrites them in place,
`--check` names the stale ones, so the docs cannot drift from what `parse_axiom` accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..core.params import Param
from ..perturb.operators import OPERATORS
from ..perturb.terms import SELECTORS
from .axiom import _REQUIRED_TOP, PACKAGED_AXIOMS, SIDES, TABLES

README = PACKAGED_AXIOMS / "README.md"
BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)
REGENERATE = "python -m mechir_axioms.specs.docs --write"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (pipes escaped, no line breaks)."""
    return " ".join(text.replace("|", "\\|").split())


def _toml(value: Any) -> str:
    """A default as it would be written in a spec, in backticks; "none" when there is no default."""
    return "none" if value is None else f"`{json.dumps(value)}`"


def _allowed(param: Param) -> str:
    """Param.describe(), except that a term-selector choice refers to the selector table instead of listing it."""
    if param.allowed and set(param.allowed) == set(SELECTORS):
        return "a [term selector](#term-selectors)"
    return param.describe()


def _table(params: dict[str, Param], required: tuple[str, ...] = ()) -> str:
    """One row per field: name, allowed values, default (or "required") and meaning, in declaration order."""
    rows = ["| field | allowed | default | meaning |", "|---|---|---|---|"]
    for name, param in params.items():
        default = "required" if name in required else _toml(param.default)
        rows.append(f"| `{name}` | {_cell(_allowed(param))} | {default} | {_cell(param.description)} |")
    return "\n".join(rows)


def _operators() -> str:
    """A summary table of operators, then each operator's own parameters, in registration order."""
    lines = ["| operation | what it does | `baseline.fill = \"mask\"` |", "|---|---|---|"]
    for op in OPERATORS.values():
        lines.append(f"| `{op.name}` | {_cell(op.description)} | {'yes' if op.maskable else 'no'} |")
    for op in OPERATORS.values():
        params = f"parameters:\n\n{_table(op.params)}" if op.params else "has no parameters."
        lines += ["", f"**`{op.name}`** {params}"]
    return "\n".join(lines)


def _selectors() -> str:
    """Term selectors with what they pick and whether a pair without query terms is dropped."""
    rows = ["| selector | picks | needs query terms |", "|---|---|---|"]
    for chosen in SELECTORS.values():
        needs = "yes" if chosen.needs_query_terms else "no"
        rows.append(f"| `{chosen.name}` | {_cell(chosen.description)} | {needs} |")
    return "\n".join(rows)


def _perturb() -> dict[str, Param]:
    """The [perturb] keys every operator shares, read from the registries when called (operators may be added)."""
    return {
        "operation": Param(str, None, tuple(OPERATORS), description="the perturbation operator (below)"),
        "target": Param(str, "document", SIDES,
                        description="the text that changes; for bi-encoders only that side's encoder sees a change"),
    }


def generated_blocks() -> dict[str, str]:
    """The markdown body of every generated block, by block name, from the registries as they are now."""
    return {
        "top": _table(TABLES[""], required=_REQUIRED_TOP),
        "perturb": _table(_perturb(), required=("operation",)),
        "operators": _operators(),
        "selectors": _selectors(),
        "baseline": _table(TABLES["baseline"]),
        "select": _table(TABLES["select"]),
    }


def render_readme(text: str) -> str:
    """`text` with each marked block's body replaced by its generated markdown; everything else is kept."""
    blocks = generated_blocks()

    def body(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in blocks:
            raise KeyError(f"unknown generated block {name!r}; known blocks: {', '.join(blocks)}")
        return f"{match.group(1)}\n{blocks[name]}\n\n{match.group(4)}"

    return BLOCK.sub(body, text)


def stale_blocks(text: str) -> list[str]:
    """Names of the blocks whose body in `text` differs from what `render_readme` would write."""
    fresh = {match.group(2): match.group(3) for match in BLOCK.finditer(render_readme(text))}
    return [match.group(2) for match in BLOCK.finditer(text) if fresh[match.group(2)] != match.group(3)]


def main(argv: list[str] | None = None) -> int:
    """`--write` regenerates the README in place; `--check` exits 1 naming each stale block."""
    parser = argparse.ArgumentParser(prog="python -m mechir_axioms.specs.docs", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks of the README in place")
    mode.add_argument("--check", action="store_true", help="exit 1 if a generated block is stale")
    parser.add_argument("--readme", type=Path, default=README, help=f"the file (default: {README})")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if args.write:
        args.readme.write_text(render_readme(text), encoding="utf-8")
        return 0
    stale = stale_blocks(text)
    for name in stale:
        print(f"{args.readme}: generated block {name!r} is stale; run `{REGENERATE}`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
