"""Token alignment: tokenize baseline and perturbed exactly as the ranker's model input and verify them.

A pair is kept only if both inputs have the same token length, fit the model's max length untruncated,
the changed character slots land on the same token positions [span_start, span_end), and every token
outside that span is identical. Otherwise the pair is dropped with a counted reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from .perturb import Dropped, Edit, Slot
from .rankers import Ranker

KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Aligned:
    """One verified pair as token lists; `other` is the unchanged side of a bi-encoder."""

    baseline: dict[str, list[int]]
    perturbed: dict[str, list[int]]
    span: tuple[int, int]
    other: dict[str, list[int]] | None = None
    baseline_text: str | None = None  # set for masked baselines: the slot shown as one pad token per masked token


def _layout(ranker: Ranker, target: str, query: str, document: str, changed: str) -> tuple[list, int, int]:
    """(tokenizer arguments, sequence index of the changed text, its character shift in that sequence)."""
    if ranker.kind == "t5":
        query_text, document_text = (changed, document) if target == "query" else (query, changed)
        prompt = ranker.prompt.format(query=query_text, document=document_text)
        head = ranker.prompt.split("{" + target + "}")[0]
        shift = len(head.format(query=query_text)) if target == "document" else len(head)
        return [prompt], 0, shift
    if ranker.kind == "cross":
        pair = [changed, document] if target == "query" else [query, changed]
        return pair, 0 if target == "query" else 1, 0
    return [changed], 0, 0


def _span(encoding, sequence: int, shift: int, slots: tuple[Slot, ...]) -> tuple[int, int] | None:
    """First and one-past-last token overlapping any slot."""
    hits = [
        position
        for position, (start, end) in enumerate(encoding.offsets)
        if encoding.sequence_ids[position] == sequence
        and end > start
        and any(start < slot_end + shift and end > slot_start + shift for slot_start, slot_end in slots)
    ]
    return (hits[0], hits[-1] + 1) if hits else None


def _fields(batch, index: int) -> dict[str, list[int]]:
    return {key: list(batch[key][index]) for key in KEYS if key in batch}


def align(ranker: Ranker, target: str, items: list[tuple[str, str, Edit]]) -> list[Aligned | Dropped]:
    """Align (query, document, edit) triples for `ranker`; each result is an Aligned pair or a Dropped reason."""
    if not items:
        return []
    encoded = {}
    sequences = {}
    for which in ("baseline", "perturbed"):
        arguments = []
        for query, document, edit in items:
            changed = getattr(edit, which)
            arguments.append(_layout(ranker, target, query, document, changed))
        texts = list(zip(*[args for args, _, _ in arguments]))
        encoded[which] = ranker.tokenizer(*[list(column) for column in texts], truncation=False, return_offsets_mapping=True)
        sequences[which] = [(sequence, shift) for _, sequence, shift in arguments]
    other = None
    if ranker.kind == "bi":
        unchanged = [document if target == "query" else query for query, document, _ in items]
        other = ranker.tokenizer(unchanged, truncation=True, max_length=ranker.max_length)
    results: list[Aligned | Dropped] = []
    for index, (_, _, edit) in enumerate(items):
        results.append(_verify(ranker, edit, encoded, sequences, index, other))
    return results


def _verify(ranker: Ranker, edit: Edit, encoded, sequences, index: int, other) -> Aligned | Dropped:
    """Check one pair; a masked baseline is the perturbed input with its span hidden from attention."""
    which = "perturbed" if edit.masked else "baseline"
    base, pert = encoded[which].encodings[index], encoded["perturbed"].encodings[index]
    if len(base.ids) != len(pert.ids):
        return Dropped("token lengths differ (wordpieces change at a slot boundary)")
    if len(pert.ids) > ranker.max_length:
        return Dropped(f"longer than the model's max length {ranker.max_length}: it would be truncated")
    slots = edit.perturbed_slots if edit.masked else edit.baseline_slots
    base_span = _span(base, *sequences[which][index], slots)
    pert_span = _span(pert, *sequences["perturbed"][index], edit.perturbed_slots)
    if base_span is None or base_span != pert_span:
        return Dropped("the changed slot lands on different token positions")
    start, end = base_span
    baseline, perturbed = _fields(encoded[which], index), _fields(encoded["perturbed"], index)
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
    return Aligned(baseline, perturbed, base_span, _fields(other, index) if other is not None else None, baseline_text)
