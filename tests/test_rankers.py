"""Parity of hooked rankers with the plain Hugging Face / sentence-transformers computation."""

from __future__ import annotations

import re

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

# Where each family's MLP output lives (before the residual add and any LayerNorm), written out by hand too.
MLP_OUTPUT = {
    "bert": lambda base, layer: base.encoder.layer[layer].output.dense,
    "electra": lambda base, layer: base.encoder.layer[layer].output.dense,
    "roberta": lambda base, layer: base.encoder.layer[layer].output.dense,
    "distilbert": lambda base, layer: base.transformer.layer[layer].ffn,
    "mpnet": lambda base, layer: base.encoder.layer[layer].output.dense,
    "modernbert": lambda base, layer: base.layers[layer].mlp,
    "t5": lambda base, layer: base.encoder.block[layer].layer[-1].DenseReluDense,
}


def _post_norm(attention_norm, output_norm):
    """A post-LN layer: norm(attn_out + resid_pre), then norm(mlp_out + that), with the HF layer's own norms."""
    def resid_post(base, layer, pre, attn, mlp):
        middle = attention_norm(base, layer)(attn + pre)
        return output_norm(base, layer)(mlp + middle)

    return resid_post


def _pre_norm(base, layer, pre, attn, mlp):
    """A pre-LN layer (ModernBERT, T5) adds both outputs to the residual stream as they are."""
    return pre + attn + mlp


# resid_post recomputed from resid_pre, hook_attn_out and hook_mlp_out, as each family's layer combines them.
RESIDUAL = {
    "bert": _post_norm(lambda b, l: b.encoder.layer[l].attention.output.LayerNorm, lambda b, l: b.encoder.layer[l].output.LayerNorm),
    "electra": _post_norm(lambda b, l: b.encoder.layer[l].attention.output.LayerNorm, lambda b, l: b.encoder.layer[l].output.LayerNorm),
    "roberta": _post_norm(lambda b, l: b.encoder.layer[l].attention.output.LayerNorm, lambda b, l: b.encoder.layer[l].output.LayerNorm),
    "distilbert": _post_norm(lambda b, l: b.transformer.layer[l].sa_layer_norm, lambda b, l: b.transformer.layer[l].output_layer_norm),
    "mpnet": _post_norm(lambda b, l: b.encoder.layer[l].attention.LayerNorm, lambda b, l: b.encoder.layer[l].output.LayerNorm),
    "modernbert": _pre_norm,
    "t5": _pre_norm,
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
def test_mlp_out_and_embed_match_hf(request, tiny, trec_pairs, case):
    """hook_mlp_out is what the HF MLP module returns (a plain torch hook on the unhooked eager model), and recombined
    with resid_pre and attn_out by the layer's own norms it gives resid_post; hook_embed is the token lookup."""
    ranker, path, family = _real_or_tiny(request, tiny, case)
    queries, documents = trec_pairs[0][:6], trec_pairs[1][:6]
    sites = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    names = ["hook_embed", *(f"blocks.{layer}.hook_{site}" for layer in range(ranker.n_layers) for site in sites)]
    _, cache = ranker.run_with_cache(queries, documents, names=names)
    model = plain_model(path, ranker.kind, attn_implementation="eager")  # the attention the hooked model runs
    base = model if ranker.kind == "t5" else model.base_model
    captured = {}
    handles = [
        MLP_OUTPUT[family](base, layer).register_forward_hook(
            lambda module, args, output, layer=layer: captured.__setitem__(layer, output))
        for layer in range(ranker.n_layers)
    ]
    tokens = ranker.tokenize(queries, documents).tokens
    try:
        with torch.no_grad():
            if ranker.kind == "t5":
                model(**tokens, decoder_input_ids=torch.zeros((len(queries), 1), dtype=torch.long))
            else:
                model(**tokens)
            embedded = model.get_input_embeddings()(tokens["input_ids"])
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(cache["hook_embed"], embedded)
    assert sorted(captured) == list(range(ranker.n_layers))
    for layer in range(ranker.n_layers):
        block = f"blocks.{layer}."
        mlp_out = cache[block + "hook_mlp_out"]
        assert mlp_out.shape == captured[layer].shape
        assert torch.allclose(mlp_out, captured[layer], atol=1e-5), f"{block}hook_mlp_out"
        with torch.no_grad():
            recombined = RESIDUAL[family](base, layer, cache[block + "hook_resid_pre"], cache[block + "hook_attn_out"], mlp_out)
        assert torch.allclose(recombined, cache[block + "hook_resid_post"], atol=1e-5), f"{block} does not recombine"


def test_t5_decoder_hooks_match_hf(tiny, trec_pairs):
    """The decoder's residual stream, self- and cross-attention patterns, heads and MLP against HF's eager run."""
    ranker, path = tiny("t5", "t5")
    queries, documents = trec_pairs[0][:6], trec_pairs[1][:6]
    _, cache = ranker.run_with_cache(queries, documents)
    model = plain_model(path, "t5", attn_implementation="eager")
    tokens = ranker.tokenize(queries, documents).tokens
    start = torch.full((len(queries), 1), model.config.decoder_start_token_id, dtype=torch.long)
    decoder = model.decoder
    layers = len(decoder.block)
    captured = {}
    handles = [
        decoder.block[layer].layer[-1].DenseReluDense.register_forward_hook(
            lambda module, args, output, layer=layer: captured.__setitem__(layer, output))
        for layer in range(layers)
    ]
    try:
        with torch.no_grad():
            out = model(**tokens, decoder_input_ids=start, output_hidden_states=True, output_attentions=True)
            embedded = model.get_input_embeddings()(start)
    finally:
        for handle in handles:
            handle.remove()
    hidden, self_attention, cross_attention = out.decoder_hidden_states, out.decoder_attentions, out.cross_attentions
    assert len(hidden) == layers + 1 and len(self_attention) == len(cross_attention) == layers
    assert torch.equal(cache["decoder.hook_embed"], embedded)
    heads, d_head = ranker.n_heads, ranker.d_head
    for layer in range(layers):
        block = f"decoder.blocks.{layer}."
        pre, post = cache[block + "hook_resid_pre"], cache[block + "hook_resid_post"]
        assert torch.allclose(pre, hidden[layer], atol=1e-5), f"{block}hook_resid_pre"
        if layer < layers - 1:  # HF's last decoder hidden state has the final norm applied; compared below
            assert torch.allclose(post, hidden[layer + 1], atol=1e-5), f"{block}hook_resid_post"
        assert torch.allclose(cache[block + "attn.hook_pattern"], self_attention[layer], atol=1e-6)
        pattern = cache[block + "cross_attn.hook_pattern"]
        assert pattern.shape == (len(queries), heads, 1, tokens["input_ids"].shape[1])
        assert torch.allclose(pattern, cross_attention[layer], atol=1e-6), f"{block}cross_attn.hook_pattern"
        for z, projection, output in (("attn.hook_z", decoder.block[layer].layer[0].SelfAttention.o, "hook_attn_out"),
                                      ("cross_attn.hook_z", decoder.block[layer].layer[1].EncDecAttention.o, "hook_cross_attn_out")):
            weight = projection.weight.unflatten(1, (heads, d_head))
            summed = torch.einsum("bphd,mhd->bpm", cache[block + z], weight)
            assert torch.allclose(summed, cache[block + output], atol=1e-5), f"{block}{z} heads do not sum up"
        assert torch.allclose(cache[block + "hook_mlp_out"], captured[layer], atol=1e-5), f"{block}hook_mlp_out"
        recombined = pre + cache[block + "hook_attn_out"] + cache[block + "hook_cross_attn_out"] + cache[block + "hook_mlp_out"]
        assert torch.allclose(recombined, post, atol=1e-5), f"{block} does not recombine"
    with torch.no_grad():
        final = decoder.final_layer_norm(cache[f"decoder.blocks.{layers - 1}.hook_resid_post"])
    assert torch.allclose(final, hidden[-1], atol=1e-5)


class Boom(Exception):
    """Raised by a hook in the middle of a forward pass."""


def _hooks_left(model: torch.nn.Module) -> list[tuple[str, str]]:
    """Every (module, kind) of hook still registered on the model, including the attention pattern functions."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
             "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks")
    left = [(name, kind) for name, module in model.named_modules() for kind in kinds if getattr(module, kind, None)]
    return left + [(name, "pattern functions") for name, module in model.named_modules() if module.__dict__.get("_mechir_pattern_fns")]


@pytest.mark.parametrize(("family", "kind", "site"), [
    ("bert", "cross", "blocks.1.hook_mlp_out"),
    ("bert", "bi", "blocks.1.attn.hook_pattern"),
    ("modernbert", "cross", "blocks.1.attn.hook_z"),
    ("t5", "t5", "decoder.blocks.0.cross_attn.hook_pattern"),
], ids=str)
def test_hooks_are_removed_after_an_exception(tiny, trec_pairs, family, kind, site):
    """A hook that raises mid-forward, while every other hook point is being cached: the error reaches the caller,
    no hook stays on any module, and the ranker scores exactly as before."""
    ranker, _ = tiny(family, kind)
    queries, documents = trec_pairs[0][:3], trec_pairs[1][:3]
    assert _hooks_left(ranker.model) == []
    before = ranker.score(queries, documents)
    seen = []

    def boom(activation, name):
        raise Boom(name)

    with pytest.raises(Boom, match=re.escape(site)):
        ranker.run_with_cache(queries, documents, hooks={site: boom},
                              names=[name for name in ranker.hook_names if name != site])
    assert _hooks_left(ranker.model) == []
    assert torch.equal(ranker.score(queries, documents), before)
    _, cache = ranker.run_with_cache(queries, documents, names=[site], hooks={site: lambda x, name: seen.append(name)})
    assert seen == [site] and list(cache) == [site]  # a later run sees its own hooks only, once each
    assert _hooks_left(ranker.model) == []


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
