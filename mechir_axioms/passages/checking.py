"""Checking judged query-passage rows: identifiers, grades, ranks and scores, one refusal per problem that names
the row and the field."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import pandas as pd

from ..core.errors import DataError
from .reading import COLUMNS, GRADES, RANKING, _MAX_GRADE, _missing, _one_line, _show

def identifier(value: Any) -> str | None:
    """A qid or docno as text: a string, an integer, or an integral float; None when it is none of these."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else None


def _grade(value: Any) -> int | None:
    """A relevance grade as an int (from an integer, an integral float or such text); None when it is not one."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if not isinstance(value, numbers.Integral) and not (math.isfinite(value) and float(value).is_integer()):
        return None
    grade = int(value)
    return grade if abs(grade) <= _MAX_GRADE else None


def _unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a "\ud800" escape in JSON
        return False
    return True


def _grade_column(frame: pd.DataFrame) -> str | None:
    """The column holding relevance grades: `relevance`, else PyTerrier's `label`; None when neither exists."""
    return next((column for column in GRADES if column in frame.columns), None)


def _rank(value: Any) -> int | None:
    """A rank as a non-negative int (integer, integral float or such text); None when it is not one."""
    rank = _grade(value)
    return rank if rank is not None and rank >= 0 else None


def _score(value: Any) -> float | None:
    """A retrieval score as a finite float (from a number or such text); None when it is not one."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def _unjudged(value: Any) -> bool:
    """Is a ranking's grade cell empty (None, NaN, pd.NA, or blank text as TSV and CSV files leave it)?"""
    return _missing(value) or (isinstance(value, str) and not value.strip())


def _ranks(frame: pd.DataFrame, qids: list[str], source: str, rows: str, labels: list[str]) -> list[int]:
    """Each row's rank: the `rank` column, else 0-based per qid by descending `score` (ties keep row order)."""
    if "rank" in frame.columns:
        column, parse, want = "rank", _rank, "a non-negative integer rank"
    else:
        column, parse, want = "score", _score, "a finite number"
    values = []
    for label, cell in zip(labels, frame[column]):
        value = parse(cell)
        if value is None:
            raise DataError(f"{source}: {rows} {label}, column '{column}' is {_show(cell)}; it must be {want}")
        values.append(value)
    if column == "rank":
        return values
    ranked = pd.Series(values).groupby(qids, sort=False).rank(ascending=False, method="first")
    return [int(rank) - 1 for rank in ranked]


def validate(frame: pd.DataFrame, source: str, rows: str = "row") -> pd.DataFrame:
    """Check columns and values, drop repeated (qid, docno) rows; qid/docno/query/text as strings, relevance as ints.

    `rows` is the word for the frame's index labels in messages ("row" for a DataFrame's own index, "line" or
    "data row" for files, whose readers label rows by line number or 1-based data row). A ranking (a `rank`
    or `score` column) may leave rows unjudged: relevance is then nullable ("Int64", <NA> when unjudged) and
    the frame keeps a `rank` column. Grades come from `relevance`, else from PyTerrier's `label`.
    """
    if len(frame) == 0:
        raise DataError(f"{source}: no rows; give at least one judged query-document pair")
    repeated = sorted({_one_line(repr(column), 40) for column in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise DataError(f"{source}: column(s) {', '.join(repeated)} appear more than once; give each column once")
    ranking = any(column in frame.columns for column in RANKING)
    grades = _grade_column(frame)
    optional = ("relevance",) if grades or ranking else ()
    missing = [column for column in COLUMNS if column not in frame.columns and column not in optional]
    if missing:
        hint = " (or, for an unjudged ranking, a rank or score column)" if missing == ["relevance"] else ""
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; required columns are {', '.join(COLUMNS)}{hint}"
        )
    labels = [_one_line(label, 40) for label in frame.index]
    cells = {column: list(frame[column]) for column in COLUMNS[:-1]}
    cells["relevance"] = list(frame[grades]) if grades else [None] * len(frame)
    clean: dict[str, list[Any]] = {column: [] for column in COLUMNS}
    for position, label in enumerate(labels):
        for column in ("qid", "docno"):
            value = identifier(cells[column][position])
            if value is None or not _unicode(value):
                shown = _show(cells[column][position])
                raise DataError(
                    f"{source}: {rows} {label}, column '{column}' is {shown}; it must be an id (text or an integer)"
                )
            if not value.strip():
                raise DataError(f"{source}: {rows} {label} has an empty {column}")
            clean[column].append(value)
        for column in ("query", "text"):
            value = cells[column][position]
            if not isinstance(value, str) or not _unicode(value):
                raise DataError(f"{source}: {rows} {label}, column '{column}' is {_show(value)}; it must be text")
            if not value.strip():
                qid = _one_line(clean["qid"][position], 40)
                raise DataError(f"{source}: {rows} {label} (qid {qid}) has an empty {column}")
            clean[column].append(value)
        cell = cells["relevance"][position]
        unjudged = ranking and _unjudged(cell)
        grade = None if unjudged else _grade(cell)
        if grade is None and not unjudged:
            shown = _show(cell)
            raise DataError(f"{source}: {rows} {label}, column '{grades}' is {shown}; it must be an integer grade")
        clean["relevance"].append(grade)
    if ranking:
        clean["rank"] = _ranks(frame, clean["qid"], source, rows, labels)
    keep = _first_of_each(clean, labels, source, rows)
    judged = all(grade is not None for grade in clean["relevance"])
    types = {"qid": str, "query": str, "docno": str, "text": str, "relevance": "int64" if judged else "Int64"}
    result = pd.DataFrame(clean).astype(types)
    return result.iloc[keep].reset_index(drop=True)


def _first_of_each(clean: dict[str, list[Any]], labels: list[str], source: str, rows: str) -> list[int]:
    """Positions of the first row of each (qid, docno); warns about repeats and refuses conflicting grades."""
    first: dict[tuple[str, str], int] = {}
    for position, key in enumerate(zip(clean["qid"], clean["docno"])):
        earlier = first.setdefault(key, position)
        if clean["relevance"][earlier] != clean["relevance"][position]:
            was, now = ("unjudged" if clean["relevance"][at] is None else clean["relevance"][at] for at in (earlier, position))
            raise DataError(
                f"{source}: qid {key[0]!r}, docno {key[1]!r} has conflicting relevance grades "
                f"{was} ({rows} {labels[earlier]}) and {now} ({rows} {labels[position]}); keep one grade per (qid, docno)"
            )
    dropped = len(labels) - len(first)
    if dropped:
        warnings.warn(
            f"{source}: dropped {dropped} duplicate (qid, docno) row{'s' if dropped > 1 else ''}; kept the first of each",
            UserWarning,
            stacklevel=4,
        )
    return sorted(first.values())
