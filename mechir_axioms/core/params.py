"""Declared parameters: one small value object per allowed field, used to validate specs and to document them.

Registries (perturbation operators, term selectors) declare their parameters with `Param`; spec validation
and the generated tables of axioms/README.md read the same declarations, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One allowed field: its type, allowed values (or bounds), default and a one-line description."""

    kind: type
    default: Any = None
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None  # a callable: read from a registry when asked
    low: int | None = None
    high: int | None = None
    description: str = ""

    @property
    def allowed(self) -> tuple[Any, ...] | None:
        """The allowed values now (a registry-backed list includes entries registered after this Param)."""
        return self.choices() if callable(self.choices) else self.choices

    def describe(self) -> str:
        """What values are allowed, as a phrase ("one of 'start', 'end'", "an integer from 1 to 10")."""
        if self.allowed:
            return "one of " + ", ".join(repr(choice) for choice in self.allowed)
        if self.low is not None:
            return f"an integer from {self.low} to {self.high}"
        return {str: "a string", bool: "true or false", int: "an integer", list: "a list"}[self.kind]

    def check(self, value: Any) -> bool:
        """Does `value` have the right type and lie among the allowed values?"""
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if not isinstance(value, self.kind):
            return False
        if self.allowed and value not in self.allowed:
            return False
        return self.low is None or self.low <= value <= self.high
