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
