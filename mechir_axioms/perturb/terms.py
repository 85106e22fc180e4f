"""Words, IDF and term selectors: which term a perturbation inserts.

IDF is computed in Python from a corpus (the dataset's own passages, a user-given corpus, or an
ir_datasets collection) and cached; there is no Java and no index.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.files import write_atomically

if TYPE_CHECKING:
    import torch

WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves define definition
    meaning mean means""".split()
)
"""English stopwords plus question words typical of MS MARCO queries; never chosen as query terms."""

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
IDF_CACHE = Path.home() / ".cache" / "mechir-axioms" / "idf"


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words."""
    return WORD.findall(text.lower())


def query_terms(query: str) -> list[str]:
    """Distinct non-stopword query words, in query order."""
    return list(dict.fromkeys(word for word in words(query) if word not in STOPWORDS))


def neutral_vocabulary() -> list[str]:
    """Common, topic-neutral words shipped with the package (one per line in data/neutral_words.txt)."""
    text = (PACKAGE_DATA / "neutral_words.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class IdfTable:
    """BM25-style IDF, log(1 + (N - df + 0.5) / (df + 0.5)), from document frequencies over a corpus."""

    n_documents: int
    document_frequency: dict[str, int]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> IdfTable:
        frequency: Counter[str] = Counter()
        count = 0
        for text in texts:
            frequency.update(set(words(text)))
            count += 1
        return cls(count, dict(frequency))

    def __call__(self, term: str) -> float:
        df = self.document_frequency.get(term, 0)
        return math.log(1 + (self.n_documents - df + 0.5) / (df + 0.5))


_IDF_MEMORY: dict[str, IdfTable] = {}


def idf_from_texts(texts: list[str]) -> IdfTable:
    """IDF over an in-memory corpus, memoised by the corpus's content hash."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    if digest not in _IDF_MEMORY:
        _IDF_MEMORY[digest] = IdfTable.from_texts(texts)
    return _IDF_MEMORY[digest]


def idf_from_ir_datasets(dataset_id: str) -> IdfTable:
    """IDF over an ir_datasets document collection, cached on disk since collections can be large."""
    import ir_datasets

    path = IDF_CACHE / (hashlib.sha256(dataset_id.encode()).hexdigest()[:16] + ".json")
    if path.is_file():
        stored = json.loads(path.read_text())
        return IdfTable(stored["n_documents"], stored["document_frequency"])
    dataset = ir_datasets.load(dataset_id)
    if not dataset.has_docs():
        raise ValueError(f"irds:{dataset_id} has no documents to compute IDF from")
    table = IdfTable.from_texts(doc.default_text() for doc in dataset.docs_iter())
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {"n_documents": table.n_documents, "document_frequency": table.document_frequency}
    write_atomically(path, lambda temporary: temporary.write_text(json.dumps(stored)))
    return table


def resolve_idf(idf: str | Path | Iterable[str] | None, corpus: list[str]) -> IdfTable:
    """IDF from `idf`: None (the data's own passages), "irds:ID", a text file (one document a line), or texts."""
    if idf is None:
        return idf_from_texts(corpus)
    if isinstance(idf, str) and idf.startswith("irds:"):
        return idf_from_ir_datasets(idf.removeprefix("irds:"))
    if isinstance(idf, (str, Path)):
        path = Path(idf)
        if not path.is_file():
            raise FileNotFoundError(f"IDF corpus {path} does not exist; give a text file with one document per line")
        return idf_from_texts(path.read_text(encoding="utf-8").splitlines())
    return idf_from_texts(list(idf))


class Vocabulary:
    """Word-level views of a ranker's tokenizer: wordpiece counts and embedding neighbours."""

    def __init__(self, tokenizer, embedding: torch.Tensor):
        self.tokenizer = tokenizer
        self.embedding = embedding.detach().float()
        self._pieces: dict[str, list[int]] = {}

    def pieces(self, text: str, first: bool = False) -> list[int]:
        """Token ids of `text` as it appears after a space inside a passage (or opening it, if first)."""
        key = text if not first else "\0" + text
        if key not in self._pieces:
            self._pieces[key] = self.tokenizer(text if first else " " + text, add_special_tokens=False)["input_ids"]
        return self._pieces[key]

    def length(self, text: str, first: bool = False) -> int:
        return len(self.pieces(text, first))

    @cached_property
    def _word_tokens(self) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """Vocabulary entries that are a whole lower-case alphabetic word of 3+ letters on their own,
        with their unit-length input embeddings."""
        import torch  # here, not at the top: reading specs (`mechir-axioms list`) needs no torch

        vocab = self.tokenizer.get_vocab()
        ids, texts = [], []
        for token, index in sorted(vocab.items(), key=lambda item: item[1]):
            word = self.tokenizer.convert_tokens_to_string([token]).strip()
            if len(word) >= 3 and word.isalpha() and word.islower() and index < self.embedding.shape[0]:
                ids.append(index)
                texts.append(word)
        pieces = self.tokenizer([" " + text for text in texts], add_special_tokens=False)["input_ids"]
        keep = [i for i, ids_of_word in enumerate(pieces) if len(ids_of_word) == 1]
        kept_ids = torch.tensor([ids[i] for i in keep], dtype=torch.long)
        vectors = torch.nn.functional.normalize(self.embedding[kept_ids], dim=-1)
        return kept_ids, [texts[i] for i in keep], vectors

    def similar(self, term: str) -> str | None:
        """The single-piece word nearest to `term` by cosine over the input embeddings, excluding its own pieces."""
        import torch

        ids, texts, vectors = self._word_tokens
        if len(ids) == 0:
            return None
        own = torch.tensor(self.pieces(term), dtype=torch.long)
        query = torch.nn.functional.normalize(self.embedding[own].mean(0), dim=-1)
        similarity = vectors @ query
        similarity[torch.isin(ids, own)] = -math.inf
        best = int(similarity.argmax())
        return texts[best] if similarity[best] > -math.inf else None


@dataclass
class TermContext:
    """What selectors need for one query-document pair."""

    query: str
    document: str
    idf: IdfTable
    vocabulary: Vocabulary
    rng: random.Random
    filler: str
    opening_follows_space: bool = False  # the changed text follows a space in the model input ("Document: ...")

    @cached_property
    def terms(self) -> list[str]:
        return query_terms(self.query)

    @cached_property
    def random_query_term(self) -> str | None:
        return self.rng.choice(self.terms) if self.terms else None

    def neutral(self, pieces: int | None = None) -> str | None:
        """A neutral-vocabulary word that is not a query word (with `pieces` wordpieces, if given)."""
        banned = set(words(self.query))
        candidates = [word for word in neutral_vocabulary() if word not in banned]
        if pieces is not None:
            candidates = [word for word in candidates if self.vocabulary.length(word) == pieces]
        return self.rng.choice(candidates) if candidates else None

    def select(self, selector: str, like: str | None = None) -> str | None:
        """The term a selector names, or None if this pair has none (the pair is then dropped)."""
        if selector not in SELECTORS:
            raise ValueError(f"unknown term selector {selector!r}; selectors are {', '.join(SELECTORS)}")
        chosen = SELECTORS[selector]
        if chosen.needs_query_terms and not self.terms:
            return None
        return chosen.choose(self, like)


@dataclass(frozen=True)
class Selector:
    """A registered term selector: how it picks a term for one pair, and what it picks, in a line."""

    name: str
    choose: Callable[[TermContext, str | None], str | None]
    description: str
    needs_query_terms: bool


SELECTORS: dict[str, Selector] = {}
"""The one term-selector registry: name -> Selector, in registration order (the order the docs list them)."""


def selector_names() -> tuple[str, ...]:
    """The registered selectors' names, read when asked (so later registrations count)."""
    return tuple(SELECTORS)


def selector(name: str, description: str, needs_query_terms: bool = True):
    """Register `fn(context, like) -> term or None` as the term selector `name`."""
    def register(fn: Callable[[TermContext, str | None], str | None]) -> Callable[[TermContext, str | None], str | None]:
        if name in SELECTORS:
            raise ValueError(f"term selector {name!r} is registered twice")
        SELECTORS[name] = Selector(name, fn, description, needs_query_terms)
        return fn

    return register


@selector("query_random", "a random query term (stopwords excluded), the same one for every use within a pair")
def _query_random(context: TermContext, like: str | None) -> str | None:
    return context.random_query_term


@selector("query_max_idf", "the query term with the highest IDF (over the data's passages or the corpus given to `make_pairs(idf=...)`)")
def _query_max_idf(context: TermContext, like: str | None) -> str | None:
    return max(context.terms, key=lambda term: (context.idf(term), term))


@selector("query_min_idf", "the query term with the lowest IDF (over the data's passages or the corpus given to `make_pairs(idf=...)`)")
def _query_min_idf(context: TermContext, like: str | None) -> str | None:
    return min(context.terms, key=lambda term: (context.idf(term), term))


@selector("query_all", "every query term, in query order")
def _query_all(context: TermContext, like: str | None) -> str | None:
    return " ".join(context.terms)


@selector("neutral", "a topic-neutral word from the packaged list that is not a query word", needs_query_terms=False)
def _neutral(context: TermContext, like: str | None) -> str | None:
    return context.neutral()


@selector("similar", "the single-wordpiece word nearest to a random query term by cosine over the ranker's own input embeddings, excluding the term's own wordpieces")
def _similar(context: TermContext, like: str | None) -> str | None:
    return context.vocabulary.similar(context.random_query_term)


@selector("unrelated", "a neutral word with as many wordpieces as the term it stands against", needs_query_terms=False)
def _unrelated(context: TermContext, like: str | None) -> str | None:
    return context.neutral(context.vocabulary.length(like) if like else None)


@selector("filler", "the filler word itself (`baseline.filler`)", needs_query_terms=False)
def _filler(context: TermContext, like: str | None) -> str | None:
    return context.filler
