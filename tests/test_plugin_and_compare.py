"""The pytest plugin run as a user would (an inner pytest session), and `compare` with its CLI and JUnit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import pandas as pd

from mechir_axioms import audit, compare, load_audit
from mechir_axioms.cli import main
from mechir_axioms.analysis.stats import wilson
from mechir_axioms.comparing import newcombe_difference
from mechir_axioms.core.outputs import LEDGER
from processes import kill_once_written

pytest_plugins = ["pytester"]

INNER_TESTS = '''
import pytest

@pytest.mark.axioms("TFC1", "LNC1")
def test_agreement(axiom_audit, axiom):
    axiom_audit(axiom).assert_agreement(at_least=0.99)

def test_cached_per_session(axiom_audit, mechir_ranker):
    assert axiom_audit("TFC1") is axiom_audit("TFC1")
    assert axiom_audit("TFC1").audit.manifest["model"]["name"] == mechir_ranker.name

def test_heads(axiom_audit):
    axiom_audit("TFC1").assert_heads_flagged(["0.1"])

def test_satisfied(axiom_audit):
    axiom_audit("TFC1").assert_satisfied()
'''


def test_plugin_fixtures_marker_messages_and_summary(pytester, tiny, tmp_path):
    _, model = tiny("bert", "bi")
    pytester.makepyfile(test_inner=INNER_TESTS)
    reports = tmp_path / "reports"
    result = pytester.runpytest_subprocess("-rA", "--mechir-model", str(model), "--mechir-axioms", "TFC1,LNC1",
                                           "--mechir-n", "12", "--mechir-report", str(reports))
    result.assert_outcomes(passed=2, failed=3)
    output = result.stdout.str()
    # a random tiny model moves its scores by ~1e-5, below the 1e-3 tolerance: no pair agrees, no head is tested;
    # no pair agreeing, agreement's interval is Wilson's on the effective number of pairs (queries share pairs)
    saved = pd.read_parquet(reports / "TFC1+LNC1" / "axioms.parquet").set_index("axiom")
    tfc1, lnc1 = saved.loc["TFC1"], saved.loc["LNC1"]
    queries = int(tfc1["queries"])
    assert tfc1["agreement_low"] == 0 and tfc1["agreement_high"] > wilson(0, 12)[1]  # wider than 12 independent pairs
    high, lnc1_low = f"{tfc1['agreement_high']:.1%}", f"{lnc1['agreement_low']:.1%}"
    expected = [  # in this order; plain substrings, since fnmatch would read the CI brackets as patterns
        "TFC1 (One more occurrence of a query term raises the score): expected agreement of at least 99.0%, "
        f"measured agreement 0.0% [95% CI 0.0%, {high}] over 12 pairs from {queries} queries",
        f"report: {reports}/TFC1+LNC1/report.html",
        "expected heads 0.1 to be flagged 'encodes'; not flagged: 0.1 untested (no pair changed its score by "
        "more than the tolerance). Heads flagged 'encodes': none. A flag needs an effect beyond +/-0.05 at "
        "q <= 0.05 (heads: verified method: AtP screened every head, flags rest on exact patching)",
        "expected the verdict 'satisfied' (expect increase; agreement's 95% interval above 50%), measured 'violated': "
        f"agreement 0.0% [95% CI 0.0%, {high}] over 12 pairs from {queries} queries, mean score change",
        " mechir-axioms ",
        f"TFC1: violated, agreement 0.0% [0.0%, {high}], heads encoding 0, violating 0; verified exactly: none",
        "block cells encoding 0, violating 0; too few queries (0) for any flag", "; report ",
        f"LNC1: satisfied, agreement 100.0% [{lnc1_low}, 100.0%], heads encoding 0, violating 0; verified exactly: none",
        "block cells encoding 0, violating 0; too few queries (0) for any flag", "; report ",
    ]
    position = 0
    for text in expected:
        found = output.find(text, position)
        assert found >= 0, f"missing, or out of order: {text!r}"
        position = found + len(text)
    assert "test_agreement[TFC1]" in output and "test_agreement[LNC1]" in output
    together = load_audit(reports / "TFC1+LNC1")  # the configured axioms, audited together as audit() would
    assert list(together.axioms["axiom"]) == ["TFC1", "LNC1"] and (reports / "TFC1+LNC1" / "report.html").is_file()


# assert_no_violating_heads on heads that were tested: the tiny model above moves no score past the tolerance, so
# no head is tested and "no violating head" would hold of any ranker. A copy with its linear weights scaled up
# moves scores by ~0.3 on short passages; TFC1's mirror image (the same pairs, expecting a decrease) must fail.
NO_VIOLATION_TESTS = '''
def test_no_violating_heads(axiom_audit):
    result = axiom_audit("TFC1")
    assert (result.heads["n"] == 48).all(), "every head must be tested on every pair"
    result.assert_no_violating_heads()

def test_no_violating_heads_of_the_mirror_image(axiom_audit):
    result = axiom_audit("TFC1-MIRROR")
    assert (result.heads["n"] == 48).all(), "every head must be tested on every pair"
    result.assert_no_violating_heads()
'''

MIRROR_SPEC = """name = "TFC1-MIRROR"
title = "One more occurrence of a query term lowers the score"
citation = "TFC1 turned around, for a test."
expect = "decrease"

[perturb]
operation = "insert"
position = "end"
term = "query_random"

[baseline]
fill = "filler"
filler = "a"
"""


@pytest.mark.slow
def test_no_violating_heads_is_checked_on_tested_heads(tiny, trec_rows, tmp_path):
    """Run in a plain subprocess rather than by pytester, whose restoring of sys.modules would make pandas
    register its Parquet types twice once this test has read the audits back."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from mechir_axioms import load_audit

    _, tiny_path = tiny("bert", "bi")
    model, scaled = AutoModel.from_pretrained(tiny_path), tmp_path / "scaled"
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(10)
    model.save_pretrained(scaled)
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(scaled)
    data = tmp_path / "short.jsonl"
    one_per_query = {row["qid"]: row for row in trec_rows if len(row["text"].split()) <= 30}  # 48 pairs, 48 queries
    data.write_text("".join(json.dumps(row) + "\n" for row in one_per_query.values()))
    specs = tmp_path / "axioms"
    specs.mkdir()
    (specs / "TFC1-MIRROR.toml").write_text(MIRROR_SPEC)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(NO_VIOLATION_TESTS)
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--mechir-model", str(scaled),
               "--mechir-data", str(data), "--mechir-axioms", "TFC1", "--mechir-n", "48", "--mechir-report", str(reports),
               "--mechir-stability", "0"]  # flags from the test alone: what is checked here is which heads it tests
    environment = {**os.environ, "MECHIR_AXIOMS_PATH": str(specs), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, cwd=inner, env=environment, capture_output=True, text=True, timeout=600)
    output = run.stdout
    assert run.returncode == 1, output + run.stderr
    assert re.search(r"^PASSED test_inner.py::test_no_violating_heads$", output, re.MULTILINE), output
    assert re.search(r"^FAILED test_inner.py::test_no_violating_heads_of_the_mirror_image\b", output, re.MULTILINE), output
    assert re.search(r"=+ 1 failed, 1 passed in ", output), output
    heads, mirrored = (load_audit(reports / name).heads.set_index("name") for name in ("TFC1", "TFC1-MIRROR"))
    encoding = list(heads.index[heads["flag"] == "encodes"])
    violating = list(mirrored.index[mirrored["flag"] == "violates"])
    assert encoding and violating == encoding and (heads["flag"] != "violates").all()  # the same heads, turned around
    described = "; ".join(
        f"{name} exactly measured effect {row.effect:+.3f} [95% CI {row.ci_low:+.3f}, {row.ci_high:+.3f}], "
        f"q = {row.q_value:.2g}, violates"
        for name, row in mirrored.loc[violating].iterrows())
    expected = (f"TFC1-MIRROR (One more occurrence of a query term lowers the score): expected no head flagged "
                f"'violates', found {len(violating)}: {described}")
    assert expected in output, output


def test_marker_without_axiom_argument_is_a_usage_error(pytester, tiny):
    _, model = tiny("bert", "bi")
    pytester.makepyfile(test_bad="import pytest\n@pytest.mark.axioms('TFC1')\ndef test_x(axiom_audit):\n    pass\n")
    result = pytester.runpytest_subprocess("--mechir-model", str(model))
    assert "@pytest.mark.axioms needs an `axiom` argument" in result.stderr.str() + result.stdout.str()


def test_newcombe_interval_matches_the_paper():
    # Newcombe (1998), method 10, example (a): 56/70 vs 48/80 -> difference 0.2000, 95% CI 0.0524 to 0.3339
    low, high = newcombe_difference(48, 80, 56, 70)
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)


@pytest.fixture(scope="module")
def two_audits(tiny, tmp_path_factory):
    """The same tiny ranker audited twice, and once with heads of layer 0 cut out."""
    import torch

    ranker, _ = tiny("bert", "bi")
    root = tmp_path_factory.mktemp("compare")
    options = dict(n=24, seed=1, targets=("heads",), method="exact", tolerance=1e-7, progress=False)
    first = audit(ranker, ["TFC1"], folder=root / "first", **options)
    second = audit(ranker, ["TFC1"], folder=root / "second", **options)
    weight = ranker.stack.blocks[1].layer.attention.output.dense.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight[:, : weight.shape[1] // 2] = 0  # half the heads of layer 1 removed: the head map moves
    try:
        damaged = audit(ranker, ["TFC1"], folder=root / "damaged", **options)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    return first, second, damaged, root


@pytest.mark.slow
def test_compare_passes_identical_audits_and_fails_a_damaged_one(two_audits, capsys):
    first, second, damaged, root = two_audits
    same = compare(first, second)
    assert same.ok and same.axioms[0].correlation == pytest.approx(1.0)
    assert main(["compare", str(root / "first"), str(root / "second")]) == 0
    junit = root / "compare.xml"
    code = main(["compare", str(root / "first"), str(root / "damaged"), "--min-head-map-correlation", "0.99",
                 "--junit-xml", str(junit)])
    table = capsys.readouterr().out
    assert code == 1
    assert "head-map Spearman rho" in table and "FAIL" in table and "result: FAIL" in table
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "1" and suite.get("failures") == "1"
    assert "below the required 0.99" in suite.find("testcase/failure").get("message")


@pytest.mark.slow
def test_compare_refuses_audits_with_different_settings(two_audits, tiny, tmp_path):
    first, *_ = two_audits
    ranker, _ = tiny("bert", "bi")
    other = audit(ranker, ["TFC1"], n=20, seed=1, targets=("heads",), method="exact", tolerance=1e-7, progress=False)
    with pytest.raises(ValueError, match="different settings \\(n 24 vs 20\\)"):
        compare(first, other)


@pytest.mark.slow
def test_plugin_resumes_its_audit_killed_midway(pytester, tiny, tmp_path):
    """A CI job killed during the plugin's audit leaves checkpoints and no marker; the next session resumes
    them instead of refusing the folder as someone else's."""
    _, model = tiny("bert", "bi")
    pytester.makepyfile(test_inner="def test_audited(axiom_audit):\n    axiom_audit('TFC1')\n")
    reports = tmp_path / "reports"
    options = ["--mechir-model", str(model), "--mechir-axioms", "TFC1", "--mechir-n", "48", "--mechir-report",
               str(reports)]
    checkpoint = reports / "TFC1" / "work" / "TFC1" / "pairs" / "provenance.json"
    kill_once_written([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options], checkpoint,
                      cwd=pytester.path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    folder = reports / "TFC1"
    assert checkpoint.exists() and not (folder / "manifest.json").exists(), "the audit was not killed midway"
    result = pytester.runpytest_subprocess(*options)  # before the fix: "holds files the plugin did not write"
    result.assert_outcomes(passed=1)
    assert (folder / "manifest.json").is_file()
    assert json.loads((folder / LEDGER).read_text())["origin"] == "pytest"  # still the plugin's, to be replaced
