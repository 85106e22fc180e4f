"""`make_pairs`: compile an axiom into a token-aligned paired dataset (a PairSet) for one ranker."""

from __future__ import annotations

import random
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import __version__
from ..core.errors import DataError, SettingsError, SpecError
from ..models.layout import PADDING_REGION
from ..models.rankers import Ranker
from ..perturb.operators import Dropped, Filling, perturb
from ..perturb.terms import TermContext, Vocabulary, query_terms, resolve_idf, words
from ..specs.axiom import Axiom, load_axiom
from .align import Aligned, align
from ..passages.loading import DataSource, data_hash, judged_rows, load_data
from .pairset import FRAME_COLUMNS, PairSet


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)


def _tensors(aligned: list[Aligned], pad_id: int) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for which in ("baseline", "perturbed", "other"):
        parts = [getattr(pair, which) for pair in aligned]
        if parts[0] is None:
            continue
        for key in parts[0]:
            tensors[f"{which}_{key}"] = _pad([part[key] for part in parts], pad_id if key == "input_ids" else 0)
        if which == "other":
            tensors["other_length"] = torch.tensor([len(part["input_ids"]) for part in parts])
    tensors["length"] = torch.tensor([len(pair.perturbed["input_ids"]) for pair in aligned])
    tensors["region"] = _pad([pair.regions for pair in aligned], PADDING_REGION)
    return tensors


RANK_BANDS = (0, 10, 50, 100)
"""Lower bounds of the rank bands that stratify an unjudged ranking (ranks 0-9, 10-49, 50-99, 100+): the top
ten that users see and metrics weigh most, the rest of a typical top-50 and top-100 re-ranking depth, and the
tail of deeper candidate lists, so that a sample keeps the run's mix of high and low ranks."""
RANK_BAND = "rank_band"
"""The stratum column (the band's lower bound) make_pairs derives from `rank`."""


def band_label(low: int) -> str:
    """The rank band starting at `low` in words: "0-9", "10-49", "50-99", "100+"."""
    following = [bound for bound in RANK_BANDS if bound > low]
    return f"{low}-{following[0] - 1}" if following else f"{low}+"


def _with_bands(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `rank_band`: the lower bound of the band each row's rank falls into."""
    bands = pd.cut(frame["rank"], [*RANK_BANDS, float("inf")], right=False, labels=list(RANK_BANDS))
    return frame.assign(**{RANK_BAND: bands.astype("int64")})


def _strata_column(frame: pd.DataFrame, stratify: str | None, source: str) -> str | None:
    """The column to stratify by: `stratify`, except that relevance falls back to rank bands when some row is
    unjudged (a ranking without complete judgements)."""
    if stratify == "relevance" and frame["relevance"].isna().any():
        return RANK_BAND
    if stratify == RANK_BAND and "rank" not in frame.columns:
        raise SettingsError(f"stratify={RANK_BAND!r} needs a ranking, but {source} has no rank or score column")
    if stratify is not None and stratify != RANK_BAND and stratify not in frame.columns:
        raise ValueError(f"stratify={stratify!r} is not a column of {source}; columns are {', '.join(frame.columns)}")
    return stratify


def check_selection(axiom: Axiom, frame: pd.DataFrame, source: str) -> None:
    """Refuse an axiom that selects by relevance grade on data without any grade (an unjudged ranking), or by
    grades none of which occurs in the data (before any model loads)."""
    if axiom.select.relevance is not None and judged_rows(frame) == 0:
        raise DataError(
            f"{axiom.name}: select.relevance = {list(axiom.select.relevance)} needs relevance grades, but {source} has "
            "none (an unjudged ranking); give judged data (a relevance or label column) or an axiom without "
            "select.relevance"
        )
    if axiom.select.relevance is not None:
        grades = sorted({int(grade) for grade in frame["relevance"].dropna()})
        if not set(axiom.select.relevance) & set(grades):
            raise DataError(f"{axiom.name}: select.relevance = {list(axiom.select.relevance)} selects no row of {source}, "
                            f"whose relevance grades are {grades}; choose grades that occur in the data")


def _grade(value: Any) -> int | None:
    """A pair's relevance grade as an int; None for an unjudged document of a ranking."""
    return None if pd.isna(value) else int(value)


def _quotas(sizes: pd.Series, n: int) -> dict[Any, int]:
    """Proportional allocation of n over strata (largest remainder), capped by each stratum's size."""
    total = int(sizes.sum())
    exact = {key: n * int(size) / total for key, size in sizes.items()}
    quotas = {key: min(int(value), int(sizes[key])) for key, value in exact.items()}
    for key in sorted(exact, key=lambda key: (-(exact[key] - int(exact[key])), str(key))):
        if sum(quotas.values()) >= min(n, total):
            break
        if quotas[key] < sizes[key]:
            quotas[key] += 1
    return quotas


def _selected(frame: pd.DataFrame, axiom: Axiom, dropped: Counter) -> pd.DataFrame:
    select = axiom.select
    keep = pd.Series(True, index=frame.index)
    checks = [
        (
            "relevance not in select.relevance",
            ~frame["relevance"].isin(select.relevance) if select.relevance is not None else ~keep,
        ),
        (
            f"fewer than {select.min_query_terms} query terms",
            frame["query"].map(lambda query: len(query_terms(query)) < select.min_query_terms),
        ),
        (
            "document length outside select bounds",
            frame["text"].map(lambda text: not select.min_document_words <= len(words(text)) <= select.max_document_words),
        ),
    ]
    for reason, failed in checks:
        failed = failed & keep
        if failed.any():
            dropped[reason] += int(failed.sum())
        keep &= ~failed
    return frame[keep]


def vocabulary_of(ranker: Ranker) -> Vocabulary:
    """The ranker's word-level vocabulary view, built once per ranker."""
    if not hasattr(ranker, "_vocabulary"):
        ranker._vocabulary = Vocabulary(ranker.tokenizer, ranker.stack.embed.weight)
    return ranker._vocabulary


def check_filler(axiom: Axiom, ranker: Ranker) -> None:
    """Refuse a filler that is, holds, or tokenizes to one of the ranker's special tokens."""
    tokenizer, filler = ranker.tokenizer, axiom.baseline.filler
    specials = [token for token in tokenizer.all_special_tokens if token]
    ids = set(tokenizer(filler, add_special_tokens=False)["input_ids"])
    if any(token in filler for token in specials) or ids & set(tokenizer.all_special_ids):
        shown = ", ".join(specials[:8]) + (f" and {len(specials) - 8} more" if len(specials) > 8 else "")
        raise SpecError(
            f"{axiom.name}: baseline.filler {filler!r} is or holds a special token of {ranker.name}'s tokenizer "
            f"({shown}), which would change the input's structure; choose an ordinary word such as 'a'"
        )


def make_pairs(
    axiom: Axiom | str,
    data: DataSource = None,
    ranker: Ranker | None = None,
    n: int = 200,
    seed: int = 0,
    stratify: str | None = "relevance",
    idf: Any = None,
    filler: str | None = None,
) -> PairSet:
    """Compile `axiom` into n verified pairs for `ranker`'s tokenizer (ladder axioms give one row per rung).

    data: a DataFrame, a JSONL/TSV/Parquet path, "irds:ID", or None for the bundled TREC DL sample.
    idf: None (the data's own passages), "irds:ID", a text file, or a list of texts.
    """
    from ..models.loading import load_ranker

    if isinstance(axiom, str):
        axiom = load_axiom(axiom)
    if filler is not None:
        axiom = axiom(filler=filler)
    if n < 1:
        raise SettingsError(f"n={n} is not valid; ask for at least one pair")
    ranker = ranker or load_ranker()
    check_filler(axiom, ranker)
    frame, source = load_data(data)
    check_selection(axiom, frame, source)
    column = _strata_column(frame, stratify, source)
    idf_table = resolve_idf(idf, list(dict.fromkeys(frame["text"])))
    vocabulary = vocabulary_of(ranker)
    target = axiom.perturb.target
    follows_space = ranker.changed_text_follows_space(target)
    dropped: Counter[str] = Counter()
    candidates = _selected(frame if column != RANK_BAND else _with_bands(frame), axiom, dropped)
    strata = candidates.groupby(column, sort=True) if column else [(None, candidates)]
    sizes = pd.Series({key: len(group) for key, group in strata}, dtype=int)
    quotas = _quotas(sizes, n) if len(candidates) else {}
    rows: list[dict[str, Any]] = []
    kept: list[Aligned] = []
    pad_token = ranker.tokenizer.pad_token
    for key, group in strata:
        order = list(group.index)
        random.Random(f"{seed}:{key}").shuffle(order)
        accepted, cursor = 0, 0
        while accepted < quotas.get(key, 0) and cursor < len(order):
            chunk = order[cursor : cursor + max(16, 2 * (quotas[key] - accepted))]
            cursor += len(chunk)
            built = []
            for index in chunk:
                row = group.loc[index]
                context = TermContext(
                    row["query"], row["text"], idf_table, vocabulary,
                    random.Random(f"{seed}:{row['qid']}:{row['docno']}"), axiom.baseline.filler, follows_space,
                )
                try:
                    filling = Filling(context, axiom.baseline.fill, pad_token, axiom.baseline.term)
                    edits = perturb(axiom.perturb.operation, axiom.perturb.params,
                                    row["query"] if target == "query" else row["text"], filling)
                except Dropped as reason:
                    dropped[str(reason)] += 1
                    continue
                built.append((row, edits))
            flat = [(row["query"], row["text"], edit) for row, edits in built for edit in edits]
            results = iter(align(ranker, target, flat))
            for row, edits in built:
                outcome = [next(results) for _ in edits]
                failure = next((item for item in outcome if isinstance(item, Dropped)), None)
                if failure is not None:
                    dropped[str(failure)] += 1
                    continue
                if accepted == quotas[key]:
                    continue
                accepted += 1
                for edit, pair in zip(edits, outcome):
                    kept.append(pair)
                    rows.append(
                        {
                            "qid": row["qid"], "docno": row["docno"], "relevance": _grade(row["relevance"]),
                            "query": row["query"], "baseline": pair.baseline_text or edit.baseline, "perturbed": edit.perturbed,
                            "span_start": pair.span[0], "span_end": pair.span[1], "term": edit.term, "rung": edit.rung,
                        }
                    )
    if not kept:
        raise DataError(
            f"{axiom.name}: no pair of {source} could be built for {ranker.name}; dropped: {dict(dropped) or 'none'}"
        )
    built_pairs = len({(row["qid"], row["docno"]) for row in rows})
    if built_pairs < n:
        warnings.warn(f"{axiom.name}: built {built_pairs} of {n} requested pairs from {source}", stacklevel=2)
    provenance = {
        "axiom": axiom.name,
        "spec": axiom.raw,
        "spec_hash": axiom.spec_hash,
        "expect": axiom.expect,
        "target": target,
        "data": source,
        "data_hash": data_hash(frame),
        "model": ranker.name,
        "ranker_kind": ranker.kind,
        "tokenizer": ranker.tokenizer.name_or_path,
        "max_length": ranker.max_length,
        "filler": axiom.baseline.filler,
        "seed": seed,
        "n_requested": n,
        "n_built": built_pairs,
        "stratify": column,
        **_unjudged_provenance(frame, stratify, column),
        "idf": "data" if idf is None else (str(idf) if isinstance(idf, (str, Path)) else "given texts"),
        "dropped": dict(sorted(dropped.items())),
        "package_version": __version__,
    }
    table = pd.DataFrame(rows, columns=FRAME_COLUMNS)
    if table["relevance"].isna().any():
        table["relevance"] = table["relevance"].astype("Int64")
    return PairSet(table, _tensors(kept, ranker.tokenizer.pad_token_id), provenance)


def unjudged_note(frame: pd.DataFrame) -> dict[str, Any]:
    """The audit manifest's note on a ranking with unjudged rows, whose pairs are stratified by rank band; {} for
    judged data, so that their manifests stay as they were."""
    if not frame["relevance"].isna().any():
        return {}
    return {"data_relevance": {"judged_rows": judged_rows(frame), "rows": len(frame), "stratify": RANK_BAND,
                               "rank_bands": [band_label(low) for low in RANK_BANDS]}}


def _unjudged_provenance(frame: pd.DataFrame, requested: str | None, column: str | None) -> dict[str, Any]:
    """What provenance adds for a ranking with unjudged rows or banded strata (nothing for judged data)."""
    facts: dict[str, Any] = {}
    if frame["relevance"].isna().any():
        facts["judged_rows"] = {"judged": judged_rows(frame), "rows": len(frame)}
    if column == RANK_BAND:
        facts["stratify_requested"] = requested
        facts["rank_bands"] = [band_label(low) for low in RANK_BANDS]
    return facts
