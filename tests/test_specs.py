"""Axiom specs: the catalogue loads, overrides re-validate, and every malformed spec gets one exact sentence."""

from __future__ import annotations

import pytest

from mechir_axioms import SpecError, list_axioms, load_axiom
from mechir_axioms.specs.axiom import PACKAGED_AXIOMS

CATALOGUE = {"TFC1", "TFC1-START", "TFC2", "TDC", "LNC1", "LNC2", "TF-LNC", "STMC1", "PROX1", "POSITION", "WORD-ORDER", "NULL"}


def test_catalogue_is_complete_and_cited():
    axioms = {axiom.name.upper(): axiom for axiom in list_axioms()}
    assert CATALOGUE <= set(axioms)
    for axiom in axioms.values():
        assert len(axiom.citation) > 20 and "(" in axiom.citation, axiom.name
        assert axiom.title and axiom.expect
    assert axioms["TFC1"].perturb["position"] == "end" and axioms["TFC1-START"].perturb["position"] == "start"
    assert axioms["TFC2"].perturb["ladder"] and axioms["TFC2"].gains == "diminishing"
    assert axioms["NULL"].expect == "no_change"
    assert (PACKAGED_AXIOMS / "README.md").is_file()


def test_load_by_name_path_and_override():
    assert load_axiom("tfc1") == load_axiom(PACKAGED_AXIOMS / "TFC1.toml")
    start = load_axiom("TFC1", position="start")
    assert start.perturb["position"] == "start" and start.spec_hash != load_axiom("TFC1").spec_hash
    assert load_axiom("TFC1")(filler="the").baseline.filler == "the"
    with pytest.raises(SpecError, match=r"field 'perturb.position' is 'middle'; allowed: one of 'start', 'end', 'offset'"):
        load_axiom("TFC1", position="middle")
    with pytest.raises(SpecError, match=r"TFC1 \(override\): field 'colour' is 'red'; allowed: no such parameter"):
        load_axiom("TFC1", colour="red")
    with pytest.raises(SpecError, match=r"no axiom named 'TFC9'; known axioms: LNC1, LNC2"):
        load_axiom("TFC9")


GOOD = """name = "MINE"
title = "t"
citation = "Someone (2020). A paper."
expect = "increase"

[perturb]
operation = "insert"
"""


def test_user_folder_and_environment(tmp_path, monkeypatch):
    (tmp_path / "MINE.toml").write_text(GOOD)
    assert "MINE" in {axiom.name for axiom in list_axioms(folders=[tmp_path])}
    assert "MINE" not in {axiom.name for axiom in list_axioms()}
    monkeypatch.setenv("MECHIR_AXIOMS_PATH", str(tmp_path))
    assert load_axiom("mine").perturb.operation == "insert"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace('"insert"', '"explode"'),
         "field 'perturb.operation' is 'explode'; allowed: one of 'insert', 'replace', 'duplicate', 'shuffle', 'swap', 'separate', 'move'"),
        (GOOD + "count = \"two\"\n", "field 'perturb.count' is 'two'; allowed: an integer from 1 to 10"),
        (GOOD + "count = true\n", "field 'perturb.count' is True; allowed: an integer from 1 to 10"),
        (GOOD.replace('expect = "increase"\n', ""), "field 'expect' is None; allowed: a required field; one of 'increase'"),
        (GOOD.replace('"increase"', '"up"'), "field 'expect' is 'up'; allowed: one of 'increase', 'decrease', 'no_change'"),
        (GOOD + "colour = 1\n", "field 'perturb.colour' is 1; allowed: no such field; known fields are position, offset"),
        (GOOD + "\n[baseline]\nfill = \"term\"\n", "field 'baseline.term' is None; allowed: a term selector when fill = 'term'"),
        (GOOD.replace('"insert"', '"shuffle"') + "\n[baseline]\nfill = \"mask\"\n",
         "field 'baseline.fill' is 'mask'; allowed: 'mask' only with the operations insert, replace, duplicate"),
        (GOOD + "\n[select]\nrelevance = [\"high\"]\n", "field 'select.relevance' is ['high']; allowed: a list of integer relevance grades"),
        (GOOD.replace('name = "MINE"', 'name = "OTHER"'), "field 'name' is 'OTHER'; allowed: the file's own name, 'MINE'"),
        (GOOD.replace("[perturb]\noperation = \"insert\"\n", ""), "field 'perturb' is None; allowed: a required table"),
        ("name = \"MINE\n", "not valid TOML"),
    ],
)
def test_malformed_spec_messages(tmp_path, text, message):
    path = tmp_path / "MINE.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        load_axiom(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="axiom spec .*NOPE.toml does not exist"):
        load_axiom(tmp_path / "NOPE.toml")
