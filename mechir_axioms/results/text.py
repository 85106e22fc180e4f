"""Numbers in words, as every text of the package writes them."""

from __future__ import annotations

import math


def percent(value: float | None, signed: bool = False) -> str:
    """A share as a percentage with one decimal ("n/a" for NaN), signed for changes."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def shown_bound(bound: float, threshold: float) -> str:
    """A bound to 3 decimals, or 4 where 3 would print the threshold itself (0.0499 is below 0.05; "0.050" is not)."""
    text = f"{bound:.3f}"
    return f"{bound:.4f}" if text == f"{threshold:.3f}" else text
