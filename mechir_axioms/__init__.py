"""mechir-axioms: axiomatic diagnostics for neural rankers, by activation patching over real HF models."""

from .loading import load_ranker
from .rankers import BiEncoder, CrossEncoder, ModelInput, MonoT5, Ranker

__version__ = "0.1.0"
__all__ = ["BiEncoder", "CrossEncoder", "ModelInput", "MonoT5", "Ranker", "load_ranker", "__version__"]
