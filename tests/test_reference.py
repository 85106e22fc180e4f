"""Refactors keep stored results identical: a small exact audit matches the one stored before the change.

The reference (tests/reference/) is written by scripts/make_reference.py on the code before a change; effects,
intervals, p-values and flags must agree within 1e-9. It runs in float64: a float32 reference written on one
processor is not reproduced within 1e-9 on another (Intel's and AMD's kernels reduce in different orders; the
float32 reference of the layered package differed by 3.2e-8 on an AMD EPYC, with the same code). The float64
reference was written on the code before issue 25's change. Columns added later are named in ADDED; every
stored column must still be there, in its order, with its values.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_reference import CASES, OUT, reference_audit  # noqa: E402

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it


ADDED: dict[str, list[str]] = {}
"""Columns a frame gained after the reference was written (none since the float64 reference)."""


@pytest.fixture(scope="module", params=list(CASES))
def audited(request, cross_encoder_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return request.param, reference_audit(request.param)


@pytest.mark.parametrize("frame", ["axioms", "heads", "cells", "blocks", "pairs"])
def test_audit_matches_stored_reference(audited, frame):
    case, result = audited
    stored = pd.read_parquet(OUT / f"{case}-{frame}.parquet")
    now = getattr(result, frame)
    assert [column for column in now.columns if column not in ADDED.get(frame, [])] == list(stored.columns)
    assert set(ADDED.get(frame, [])) <= set(now.columns)
    assert len(now) == len(stored) > 0
    for column in stored.columns:
        if pd.api.types.is_numeric_dtype(stored[column]):
            np.testing.assert_allclose(now[column].to_numpy(dtype=float), stored[column].to_numpy(dtype=float),
                                       rtol=0, atol=1e-9, equal_nan=True, err_msg=f"{case} {frame}.{column}")
        else:
            assert now[column].tolist() == stored[column].tolist(), f"{case} {frame}.{column}"
