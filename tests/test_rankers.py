"""Parity of hooked rankers with the plain Hugging Face / sentence-transformers computation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, T5ForConditionalGeneration

from mechir_axioms import load_ranker
from tiny_models import ENCODER_FAMILIES

TOLERANCE = 1e-4
TINY_CASES = [(family, kind) for family in ENCODER_FAMILIES for kind in ("bi", "cross")] + [("t5", "t5")]

# Where each family's attention output projection lives, written out by hand (independent of the adapters).
OUTPUT_PROJECTION = {
    "bert": lambda base, layer: base.encoder.layer[layer].attention.output.dense,
    "electra": lambda base, layer: base.encoder.layer[layer].attention.output.dense,
    "roberta": lambda base, layer: base.encoder.layer[layer].attention.output.dense,
    "distilbert": lambda base, layer: base.transformer.layer[layer].attention.out_lin,
    "mpnet": lambda base, layer: base.encoder.layer[layer].attention.attn.o,
    "modernbert": lambda base, layer: base.layers[layer].attn.Wo,
    "t5": lambda base, layer: base.encoder.block[layer].layer[0].SelfAttention.o,
}


def plain_model(path, kind, attn_implementation=None):
    """The unhooked HF model as its users load it (the library's default attention unless told)."""
    options = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if kind == "cross":
        return AutoModelForSequenceClassification.from_pretrained(path, **options).eval()
    if kind == "t5":
        return T5ForConditionalGeneration.from_pretrained(path, **options).eval()
    return AutoModel.from_pretrained(path, **options).eval()


def plain_scores(path, kind, queries, documents, max_length, model=None):
    """Scores computed directly with transformers: CLS dot product, the logit, or monoT5's true-false logit."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = model or plain_model(path, kind)
    encode = {"padding": True, "truncation": True, "max_length": max_length, "return_tensors": "pt"}
    with torch.no_grad():
        if kind == "bi":
            query = model(**tokenizer(queries, **encode)).last_hidden_state[:, 0]
            document = model(**tokenizer(documents, **encode)).last_hidden_state[:, 0]
            return (query * document).sum(-1)
        if kind == "cross":
            tokens = tokenizer(queries, documents, **{**encode, "truncation": "only_second"})
            return model(**tokens).logits[:, 0]
        prompts = [f"Query: {q} Document: {d} Relevant:" for q, d in zip(queries, documents)]
        tokens = tokenizer(prompts, **encode)
        start = torch.zeros((len(prompts), 1), dtype=torch.long)
        logits = model(**tokens, decoder_input_ids=start).logits[:, 0]
        true, false = tokenizer.encode("true", add_special_tokens=False)[0], tokenizer.encode("false", add_special_tokens=False)[0]
        return logits[:, true] - logits[:, false]


@pytest.mark.parametrize(("family", "kind"), TINY_CASES)
def test_tiny_scores_match_plain_transformers(tiny, trec_pairs, family, kind):
    ranker, path = tiny(family, kind)
    queries, documents = trec_pairs
    assert ranker.kind == kind
    expected = plain_scores(path, kind, queries, documents, ranker.max_length)
    got = ranker.score(queries, documents, batch_size=5)
    assert got.shape == (len(queries),)
    assert torch.allclose(got, expected, atol=TOLERANCE, rtol=0), (got - expected).abs().max()


def test_minilm_matches_sentence_transformers(minilm_path, trec_pairs):
    from sentence_transformers import SentenceTransformer

    queries, documents = trec_pairs
    ranker = load_ranker()
    assert (ranker.pooling, ranker.similarity, ranker.max_length) == ("mean", "cosine", 256)
    model = SentenceTransformer(str(minilm_path), device="cpu")
    expected = (model.encode(queries, convert_to_tensor=True) * model.encode(documents, convert_to_tensor=True)).sum(-1)
    got = ranker.score(queries, documents)
    assert (got - expected.cpu()).abs().max() <= TOLERANCE


def test_real_cross_encoder_matches_model_card(cross_encoder_path, trec_pairs):
    queries, documents = trec_pairs
    ranker = load_ranker(cross_encoder_path)
    assert ranker.kind == "cross" and ranker.max_length == 256
    expected = plain_scores(cross_encoder_path, "cross", queries, documents, 256)
    assert (ranker.score(queries, documents) - expected).abs().max() <= TOLERANCE


def _real_or_tiny(request, tiny, case):
    if case == "minilm":
        return load_ranker(), request.getfixturevalue("minilm_path"), "bert"
    if case == "cross-encoder":
        path = request.getfixturevalue("cross_encoder_path")
        return load_ranker(path), path, "bert"
    family, kind = case
    ranker, path = tiny(family, kind)
    return ranker, path, family


INTERNAL_CASES = ["minilm", "cross-encoder", *TINY_CASES]


def _reference_run(ranker, path, queries, documents):
    """HF eager forward on the ranker's own tokens, with hidden states and attentions."""
    model = plain_model(path, ranker.kind, attn_implementation="eager")
    tokens = ranker.tokenize(queries, documents).tokens
    with torch.no_grad():
        if ranker.kind == "t5":
            start = torch.zeros((len(queries), 1), dtype=torch.long)
            out = model(**tokens, decoder_input_ids=start, output_hidden_states=True, output_attentions=True)
            return model, out.encoder_hidden_states, out.encoder_attentions
        out = model(**tokens, output_hidden_states=True, output_attentions=True)
    return model, out.hidden_states, out.attentions


@pytest.mark.parametrize("case", INTERNAL_CASES, ids=str)
def test_hook_points_match_hf_internals(request, tiny, trec_pairs, case):
    ranker, path, family = _real_or_tiny(request, tiny, case)
    queries, documents = trec_pairs[0][:6], trec_pairs[1][:6]
    _, cache = ranker.run_with_cache(queries, documents)
    model, hidden_states, attentions = _reference_run(ranker, path, queries, documents)
    last = ranker.n_layers - 1
    for layer in range(ranker.n_layers):
        block = f"blocks.{layer}."
        resid_post = cache[block + "hook_resid_post"]
        if layer == last and family in ("t5", "modernbert"):
            continue  # HF's last hidden state has the final norm applied; compared below
        assert torch.allclose(resid_post, hidden_states[layer + 1], atol=1e-5), f"{block}hook_resid_post"
        assert torch.allclose(cache[block + "hook_resid_pre"], hidden_states[layer], atol=1e-5)
        assert torch.allclose(cache[block + "attn.hook_pattern"], attentions[layer], atol=1e-6)
        z = cache[block + "attn.hook_z"]
        assert z.shape[-2:] == (ranker.n_heads, ranker.d_head)
        projection = OUTPUT_PROJECTION[family](model.base_model if ranker.kind != "t5" else model, layer)
        weight = projection.weight.unflatten(1, (ranker.n_heads, ranker.d_head))  # [d_model, head, d_head]
        summed = torch.einsum("bphd,mhd->bpm", z, weight)
        if projection.bias is not None:
            summed = summed + projection.bias
        assert torch.allclose(summed, cache[block + "hook_attn_out"], atol=1e-5), f"{block} heads do not sum up"
    norm = {"t5": lambda m: m.encoder.final_layer_norm, "modernbert": lambda m: m.base_model.final_norm}.get(family)
    final = cache[f"blocks.{last}.hook_resid_post"]
    with torch.no_grad():
        assert torch.allclose(norm(model)(final) if norm else final, hidden_states[-1], atol=1e-5)


@pytest.mark.parametrize("case", INTERNAL_CASES, ids=str)
def test_zeroing_a_head_matches_a_hand_written_hf_hook(request, tiny, trec_pairs, case):
    ranker, path, family = _real_or_tiny(request, tiny, case)
    queries, documents = trec_pairs[0][:6], trec_pairs[1][:6]
    layer, head, d_head = ranker.n_layers - 1, 1, ranker.d_head

    def zero_head(z, name):
        z = z.clone()
        z[:, :, head] = 0
        return z

    hooked = ranker.run_with_hooks(queries, documents, {f"blocks.{layer}.attn.hook_z": zero_head})
    model = plain_model(path, ranker.kind)

    def zero_columns(module, args):
        hidden = args[0].clone()
        hidden[..., head * d_head : (head + 1) * d_head] = 0
        return (hidden, *args[1:])

    base = model if ranker.kind == "t5" else model.base_model
    OUTPUT_PROJECTION[family](base, layer).register_forward_pre_hook(zero_columns)
    if case == "minilm":  # sentence-transformers settings: mean pooling, cosine
        tokenizer = AutoTokenizer.from_pretrained(path)
        encode = {"padding": True, "truncation": True, "max_length": 256, "return_tensors": "pt"}

        def embed(texts, hooked):
            tokens = tokenizer(texts, **encode)
            with torch.no_grad():
                hidden = hooked(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

        expected = (embed(queries, plain_model(path, "bi")) * embed(documents, model)).sum(-1)
    elif ranker.kind == "bi":  # only the document encoder is ablated
        clean = plain_model(path, "bi")
        tokenizer = AutoTokenizer.from_pretrained(path)
        encode = {"padding": True, "truncation": True, "max_length": ranker.max_length, "return_tensors": "pt"}
        with torch.no_grad():
            query = clean(**tokenizer(queries, **encode)).last_hidden_state[:, 0]
            document = model(**tokenizer(documents, **encode)).last_hidden_state[:, 0]
        expected = (query * document).sum(-1)
    else:
        expected = plain_scores(path, ranker.kind, queries, documents, ranker.max_length, model=model)
    unhooked = ranker.score(queries, documents)
    assert (hooked - unhooked).abs().max() > 1e-6, "ablating a head should move some score"
    assert (hooked - expected).abs().max() <= TOLERANCE


def test_replacing_the_pattern_changes_the_score(tiny, trec_pairs):
    ranker, _ = tiny("bert", "cross")
    queries, documents = trec_pairs[0][:4], trec_pairs[1][:4]
    seen = {}

    def uniform(pattern, name):
        seen[name] = pattern.shape
        return torch.full_like(pattern, 1.0 / pattern.shape[-1])

    plain = ranker.score(queries, documents)
    changed = ranker.run_with_hooks(queries, documents, {"blocks.0.attn.hook_pattern": uniform})
    assert "blocks.0.attn.hook_pattern" in seen
    assert (changed - plain).abs().max() > 1e-6


def test_bi_encoder_sides_are_separate(trec_pairs):
    ranker = load_ranker()
    queries, documents = trec_pairs[0][:4], trec_pairs[1][:4]
    _, document_cache = ranker.run_with_cache(queries, documents, names=["blocks.0.hook_resid_pre"])
    _, query_cache = ranker.run_with_cache(queries, documents, names=["blocks.0.hook_resid_pre"], side="query")
    query_tokens = ranker.tokenizer(queries, padding=True, return_tensors="pt")["input_ids"]
    assert query_cache["blocks.0.hook_resid_pre"].shape[1] == query_tokens.shape[1]
    assert document_cache["blocks.0.hook_resid_pre"].shape[1] != query_tokens.shape[1]


def test_t5_has_distinct_decoder_names(tiny, trec_pairs):
    ranker, _ = tiny("t5", "t5")
    names = ranker.hook_names
    assert "blocks.0.attn.hook_z" in names and "decoder.blocks.0.attn.hook_z" in names
    assert "decoder.blocks.0.cross_attn.hook_pattern" in names
    _, cache = ranker.run_with_cache(trec_pairs[0][:2], trec_pairs[1][:2], names=["hook_embed", "decoder.hook_embed"])
    assert cache["decoder.hook_embed"].shape[1] == 1  # the first decoder step only
    assert cache["hook_embed"].shape[1] > 1


def test_hook_that_changes_shape_is_refused(tiny, trec_pairs):
    ranker, _ = tiny("bert", "cross")
    with pytest.raises(ValueError, match=r"hook for 'blocks.0.hook_mlp_out' returned shape"):
        ranker.run_with_hooks(["q"], ["d"], {"blocks.0.hook_mlp_out": lambda x, name: x[:, :1]})


def test_unknown_hook_name_is_refused(tiny):
    ranker, _ = tiny("bert", "cross")
    with pytest.raises(KeyError, match=r"unknown hook name\(s\) \['blocks.9.hook_z'\]"):
        ranker.run_with_hooks(["q"], ["d"], {"blocks.9.hook_z": lambda x, name: None})
