"""mechir-axioms: axiomatic diagnostics for neural rankers, by activation patching over real HF models."""

__version__ = "0.1.0"

from .data import DataError, load_data
from .loading import load_ranker
from .pairs import PairSet, make_pairs
from .patch_result import PatchResult
from .patching import Variant, patch, patch_variants
from .rankers import BiEncoder, CrossEncoder, ModelInput, MonoT5, Ranker
from .spec import Axiom, SpecError, list_axioms, load_axiom

__all__ = [
    "Axiom",
    "BiEncoder",
    "CrossEncoder",
    "DataError",
    "ModelInput",
    "MonoT5",
    "PairSet",
    "PatchResult",
    "Ranker",
    "Variant",
    "SpecError",
    "__version__",
    "list_axioms",
    "load_axiom",
    "load_data",
    "load_ranker",
    "make_pairs",
    "patch",
    "patch_variants",
]
