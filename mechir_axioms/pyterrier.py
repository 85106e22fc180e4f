"""PyTerrier integration: any Ranker as a re-ranking `pt.Transformer`, for `pt.Experiment` and pipelines.

`RankerTransformer(ranker)` scores each (query, text) row of a result frame with `ranker.score` and adds
PyTerrier's `score` and 0-based per-query `rank` columns (qids as text, as `load_data` reads them, so that
qid 1 and qid "1" are one query). The module imports without PyTerrier (the
optional `pyterrier` extra): the class then stands on a placeholder base, and constructing it raises a
SettingsError that says how to install the extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from .core.errors import DataError, SettingsError
from .models.rankers import Ranker
from .passages.checking import identifier

INSTALL = "pip install 'mechir-axioms[pyterrier]'"
REQUIRED = ("qid", "query", "docno", "text")
"""The columns a frame needs for re-ranking (PyTerrier's result frame, with the documents' text)."""

try:
    import pyterrier as pt
except ImportError:  # the extra is not installed: keep the module importable, refuse construction
    pt = None

    class _Transformer:
        """Stands in for pt.Transformer when PyTerrier is absent: constructing any subclass says how to install it."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            raise SettingsError(f"{cls.__name__} needs PyTerrier, which is not installed; {INSTALL}")
else:
    _Transformer = pt.Transformer


class RankerTransformer(_Transformer):
    """Re-rank a PyTerrier result frame with a Ranker: `score` is ranker.score(query, text), `rank` 0-based per qid
    (qids become text: 1, 1.0 and "1" are one query)."""

    def __init__(self, ranker: Ranker, batch_size: int | None = None, verbose: bool = False):
        if not isinstance(ranker, Ranker):
            raise SettingsError(
                f"ranker={type(ranker).__name__} is not a Ranker; load one with mechir_axioms.load_ranker(...)"
            )
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise SettingsError(f"batch_size={batch_size!r} is not valid; give a positive integer, or None for the ranker's own")
        self.ranker = ranker
        self.batch_size = batch_size
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"RankerTransformer({self.ranker.name!r})"

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The frame with `score` and `rank` replaced by the ranker's (input order and other columns kept; qids
        as text)."""
        check_columns(frame.columns)
        out = frame.drop(columns=["score", "rank"], errors="ignore").copy()
        qids = _qids(frame)
        if qids != frame["qid"].tolist():  # some qid was a number: all of them as text
            out["qid"] = pd.Series(qids, index=out.index, dtype=object)
        if len(out) == 0:
            out["score"] = pd.Series(index=out.index, dtype="float64")
        else:
            queries, texts = _texts(frame, "query"), _texts(frame, "text")
            out["score"] = self._scores(queries, texts).numpy().astype("float64")
        return pt.model.add_ranks(out)

    def transform_outputs(self, input_columns: Sequence[str]) -> list[str]:
        """The output columns for these input columns, so that `pt.inspect` can check pipelines without running."""
        check_columns(input_columns)
        return [*(column for column in input_columns if column not in ("score", "rank")), "score", "rank"]

    def _scores(self, queries: list[str], texts: list[str]) -> torch.Tensor:
        """ranker.score over all pairs, with its progress bar when verbose."""
        return self.ranker.score(queries, texts, batch_size=self.batch_size, progress=self.verbose)


def check_columns(columns: Sequence[str]) -> None:
    """Raise DataError naming the columns a re-ranker's input frame lacks."""
    missing = [column for column in REQUIRED if column not in columns]
    if missing:
        raise DataError(
            f"RankerTransformer: the input frame lacks column(s) {', '.join(missing)}; a re-ranker needs "
            f"{', '.join(REQUIRED)} (first-stage results with the documents' text, e.g. from pt.text.get_text)"
        )


def _qids(frame: pd.DataFrame) -> list[str]:
    """The qid column as text, as the data loader reads it (1, 1.0 and "1" are all "1"); DataError naming the first
    row whose qid is not an id."""
    qids = [identifier(value) for value in frame["qid"].tolist()]
    bad = next((i for i, qid in enumerate(qids) if qid is None), None)
    if bad is not None:
        value = frame["qid"].iloc[bad]
        shown = "missing" if pd.api.types.is_scalar(value) and pd.isna(value) else repr(value)
        raise DataError(f"RankerTransformer: row {frame.index[bad]!r} (docno {frame['docno'].iloc[bad]!r}): qid is "
                        f"{shown}; every row needs its qid as text or an integer")
    return qids


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    """A text column as a list of strings; DataError naming the first row whose cell is not text."""
    values = frame[column].tolist()
    bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if bad is not None:
        row, value = frame.iloc[bad], values[bad]
        shown = "missing" if pd.api.types.is_scalar(value) and pd.isna(value) else repr(value)
        raise DataError(
            f"RankerTransformer: row {frame.index[bad]!r} (qid {row['qid']!r}, docno {row['docno']!r}): {column} is "
            f"{shown}; every row needs its {column} as a string"
        )
    return values
