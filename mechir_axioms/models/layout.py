"""Where the texts of a pair sit in a ranker's tokenized input, and the token regions patching addresses.

Each ranker kind lays out its input differently (one joint sequence, or the document alone); it describes
that layout with these small value objects, so that alignment needs no knowledge of the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REGIONS = ("span", "text", "other", "markup")
"""Token regions of a pair's hooked sequence: the changed span, the rest of the changed text, the other text
of a joint input (the query of a cross-encoder or monoT5 document pair), and special tokens or prompt words."""
PADDING_REGION = -1


@dataclass(frozen=True)
class Place:
    """Where a text sits in the tokenizer's input: its sequence index and character range there."""

    sequence: int
    start: int
    end: int

    def holds(self, encoding: Any, position: int) -> bool:
        """Does the token at `position` of a fast-tokenizer `encoding` come from this text?"""
        start, end = encoding.offsets[position]
        return encoding.sequence_ids[position] == self.sequence and end > start and start < self.end and end > self.start


@dataclass(frozen=True)
class Layout:
    """The tokenizer arguments of one input, and where the changed and the other text sit in them."""

    arguments: list[str]
    changed: Place
    other: Place | None


@dataclass(frozen=True)
class Encoded:
    """One tokenized model input as alignment reads it: token ids, each token's character range in its text
    and its sequence index (None for special tokens and prompt tokens), and the model's input fields."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]
    fields: dict[str, list[int]]

    def with_tokens(self, position: int, ids: list[int]) -> Encoded:
        """This input with `ids` inserted at `position` as tokens that come from no text (a prompt's prefix or
        suffix, ColBERT's marker): attended, and of the token type of the token before them."""
        count = len(ids)

        def filled(key: str, values: list[int]) -> list[int]:
            if key == "input_ids":
                extra = list(ids)
            else:
                extra = [1 if key == "attention_mask" else values[max(position - 1, 0)] if values else 0] * count
            return values[:position] + extra + values[position:]

        return Encoded(
            self.ids[:position] + list(ids) + self.ids[position:],
            self.offsets[:position] + [(0, 0)] * count + self.offsets[position:],
            self.sequence_ids[:position] + [None] * count + self.sequence_ids[position:],
            {key: filled(key, values) for key, values in self.fields.items()},
        )


ALIGNED_FIELDS = ("input_ids", "attention_mask", "token_type_ids")
"""The tokenizer outputs a pair stores for each of its inputs."""


def encodings(batch: Any, fields: tuple[str, ...] = ALIGNED_FIELDS) -> list[Encoded]:
    """The Encoded inputs of a fast tokenizer's batch output, keeping the model's input `fields`."""
    return [
        Encoded(list(item.ids), list(item.offsets), list(item.sequence_ids),
                {key: list(batch[key][index]) for key in fields if key in batch})
        for index, item in enumerate(batch.encodings)
    ]


def template_place(template: str, texts: dict[str, str], name: str) -> Place:
    """Where the text filled in for `{name}` sits in `template.format(**texts)` (sequence 0)."""
    start = len(template.split("{" + name + "}")[0].format(**texts))
    return Place(0, start, start + len(texts[name]))
