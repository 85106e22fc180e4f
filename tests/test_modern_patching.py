"""Patching, alignment and audits on the modern ranker kinds: LLM rerankers (yes/no logits of a decoder),
decoder cross-encoders (RankLlama style), last-token decoder bi-encoders, SPLADE and ColBERT.

The batched exact path must equal the naive reference in float64 on each kind; hook_z must be the input of
the output projection, one head_dim-wide slice per query head; axioms must compile for byte-level BPE and
SentencePiece tokenizers alike; masked baselines, audits and the pytest plugin must work end to end.

Tiny random-weight models move their scores by ~1e-3, so patching uses delta=1e-9 and checks that pairs
were patched at all. Torch runs on one thread here: on a shared 2-core machine two OpenMP threads make a
tiny model's matrix products ~50x slower.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from mechir_axioms import audit, load_audit, load_ranker, make_pairs, patch
from mechir_axioms.models.layout import REGIONS
from mechir_axioms.patching.naive import patch_naive

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

pytest_plugins = ["pytester"]

TOLERANCE = 1e-9  # exact vs naive, float64
DELTA = 1e-9  # random tiny models change their scores by ~1e-3 .. 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one intra-op thread (see conftest's one_torch_thread)."""


# --- the kinds under test ------------------------------------------------------------------------------
# name -> (how to get its folder from the session fixtures, expected kind)
CASES = {
    "llm-qwen3": (lambda get: get("decoder_model")("qwen3", "causal-lm"), "llm"),
    "llm-gemma2": (lambda get: get("decoder_model")("gemma2", "causal-lm"), "llm"),
    "cross-llama2": (lambda get: get("decoder_model")("llama", "sequence-classification", "llama2"), "cross"),
    "bi-last-qwen3": (lambda get: get("decoder_model")("qwen3", "base"), "bi"),
    "bi-st-embedder": (lambda get: get("st_embedder_path"), "bi"),
    "sparse-splade": (lambda get: get("splade_real_path"), "sparse"),
    "late-colbert": (lambda get: get("colbert_path"), "late"),
}


@pytest.fixture(scope="module")
def double_case(request, short_frame):
    """double_case(name) -> (float64 ranker, 6 TFC1 pairs), built once per module."""
    built = {}

    def get(name: str):
        if name not in built:
            locate, kind = CASES[name]
            ranker = load_ranker(locate(request.getfixturevalue))
            assert ranker.kind == kind, f"{name}: inferred kind {ranker.kind!r}, expected {kind!r}"
            ranker.model.double()
            built[name] = (ranker, make_pairs("TFC1", short_frame, ranker, n=6, seed=0))
        return built[name]

    return get


@pytest.fixture(scope="module")
def exact_results(double_case):
    """exact_results(name, target) -> the batched exact PatchResult, computed once."""
    done = {}

    def get(name: str, target: str):
        if (name, target) not in done:
            ranker, pairs = double_case(name)
            done[name, target] = patch(ranker, pairs, target, batch_size=4, delta=DELTA, progress=False)
        return done[name, target]

    return get


def _compare(fast, naive) -> float:
    assert fast.effects.shape == naive.effects.shape
    assert np.array_equal(np.isnan(fast.effects), np.isnan(naive.effects)), "exact and naive patch different pairs"
    assert not np.isnan(fast.effects).all(), "some pair must be patched"
    return float(np.nanmax(np.abs(fast.effects - naive.effects)))


# --- 1. exact equals naive on every new kind ---------------------------------------------------------------
@pytest.mark.parametrize("target", ["heads", "regions"])
@pytest.mark.parametrize("name", list(CASES))
def test_exact_matches_naive_on_the_new_kinds(double_case, exact_results, name, target):
    ranker, pairs = double_case(name)
    if name == "bi-last-qwen3":
        assert ranker.pooling == "last" and ranker.is_decoder
    if name == "cross-llama2":
        first = pairs.tensors["perturbed_input_ids"][0, 0].item()
        assert ranker.is_decoder and ranker.tokenizer.convert_ids_to_tokens(first) == "<s>"  # RankLlama: BOS first
    fast = exact_results(name, target)
    naive = patch_naive(ranker, pairs, target, delta=DELTA)
    assert np.allclose(fast.receiver_score, naive.receiver_score, rtol=0, atol=1e-12)
    if target == "heads":
        assert fast.effects.shape == (len(pairs), ranker.n_layers, ranker.n_heads)
    else:
        assert fast.labels["region"] == list(ranker.regions)
    difference = _compare(fast, naive)
    print(f"\n[exact vs naive] {name:15s} {target:8s} pairs patched {int(fast.included.sum())}/{len(pairs)}, "
          f"max |diff| {difference:.2e}")
    assert difference <= TOLERANCE


def test_exact_matches_naive_on_blocks_of_a_decoder(decoder_model, short_frame):
    """The per-position target, on the last-token Qwen3 bi-encoder (short documents keep the naive run small)."""
    ranker = load_ranker(decoder_model("qwen3", "base"))
    ranker.model.double()
    pairs = make_pairs("TFC1", short_frame, ranker, n=2, seed=1)
    fast = patch(ranker, pairs, "blocks", batch_size=16, delta=DELTA, progress=False)
    naive = patch_naive(ranker, pairs, "blocks", delta=DELTA)
    difference = _compare(fast, naive)
    print(f"\n[exact vs naive] bi-last-qwen3   blocks   max |diff| {difference:.2e}")
    assert difference <= TOLERANCE
    # identical tokens outside the changed span have identical embeddings: patching them does nothing
    for row in np.flatnonzero(fast.included):
        start, end = int(pairs.frame["span_start"][row]), int(pairs.frame["span_end"][row])
        length = int(pairs.tensors["length"][row])
        outside = [p for p in range(length) if not start <= p < end]
        assert outside and np.allclose(fast.effects[row, 0, 0, outside], 0.0, atol=1e-9)


# --- 2. hook_z is the input of o_proj, one head_dim slice per query head -----------------------------------
QWEN3_RERANKER = (  # the prompt of the Qwen3-Reranker model card, written out independently of the package
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
)
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
HOOK_QUERIES = ["what is the capital of france", "yes or no"]
HOOK_DOCUMENTS = ["paris is the capital of france and has many bridges over the seine", "no"]


def _reference_scores(model, tokenizer, queries, documents, pre_hook=None) -> torch.Tensor:
    """Qwen3-Reranker's reference scoring: prefix + body + suffix token ids, left padding, the last position's
    logit("yes") - logit("no"), with an optional forward pre-hook on a module."""
    prefix = tokenizer.encode(QWEN3_RERANKER[0], add_special_tokens=False)
    suffix = tokenizer.encode(QWEN3_RERANKER[1], add_special_tokens=False)
    bodies = [f"<Instruct>: {INSTRUCTION}\n<Query>: {q}\n<Document>: {d}" for q, d in zip(queries, documents)]
    rows = [prefix + ids + suffix for ids in tokenizer(bodies, add_special_tokens=False)["input_ids"]]
    batch = tokenizer.pad({"input_ids": rows}, padding=True, padding_side="left", return_tensors="pt")
    handle = pre_hook[0].register_forward_pre_hook(pre_hook[1]) if pre_hook else None
    try:
        with torch.no_grad():
            logits = model(**batch).logits[:, -1]
    finally:
        if handle is not None:
            handle.remove()
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    return logits[:, yes] - logits[:, no]


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_zeroing_hook_z_equals_zeroing_the_o_proj_input(decoder_model, family):
    folder = decoder_model(family, "causal-lm")
    ranker = load_ranker(folder)
    assert ranker.kind == "llm"
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()  # its own attention backend (sdpa)
    config = reference.config
    o_proj = reference.model.layers[1].self_attn.o_proj
    assert ranker.d_head == config.head_dim and o_proj.in_features == config.num_attention_heads * config.head_dim
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    if family == "qwen3":
        assert config.head_dim != config.hidden_size // config.num_attention_heads

    clean = ranker.score(HOOK_QUERIES, HOOK_DOCUMENTS).double()
    expected_clean = _reference_scores(reference, ranker.tokenizer, HOOK_QUERIES, HOOK_DOCUMENTS).double()
    assert torch.allclose(clean, expected_clean, atol=1e-5), (clean, expected_clean)
    width = config.head_dim
    for head in range(ranker.n_heads):
        def zero_z(z, name, head=head):
            assert z.shape[-2:] == (ranker.n_heads, width)
            z = z.clone()
            z[:, :, head] = 0
            return z

        def zero_input(module, args, head=head):
            x = args[0].clone()
            x[..., head * width:(head + 1) * width] = 0
            return (x, *args[1:])

        hooked = ranker.run_with_hooks(HOOK_QUERIES, HOOK_DOCUMENTS, {"blocks.1.attn.hook_z": zero_z}).double()
        expected = _reference_scores(reference, ranker.tokenizer, HOOK_QUERIES, HOOK_DOCUMENTS,
                                     (o_proj, zero_input)).double()
        assert (hooked - clean).abs().max() > 1e-5, "zeroing a head must change the score, or the check is vacuous"
        assert torch.allclose(hooked, expected, atol=1e-5), (family, head, hooked, expected)


# --- 3. axioms compile for byte-level BPE and SentencePiece tokenizers ---------------------------------------
STYLES = {"qwen": ("qwen3", "qwen"), "llama3": ("llama", "llama3"), "gemma": ("gemma2", "gemma"),
          "llama2": ("llama", "llama2")}
AXIOMS = ("TFC1", "TDC", "LNC1", "NULL")
SELECTION = ("relevance not in", "fewer than", "document length outside")  # make_pairs' select stage
ALIGNMENT = ("token lengths differ", "longer than the model's max length", "the changed slot lands",
             "tokens outside the changed span differ")  # pairs.align


def _drop_rates(pairs) -> dict[str, float]:
    """Of the candidates that reached the operator (built plus dropped after selection), the share dropped at
    alignment and at the operator. Candidates aligned beyond a stratum's quota are not counted by make_pairs,
    so these rates are upper bounds."""
    dropped = pairs.provenance["dropped"]
    counted = {reason: count for reason, count in dropped.items() if not reason.startswith(SELECTION)}
    aligned = sum(count for reason, count in counted.items() if reason.startswith(ALIGNMENT))
    tried = pairs.provenance["n_built"] + sum(counted.values())
    return {"tried": tried, "alignment": aligned / tried, "operator": (sum(counted.values()) - aligned) / tried}


@pytest.fixture(scope="module")
def llm_of_style(decoder_model):
    loaded = {}

    def get(style: str):
        if style not in loaded:
            family, tokenizer_style = STYLES[style]
            loaded[style] = load_ranker(decoder_model(family, "causal-lm", tokenizer_style))
        return loaded[style]

    return get


def test_axioms_compile_for_every_tokenizer_family(llm_of_style):
    table, failures = {}, []
    for style in STYLES:
        ranker = llm_of_style(style)
        assert ranker.kind == "llm"
        for axiom in AXIOMS:
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message=".*requested pairs")  # built fewer than n: a failure
                pairs = make_pairs(axiom, ranker=ranker, n=24, seed=0)
            rates = _drop_rates(pairs)
            table[style, axiom] = (len(pairs), rates, pairs.provenance["dropped"])
            if not len(pairs) or rates["alignment"] >= 0.5:
                failures.append((style, axiom, pairs.provenance["dropped"]))
            # what was aligned is what the model reads: each stored input is the ranker's own tokenization
            for row in range(min(3, len(pairs))):
                length = int(pairs.tensors["length"][row])
                for which in ("perturbed",) if axiom == "LNC1" else ("baseline", "perturbed"):
                    stored = pairs.tensors[f"{which}_input_ids"][row, :length].tolist()
                    tokens = ranker.tokenize([pairs.frame["query"][row]], [pairs.frame[which][row]]).tokens
                    assert tokens["input_ids"][0].tolist() == stored, (style, axiom, row, which)
    print("\n[drop rates] alignment-stage drops / candidates tried (operator drops), n=24 seed=0")
    print(f"{'style':8s}" + "".join(f"{axiom:>22s}" for axiom in AXIOMS))
    for style in STYLES:
        rates = [table[style, axiom][1] for axiom in AXIOMS]
        cells = [f"{rate['alignment']:6.1%} of {rate['tried']:3d} ({rate['operator']:4.1%})" for rate in rates]
        print(f"{style:8s}" + "".join(f"{cell:>22s}" for cell in cells))
    for (style, axiom), (_, _, dropped) in table.items():
        if dropped:
            print(f"  {style}/{axiom}: {dropped}")
    assert not failures, f"more than half of the candidates dropped at alignment: {failures}"


# --- 4. masked baselines ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["llm-qwen3", "late-colbert"])
def test_masked_baselines_hide_their_span_and_score(double_case, name):
    ranker, _ = double_case(name)
    pairs = make_pairs("LNC1", ranker=ranker, n=6, seed=0)  # LNC1: baseline.fill = "mask"
    assert pairs.provenance["spec"]["baseline"]["fill"] == "mask" and len(pairs) == 6
    pad = ranker.tokenizer.pad_token_id
    for row in range(len(pairs)):
        start, end = int(pairs.frame["span_start"][row]), int(pairs.frame["span_end"][row])
        length = int(pairs.tensors["length"][row])
        mask = pairs.tensors["baseline_attention_mask"][row]
        assert end > start and (mask[start:end] == 0).all()
        assert (mask[:start] == 1).all() and (mask[end:length] == 1).all()
        assert (pairs.tensors["perturbed_attention_mask"][row, :length] == 1).all()
        assert (pairs.tensors["baseline_input_ids"][row, start:end] == pad).all()
        assert pairs.frame["baseline"][row].count(ranker.tokenizer.pad_token) == end - start
    scored = pairs.score(ranker)
    assert np.isfinite(scored[["baseline_score", "perturbed_score"]].to_numpy()).all()
    assert (scored["delta"].abs() > 0).any()
    # the hole is a hole: whatever the masked ids are, the baseline scores the same
    other = {key: value.clone() for key, value in pairs.tensors.items()}
    hidden = other["baseline_attention_mask"] == 0
    hidden &= torch.arange(hidden.shape[1]) < pairs.tensors["length"][:, None]
    other["baseline_input_ids"][hidden] = ranker.tokenizer.convert_tokens_to_ids(
        ranker.tokenizer.tokenize(" the")[:1])[0]
    changed = type(pairs)(pairs.frame, other, dict(pairs.provenance)).score(ranker)
    assert np.allclose(changed["baseline_score"], scored["baseline_score"], rtol=0, atol=1e-9)
    result = patch(ranker, pairs, "heads", direction="to_baseline", delta=DELTA, progress=False)
    assert np.isfinite(result.effects[result.included]).all() and result.included.any()


# --- 5. audits end to end ---------------------------------------------------------------------------------
AUDITS = {"llm": (lambda get: get("decoder_model")("qwen3", "causal-lm"), True),
          "sparse": (lambda get: get("splade_real_path"), False),
          "late": (lambda get: get("colbert_path"), True)}  # kind -> (folder, in float64)


@pytest.fixture(scope="module", params=list(AUDITS))
def small_audit(request, short_frame, tmp_path_factory):
    locate, double = AUDITS[request.param]
    ranker = load_ranker(locate(request.getfixturevalue))
    if double:
        ranker.model.double()
    folder = tmp_path_factory.mktemp("audits") / request.param
    options = dict(data=short_frame, n=8, seed=0, targets=("heads", "blocks"), method="exact", examples=1,
                   cell_pairs=4, stability=2, tolerance=1e-7 if double else 1e-3, progress=False)
    result = audit(ranker, ["TFC1", "NULL"], folder=folder, **options)
    return request.param, ranker, result, folder, options


def test_audit_frames_report_and_resume(small_audit):
    kind, ranker, result, folder, options = small_audit
    assert ranker.kind == kind and result.manifest["model"]["kind"] == kind
    assert list(result.axioms["axiom"]) == ["TFC1", "NULL"] and (result.axioms["n_pairs"] == 8).all()
    heads = result.heads
    for axiom, group in heads.groupby("axiom"):
        assert len(group) == ranker.n_layers * ranker.n_heads
        grid = {(layer, head) for layer in range(ranker.n_layers) for head in range(ranker.n_heads)}
        assert set(zip(group["layer"], group["head"])) == grid, axiom
    assert (heads["n"] > 0).any(), "no head was tested on any pair"
    cells = result.cells
    assert len(cells) == 2 * 3 * ranker.n_layers * len(ranker.regions)
    assert set(cells["region"]) == set(ranker.regions) and set(ranker.regions) <= set(REGIONS)
    assert len(result.blocks) > 0
    html = (folder / "report.html").read_text()
    for needle in ("TFC1", "NULL", f"({kind})", ranker.name):
        assert needle in html, needle
    loaded = load_audit(folder)
    resumed = audit(ranker, ["TFC1", "NULL"], folder=folder, resume=True, **options)
    for frame in ("axioms", "heads", "cells", "blocks", "pairs"):
        pd.testing.assert_frame_equal(getattr(loaded, frame), getattr(result, frame), check_dtype=False)
        pd.testing.assert_frame_equal(getattr(resumed, frame), getattr(result, frame), check_dtype=False)


# --- 6. the pytest plugin on an LLM reranker -----------------------------------------------------------------
PLUGIN_TESTS = '''
def test_llm_ranker_is_audited(axiom_audit, mechir_ranker):
    assert mechir_ranker.kind == "llm"
    result = axiom_audit("TFC1")
    assert result.audit.manifest["model"]["kind"] == "llm"
    assert len(result.heads) == mechir_ranker.n_layers * mechir_ranker.n_heads == 8
    assert result.row["n_pairs"] == 8
    result.assert_no_violating_heads()
'''


def test_plugin_audits_an_llm_folder(pytester, decoder_model, short_frame, tmp_path, monkeypatch):
    """--mechir-model names the folder and --mechir-kind the kind (which would be inferred from the folder)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in short_frame.to_dict("records")))
    pytester.makepyfile(test_inner=PLUGIN_TESTS)
    reports = tmp_path / "reports"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--mechir-model", str(decoder_model("qwen3", "causal-lm")), "--mechir-kind", "llm",
        "--mechir-axioms", "TFC1", "--mechir-n", "8", "--mechir-data", str(data), "--mechir-report", str(reports))
    result.assert_outcomes(passed=1)
    assert "TFC1: " in result.stdout.str() and (reports / "TFC1" / "report.html").is_file()


# --- attribution on every kind (last: the float64 Gemma 2 case fails, see the report) -----------------------
@pytest.mark.parametrize("target", ["heads", "regions"])
@pytest.mark.parametrize("name", list(CASES))
def test_attribution_runs_on_the_new_kinds(double_case, exact_results, name, target):
    ranker, pairs = double_case(name)
    exact = exact_results(name, target)
    approx = patch(ranker, pairs, target, method="attribution", delta=DELTA, progress=False)
    assert approx.method == "attribution" and approx.effects.shape == exact.effects.shape
    assert np.array_equal(approx.included, exact.included) and approx.included.any()
    kept = approx.effects[approx.included]
    finite = np.isfinite(kept)
    both = finite & np.isfinite(exact.effects[approx.included])
    correlation = float(np.corrcoef(kept[both], exact.effects[approx.included][both])[0, 1])
    print(f"\n[attribution] {name:15s} {target:8s} corr with exact {correlation:+.4f}, "
          f"non-finite {int((~finite).sum())}/{finite.size}")
    assert finite.all(), f"{name} {target}: {int((~finite).sum())} non-finite attribution effects on patched pairs"
    if name.startswith("llm") and target == "heads":
        assert correlation > 0.5  # measured: 0.999 (Qwen3), 0.89 (Gemma 2)


def test_report_does_not_call_a_decoder_an_encoder(decoder_model, short_frame):
    """The report's lead line reads "{kind}-encoder ranker", which names an LLM reranker an "llm-encoder"."""
    from mechir_axioms.report.audit_page import render

    ranker = load_ranker(decoder_model("qwen3", "causal-lm"))
    result = audit(ranker, ["TFC1"], data=short_frame, n=4, targets=("heads",), method="attribution", examples=0,
                   progress=False)
    lead = render(result).split('<p class="lead">', 1)[1].split("</p>", 1)[0]
    assert "llm-encoder" not in lead, lead
