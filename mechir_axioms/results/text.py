"""Numbers in words, as every text of the package writes them."""

from __future__ import annotations

import math


def percent(value: float | None, signed: bool = False) -> str:
    """A share as a percentage with one decimal ("n/a" for NaN), signed for changes."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"
