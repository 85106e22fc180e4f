"""Interventions: `intervene` changes exactly the named heads (or steers a site) and restores the model bitwise;
ir-measures' nDCG@10 equals a hand computation; `mechir-axioms intervene` writes its report, which opens in
headless Chromium; an audit's suggested interventions are commands the CLI parses and runs."""

from __future__ import annotations

import copy
import json
import math
import shlex

import numpy as np
import pandas as pd
import pytest
import torch

from mechir_axioms import SettingsError, audit, intervene
from mechir_axioms.analysis.effectiveness import paired_difference, per_query, randomization_p, run_of
from mechir_axioms.cli import main, parser
from mechir_axioms.models.names import act_name

from browser import chromium, open_page

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

HEADS = [(0, 1), (1, 2)]


@pytest.fixture(scope="module")
def cross(tiny, one_torch_thread):
    """A tiny random BERT cross-encoder and its folder."""
    return tiny("bert", "cross")


@pytest.fixture(scope="module")
def texts(trec_pairs) -> tuple[list[str], list[str]]:
    queries, documents = trec_pairs
    return queries[:8], documents[:8]


def _hook_state(model: torch.nn.Module) -> list[tuple[str, tuple, tuple]]:
    """Every module's registered forward hooks and pre-hooks (their ids), and pattern functions."""
    return [(name, tuple(module._forward_pre_hooks), tuple(module._forward_hooks),
             tuple(map(id, module.__dict__.get("_mechir_pattern_fns", []))))
            for name, module in model.named_modules()]


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _zeroed(heads):
    def zero(z: torch.Tensor, name: str) -> torch.Tensor:
        z = z.clone()
        for head in heads:
            z[..., head, :] = 0
        return z
    return zero


def _assert_restored(ranker, texts, scores, parameters, hooks, fingerprint):
    assert torch.equal(ranker.score(*texts), scores)
    after = _parameters(ranker.model)
    assert all(torch.equal(after[name], value) for name, value in parameters.items())
    assert _hook_state(ranker.model) == hooks
    assert ranker.fingerprint() == fingerprint and ranker.interventions == []


def test_ablate_equals_zeroed_hook_z_and_leaving_restores_the_model_bitwise(cross, texts):
    ranker, _ = cross
    scores, parameters, hooks, fingerprint = (ranker.score(*texts), _parameters(ranker.model),
                                              _hook_state(ranker.model), ranker.fingerprint())
    expected = ranker.run_with_hooks(*texts, {act_name("z", 0): _zeroed([1]), act_name("z", 1): _zeroed([2])})
    with intervene(ranker, ["0.1", (1, 2)], "ablate") as intervention:
        inside = ranker.run_with_hooks(*texts, {})
        assert ranker.fingerprint() != fingerprint
        assert ranker.fingerprint()["interventions"] == [{"op": "ablate", "heads": ["0.1", "1.2"]}]
    assert intervention.label() == "ablate heads 0.1, 1.2"
    assert torch.equal(inside, expected) and not torch.equal(inside, scores)
    _assert_restored(ranker, texts, scores, parameters, hooks, fingerprint)


def test_an_exception_inside_the_block_still_restores_the_model(cross, texts):
    ranker, _ = cross
    scores, parameters, hooks, fingerprint = (ranker.score(*texts), _parameters(ranker.model),
                                              _hook_state(ranker.model), ranker.fingerprint())
    with pytest.raises(RuntimeError, match="inside"):
        with intervene(ranker, "0.0,1.3", "scale", factor=3.0):
            assert not torch.equal(ranker.score(*texts), scores)
            raise RuntimeError("inside")
    _assert_restored(ranker, texts, scores, parameters, hooks, fingerprint)


def test_scale_by_one_is_the_identity_and_by_two_doubles_the_heads(cross, texts):
    ranker, _ = cross
    scores = ranker.score(*texts)
    with intervene(ranker, HEADS, "scale", factor=1.0):
        assert torch.equal(ranker.score(*texts), scores)

    def double(head):
        def hook(z, name):
            z = z.clone()
            z[..., head, :] *= 2
            return z
        return hook

    expected = ranker.run_with_hooks(*texts, {act_name("z", 0): double(1), act_name("z", 1): double(2)})
    with intervene(ranker, HEADS, "scale", factor=2.0):
        assert torch.allclose(ranker.run_with_hooks(*texts, {}), expected, atol=1e-6)


def test_mean_sets_heads_to_their_mean_over_the_reference_tokens(cross, texts, trec_pairs):
    ranker, _ = cross
    reference = (trec_pairs[0][8:14], trec_pairs[1][8:14])
    inputs = ranker.tokenize(*reference)
    _, cache = ranker.run_with_cache(*reference, names=[act_name("z", 1)])
    mask = inputs.tokens["attention_mask"].bool()
    mean = cache[act_name("z", 1)][mask].mean(0)  # [head, d_head] over every kept token of every input

    def to_mean(z, name):
        z = z.clone()
        z[..., 2, :] = mean[2]
        return z

    expected = ranker.run_with_hooks(*texts, {act_name("z", 1): to_mean})
    with intervene(ranker, ["1.2"], "mean", reference=reference) as intervention:
        assert torch.allclose(ranker.run_with_hooks(*texts, {}), expected, atol=1e-5)
    assert intervention.reference is not None and intervention.describe()["op"] == "mean"


def test_steer_adds_a_vector_at_a_residual_site(cross, texts):
    ranker, _ = cross
    width = ranker.model.config.hidden_size
    vector = torch.linspace(-1, 1, width)
    site = act_name("resid_post", 0)
    expected = ranker.run_with_hooks(*texts, {site: lambda x, name: x + vector})
    with intervene(ranker, steer={site: vector}) as intervention:
        assert torch.equal(ranker.run_with_hooks(*texts, {}), expected)
    assert intervention.label() == f"steer {site}"
    with pytest.raises(SettingsError, match="not a residual site"):
        with intervene(ranker, steer={act_name("z", 0): vector}):
            pass
    with pytest.raises(SettingsError, match=rf"must be \({width},\)"):
        with intervene(ranker, steer={site: vector[:3]}):
            pass


@pytest.mark.parametrize("options, message", [
    ({"heads": ["9.0"]}, r"head 9\.0 is not in .*layers are 0-1 and heads 0-3"),
    ({"heads": ["0.7"]}, r"head 0\.7 is not in .*heads 0-3"),
    ({"heads": ["0-1"]}, r"head '0-1' is not valid; write a head as LAYER\.HEAD"),
    ({"heads": ["0.1"], "op": "zero"}, r"op='zero' is not valid; use one of ablate, mean, scale"),
    ({"heads": ["0.1"], "op": "scale"}, r"op='scale' needs a finite number"),
    ({"heads": ["0.1"], "factor": 2.0}, r"factor=2\.0 applies to op='scale' only"),
    ({"heads": ["0.1"], "op": "mean"}, r"op='mean' needs reference"),
    ({"heads": []}, r"changes nothing"),
])
def test_bad_interventions_are_named(cross, options, message):
    ranker, _ = cross
    hooks = _hook_state(ranker.model)
    with pytest.raises(SettingsError, match=message):
        with intervene(ranker, **options):
            pass
    assert _hook_state(ranker.model) == hooks and ranker.interventions == []


def test_ir_measures_ndcg_at_10_equals_a_hand_computation():
    """Two queries: q1 ranks grades [0, 3, 1] (one judged passage unranked), q2 ranks [2, 0]."""
    qrels = pd.DataFrame({"query_id": ["q1"] * 4 + ["q2"] * 2, "doc_id": ["a", "b", "c", "d", "e", "f"],
                          "relevance": [0, 3, 1, 2, 2, 0]})
    frame = pd.DataFrame({"qid": ["q1", "q1", "q1", "q2", "q2"], "docno": ["a", "b", "c", "e", "f"]})
    run = run_of(frame, [0.9, 0.5, 0.1, 2.0, 1.0])
    values = per_query(qrels, run).set_index("qid")

    def dcg(grades):
        return sum(grade / math.log2(rank + 2) for rank, grade in enumerate(grades))

    q1 = dcg([0, 3, 1]) / dcg([3, 2, 1, 0])
    assert values.loc["q1", "nDCG@10"] == pytest.approx(q1, abs=1e-12)
    assert values.loc["q2", "nDCG@10"] == pytest.approx(1.0)
    assert values.loc["q1", "RR(rel=2)@10"] == pytest.approx(0.5)  # first passage of grade >= 2 at rank 2
    assert values.loc["q1", "AP(rel=2)"] == pytest.approx(0.25)  # b at rank 2 (1/2), d never retrieved, over 2


def test_paired_statistics():
    rng = np.random.default_rng(0)
    before = rng.normal(size=40)
    same = paired_difference(before, before)
    assert same["difference"] == 0 and same["p_value"] == 1.0 and math.isnan(same["t_test_p"])
    shifted = paired_difference(before, before + 0.5 + rng.normal(scale=0.1, size=40))
    assert shifted["low"] > 0.4 and shifted["p_value"] < 1e-4 and shifted["t_test_p"] < 1e-10
    assert randomization_p(np.array([1.0, -1.0])) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def flagged_audit(cross, tmp_path_factory):
    """A real tiny audit whose threshold 0 flags heads both ways (random weights carry no axiom)."""
    ranker, _ = cross
    folder = tmp_path_factory.mktemp("intervene") / "audit"
    result = audit(ranker, ["TFC1"], n=16, targets=("heads",), method="attribution", threshold=0.0, tolerance=1e-7,
                   stability=0, examples=0, folder=folder, progress=False)
    assert set(result.heads["flag"]) == {"", "encodes", "violates"}, "the fixture needs flags of both kinds"
    return result


@pytest.fixture(scope="module")
def intervened(flagged_audit, tmp_path_factory, cross):
    """`mechir-axioms intervene` run from the audit's first suggestion, into a temporary folder."""
    suggestion = flagged_audit.suggest_interventions()[0]
    out = tmp_path_factory.mktemp("intervene") / "run"
    argv = shlex.split(suggestion.command)[1:]
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv) == 0
    return suggestion, out


def test_suggestions_are_commands_the_cli_parses(flagged_audit, cross):
    _, folder = cross
    suggestions = flagged_audit.suggest_interventions(max_heads=2)
    flagged = flagged_audit.flagged("TFC1")
    assert [s.op for s in suggestions] == ["ablate", "scale"]
    for suggestion in suggestions:
        args = parser().parse_args(shlex.split(suggestion.command)[1:])
        assert args.command == "intervene" and args.model == str(folder) and args.axioms == ("TFC1",)
        assert args.op == suggestion.op and args.n == 16
        assert args.seed == 1 and args.chosen_by == str(flagged_audit.folder)  # a fresh draw, compared with the audit
        assert args.tolerance == 1e-7 and args.threshold == 0.0 and args.alpha == 0.05  # the audit's, not the defaults
        flag = "violates" if suggestion.op == "ablate" else "encodes"
        strongest = list(flagged[flagged["flag"] == flag]["name"][:2])
        assert [f"{layer}.{head}" for layer, head in args.heads] == strongest == list(suggestion.heads)
        assert (args.factor == 2.0) if suggestion.op == "scale" else args.factor is None
        assert flag.removesuffix("s") in suggestion.reason and "TFC1" in suggestion.reason


def test_intervene_command_writes_audits_effectiveness_and_report(intervened, flagged_audit):
    suggestion, out = intervened
    facts = json.loads((out / "intervention.json").read_text())
    assert facts["intervention"]["heads"] == list(suggestion.heads) and facts["intervention"]["op"] == suggestion.op
    assert facts["measures"][0]["measure"] == "nDCG@10" and facts["queries"] == 65
    axiom = facts["axioms"][0]
    before = pd.read_parquet(out / "before" / "axioms.parquet").iloc[0]
    after = pd.read_parquet(out / "after" / "axioms.parquet").iloc[0]
    assert axiom["agreement_before"] == pytest.approx(before["agreement"])
    assert axiom["agreement_after"] == pytest.approx(after["agreement"])
    assert axiom["agreement_change"] == pytest.approx(after["agreement"] - before["agreement"])
    assert axiom["agreement_low"] <= axiom["agreement_change"] <= axiom["agreement_high"]
    chosen = facts["chosen_by"]  # measured on a fresh draw, compared with the pairs that chose the heads
    assert chosen["folder"] == str(flagged_audit.folder) and chosen["pairs"] == 16
    assert chosen["pairs_shared"] < 16 and chosen["queries_shared"] <= chosen["queries"]
    keys = ["axiom", "qid", "docno", "baseline", "perturbed"]
    shared = pd.read_parquet(out / "before" / "pairs.parquet")[keys].merge(flagged_audit.pairs[keys], on=keys)
    assert chosen["pairs_shared"] == len(shared)
    queries = pd.read_parquet(out / "effectiveness.parquet")
    ndcg = queries[queries["measure"] == "nDCG@10"]
    assert len(ndcg) == 65 and facts["measures"][0]["before"] == pytest.approx(ndcg["before"].mean())
    html = (out / "report.html").read_text()
    assert "nDCG@10 change per query" in html and ("cost" in html or "gained" in html or "no significant" in html)
    assert f"{chosen['pairs_shared']} of its 16 pairs and {chosen['queries_shared']} of its" in html


def test_intervene_report_opens_in_chromium_without_errors_or_fetches(intervened):
    _, out = intervened
    report = out / "report.html"
    with chromium() as browser:
        page, errors, requests = open_page(browser, report)
        bars = page.locator("svg.chart rect").count()
        rows = page.locator("#measures tbody tr").count()
        summary = page.locator("#summary").text_content()
    assert errors == []
    assert requests == [report.as_uri()], f"the report fetched {requests[1:]}"
    assert bars == 65 and rows == 3 and "nDCG@10" in summary and "TFC1 agreement" in summary


def test_cli_names_bad_flags(cross, capsys):
    _, folder = cross
    with pytest.raises(SystemExit):
        parser().parse_args(["intervene", "--heads", "3.x"])
    assert "argument --heads: head '3.x' is not valid" in capsys.readouterr().err
    base = ["intervene", "--model", str(folder), "--axioms", "TFC1", "--n", "4", "--out", "/nonexistent"]
    assert main([*base, "--heads", "7.1"]) == 2
    assert "--heads 7.1: head 7.1 is not in" in capsys.readouterr().err
    assert main([*base, "--heads", "0.1", "--factor", "2"]) == 2
    assert "--factor applies to --op scale only" in capsys.readouterr().err
    assert main([*base, "--heads", "0.1", "--op", "scale"]) == 2
    assert "--op scale needs --factor" in capsys.readouterr().err


def test_suggestions_of_an_audit_without_flags_are_empty(flagged_audit):
    quiet = copy.deepcopy(flagged_audit)
    quiet.heads["flag"] = ""
    assert quiet.suggest_interventions() == []


def test_the_after_audit_names_its_intervention_in_its_command_and_report(intervened):
    """Issue 31: rerunning the after audit's command re-applies the intervention, and its report says so up top;
    the before audit stays a plain audit of the model."""
    suggestion, out = intervened
    facts = json.loads((out / "intervention.json").read_text())
    label = facts["intervention"]["label"]
    after = json.loads((out / "after" / "manifest.json").read_text())
    before = json.loads((out / "before" / "manifest.json").read_text())
    assert after["intervention"]["label"] == label and "intervention" not in before
    assert after["command"] == facts["command"] and after["command"].startswith("mechir-axioms intervene ")
    args = parser().parse_args(shlex.split(after["command"])[1:])
    assert [f"{layer}.{head}" for layer, head in args.heads] == list(suggestion.heads) and args.op == suggestion.op
    assert before["command"].startswith("mechir-axioms audit")
    html = (out / "after" / "report.html").read_text()
    header = html[html.index("<h1>"):html.index("<h2>Summary</h2>")]
    assert f"with {label}</h1>" in header and f"Audited with an intervention applied: {label}." in header
    assert f"<pre>{after['command']}</pre>" in html
    plain = (out / "before" / "report.html").read_text()
    assert label not in plain and "intervention applied" not in plain


def test_compare_before_after_tells_the_sides_apart_by_the_intervention(intervened, tmp_path, capsys):
    _, out = intervened
    label = json.loads((out / "intervention.json").read_text())["intervention"]["label"]
    page = tmp_path / "compare.html"
    assert main(["compare", str(out / "before"), str(out / "after"), "--html", str(page)]) in (0, 1)
    lines = capsys.readouterr().out.splitlines()
    old, new = (next(line.strip() for line in lines if line.strip().startswith(side)) for side in ("old:", "new:"))
    assert new.endswith(f" with {label}") and label not in old
    html = page.read_text()
    assert f"<dd>{new.removeprefix('new: ')}</dd>" in html and f"<dd>{old.removeprefix('old: ')}</dd>" in html
    assert f"new: {json.loads((out / 'after' / 'manifest.json').read_text())['model']['name']} with {label}" in html


def test_an_in_memory_intervention_says_no_command_reproduces_it_and_old_audits_still_render(cross, short_frame):
    from mechir_axioms import assess_intervention
    from mechir_axioms.comparing import compare
    from mechir_axioms.results.pages import render_page

    ranker, _ = cross
    judged = short_frame[short_frame["qid"].isin(list(dict.fromkeys(short_frame["qid"]))[:4])].reset_index(drop=True)
    result = assess_intervention(ranker, ["0.1"], axioms=["TFC1"], data=judged, n=4, progress=False,
                                 method="attribution", examples=0)
    assert result.manifest["command"] is None and result.after.manifest["command"] is None
    html = render_page(result.after)
    assert "with ablate head 0.1</h1>" in html and "which no single command reproduces" in html
    assert "<pre>None</pre>" not in html and "<pre>mechir-axioms audit" not in html
    assert "<pre>mechir-axioms audit" in render_page(result.before)
    old = copy.deepcopy(result.after)  # as saved before audits recorded their intervention
    del old.manifest["intervention"]
    old.manifest["command"] = result.before.manifest["command"]
    plain = render_page(old)
    assert 'id="intervention"' not in plain and "ablate head" not in plain and "<pre>mechir-axioms audit" in plain
    assert "ablate" not in compare(result.before, old).new
    assert compare(result.before, result.after).new.endswith(" with ablate head 0.1")
