"""make_pairs on real TREC DL data: alignment invariants, determinism, provenance and hypothesis properties."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mechir_axioms import PairSet, list_axioms, load_axiom, make_pairs
from mechir_axioms.models.layout import REGIONS
from mechir_axioms.pairs.align import Aligned, align
from mechir_axioms.pairs.compile import vocabulary_of
from mechir_axioms.perturb.operators import Dropped, Filling, perturb
from mechir_axioms.perturb.terms import IdfTable, TermContext, query_terms


@pytest.fixture(scope="module")
def trec_frame(trec_rows) -> pd.DataFrame:
    return pd.DataFrame(trec_rows)


@pytest.fixture(scope="module", params=["minilm", "t5", "cross"])
def any_ranker(request, tiny):
    """The real MiniLM tokenizer (bi-encoder, document side), a T5 tokenizer and a joint cross-encoder input."""
    if request.param == "minilm":
        return request.getfixturevalue("minilm")
    if request.param == "cross":
        return tiny("bert", "cross")[0]
    return tiny("t5", "t5")[0]


def check_invariants(pairs: PairSet, ranker) -> None:
    """Equal lengths, the changed span inside both inputs, and identical tokens elsewhere, for every row."""
    t = pairs.tensors
    for row in range(len(pairs)):
        length = int(t["length"][row])
        start, end = int(pairs.frame["span_start"][row]), int(pairs.frame["span_end"][row])
        assert 0 < start < end <= length <= ranker.max_length
        for key in ("input_ids", "token_type_ids"):
            if f"baseline_{key}" not in t:
                continue
            base, pert = t[f"baseline_{key}"][row, :length], t[f"perturbed_{key}"][row, :length]
            assert torch.equal(base[:start], pert[:start]) and torch.equal(base[end:], pert[end:])
        assert bool(t["perturbed_attention_mask"][row, :length].all())
        assert not t["perturbed_attention_mask"][row, length:].any()
        check_regions(pairs, ranker, row)


def check_regions(pairs: PairSet, ranker, row: int) -> None:
    """Regions: the span exactly, special tokens as markup, and the query as the other text of a joint input."""
    length = int(pairs.tensors["length"][row])
    regions = [REGIONS[code] for code in pairs.tensors["region"][row, :length].tolist()]
    assert (pairs.tensors["region"][row, length:] == -1).all()
    start, end = int(pairs.frame["span_start"][row]), int(pairs.frame["span_end"][row])
    assert [index for index, region in enumerate(regions) if region == "span"] == list(range(start, end))
    ids = pairs.tensors["perturbed_input_ids"][row, :length].tolist()
    for position, token in enumerate(ids):
        if token in ranker.tokenizer.all_special_ids:
            assert regions[position] == "markup"
    other = [token for token, region in zip(ids, regions) if region == "other"]
    if ranker.kind == "bi":
        assert not other
    else:  # the query's own tokens, as the ranker tokenizes the query alone
        query = ranker.tokenizer.decode(other).replace(" ", "")
        assert query == ranker.tokenizer.decode(ranker.tokenizer(pairs.frame["query"][row], add_special_tokens=False)["input_ids"]).replace(" ", "")


def test_every_catalogue_spec_compiles(trec_frame, any_ranker):
    for axiom in list_axioms():
        pairs = make_pairs(axiom, trec_frame, any_ranker, n=12, seed=3)
        rungs = axiom.perturb["count"] if axiom.perturb.params.get("ladder") else 1
        assert len(pairs) == 12 * rungs, (axiom.name, pairs.dropped)
        check_invariants(pairs, any_ranker)
        if axiom.name == "NULL":  # two different neutral words, neither from the query
            assert (pairs.frame["baseline"] != pairs.frame["perturbed"]).all()
            for row in pairs.frame.itertuples():
                assert row.term.lower() not in row.query.lower().split()


def test_perturbed_tokens_are_the_rankers_own(trec_frame, any_ranker):
    """The aligned perturbed input is exactly what Ranker.tokenize gives for the perturbed text."""
    pairs = make_pairs("TFC1", trec_frame, any_ranker, n=8, seed=5)
    frame = pairs.frame
    own = any_ranker.tokenize(list(frame["query"]), list(frame["perturbed"])).tokens
    stored = pairs.model_input("perturbed", any_ranker).tokens
    assert torch.equal(own["input_ids"], stored["input_ids"])


def test_stratified_sample_is_proportional_and_deterministic(trec_frame, minilm):
    pairs = make_pairs("TFC1", trec_frame, minilm, n=200, seed=7)
    again = make_pairs("TFC1", trec_frame, minilm, n=200, seed=7)
    other = make_pairs("TFC1", trec_frame, minilm, n=200, seed=8)
    pd.testing.assert_frame_equal(pairs.frame, again.frame)
    assert all(torch.equal(pairs.tensors[key], again.tensors[key]) for key in pairs.tensors)
    assert list(pairs.frame["docno"]) != list(other.frame["docno"])
    share = trec_frame["relevance"].value_counts(normalize=True)
    got = pairs.frame["relevance"].value_counts(normalize=True)
    assert ((got - share).abs() < 0.01).all()
    assert len(pairs.frame.drop_duplicates(["qid", "docno"])) == 200


def test_provenance_and_round_trip(tmp_path, trec_frame, minilm):
    pairs = make_pairs("TDC", trec_frame, minilm, n=20, seed=1, filler="the")
    for key in ("data_hash", "spec_hash", "tokenizer", "filler", "seed", "package_version", "dropped"):
        assert key in pairs.provenance
    assert pairs.provenance["filler"] == "the" and pairs.provenance["dropped"]["fewer than 2 query terms"] > 0
    assert pairs.frame["baseline"].str.contains(" the").all()
    loaded = PairSet.load(pairs.save(tmp_path / "tdc"))
    pd.testing.assert_frame_equal(loaded.frame, pairs.frame)
    assert loaded.provenance == pairs.provenance
    assert all(torch.equal(loaded.tensors[key], pairs.tensors[key]) for key in pairs.tensors)
    with pytest.raises(FileNotFoundError, match="is not a saved PairSet: missing frame.parquet"):
        PairSet.load(tmp_path)


def test_tdc_uses_highest_and_lowest_idf_terms(trec_frame, minilm):
    pairs = make_pairs("TDC", trec_frame, minilm, n=10, seed=2)
    idf = IdfTable.from_texts(dict.fromkeys(trec_frame["text"]))
    for _, row in pairs.frame.iterrows():
        terms = query_terms(row["query"])
        assert row["term"] == max(terms, key=lambda term: (idf(term), term))
        low = min(terms, key=lambda term: (idf(term), term))
        assert low in row["baseline"].split()[-3:] or low == row["term"]


def test_ladder_rungs_chain(trec_frame, minilm):
    pairs = make_pairs("TFC2", trec_frame, minilm, n=5, seed=4)
    frame = pairs.frame
    assert list(frame["rung"]) == [1, 2, 3] * 5
    texts = trec_frame.set_index(["qid", "docno"])["text"]
    for start in range(0, 15, 3):
        rungs = frame.iloc[start : start + 3]
        assert list(rungs["perturbed"])[:2] == list(rungs["baseline"])[1:]
        term = rungs["term"].iloc[0]
        before = texts.loc[(rungs["qid"].iloc[0], rungs["docno"].iloc[0])].split().count(term)
        # rung k: k - 1 copies of the term in the baseline, k in the perturbed, on top of the passage's own
        assert [text.split().count(term) for text in rungs["baseline"]] == [before, before + 1, before + 2]
        assert [text.split().count(term) for text in rungs["perturbed"]] == [before + 1, before + 2, before + 3]


def test_masked_baseline_hides_the_slot(trec_frame, minilm):
    pairs = make_pairs("LNC2", trec_frame, minilm, n=10, seed=1)
    t = pairs.tensors
    for row in range(len(pairs)):
        start, end = int(pairs.frame["span_start"][row]), int(pairs.frame["span_end"][row])
        assert not t["baseline_attention_mask"][row, start:end].any()
        assert (t["baseline_input_ids"][row, start:end] == minilm.tokenizer.pad_token_id).all()
        assert pairs.frame["baseline"][row].count("[PAD]") == end - start
    # doubling a passage pushes some past the model's 256 tokens: those are dropped and counted, never truncated
    assert pairs.provenance["dropped"]["longer than the model's max length 256: it would be truncated"] > 0
    assert int(t["length"].max()) <= minilm.max_length == 256


def test_similar_and_unrelated_terms(trec_frame, minilm):
    pairs = make_pairs("STMC1", trec_frame, minilm, n=10, seed=1)
    vocabulary = vocabulary_of(minilm)
    for _, row in pairs.frame.iterrows():
        similar = row["term"]
        assert similar not in query_terms(row["query"])
        assert vocabulary.length(similar) == 1
        unrelated = row["baseline"].split()[-1]
        assert vocabulary.length(unrelated) == vocabulary.length(similar)


def test_bi_encoder_query_target(trec_frame, minilm):
    axiom = load_axiom("TFC1", target="query", term="neutral")
    pairs = make_pairs(axiom, trec_frame, minilm, n=6, seed=1)
    inputs = pairs.model_input("perturbed", minilm)
    assert inputs.query_tokens["input_ids"].shape[1] == int(pairs.tensors["length"].max())
    scored = pairs.score(minilm)
    expected = minilm.score(list(scored["perturbed"]), list(trec_frame.set_index(["qid", "docno"]).loc[
        list(zip(scored["qid"], scored["docno"])), "text"]))
    assert torch.allclose(torch.tensor(scored["perturbed_score"].to_numpy()), expected.double(), atol=1e-5)


def test_pair_scores_match_text_scores(trec_frame, tiny):
    ranker = tiny("bert", "cross")[0]
    pairs = make_pairs("TFC1-start", trec_frame, ranker, n=10, seed=1)
    scored = pairs.score(ranker, batch_size=4)
    expected = ranker.score(list(scored["query"]), list(scored["baseline"]))
    assert torch.allclose(torch.tensor(scored["baseline_score"].to_numpy()), expected.double(), atol=1e-5)


def test_not_enough_pairs_warns_and_none_raises(trec_frame, minilm):
    few = trec_frame.head(30)
    with pytest.warns(UserWarning, match=r"TFC1: built 30 of 50 requested pairs"):
        make_pairs("TFC1", few, minilm, n=50)
    with pytest.raises(ValueError, match=r"PROX1: no pair of DataFrame could be built for .*; dropped: \{'fewer than 2 query terms': 30\}"):
        make_pairs("PROX1", few.assign(query="cats"), minilm, n=5)
    with pytest.raises(ValueError, match="stratify='grade' is not a column"):
        make_pairs("TFC1", few, minilm, stratify="grade")


# --- hypothesis: the harness's invariants for arbitrary text ------------------------------------
WORDS = st.text(
    alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789éü-'.,?")), min_size=1, max_size=12
).filter(lambda word: word.strip())
TEXTS = st.lists(WORDS, min_size=1, max_size=40).map(" ".join)
QUERIES = st.lists(WORDS, min_size=1, max_size=6).map(" ".join)
PROPERTY_AXIOMS = ["TFC1", "TFC1-START", "TDC", "LNC1", "LNC2", "WORD-ORDER", "PROX1", "POSITION", "STMC1", "TFC2"]


def _build(ranker, axiom, query, document, seed):
    context = TermContext(
        query, document, IdfTable.from_texts([document, query]), vocabulary_of(ranker), random.Random(seed), "a"
    )
    try:
        filling = Filling(context, axiom.baseline.fill, ranker.tokenizer.pad_token, axiom.baseline.term)
        edits = perturb(axiom.perturb.operation, axiom.perturb.params, document, filling)
    except Dropped:
        return None
    return edits, align(ranker, "document", [(query, document, edit) for edit in edits])


@pytest.mark.parametrize("name", PROPERTY_AXIOMS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=QUERIES, document=TEXTS, seed=st.integers(0, 2**16))
def test_alignment_properties(any_ranker, name, query, document, seed):
    axiom = load_axiom(name)
    built = _build(any_ranker, axiom, query, document, seed)
    assume(built is not None)  # the operator could not build this pair (say, too few query terms)
    edits, results = built
    again = _build(any_ranker, axiom, query, document, seed)
    assert [edit.perturbed for edit in again[0]] == [edit.perturbed for edit in edits]  # deterministic under a seed
    assert len(results) == len(edits) and all(isinstance(result, (Aligned, Dropped)) for result in results)
    aligned = [(edit, result) for edit, result in zip(edits, results) if isinstance(result, Aligned)]
    assume(aligned)  # every edit was dropped by the aligner: nothing to check for this example
    for edit, result in aligned:
        base, pert = result.baseline["input_ids"], result.perturbed["input_ids"]
        start, end = result.span
        assert len(base) == len(pert) and 0 < start < end <= len(pert)
        assert base[:start] == pert[:start] and base[end:] == pert[end:]
        if edit.masked:
            assert result.baseline["attention_mask"][start:end] == [0] * (end - start)
        # the span covers the slot's own tokens: re-tokenizing the slot text finds them inside the span
        own = any_ranker.tokenizer.convert_ids_to_tokens(pert[start:end])
        assert own, "span must not be empty"
