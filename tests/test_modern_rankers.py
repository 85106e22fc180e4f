"""Parity of the decoder, embedder, SPLADE and ColBERT rankers with the plain computation written out by hand.

Every reference here is computed from the Hugging Face model loaded on its own (attn_implementation="eager") or
from sentence-transformers, with the tokenization each model's reference code documents, never through the
ranker's own code. Every check runs on 16 or more real TREC DL pairs and holds to 1e-4 in float32. Each check
records its max abs difference with `record_property("max_abs_diff:<what>", ...)` (see --junitxml).
"""

from __future__ import annotations

import string
import warnings
from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from decoder_models import COLBERT_DOCUMENT_LENGTH, COLBERT_QUERY_LENGTH, QWEN3_EMBEDDING_QUERY_PROMPT
from mechir_axioms import load_ranker
from mechir_axioms.core.errors import ModelError, SettingsError
from mechir_axioms.models.rankers import ModelInput
from mechir_axioms.models.rankers.llm import DEFAULT_INSTRUCTION, QWEN3_RERANKER_TEMPLATE
from mechir_axioms.pairs.compile import make_pairs

TOLERANCE = 1e-4
LLM_FAMILIES = ("qwen2", "qwen3", "llama", "mistral", "gemma2", "gemma3")
CROSS_CASES = (("llama", "llama2"), ("llama", "llama3"), ("qwen3", None))
BASE_FAMILIES = ("qwen3", "gemma3")
MANHATTAN = ("The Manhattan Project was a research and development undertaking during World War II that produced "
             "the first nuclear weapons.")
DECODER_KINDS = {"bi", "cross", "llm"}
ENCODER_KINDS = {"bi", "cross", "sparse", "late"}


# --- helpers --------------------------------------------------------------------------------------------------
def check_close(record_property, what: str, got: torch.Tensor, expected: torch.Tensor, tolerance: float = TOLERANCE):
    """Assert max |got - expected| <= tolerance (shapes equal) and record the difference for the report."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    diff = float((got - expected).abs().max())
    record_property(f"max_abs_diff:{what}", f"{diff:.3g}")
    assert diff <= tolerance, f"{what}: max abs diff {diff:.3g} > {tolerance}"
    return diff


@contextmanager
def padding_side(side: str, *tokenizers):
    """Temporarily pad every tokenizer on `side`."""
    before = [tokenizer.padding_side for tokenizer in tokenizers]
    for tokenizer in tokenizers:
        tokenizer.padding_side = side
    try:
        yield
    finally:
        for tokenizer, old in zip(tokenizers, before):
            tokenizer.padding_side = old


def quiet_score(ranker, queries, documents, **options):
    """ranker.score with its truncation warning silenced (the references truncate the same way)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ranker.score(queries, documents, **options)


def eager(auto, folder):
    return auto.from_pretrained(folder, attn_implementation="eager").eval()


def llm_reference(model, tokenizer, queries, documents, template=QWEN3_RERANKER_TEMPLATE,
                  instruction=DEFAULT_INSTRUCTION, answers=("yes", "no"), max_length=None):
    """Qwen3-Reranker's reference: prefix + body + suffix tokenized apart without special tokens, the body cut to
    max_length - len(prefix) - len(suffix), left-padded; logit(yes) - logit(no) at the last position."""
    prefix, body, suffix = template
    max_length = max_length or tokenizer.model_max_length
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    bodies = tokenizer([body.format(instruction=instruction, query=query, document=document)
                        for query, document in zip(queries, documents)], add_special_tokens=False)["input_ids"]
    budget = max_length - len(prefix_ids) - len(suffix_ids)
    rows = [prefix_ids + ids[:budget] + suffix_ids for ids in bodies]
    batch = tokenizer.pad({"input_ids": rows}, padding=True, padding_side="left", return_tensors="pt")
    yes, no = tokenizer.convert_tokens_to_ids(list(answers))
    with torch.no_grad():
        logits = model(**batch).logits[:, -1]
    return logits[:, yes] - logits[:, no], batch


def cross_reference(model, tokenizer, queries, documents):
    """RankLlama's input, scored by HF's own head at the closing </s>: HF's head reads the last token whose id
    is not config.pad_token_id, which is the </s> unless the pad id is EOS (the qwen3 fixture). There the head
    is applied by hand to the last real token, where HF reads a single unpadded pair whose config names no pad."""
    batch = tokenizer([f"query: {query}" for query in queries],
                      [f"document: {document}{tokenizer.eos_token}" for document in documents],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        if model.config.pad_token_id != tokenizer.eos_token_id:
            return model(**batch).logits[:, 0], batch
        hidden = model.base_model(**batch).last_hidden_state
        lengths = batch["attention_mask"].sum(1)
        right = tokenizer.padding_side == "right"
        positions = lengths - 1 if right else torch.full_like(lengths, hidden.shape[1] - 1)
        return model.score(hidden[torch.arange(len(queries)), positions])[:, 0], batch


def test_hf_head_skips_the_closing_eos_when_it_is_the_pad(cross, sample):
    """Why the ranker reads the last token itself: with pad id == EOS, HF's head skips RankLlama's </s>."""
    _, model, tokenizer, _ = cross("qwen3", None)
    assert model.config.pad_token_id == tokenizer.eos_token_id
    queries, documents = sample
    ours, batch = cross_reference(model, tokenizer, queries, documents)
    with torch.no_grad():
        hf = model(**batch).logits[:, 0]
    assert (ours - hf).abs().max() > 1e-3


def last_token(model, tokenizer, texts):
    """The last hidden state at each text's last non-pad token, whichever side the tokenizer pads."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    lengths = batch["attention_mask"].sum(1)
    positions = lengths - 1 if tokenizer.padding_side == "right" else torch.full_like(lengths, hidden.shape[1] - 1)
    return hidden[torch.arange(len(texts)), positions], batch


def splade_vectors(model, tokenizer, texts):
    """SPLADE by hand: max over positions of log(1 + relu(MLM logits)), padding masked out."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=tokenizer.model_max_length,
                      return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    return (torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)).amax(1)


# --- data and models, each built once per module ---------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one intra-op thread (see conftest's one_torch_thread)."""


@pytest.fixture(scope="module")
def sample(trec_rows):
    """16 real pairs of 16 queries: the 8 shortest and the 8 longest passages of the first 48 queries, interleaved
    (so that the rankers' length sorting reorders them)."""
    seen, rows = set(), []
    for row in trec_rows:
        if row["qid"] not in seen:
            seen.add(row["qid"])
            rows.append(row)
        if len(rows) == 48:
            break
    rows.sort(key=lambda row: len(row["text"]))
    short, long = rows[:8], rows[-8:]
    chosen = [row for pair in zip(short, long[::-1]) for row in pair]
    return [row["query"] for row in chosen], [row["text"] for row in chosen]


@pytest.fixture(scope="module")
def long_sample(trec_rows, colbert_tools):
    """The 16 real pairs whose passages have the most WordPieces (all over ColBERT's 180-token document length)."""
    tokenizer = colbert_tools["tokenizer"]
    rows = sorted(trec_rows, key=lambda row: -len(tokenizer(row["text"])["input_ids"]))[:16]
    return [row["query"] for row in rows], [row["text"] for row in rows]


@pytest.fixture(scope="module")
def opened(decoder_model):
    """opened(family, head, style=None) -> (ranker, eager HF model of the head's Auto class, tokenizer, folder),
    loaded once."""
    auto = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification,
            "base": AutoModel}
    built = {}

    def get(family, head, style=None):
        if (family, head, style) not in built:
            folder = decoder_model(family, head, style)
            built[family, head, style] = (load_ranker(folder), eager(auto[head], folder),
                                          AutoTokenizer.from_pretrained(folder), folder)
        return built[family, head, style]

    return get


@pytest.fixture(scope="module")
def llm(opened):
    """llm(family) -> (ranker, eager HF causal LM, tokenizer, folder)."""
    return lambda family: opened(family, "causal-lm")


@pytest.fixture(scope="module")
def cross(opened):
    """cross(family, style) -> (ranker, eager HF sequence classifier, tokenizer, folder)."""
    return lambda family, style=None: opened(family, "sequence-classification", style)


@pytest.fixture(scope="module")
def embedder(opened):
    """embedder(family) -> (ranker, eager HF base model, tokenizer, folder) of a plain decoder base folder."""
    return lambda family: opened(family, "base")


@pytest.fixture(scope="module")
def colbert_tools(colbert_path):
    """The ColBERT checkpoint opened by hand: tokenizer, eager BertModel, Dense weight, marker ids, skiplist ids."""
    tokenizer = AutoTokenizer.from_pretrained(colbert_path)
    return {
        "tokenizer": tokenizer,
        "model": eager(AutoModel, colbert_path),
        "dense": load_file(str(colbert_path / "1_Dense" / "model.safetensors"))["linear.weight"],
        "q": tokenizer.convert_tokens_to_ids("[Q] "),
        "d": tokenizer.convert_tokens_to_ids("[D] "),
        "skiplist": torch.tensor([tokenizer.convert_tokens_to_ids(word) for word in string.punctuation]),
    }


# --- 1. pointwise LLM rerankers (Qwen3-Reranker) -----------------------------------------------------------------
@pytest.mark.parametrize("family", LLM_FAMILIES)
def test_llm_reranker_matches_qwen3_reranker_reference(family, llm, sample, record_property):
    ranker, model, tokenizer, _ = llm(family)
    assert ranker.kind == "llm"
    queries, documents = sample
    expected, batch = llm_reference(model, tokenizer, queries, documents)
    assert batch["attention_mask"][:, 0].min() == 0  # a real left-padded batch
    inputs = ranker.tokenize(queries, documents)
    assert torch.equal(inputs.tokens["input_ids"].cpu(), batch["input_ids"])
    assert torch.equal(inputs.tokens["attention_mask"].cpu(), batch["attention_mask"])
    check_close(record_property, f"llm-{family}", quiet_score(ranker, queries, documents), expected)


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_llm_reranker_truncates_the_body(family, llm, sample, record_property):
    _, model, tokenizer, folder = llm(family)
    prompt = sum(len(tokenizer(part, add_special_tokens=False)["input_ids"]) for part in QWEN3_RERANKER_TEMPLATE[::2])
    max_length = 96 if family == "qwen3" else prompt + 18
    assert max_length - prompt > 0
    ranker = load_ranker(folder, max_length=max_length)
    queries, documents = sample
    expected, batch = llm_reference(model, tokenizer, queries, documents, max_length=max_length)
    assert batch["input_ids"].shape[1] == max_length
    with pytest.warns(UserWarning, match=f"were longer than {max_length} tokens"):
        got = ranker.score(queries, documents)
    check_close(record_property, f"llm-truncated-{family}", got, expected)
    # The suffix survives truncation: every row still ends with the answer prompt.
    suffix = tokenizer(QWEN3_RERANKER_TEMPLATE[2], add_special_tokens=False)["input_ids"]
    inputs = ranker.tokenize(queries, documents)
    assert (inputs.tokens["input_ids"][:, -len(suffix):].cpu() == torch.tensor(suffix)).all()


def test_llm_reranker_options(llm, sample, record_property):
    ranker, model, tokenizer, folder = llm("qwen3")
    queries, documents = sample
    instruction = "Given a question, find the passage that answers it"
    got = load_ranker(folder, instruction=instruction).score(queries, documents)
    expected, _ = llm_reference(model, tokenizer, queries, documents, instruction=instruction)
    check_close(record_property, "llm-instruction", got, expected)
    assert (got - ranker.score(queries, documents)).abs().max() > 1e-3  # the instruction is read

    default_tokens = load_ranker(folder, tokens=("yes", "no")).score(queries, documents)
    check_close(record_property, "llm-tokens-yes-no", default_tokens, llm_reference(model, tokenizer, queries,
                                                                                    documents)[0])
    swapped = load_ranker(folder, tokens=("no", "yes")).score(queries, documents)
    check_close(record_property, "llm-tokens-no-yes", swapped, -default_tokens)
    capitals = load_ranker(folder, tokens=("Yes", "No")).score(queries, documents)
    check_close(record_property, "llm-tokens-Yes-No", capitals,
                llm_reference(model, tokenizer, queries, documents, answers=("Yes", "No"))[0])

    template = ("Judge the passage.\n", "Task: {instruction}\nQuery: {query}\nPassage: {document}", "\nRelevant:")
    got = load_ranker(folder, template=template).score(queries, documents)
    check_close(record_property, "llm-template", got,
                llm_reference(model, tokenizer, queries, documents, template=template)[0])
    body = "Query: {query} Passage: {document} Relevant:"
    got = load_ranker(folder, template=body).score(queries, documents)
    check_close(record_property, "llm-template-body-only", got,
                llm_reference(model, tokenizer, queries, documents, template=("", body, ""))[0])


@pytest.mark.parametrize(("options", "named"), [
    ({"template": ("", "Query: {query}", "")}, "{document}"),
    ({"template": ("", "Passage: {document}", "")}, "{query}"),
    ({"template": ("Query: {query}", "{query} {document}", "")}, "prefix"),
    ({"template": ("", "{query} {document}", "{document}")}, "suffix"),
    ({"template": "{query} {document} {score}"}, "score"),
    ({"template": ("a", "{query} {document}")}, "(prefix, body, suffix)"),
    ({"template": 3}, "(prefix, body, suffix)"),
    ({"tokens": ("yes", "antidisestablishmentarianism")}, "antidisestablishmentarianism"),
    ({"tokens": ("maybe", "no")}, "maybe"),
    ({"tokens": "yes"}, "two strings"),
    ({"tokens": ("yes", "no", "perhaps")}, "two strings"),
    ({"instruction": 7}, "instruction"),
    ({"max_length": 60}, "max_length=60"),
])
def test_llm_reranker_refuses_bad_settings(options, named, llm):
    _, _, _, folder = llm("qwen3")
    with pytest.raises(SettingsError) as error:
        load_ranker(folder, **options)
    assert named in str(error.value)


# --- 2. scores do not depend on padding --------------------------------------------------------------------------
def _padding_case(case, llm, cross, embedder):
    kind, family = case.split("-")
    if kind == "llm":
        return llm(family)[0]
    if kind == "cross":
        return cross(family, None)[0]
    return embedder(family)[0]


@pytest.mark.parametrize("case", ["llm-qwen3", "llm-gemma2", "llm-mistral", "cross-llama", "cross-qwen3", "bi-qwen3",
                                  "bi-gemma3"])
def test_scores_do_not_depend_on_padding(case, llm, cross, embedder, record_property):
    ranker = _padding_case(case, llm, cross, embedder)
    pairs = make_pairs("TFC1", ranker=ranker, n=16)
    frame = pairs.score(ranker)
    assert len(frame) >= 16
    queries, documents = list(frame["query"]), list(frame["baseline"])
    # The pairs' tensors are right-padded and this batch really pads some rows.
    mask = pairs.tensors["baseline_attention_mask"]
    assert mask[:, 0].all() and not mask[:, -1].all()
    right = torch.tensor(frame["baseline_score"].to_numpy())
    alone = torch.cat([quiet_score(ranker, [query], [document]) for query, document in zip(queries, documents)])
    check_close(record_property, f"{case}-right-vs-alone", right, alone)
    sides = ["left"] if ranker.kind == "llm" else ["left", "right"]  # an LLM reranker always pads on the left
    for side in sides:
        with padding_side(side, ranker.tokenizer):
            inputs = ranker.tokenize(queries, documents)
            column = 0 if side == "left" else -1
            assert not inputs.tokens["attention_mask"][:, column].all()
            batch = quiet_score(ranker, queries, documents)
        check_close(record_property, f"{case}-{side}-vs-alone", batch, alone)
        check_close(record_property, f"{case}-pairs-vs-{side}", right, batch)


# --- 3. decoder cross-encoders (RankLlama) ------------------------------------------------------------------------
@pytest.mark.parametrize(("family", "style"), CROSS_CASES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_cross_encoder_matches_hf(family, style, side, cross, sample, record_property):
    ranker, model, tokenizer, _ = cross(family, style)
    assert ranker.kind == "cross"
    queries, documents = sample
    with padding_side(side, ranker.tokenizer, tokenizer):
        expected, batch = cross_reference(model, tokenizer, queries, documents)
        inputs = ranker.tokenize(queries, documents)
        got = ranker.score(queries, documents)
    assert torch.equal(inputs.tokens["input_ids"].cpu(), batch["input_ids"])
    assert not batch["attention_mask"][:, 0 if side == "left" else -1].all()
    check_close(record_property, f"cross-{family}-{style or 'qwen'}-{side}", got, expected)


# --- 4. LLM embedders ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", BASE_FAMILIES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_embedder_pools_the_last_token(family, side, embedder, sample, record_property):
    ranker, model, tokenizer, _ = embedder(family)
    assert (ranker.kind, ranker.pooling, ranker.similarity) == ("bi", "last", "dot")
    queries, documents = sample
    with padding_side(side, ranker.tokenizer, tokenizer):
        query, _ = last_token(model, tokenizer, queries)
        document, batch = last_token(model, tokenizer, documents)
        got = ranker.score(queries, documents)
    assert not batch["attention_mask"][:, 0 if side == "left" else -1].all()
    check_close(record_property, f"bi-{family}-{side}", got, (query * document).sum(-1))


def test_sentence_transformers_embedder(st_embedder_path, sample, record_property):
    from sentence_transformers import SentenceTransformer

    ranker = load_ranker(st_embedder_path)
    assert (ranker.kind, ranker.pooling, ranker.similarity) == ("bi", "last", "cosine")
    assert ranker.prefixes == {"query": QWEN3_EMBEDDING_QUERY_PROMPT, "document": ""}
    model = SentenceTransformer(str(st_embedder_path), device="cpu", model_kwargs={"attn_implementation": "eager"})
    queries, documents = sample
    query = model.encode_query(queries, convert_to_tensor=True)
    document = model.encode_document(documents, convert_to_tensor=True)
    expected = model.similarity_pairwise(query, document)
    check_close(record_property, "st-embedder", ranker.score(queries, documents), expected)
    prompted = model.encode(queries, prompt_name="query", convert_to_tensor=True)
    check_close(record_property, "st-embedder-prompt-name", (prompted * document).sum(-1), expected)


# --- 5. SPLADE ------------------------------------------------------------------------------------------------
def test_real_splade_matches_hand_written_splade(splade_real_path, sample, record_property):
    ranker = load_ranker(splade_real_path)
    assert (ranker.kind, ranker.pooling) == ("sparse", "max")
    tokenizer, model = AutoTokenizer.from_pretrained(splade_real_path), eager(AutoModelForMaskedLM, splade_real_path)
    queries, documents = sample
    query, document = splade_vectors(model, tokenizer, queries), splade_vectors(model, tokenizer, documents)
    check_close(record_property, "splade-real", ranker.score(queries, documents), (query * document).sum(-1))
    with torch.no_grad():
        got = ranker.embed(ranker.encode_side(queries, "query"), side="query")
    check_close(record_property, "splade-real-vectors", got, query)


def test_real_splade_expands_the_manhattan_passage(splade_real_path):
    ranker = load_ranker(splade_real_path)
    with torch.no_grad():
        vector = ranker.embed(ranker.encode_side([MANHATTAN], "document"), side="document")[0]
    active = int((vector > 0).sum())
    top = ranker.tokenizer.convert_ids_to_tokens(vector.topk(3).indices.tolist())
    assert top == ["manhattan", "project", "nuclear"], top  # 2.37, 2.03, 1.66; then research 1.55
    assert 30 <= active <= 90, active


def test_sentence_transformers_splade(splade_st_path, sample, record_property):
    from sentence_transformers import SparseEncoder

    ranker = load_ranker(splade_st_path)
    assert (ranker.kind, ranker.pooling) == ("sparse", "max")
    queries, documents = sample
    encoder = SparseEncoder(str(splade_st_path), device="cpu", model_kwargs={"attn_implementation": "eager"})
    assert encoder.similarity_fn_name == "dot"
    sparse_query = encoder.encode_query(queries, convert_to_tensor=True)
    sparse_document = encoder.encode_document(documents, convert_to_tensor=True)
    assert sparse_query.is_sparse and sparse_document.is_sparse
    query, document = sparse_query.to_dense(), sparse_document.to_dense()
    got = ranker.score(queries, documents)
    check_close(record_property, "splade-st", got, (query * document).sum(-1))
    # SparseEncoder's own sparse dot product sums the ~30k active terms of this random MLM in another order; its
    # scores are ~700, so float32 rounding alone parts them by ~5e-3: compared relative to the scores' size.
    pairwise = encoder.similarity_pairwise(sparse_query, sparse_document)
    check_close(record_property, "splade-st-similarity", got, pairwise, 2e-5 * float(pairwise.abs().max()))
    with torch.no_grad():
        vectors = ranker.embed(ranker.encode_side(documents, "document"), side="document")
    check_close(record_property, "splade-st-vectors", vectors, document)
    # The same by hand from the MLM the SparseEncoder wraps.
    mlm_folder = splade_st_path / ranker_subfolder(splade_st_path)
    by_hand = splade_vectors(eager(AutoModelForMaskedLM, mlm_folder), AutoTokenizer.from_pretrained(mlm_folder),
                             queries)
    check_close(record_property, "splade-st-by-hand", got, (by_hand * document).sum(-1))


def ranker_subfolder(folder) -> str:
    """The folder of the first module in a sentence-transformers modules.json (the MLM transformer)."""
    import json

    return json.loads((folder / "modules.json").read_text())[0]["path"]


# --- 6. ColBERT (PyLate) ------------------------------------------------------------------------------------
def colbert_side(tools, texts, side, attend_to_expansion=False):
    """PyLate's input by hand: [CLS] marker text [SEP]; queries padded with [MASK] to 32 (attention 0 on the
    expansion unless attend_to_expansion), documents padded to the longest and cut at 180; returns
    (ids, attention, scored)."""
    tokenizer = tools["tokenizer"]
    length = COLBERT_QUERY_LENGTH if side == "query" else COLBERT_DOCUMENT_LENGTH
    batch = tokenizer(texts, padding="max_length" if side == "query" else True, truncation=True,
                      max_length=length - 1, return_tensors="pt")
    ids, attention = batch["input_ids"], batch["attention_mask"]
    marker = torch.full((len(texts), 1), tools["q" if side == "query" else "d"])
    ids = torch.cat([ids[:, :1], marker, ids[:, 1:]], 1)
    attention = torch.cat([attention[:, :1], torch.ones_like(marker), attention[:, 1:]], 1)
    if side == "query":
        ids = torch.where(attention.bool(), ids, tokenizer.mask_token_id)
        scored = torch.ones_like(attention, dtype=torch.bool)  # every query vector, expansions too
        if attend_to_expansion:
            attention = torch.ones_like(attention)
    else:
        scored = attention.bool() & ~torch.isin(ids, tools["skiplist"])
    return ids, attention, scored


def colbert_vectors(tools, ids, attention):
    with torch.no_grad():
        hidden = tools["model"](input_ids=ids, attention_mask=attention).last_hidden_state
    return torch.nn.functional.normalize(hidden @ tools["dense"].T, p=2, dim=-1)


def colbert_reference(tools, queries, documents, attend_to_expansion=False):
    q_ids, q_attention, _ = colbert_side(tools, queries, "query", attend_to_expansion)
    d_ids, d_attention, d_scored = colbert_side(tools, documents, "document")
    q_vectors, d_vectors = colbert_vectors(tools, q_ids, q_attention), colbert_vectors(tools, d_ids, d_attention)
    scores = []
    for q, d, keep in zip(q_vectors, d_vectors, d_scored):
        scores.append((q @ d[keep].T).max(-1).values.sum())
    return torch.stack(scores), (q_ids, q_attention), (d_ids, d_attention)


def test_colbert_matches_pylate_by_hand(colbert_path, colbert_tools, sample, record_property):
    ranker = load_ranker(colbert_path)
    assert ranker.kind == "late" and ranker.query_length == COLBERT_QUERY_LENGTH
    assert ranker.max_length == COLBERT_DOCUMENT_LENGTH
    queries, documents = sample
    expected, (q_ids, q_attention), (d_ids, d_attention) = colbert_reference(colbert_tools, queries, documents)
    assert q_ids.shape[1] == COLBERT_QUERY_LENGTH and not q_attention.all()
    inputs = ranker.tokenize(queries, documents)
    assert torch.equal(inputs.query_tokens["input_ids"].cpu(), q_ids)
    assert torch.equal(inputs.query_tokens["attention_mask"].cpu(), q_attention)
    assert torch.equal(inputs.tokens["input_ids"].cpu(), d_ids)
    assert torch.equal(inputs.tokens["attention_mask"].cpu(), d_attention)
    check_close(record_property, "colbert", quiet_score(ranker, queries, documents), expected)
    # attend_to_expansion_tokens=True: the [MASK] expansions are attended to as well.
    attending = load_ranker(colbert_path, attend_to_expansion=True)
    expected_attending, (_, q_attention), _ = colbert_reference(colbert_tools, queries, documents, True)
    assert q_attention.all()
    got = quiet_score(attending, queries, documents)
    check_close(record_property, "colbert-attend-to-expansion", got, expected_attending)
    assert (expected_attending - expected).abs().max() > 1e-3


def test_colbert_truncates_long_documents(colbert_path, colbert_tools, long_sample, record_property):
    ranker = load_ranker(colbert_path)
    queries, documents = long_sample
    expected, _, (d_ids, _) = colbert_reference(colbert_tools, queries, documents)
    assert d_ids.shape[1] == COLBERT_DOCUMENT_LENGTH
    inputs = ranker.tokenize(queries, documents)
    assert inputs.tokens["input_ids"].shape[1] == COLBERT_DOCUMENT_LENGTH and inputs.truncated >= 16
    with pytest.warns(UserWarning, match=f"longer than {COLBERT_DOCUMENT_LENGTH} tokens"):
        got = ranker.score(queries, documents)
    check_close(record_property, "colbert-truncated", got, expected)


# --- 7. hook points of the decoder families ------------------------------------------------------------------
@pytest.mark.parametrize("family", LLM_FAMILIES)
def test_decoder_hooks_match_hf_outputs(family, llm, sample, record_property):
    ranker, model, tokenizer, _ = llm(family)
    queries, documents = sample
    expected, batch = llm_reference(model, tokenizer, queries, documents)
    scores, cache = ranker.run_with_cache(queries, documents)
    assert torch.equal(ranker.tokenize(queries, documents).tokens["input_ids"].cpu(), batch["input_ids"])
    check_close(record_property, f"hooks-{family}-score", scores, expected)
    # The same input straight through forward with hooks gives the same activations.
    direct = {}
    ranker.forward(ModelInput(batch), [("blocks.0.hook_resid_post", lambda x, name: direct.setdefault(name, x))])
    check_close(record_property, f"hooks-{family}-forward", direct["blocks.0.hook_resid_post"],
                cache["blocks.0.hook_resid_post"], 0.0)

    config, base = model.config, model.model
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    z_inputs = {}
    handles = [base.layers[layer].self_attn.o_proj.register_forward_pre_hook(
        lambda module, args, layer=layer: z_inputs.__setitem__(layer, args[0].detach())) for layer in range(n_layers)]
    try:
        with torch.no_grad():
            embedded = base.embed_tokens(batch["input_ids"])
            out = model(**batch, output_hidden_states=True, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    hidden, attentions = out.hidden_states, out.attentions
    assert len(hidden) == n_layers + 1 and len(attentions) == n_layers
    batch_size, positions = batch["input_ids"].shape
    check_close(record_property, f"hooks-{family}-embed", cache["hook_embed"], embedded)
    # hidden_states[0] is the first layer's input (Gemma 2 scales the embedding by sqrt(hidden) in the model's
    # forward, not in embed_tokens, so only there do hook_embed and hook_resid_pre differ).
    check_close(record_property, f"hooks-{family}-resid_pre", cache["blocks.0.hook_resid_pre"], hidden[0])
    real_rows = batch["attention_mask"].bool()[:, None, :, None]  # query positions that are tokens, not left pads
    above = torch.ones(positions, positions, dtype=torch.bool).triu(1)
    for layer in range(n_layers):
        resid_post = cache[f"blocks.{layer}.hook_resid_post"]
        if layer < n_layers - 1:
            check_close(record_property, f"hooks-{family}-resid_post", resid_post, hidden[layer + 1])
            check_close(record_property, f"hooks-{family}-resid_pre", cache[f"blocks.{layer + 1}.hook_resid_pre"],
                        hidden[layer + 1], 0.0)
        else:
            # transformers 5.24 (`capture_outputs(tie_last_hidden_states=True)`, utils/output_capturing.py) replaces
            # hidden_states[-1] by last_hidden_state, i.e. the last layer's output AFTER the final norm; the last
            # resid_post is that output before the norm, so it matches once the model's own norm is applied.
            with torch.no_grad():
                check_close(record_property, f"hooks-{family}-resid_post-final-norm", base.norm(resid_post),
                            hidden[-1])
            assert (resid_post - hidden[-1]).abs().max() > 1e-2  # hidden_states[-1] is indeed the normed one
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (batch_size, n_heads, positions, positions)
        check_close(record_property, f"hooks-{family}-pattern", pattern, attentions[layer])
        # Causal: no real token attends to a later one. (A left pad's row sees no key at all; eager softmax then
        # spreads it evenly over every key, as HF's own attentions show, so only real rows are checked.)
        assert pattern.masked_fill(~(above & real_rows), 0).abs().max() == 0
        z = cache[f"blocks.{layer}.attn.hook_z"]
        assert z.shape == (batch_size, positions, n_heads, head_dim)
        check_close(record_property, f"hooks-{family}-z", z.flatten(-2), z_inputs[layer])
    if family == "qwen3":
        assert head_dim == 32 and n_heads * head_dim != config.hidden_size


# --- 8. kind inference and forced kinds ---------------------------------------------------------------------
@pytest.mark.parametrize(("fixture", "args", "kind"), [
    *[("decoder_model", (family, "causal-lm"), "llm") for family in LLM_FAMILIES],
    ("decoder_model", ("qwen3", "sequence-classification"), "cross"),
    ("decoder_model", ("llama", "sequence-classification", "llama2"), "cross"),
    ("decoder_model", ("gemma2", "sequence-classification"), "cross"),
    ("decoder_model", ("qwen3", "base"), "bi"),
    ("decoder_model", ("gemma3", "base"), "bi"),
    ("st_embedder_path", (), "bi"),
    ("colbert_path", (), "late"),
    ("splade_st_path", (), "sparse"),
    ("splade_real_path", (), "sparse"),
])
def test_kind_is_inferred(fixture, args, kind, request):
    from mechir_axioms.models.folder import ModelFolder, sentence_transformers_modules
    from mechir_axioms.models.loading import _config, infer_kind

    value = request.getfixturevalue(fixture)
    folder = str(value(*args) if args else value)
    modules, subfolder, st_config = sentence_transformers_modules(folder) or (None, "", {})
    assert infer_kind(ModelFolder(folder, _config(folder, subfolder), modules, subfolder, st_config)) == kind


def test_forced_kinds_that_fit(splade_real_path, llm, sample, record_property):
    queries, documents = sample
    # The SPLADE checkpoint as a plain bi-encoder over its BERT: CLS pooling, dot product.
    ranker = load_ranker(splade_real_path, kind="bi")
    assert (ranker.kind, ranker.pooling, ranker.similarity) == ("bi", "cls", "dot")
    tokenizer, model = AutoTokenizer.from_pretrained(splade_real_path), eager(AutoModel, splade_real_path)
    with torch.no_grad():
        query = model(**tokenizer(queries, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
        document = model(**tokenizer(documents, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    check_close(record_property, "forced-bi-splade", ranker.score(queries, documents), (query * document).sum(-1))
    # A causal LM as an embedder: its base model, last-token pooling.
    _, _, tokenizer, folder = llm("qwen3")
    ranker = load_ranker(folder, kind="bi")
    assert (ranker.kind, ranker.pooling) == ("bi", "last")
    base = eager(AutoModel, folder)
    query, _ = last_token(base, tokenizer, queries)
    document, _ = last_token(base, tokenizer, documents)
    check_close(record_property, "forced-bi-causal-lm", ranker.score(queries, documents), (query * document).sum(-1))


@pytest.mark.parametrize(("fixture", "args", "kind", "allowed"), [
    ("decoder_model", ("qwen3", "causal-lm"), "t5", DECODER_KINDS),
    ("decoder_model", ("qwen3", "causal-lm"), "sparse", DECODER_KINDS),
    ("decoder_model", ("gemma3", "base"), "late", DECODER_KINDS),
    ("splade_real_path", (), "llm", ENCODER_KINDS),
    ("colbert_path", (), "llm", ENCODER_KINDS),
])
def test_wrong_kind_for_the_architecture(fixture, args, kind, allowed, request):
    value = request.getfixturevalue(fixture)
    folder = value(*args) if args else value
    with pytest.raises(ModelError, match=f"kind={kind!r} does not fit") as error:
        load_ranker(folder, kind=kind)
    listed = str(error.value).rsplit("models: ", 1)[-1]
    assert {name.strip() for name in listed.split(",")} == allowed, str(error.value)


def test_kinds_that_need_other_files_are_refused(splade_real_path, decoder_model):
    with pytest.raises(ModelError, match="Dense|linear.weight"):  # no ColBERT projection in a SPLADE checkpoint
        load_ranker(splade_real_path, kind="late")
    with pytest.raises(ModelError):  # a causal LM has no classification head
        load_ranker(decoder_model("qwen3", "causal-lm"), kind="cross")


# --- tokenizers shipped without a pad token (Llama 2 / 3, Mistral) ----------------------------------------------
@pytest.fixture(scope="module")
def padless(tmp_path_factory, decoder_model):
    """padless(head) -> folder of a tiny Llama whose Llama 3 tokenizer has no pad token and whose config has no
    pad_token_id, as meta-llama/Llama-3.* (and Llama 2, Mistral) ship them."""
    from decoder_models import decoder_folder

    built = {}

    def get(head):
        if head not in built:
            tokenizer = AutoTokenizer.from_pretrained(decoder_model("llama", head))
            tokenizer.pad_token = None
            assert tokenizer.pad_token_id is None
            built[head] = decoder_folder(tmp_path_factory.mktemp(f"padless-{head}"), "llama", head, tokenizer)
        return built[head]

    return get


@pytest.mark.parametrize("head", ["causal-lm", "sequence-classification", "base"])
def test_tokenizer_without_pad_token_scores_batches(head, padless, sample, record_property):
    """A batch scores as each pair scored alone by plain HF (no padding needed for one pair)."""
    folder = padless(head)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    auto = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification,
            "base": AutoModel}[head]
    model = eager(auto, folder)
    queries, documents = sample
    expected = []
    with torch.no_grad():
        for query, document in zip(queries, documents):
            if head == "causal-lm":
                prefix, body, suffix = QWEN3_RERANKER_TEMPLATE
                ids = [token for part in (prefix, body.format(instruction=DEFAULT_INSTRUCTION, query=query,
                                                              document=document), suffix)
                       for token in tokenizer(part, add_special_tokens=False)["input_ids"]]
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
                yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
                expected.append(logits[yes] - logits[no])
            elif head == "sequence-classification":
                single = tokenizer(f"query: {query}", f"document: {document}{tokenizer.eos_token}",
                                   return_tensors="pt")
                expected.append(model(**single).logits[0, 0])  # one pair: HF reads its last token
            else:
                hidden = {side: model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0, -1]
                          for side, text in (("query", query), ("document", document))}
                expected.append(hidden["query"] @ hidden["document"])
    ranker = load_ranker(folder)
    check_close(record_property, f"padless-{head}", ranker.score(queries, documents), torch.stack(expected))


# --- a decoder cross-encoder keeps its end-of-sequence token when the document is cut ------------------------------
@pytest.mark.parametrize(("family", "style"), [("llama", "llama2"), ("llama", "llama3")])
def test_decoder_cross_encoder_truncation_keeps_eos(family, style, cross, sample, record_property):
    """RankLlama reads the representation of the </s> that ends the input; tevatron, which trained it, cuts the
    pair to max_length - 1 (only the document) and appends the EOS id after cutting, so a long document still
    ends with it. Reference: that collation, then HF's own head."""
    _, model, tokenizer, folder = cross(family, style)
    max_length = 64
    ranker = load_ranker(folder, max_length=max_length)
    queries, documents = sample
    encoded = tokenizer([f"query: {query}" for query in queries], [f"document: {document}" for document in documents],
                        truncation="only_second", max_length=max_length - 1)["input_ids"]
    batch = tokenizer.pad({"input_ids": [ids + [tokenizer.eos_token_id] for ids in encoded]}, padding=True,
                          return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits[:, 0]
    inputs = ranker.tokenize(queries, documents)
    last = inputs.tokens["attention_mask"].sum(1) - 1
    ends = inputs.tokens["input_ids"][torch.arange(len(queries)), last]
    assert (ends == tokenizer.eos_token_id).all(), tokenizer.convert_ids_to_tokens(ends.tolist())
    check_close(record_property, f"cross-truncated-{style}", quiet_score(ranker, queries, documents), expected)
