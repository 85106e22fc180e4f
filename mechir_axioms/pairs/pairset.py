"""PairSet: a compiled paired dataset as a tidy frame, its token tensors and its provenance."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from transformers import BatchEncoding

from ..core.errors import DataError
from ..core.outputs import Writer, writing_to
from ..models.layout import ALIGNED_FIELDS
from ..models.rankers import ModelInput, Ranker

FRAME_COLUMNS = ["qid", "docno", "relevance", "query", "baseline", "perturbed", "span_start", "span_end", "term", "rung"]
Which = Literal["baseline", "perturbed"]


@dataclass
class PairSet:
    """A paired dataset: a tidy frame (one row per pair), its token tensors, and provenance.

    tensors hold, padded on the right, `{baseline,perturbed}_{input_ids,attention_mask[,token_type_ids]}`
    for the changed sequence and, for bi-encoders, `other_*` for the unchanged side, plus `length` and
    `region` (each token's index into align.REGIONS, -1 for padding).
    """

    frame: pd.DataFrame
    tensors: dict[str, torch.Tensor]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def dropped(self) -> dict[str, int]:
        """Why candidate pairs were dropped, with counts."""
        return self.provenance.get("dropped", {})

    def take(self, rows: Iterable[int]) -> PairSet:
        """The pairs at `rows`, in that order, with the same provenance."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        tensors = {key: value[index] for key, value in self.tensors.items()}
        return PairSet(self.frame.iloc[index.tolist()].reset_index(drop=True), tensors, dict(self.provenance))

    def _batch(self, prefix: str, rows: torch.Tensor, length: int) -> BatchEncoding:
        return BatchEncoding(
            {key: self.tensors[f"{prefix}_{key}"][rows, :length] for key in ALIGNED_FIELDS if f"{prefix}_{key}" in self.tensors}
        )

    @property
    def target(self) -> str:
        """Which side of each pair is changed: "document" or "query"."""
        return self.provenance.get("target", "document")

    def model_input(self, which: Which, ranker: Ranker, rows: Iterable[int] | None = None) -> ModelInput:
        """The baseline or perturbed input of some rows, padded to their longest, laid out by `ranker` and on
        its device, ready for `ranker.forward`."""
        if which not in ("baseline", "perturbed"):
            raise ValueError(f"which={which!r} is not valid; use 'baseline' or 'perturbed'")
        index = torch.arange(len(self)) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)
        changed = self._batch(which, index, int(self.tensors["length"][index].max()))
        other = None
        if "other_input_ids" in self.tensors:
            other = self._batch("other", index, int(self.tensors["other_length"][index].max()))
        return ranker.batch(changed, other, self.target)

    def score(self, ranker: Ranker, batch_size: int = 32) -> pd.DataFrame:
        """The frame with `baseline_score`, `perturbed_score` and `delta` (perturbed - baseline) added. Pairs are
        scored in batches of similar length, so that little of each batch is padding."""
        scores = {which: np.zeros(len(self)) for which in ("baseline", "perturbed")}
        order = torch.argsort(self.tensors["length"], stable=True).tolist()
        with torch.inference_mode():
            for start in range(0, len(self), batch_size):
                rows = order[start : start + batch_size]
                context = self.shared_context(ranker, rows)
                for which in scores:
                    inputs = self.model_input(which, ranker, rows)
                    scores[which][rows] = ranker.forward(inputs, context=context).double().cpu().numpy()
        baseline, perturbed = scores["baseline"], scores["perturbed"]
        return self.frame.assign(baseline_score=baseline, perturbed_score=perturbed, delta=perturbed - baseline)

    def shared_context(self, ranker: Ranker, rows: Iterable[int]) -> Any:
        """What a pair's two inputs share, computed once for `rows` (a bi-encoder's query embeddings when the
        document changes; None when nothing is shared)."""
        return ranker.context(self.model_input("baseline", ranker, rows), self.target)

    def save(self, folder: str | Path | Writer) -> Path:
        """Write frame.parquet, tensors.pt and, last, provenance.json into `folder` (a path, claimed as an output
        folder of pairs, or a subfolder of a held output folder; see core.outputs), each atomically."""
        with writing_to(folder, "pairs") as out:
            out.write_frame("frame.parquet", self.frame)
            out.write("tensors.pt", lambda path: torch.save(self.tensors, path))
            out.write_text("provenance.json", json.dumps(self.provenance, indent=2))
            return out.root

    @classmethod
    def load(cls, folder: str | Path) -> PairSet:
        """Read a saved PairSet back: tensors.pt as tensors only (weights_only: no other pickled object is ever
        built), and a damaged file refused in one sentence that names it."""
        folder = Path(folder)
        missing = [name for name in ("frame.parquet", "tensors.pt", "provenance.json") if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a saved PairSet: missing {', '.join(missing)}")
        tensors = read_saved(folder / "tensors.pt", lambda path: torch.load(path, weights_only=True))
        if not (isinstance(tensors, dict) and all(isinstance(value, torch.Tensor) for value in tensors.values())):
            raise damaged(folder / "tensors.pt", f"a {type(tensors).__name__}, not a dict of tensors")
        provenance = read_saved(folder / "provenance.json", lambda path: json.loads(path.read_text(encoding="utf-8")))
        if not isinstance(provenance, dict):
            raise damaged(folder / "provenance.json", f"a JSON {type(provenance).__name__}, not an object")
        return cls(read_saved(folder / "frame.parquet", pd.read_parquet), tensors, provenance)


def damaged(path: Path, reason: str) -> DataError:
    """The refusal of a damaged checkpoint file, in one sentence: names it and how to start afresh."""
    work = next((parent for parent in path.parents if parent.name == "work"), path.parent)
    return DataError(f"checkpoint {path} is damaged ({reason}); delete {work} and run again to recompute it, "
                     "or audit afresh into a new folder")


def read_saved(path: Path, read: Callable[[Path], Any]) -> Any:
    """read(path), or `damaged` when it fails (a file system error stays itself)."""
    try:
        return read(path)
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001  (any parser's or unpickler's error: the file is damaged)
        raise damaged(path, type(error).__name__) from error
