"""Ranker kinds: one `Ranker` subclass per kind, each registered once by its `kind` name.

A new kind is one module with one subclass decorated by `register_kind`; loading, alignment, scoring and
patching ask the ranker, never branch on its kind.
"""

from __future__ import annotations

from .base import RANKER_KINDS, ModelInput, Ranker, register_kind
from .bi import BiEncoder
from .cross import CrossEncoder
from .t5 import MonoT5
from .llm import LLMReranker
from .sparse import SparseEncoder
from .late import LateInteraction

__all__ = ["RANKER_KINDS", "BiEncoder", "CrossEncoder", "LateInteraction", "LLMReranker", "ModelInput", "MonoT5", "Ranker",
           "SparseEncoder", "register_kind"]
