"""Token alignment: tokenize baseline and perturbed exactly as the ranker's model input and verify them.

A pair is kept only if both inputs have the same token length, fit the model's max length untruncated,
the changed character slots land on the same token positions [span_start, span_end), and every token
outside that span is identical. Otherwise the pair is dropped with a counted reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.layout import REGIONS, Encoded, Layout, Place
from ..models.rankers import Ranker
from ..perturb.operators import Dropped, Edit, Slot



@dataclass(frozen=True)
class Aligned:
    """One verified pair as token lists; `other` is the separately encoded unchanged side (a bi-encoder's query)."""

    baseline: dict[str, list[int]]
    perturbed: dict[str, list[int]]
    span: tuple[int, int]
    regions: list[int]
    other: dict[str, list[int]] | None = None
    baseline_text: str | None = None  # set for masked baselines: the slot shown as one pad token per masked token


def _span(encoding: Encoded, place: Place, slots: tuple[Slot, ...]) -> tuple[int, int] | None:
    """First and one-past-last token overlapping any slot."""
    shifted = [Place(place.sequence, place.start + start, place.start + end) for start, end in slots]
    hits = [position for position in range(len(encoding.ids)) if any(slot.holds(encoding, position) for slot in shifted)]
    return (hits[0], hits[-1] + 1) if hits else None


def _regions(encoding: Encoded, span: tuple[int, int], layout: Layout) -> list[int]:
    """The region (an index into REGIONS) of every token of the perturbed input."""
    def region(position: int) -> str:
        if span[0] <= position < span[1]:
            return "span"
        if layout.changed.holds(encoding, position):
            return "text"
        if layout.other is not None and layout.other.holds(encoding, position):
            return "other"
        return "markup"

    return [REGIONS.index(region(position)) for position in range(len(encoding.ids))]


def align(ranker: Ranker, target: str, items: list[tuple[str, str, Edit]]) -> list[Aligned | Dropped]:
    """Align (query, document, edit) triples for `ranker`; each result is an Aligned pair or a Dropped reason."""
    if not items:
        return []
    encoded = {}
    layouts = {}
    for which in ("baseline", "perturbed"):
        layouts[which] = [ranker.layout(target, query, document, getattr(edit, which)) for query, document, edit in items]
        encoded[which] = ranker.encode_untruncated([layout.arguments for layout in layouts[which]])
    other = ranker.unchanged_side(target, [(query, document) for query, document, _ in items])
    results: list[Aligned | Dropped] = []
    for index, (_, _, edit) in enumerate(items):
        results.append(_verify(ranker, edit, encoded, layouts, index, other))
    return results


def _verify(ranker: Ranker, edit: Edit, encoded, layouts, index: int, other) -> Aligned | Dropped:
    """Check one pair; a masked baseline is the perturbed input with its span hidden from attention."""
    which = "perturbed" if edit.masked else "baseline"
    base, pert = encoded[which][index], encoded["perturbed"][index]
    if len(base.ids) != len(pert.ids):
        return Dropped("token lengths differ (wordpieces change at a slot boundary)")
    if len(pert.ids) > ranker.max_length:
        return Dropped(f"longer than the model's max length {ranker.max_length}: it would be truncated")
    slots = edit.perturbed_slots if edit.masked else edit.baseline_slots
    base_span = _span(base, layouts[which][index].changed, slots)
    pert_span = _span(pert, layouts["perturbed"][index].changed, edit.perturbed_slots)
    if base_span is None or base_span != pert_span:
        return Dropped("the changed slot lands on different token positions")
    start, end = base_span
    if edit.masked and end == len(pert.ids) and ranker.reads_last_token:
        return Dropped("a masked span would end the input, hiding the last token the score is read from")
    baseline = {key: list(value) for key, value in base.fields.items()}  # a masked baseline edits its own copy
    perturbed = {key: list(value) for key, value in pert.fields.items()}
    outside_differs = any(
        baseline[key][:start] != perturbed[key][:start] or baseline[key][end:] != perturbed[key][end:]
        for key in baseline
    )
    if outside_differs:
        return Dropped("tokens outside the changed span differ")
    baseline_text = None
    if edit.masked:
        pad = ranker.tokenizer.pad_token
        baseline["input_ids"][start:end] = [ranker.tokenizer.pad_token_id] * (end - start)
        baseline["attention_mask"][start:end] = [0] * (end - start)
        (slot_start, slot_end), = edit.perturbed_slots
        baseline_text = edit.perturbed[:slot_start] + " ".join([pad] * (end - start)) + edit.perturbed[slot_end:]
    regions = _regions(pert, base_span, layouts["perturbed"][index])
    return Aligned(baseline, perturbed, base_span, regions, other[index].fields if other is not None else None,
                   baseline_text)
