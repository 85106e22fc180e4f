"""Generated docs: axioms/README.md's field tables match the registries, and a new operator needs no other edit."""

from __future__ import annotations

import re

import pytest

from mechir_axioms import SpecError
from mechir_axioms.core.params import Param
from mechir_axioms.perturb.operators import OPERATORS, Edit, operator
from mechir_axioms.specs.axiom import parse_axiom
from mechir_axioms.specs.docs import README, REGENERATE, generated_blocks, main, render_readme, stale_blocks

SPEC = {"name": "T", "title": "t", "citation": "c", "expect": "increase"}


def test_readme_is_current():
    text = README.read_text(encoding="utf-8")
    assert render_readme(text) == text, (
        f"{README} is stale in blocks {stale_blocks(text)}; regenerate it with `{REGENERATE}`"
    )
    assert main(["--check"]) == 0


def test_every_block_is_marked_exactly_once():
    text = README.read_text(encoding="utf-8")
    for name in generated_blocks():
        assert text.count(f"<!-- generated: {name} -->") == 1, name
    assert len(re.findall(r"<!-- generated: ", text)) == len(generated_blocks())
    assert text.count("<!-- end generated -->") == len(generated_blocks())


def test_stale_block_is_named(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(render_readme(README.read_text(encoding="utf-8")).replace("| `gap` |", "| `gaps` |"))
    assert main(["--check", "--readme", str(readme)]) == 1
    assert "generated block 'operators' is stale" in capsys.readouterr().err
    assert main(["--write", "--readme", str(readme)]) == 0 and main(["--check", "--readme", str(readme)]) == 0


def test_new_operator_is_documented_and_validated():
    @operator("reverse_for_test", "reverse the words (a throwaway test operator)",
              times=Param(int, 1, low=1, high=3, description="how often the words are reversed"))
    def _reverse(params, words, context, filling):
        original, perturbed = " ".join(words), " ".join(reversed(words))
        return [Edit(original, perturbed, ((0, len(original)),), ((0, len(perturbed)),))]

    try:
        blocks = generated_blocks()
        assert "| `reverse_for_test` | reverse the words (a throwaway test operator) | no |" in blocks["operators"]
        assert "| `times` | an integer from 1 to 3 | `1` | how often the words are reversed |" in blocks["operators"]
        assert "'reverse_for_test'" in blocks["perturb"]
        axiom = parse_axiom({**SPEC, "perturb": {"operation": "reverse_for_test", "times": 2}}, "test")
        assert axiom.perturb.operation == "reverse_for_test" and axiom.perturb["times"] == 2
        with pytest.raises(SpecError, match="field 'perturb.times' is 4; allowed: an integer from 1 to 3"):
            parse_axiom({**SPEC, "perturb": {"operation": "reverse_for_test", "times": 4}}, "test")
    finally:
        OPERATORS.pop("reverse_for_test", None)
    assert "reverse_for_test" not in generated_blocks()["operators"]
