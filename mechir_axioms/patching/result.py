"""`PatchResult`: per-pair patching effects as an array, a tidy frame, and provenance; saved to disk."""

from __future__ import annotations

import html
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.outputs import Writer, writing_to
from ..pairs.pairset import read_saved


def included(donor: Any, receiver: Any, delta: float) -> Any:
    """The inclusion rule, in one place: a pair is patched only if |donor - receiver| >= delta, since the
    metric's denominator is noise below that. Works on floats, NumPy arrays and torch tensors alike."""
    return abs(donor - receiver) >= delta


@dataclass
class PatchResult:
    """Effects of patching one target over a PairSet.

    effects has shape [pair, ...dims[1:]], one row per PairSet row in order; excluded pairs are NaN rows.
    The metric is (patched - receiver) / (donor - receiver): 0 is the receiving run's score, 1 the donor's.
    """

    target: str
    method: str
    effects: np.ndarray
    dims: tuple[str, ...]
    receiver_score: np.ndarray
    donor_score: np.ndarray
    excluded: int
    delta: float
    labels: dict[str, list[Any]] = field(default_factory=dict)  # e.g. component names, chosen heads
    provenance: dict[str, Any] = field(default_factory=dict)
    dropped: np.ndarray | None = None
    """method "atp*": GradDrop's estimates [pair, blocked layer, ...dims[1:]], the gradient through one layer's
    attention inputs and MLP stopped; None for the other methods."""

    @property
    def high(self) -> np.ndarray:
        """The higher of each pair's two scores."""
        return np.maximum(self.receiver_score, self.donor_score)

    @property
    def low(self) -> np.ndarray:
        return np.minimum(self.receiver_score, self.donor_score)

    @property
    def included(self) -> np.ndarray:
        """Which pairs were patched (the rest had |donor - receiver| < delta)."""
        return included(self.donor_score, self.receiver_score, self.delta)

    def mean(self) -> np.ndarray:
        """Mean effect over included pairs, ignoring positions a pair does not have."""
        return np.nanmean(self.effects[self.included], axis=0)

    def frame(self) -> pd.DataFrame:
        """Tidy frame: one row per (pair, component) with its effect; labelled dims use their labels."""
        index = np.indices(self.effects.shape).reshape(len(self.dims), -1)
        columns = {}
        for axis, name in enumerate(self.dims):
            values = index[axis]
            if name in self.labels:
                values = np.asarray(self.labels[name], dtype=object)[values]
            columns[name] = values
        columns["effect"] = self.effects.reshape(-1)
        frame = pd.DataFrame(columns)
        return frame[~np.isnan(frame["effect"].to_numpy(dtype=float))].reset_index(drop=True)

    def _strongest(self, count: int = 5) -> pd.DataFrame:
        """The `count` components with the largest |mean effect| over included pairs, one row each."""
        with warnings.catch_warnings():  # a component no included pair has is NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            means = self.mean() if self.included.any() else np.full(self.effects.shape[1:], np.nan)
        index = np.indices(means.shape).reshape(len(self.dims) - 1, -1)
        columns = {name: (np.asarray(self.labels[name], dtype=object)[index[axis]] if name in self.labels
                          else index[axis]) for axis, name in enumerate(self.dims[1:])}
        frame = pd.DataFrame({**columns, "mean effect": means.reshape(-1)}).dropna(subset=["mean effect"])
        return frame.reindex(frame["mean effect"].abs().sort_values(ascending=False).index).head(count)

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: target, method, shape, pairs patched and the strongest mean effects."""
        patched = int(np.count_nonzero(self.included))
        shape = " x ".join(f"{name} {size}" for name, size in zip(self.dims, self.effects.shape))
        lines = [f"PatchResult: target {self.target}, method {self.method}", f"effects: {shape}",
                 f"pairs: {patched} patched, {self.excluded} excluded (|donor - receiver| < {self.delta:g})"]
        head = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
        top = self._strongest()
        table = (top.to_html(index=False, escape=True, float_format=lambda value: f"{value:+.4f}") if len(top)
                 else "<p>no pair was patched</p>")
        return f'<div class="mechir-axioms-summary">{head}<p>strongest mean effects:</p>{table}</div>'

    def save(self, folder: str | Path | Writer) -> Path:
        """Write effects.npz and, last, result.json into `folder` (a path, claimed as an output folder, or a
        subfolder of a held one; see core.outputs), each atomically."""
        def save_arrays(path: Path) -> None:
            with path.open("wb") as handle:  # a handle, so numpy adds no second .npz suffix
                extra = {} if self.dropped is None else {"dropped": self.dropped}
                np.savez(handle, effects=self.effects, receiver_score=self.receiver_score, donor_score=self.donor_score,
                         **extra)

        meta = {
            "target": self.target,
            "method": self.method,
            "dims": list(self.dims),
            "excluded": self.excluded,
            "delta": self.delta,
            "labels": self.labels,
            "provenance": self.provenance,
        }
        with writing_to(folder, "patch") as out:
            out.write("effects.npz", save_arrays)
            out.write_text("result.json", json.dumps(meta, indent=2, default=str))
            return out.root

    @classmethod
    def load(cls, folder: str | Path) -> PatchResult:
        folder = Path(folder)
        if not (folder / "effects.npz").is_file() or not (folder / "result.json").is_file():
            raise FileNotFoundError(f"{folder} is not a saved PatchResult: it needs effects.npz and result.json")
        target, method, dims, excluded, delta, labels, provenance = read_saved(folder / "result.json", _read_meta)
        arrays = read_saved(folder / "effects.npz", _read_arrays)
        return cls(target, method, arrays["effects"], dims, arrays["receiver_score"], arrays["donor_score"], excluded,
                   delta, labels, provenance, arrays.get("dropped"))


def _read_meta(path: Path) -> tuple[Any, ...]:
    """result.json's fields, in PatchResult's order (a missing or mistyped one raises: the file is damaged)."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    labels = {key: [tuple(v) if isinstance(v, list) else v for v in values] for key, values in meta["labels"].items()}
    return (meta["target"], meta["method"], tuple(meta["dims"]), meta["excluded"], meta["delta"], labels,
            dict(meta["provenance"]))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """effects.npz's arrays, read as arrays only (allow_pickle=False: a pickled object is refused, not built)."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    missing = [name for name in ("effects", "receiver_score", "donor_score") if name not in arrays]
    if missing:
        raise KeyError(", ".join(missing))
    return arrays
