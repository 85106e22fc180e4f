"""Kept for users who imported the naive patching reference from here; it lives in `patching.naive`."""

from .patching.naive import patch_naive

__all__ = ["patch_naive"]
