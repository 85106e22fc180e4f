"""One family of errors for user mistakes: each is one sentence naming the file, field or value at fault.

The CLI prints a `MechirError` as that sentence with exit code 2; any other exception is a bug and keeps
its traceback. Each subclass is also a ValueError, so code written against the older errors still works.
"""

from __future__ import annotations


class MechirError(Exception):
    """A user mistake (a bad spec, data file, model folder or setting), told in one sentence."""


class SpecError(MechirError, ValueError):
    """An invalid axiom spec: names the file, the field, the bad value and what is allowed."""


class DataError(MechirError, ValueError):
    """Data that cannot be used: names the source and what is wrong with it."""


class ModelError(MechirError, ValueError):
    """A model that cannot be loaded or used as a ranker: names the model and what is wrong."""


class SettingsError(MechirError, ValueError):
    """An invalid setting or argument: names it, its value and what is allowed."""


class WorkerError(MechirError, RuntimeError):
    """A worker of a distributed audit failed for good: says what was saved and how to continue."""


class NonFiniteError(MechirError, ArithmeticError):
    """A ranker gave NaN or infinite scores: says for how many pairs, under which intervention, and what to change."""


class OutputError(MechirError, OSError):
    """A result that cannot be written where asked (a read-only folder, a full disk): names the path given."""
