"""`load_data`: the judged query-passage pairs an audit reads (a file, an ir_datasets id, a frame, or the bundled
sample), checked, with their content hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.defaults import SAMPLE_NAME
from ..core.errors import DataError
from .checking import validate
from .reading import COLUMNS, FORMATS, SAMPLE, DataSource, _read_file, _read_ir_datasets, _show

def load_data(data: DataSource = None) -> tuple[pd.DataFrame, str]:
    """(validated frame, a label naming the source) for any supported data source."""
    if data is None:
        source, (frame, rows) = SAMPLE_NAME, _read_file(SAMPLE)
    elif isinstance(data, pd.DataFrame):
        source, frame, rows = "DataFrame", data, "row"
    elif isinstance(data, (str, os.PathLike)) and str(data).startswith("irds:"):
        source, frame, rows = str(data), _read_ir_datasets(str(data).removeprefix("irds:")), "row"
    elif isinstance(data, (str, os.PathLike)):
        source, (frame, rows) = str(data), _read_file(Path(data))
    else:
        raise DataError(
            f"data={_show(data)} is not a data source; give a DataFrame, a file path ({FORMATS}), an irds: id, "
            "or None for the bundled sample"
        )
    return validate(frame, source, rows), source


def data_hash(frame: pd.DataFrame) -> str:
    """sha256 over the rows' canonical JSON (with a ranking's rank, which stratification may use), for provenance."""
    columns = [*COLUMNS, "rank"] if "rank" in frame.columns else list(COLUMNS)
    payload: Any = frame.loc[:, columns].to_json(orient="records", force_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def judged_rows(frame: pd.DataFrame) -> int:
    """How many rows of a validated frame carry a relevance grade."""
    return int(frame["relevance"].notna().sum())
