"""Perturbation operators: pure functions from one text to a baseline/perturbed pair of texts.

Each operator returns `Edit`s that record the character ranges (slots) it changed in each text, so that
the aligner can find the changed tokens and check that everything else is token-for-token identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.params import Param
from .terms import TermContext, selector_names

Slot = tuple[int, int]


class Dropped(Exception):
    """This pair cannot be built for this axiom; the message is the counted reason."""


@dataclass(frozen=True)
class Edit:
    """A baseline and a perturbed text, with the character ranges that differ by design."""

    baseline: str
    perturbed: str
    baseline_slots: tuple[Slot, ...]
    perturbed_slots: tuple[Slot, ...]
    term: str = ""
    rung: int = 0
    masked: bool = False  # the baseline's slot tokens are padding hidden from attention


@dataclass(frozen=True)
class Filling:
    """How baseline slots are filled to a given number of wordpieces: `fill` is "filler", "mask" or "term"
    (then `term` names the selector of the baseline's stand-in term)."""

    context: TermContext
    fill: str
    pad_token: str
    term: str | None = None

    @property
    def masked(self) -> bool:
        return self.fill == "mask"

    def like(self, text: str, first: bool = False) -> str:
        """Filler words (or masked padding) with as many wordpieces as `text` (opening the text, if first: then
        tokenized as the model input has it, fresh or after a prompt's space)."""
        opening = first and not self.context.opening_follows_space
        return self.pieces(self.context.vocabulary.length(text, opening))

    def pieces(self, count: int) -> str:
        if self.fill == "mask":
            return " ".join([self.pad_token] * count)
        filler = self.context.filler
        unit = self.context.vocabulary.length(filler)
        if count % unit:
            raise Dropped(f"filler {filler!r} ({unit} wordpieces) cannot fill {count} wordpieces exactly")
        return " ".join([filler] * (count // unit))

    def pad(self, text: str, to: int) -> str:
        """`text` followed by filler words up to `to` wordpieces (used when the baseline is another term)."""
        missing = to - self.context.vocabulary.length(text)
        return f"{text} {self.pieces(missing)}" if missing else text


Params = Mapping[str, Any]
OperatorFn = Callable[[Params, list[str], TermContext, Filling], list[Edit]]


@dataclass(frozen=True)
class Operator:
    """A registered perturbation operator: its function, its declared parameters and what it does, in a line."""

    name: str
    apply: OperatorFn
    params: dict[str, Param]
    description: str
    maskable: bool = False  # its baseline slot may be masked padding (baseline.fill = "mask")


OPERATORS: dict[str, Operator] = {}
"""The one operator registry: name -> Operator, in registration order (the order the docs list them)."""


def operator(name: str, description: str, maskable: bool = False, **params: Param) -> Callable[[OperatorFn], OperatorFn]:
    """Register `fn(params, words, context, filling) -> [Edit]` as the perturbation operator `name`."""
    def register(fn: OperatorFn) -> OperatorFn:
        if name in OPERATORS:
            raise ValueError(f"perturbation operator {name!r} is registered twice")
        OPERATORS[name] = Operator(name, fn, params, description, maskable)
        return fn

    return register


POSITIONS = ("start", "end", "offset")
_POSITION = Param(str, "end", POSITIONS, description="where the slot goes: the text's start, end, or before word `offset`")
_OFFSET = Param(int, 0, low=0, high=10_000, description="the word index used by position = 'offset'")


def _selector(default: str, description: str) -> Param:
    return Param(str, default, selector_names, description=description)


def _place(words: list[str], index: int, slot: str) -> tuple[str, Slot]:
    """Join words with `slot` inserted before words[index]; return the text and the slot's range."""
    before = " ".join(words[:index])
    start = len(before) + (1 if before else 0)
    after = " ".join(words[index:])
    text = " ".join(part for part in (before, slot, after) if part)
    return text, (start, start + len(slot))


def _index(words: list[str], position: str, offset: int) -> int:
    if position == "start":
        return 0
    if position == "end":
        return len(words)
    if offset > len(words):
        raise Dropped(f"offset {offset} is past the text's {len(words)} words")
    return offset


def _term(context: TermContext, selector: str, like: str | None = None) -> str:
    term = context.select(selector, like)
    if not term:
        raise Dropped(f"no term for selector {selector!r}")
    return term


def _slot_pair(words: list[str], index: int, baseline: str, perturbed: str, **extra) -> Edit:
    baseline_text, baseline_slot = _place(words, index, baseline)
    perturbed_text, perturbed_slot = _place(words, index, perturbed)
    return Edit(baseline_text, perturbed_text, (baseline_slot,), (perturbed_slot,), **extra)


@operator(
    "insert", "add a selected term (count times) at a position; the baseline fills the slot", maskable=True,
    position=_POSITION, offset=_OFFSET, term=_selector("query_random", "which term is added"),
    count=Param(int, 1, low=1, high=10, description="how many copies of the term are added (neutral words are drawn afresh for each copy)"),
    ladder=Param(bool, False, description="one pair per rung k = 1..count: the baseline has k-1 copies, the perturbed text k, the rest of the slot is filler"),
)
def _insert(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    index = _index(words, params["position"], params["offset"])
    term = _term(context, params["term"])
    count = params["count"]
    if params["ladder"]:
        block = filling.like(term, first=index == 0)
        return [
            _slot_pair(
                words,
                index,
                " ".join([term] * (rung - 1) + [block] * (count - rung + 1)),
                " ".join([term] * rung + [block] * (count - rung)),
                term=term,
                rung=rung,
            )
            for rung in range(1, count + 1)
        ]
    # neutral words are drawn afresh for each added word; query terms repeat
    extra = [_term(context, "neutral") if params["term"] == "neutral" else term for _ in range(count - 1)]
    perturbed = " ".join([term, *extra])
    if filling.fill == "term":
        other = _term(context, filling.term, like=term)
        baseline = " ".join([other] * count)
        length = max(context.vocabulary.length(perturbed), context.vocabulary.length(baseline))
        baseline, perturbed = filling.pad(baseline, length), filling.pad(perturbed, length)
    else:
        baseline = filling.like(perturbed, first=index == 0)
    return [_slot_pair(words, index, baseline, perturbed, term=term, masked=filling.masked)]


@operator(
    "replace", "replace `length` words at `offset` with a selected term; the baseline fills the slot", maskable=True,
    offset=Param(int, 0, low=0, high=10_000, description="the first replaced word (0-based)"),
    length=Param(int, 1, low=1, high=50, description="how many words are replaced"),
    term=_selector("neutral", "which term goes in"),
)
def _replace(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    offset, length = params["offset"], params["length"]
    if offset + length > len(words):
        raise Dropped(f"cannot replace words {offset}..{offset + length - 1} of a {len(words)}-word text")
    term = _term(context, params["term"])
    rest = words[:offset] + words[offset + length :]
    return [_slot_pair(rest, offset, filling.like(term, first=offset == 0), term, term=term, masked=filling.masked)]


@operator(
    "duplicate", "append `copies` copies of the whole text; the baseline appends as many filler wordpieces (or masked padding)",
    maskable=True, copies=Param(int, 1, low=1, high=4, description="how many copies are appended"),
)
def _duplicate(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    copy = " ".join(words * params["copies"])
    return [_slot_pair(words, len(words), filling.like(copy), copy, masked=filling.masked)]


@operator("shuffle", "shuffle the text's words (seeded); the baseline is the text as it is")
def _shuffle(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    shuffled = list(words)
    context.rng.shuffle(shuffled)
    original, perturbed = " ".join(words), " ".join(shuffled)
    return [Edit(original, perturbed, ((0, len(original)),), ((0, len(perturbed)),))]


def _two_terms(context: TermContext) -> tuple[str, str]:
    if len(context.terms) < 2:
        raise Dropped("the query has fewer than two query terms")
    return context.terms[0], context.terms[1]


@operator("swap", "the first two query terms in query order versus swapped, at a position",
          position=_POSITION, offset=_OFFSET)
def _swap(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    first, second = _two_terms(context)
    index = _index(words, params["position"], params["offset"])
    return [_slot_pair(words, index, f"{second} {first}", f"{first} {second}", term=f"{first} {second}")]


@operator(
    "separate", "the first two query terms adjacent versus `gap` neutral words apart, at a position",
    position=_POSITION, offset=_OFFSET, gap=Param(int, 5, low=1, high=50, description="neutral words between the terms"),
)
def _separate(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    first, second = _two_terms(context)
    gap = " ".join(_term(context, "neutral") for _ in range(params["gap"]))
    index = _index(words, params["position"], params["offset"])
    return [_slot_pair(words, index, f"{first} {gap} {second}", f"{first} {second} {gap}", term=f"{first} {second}")]


@operator("move", "a selected term at the text's start versus its end (filler at the other end)",
          term=_selector("query_random", "which term moves"))
def _move(params: Params, words: list[str], context: TermContext, filling: Filling) -> list[Edit]:
    term = _term(context, params["term"])
    fill = filling.like(term)
    middle = " ".join(words)

    def framed(first: str, last: str) -> tuple[str, tuple[Slot, Slot]]:
        text = f"{first} {middle} {last}" if middle else f"{first} {last}"
        return text, ((0, len(first)), (len(text) - len(last), len(text)))

    baseline, baseline_slots = framed(fill, term)
    perturbed, perturbed_slots = framed(term, fill)
    return [Edit(baseline, perturbed, baseline_slots, perturbed_slots, term=term, masked=filling.masked)]


def perturb(operation: str, params: Params, text: str, filling: Filling) -> list[Edit]:
    """The edits operator `operation` with `params` makes to `text` (the document, or the query)."""
    return OPERATORS[operation].apply(params, text.split(), filling.context, filling)
