"""Store a small exact audit's findings as the reference that refactors must reproduce (tests/reference/).

Run only when results are meant to change: `python scripts/make_reference.py`. It uses the public API, so
the same script ran on the code before the package was split into layers.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from mechir_axioms import audit, load_ranker

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "reference"
CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"
SETTINGS = dict(n=12, seed=0, targets=("heads", "blocks"), method="exact", cell_pairs=6, examples=1, stability=0,
                progress=False)
CASES = {"minilm": (None, ("TFC1", "LNC1")), "cross": (CROSS_ENCODER, ("TFC1",))}


def reference_audit(case: str, **overrides):
    """The audit a reference case stands for, run by the code at hand in float64: float32 results differ between
    processors (AMD and Intel kernels reduce in different orders, by ~3e-8), float64 ones far below 1e-9.
    `overrides` change settings (the test runs the pair-level statistics the reference was written with)."""
    model, axioms = CASES[case]
    ranker = load_ranker(model)
    ranker.model.double()
    return audit(ranker, list(axioms), None, **{**SETTINGS, **overrides})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for case in sys.argv[1:] or CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = reference_audit(case)
        for frame in ("axioms", "heads", "cells", "blocks", "pairs"):
            getattr(result, frame).to_parquet(OUT / f"{case}-{frame}.parquet", index=False)
        print(case, "written")
