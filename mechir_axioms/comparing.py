"""`compare`: does a new checkpoint's audit keep the old one's axioms and the heads that carried them?"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .analysis.clusters import cluster_index
from .analysis.findings import agrees, units_of
from .analysis.paired import difference_interval, effect_change_test
from .analysis.stats import Z_95, benjamini_hochberg, wilson
from .core.errors import SettingsError
from .report.comparison_page import head_map_shape
from .results.audit import Audit, load_audit
from .results.comparison import AxiomComparison, Comparison
from .results.intervention import intervention_label
from .results.steps import flagged_steps


def newcombe_difference(successes_old: int, total_old: int, successes_new: int, total_new: int) -> tuple[float, float]:
    """95% interval of new - old share for independent samples: Newcombe's hybrid score method (1998, #10)."""
    p_old, p_new = successes_old / total_old, successes_new / total_new
    low_old, high_old = wilson(successes_old, total_old, Z_95)
    low_new, high_new = wilson(successes_new, total_new, Z_95)
    difference = p_new - p_old
    low = difference - math.sqrt((p_new - low_new) ** 2 + (high_old - p_old) ** 2)
    high = difference + math.sqrt((high_new - p_new) ** 2 + (p_old - low_old) ** 2)
    return low, high


CHANGED = " †"
"""The mark of a flag gained or lost whose unit's effect changed significantly (paired test)."""


def _same_pairs(name: str, old: Audit, new: Audit) -> pd.DataFrame | None:
    """One axiom's pairs when both audits scored the same ones (same queries and documents, in the same order):
    the old pairs with the new delta beside the old; None when they differ (other data, seed or n)."""
    pairs = [audit.pairs[audit.pairs["axiom"] == name].reset_index(drop=True) for audit in (old, new)]
    if len(pairs[0]) != len(pairs[1]) or pairs[0].empty:
        return None
    for column in ("qid", "docno"):
        if not (pairs[0][column].astype(str) == pairs[1][column].astype(str)).all():
            return None
    return pairs[0].assign(new_delta=pairs[1]["delta"].to_numpy())


def _units(pairs: pd.DataFrame, settings: dict) -> np.ndarray:
    """Each pair's cluster number for the paired statistics: its query, or itself for unit=pair."""
    return cluster_index(units_of(pairs["qid"].astype(str).to_numpy(), settings.get("unit", "pair")))


def _paired_agreement(name: str, expect: str, pairs: pd.DataFrame, settings: dict) -> tuple[float, float]:
    """The paired interval of the agreement change on the same pairs (cluster bootstrap of per-pair differences)."""
    tolerance = float(settings["tolerance"])
    before = agrees(pairs["delta"].to_numpy(dtype=float), expect, tolerance)
    after = agrees(pairs["new_delta"].to_numpy(dtype=float), expect, tolerance)
    return difference_interval(before, after, _units(pairs, settings), seed=int(settings.get("seed", 0)))


def _changed_units(name: str, step: str, old: Audit, new: Audit, pairs: pd.DataFrame, alpha: float) -> set[str] | None:
    """The units of one step whose effect changed significantly between the audits, by a paired cluster
    permutation test on the pairs both measured, BH across the axiom's units; None without per-pair changes."""
    frames = [audit.pair_changes.get(step) for audit in (old, new)]
    if any(frame is None or frame.empty for frame in frames):
        return None
    wide = []
    for frame in frames:
        rows = frame[frame["axiom"] == name]
        wide.append((rows.pivot(index="pair", columns="name", values="change"),
                     rows.groupby("pair")["size"].first()))
    shared_pairs = wide[0][0].index.intersection(wide[1][0].index)
    units = wide[0][0].columns.intersection(wide[1][0].columns)
    if len(shared_pairs) < 2 or not len(units):
        return None  # nothing to test pair by pair: every lost flag counts
    (old_change, old_size), (new_change, new_size) = [(change.loc[shared_pairs, units].to_numpy(dtype=float),
                                                       size.loc[shared_pairs].to_numpy(dtype=float))
                                                      for change, size in wide]
    qids = pairs.set_index("pair").loc[shared_pairs]
    clusters = _units(qids.reset_index(), old.manifest["settings"])
    _, p = effect_change_test(old_change, old_size, new_change, new_size, clusters,
                              seed=int(old.manifest["settings"].get("seed", 0)))
    q = benjamini_hochberg(p)
    return {str(unit) for unit, value in zip(units, q) if value <= alpha}


def _marked(entries: list[str], changed: set[str] | None) -> list[str]:
    """Flag entries ("4.6 (encodes)") with CHANGED appended where the unit's effect changed significantly."""
    if not changed:
        return entries
    return [entry + CHANGED if entry.split(" (")[0] in changed else entry for entry in entries]


def _flags(rows: pd.DataFrame) -> dict[str, str]:
    return {row.name: row.flag for row in rows.itertuples() if row.flag}


def _gained_lost(old: pd.DataFrame, new: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The units (by name) whose flag the new rows gained, and those whose flag they lost."""
    flags_old, flags_new = _flags(old), _flags(new)
    return ([f"{name} ({flag})" for name, flag in flags_new.items() if flags_old.get(name) != flag],
            [f"{name} ({flag})" for name, flag in flags_old.items() if flags_new.get(name) != flag])


def _other_steps(name: str, old: Audit, new: Audit,
                 pairs: pd.DataFrame | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Flags gained and lost per flagged step other than heads that both audits ran, for one axiom, marked where
    the unit's effect changed significantly (when both audits kept their per-pair changes of the same pairs)."""
    changes = {}
    for step in flagged_steps(set(old.frames) & set(new.frames)):
        frames = [audit.frames[step.name] for audit in (old, new)]
        if step.name == "heads" or any(frame.empty for frame in frames):
            continue
        gained, lost = _gained_lost(*(frame[frame["axiom"] == name] for frame in frames))
        if gained or lost:
            changed = None if pairs is None else _changed_units(name, step.name, old, new, pairs,
                                                                 float(old.manifest["settings"]["alpha"]))
            changes[step.name] = (_marked(gained, changed), _marked(lost, changed))
    return changes


def _compare_axiom(name: str, old: Audit, new: Audit, max_drop: float, min_rho: float, max_lost: int,
                   different_models: bool = False) -> AxiomComparison:
    """One axiom of both audits. Two different models (allowed by the caller) whose head maps differ in shape
    are compared on agreement only: their heads do not correspond, so no correlation or flag is matched."""
    before = old.axioms.set_index("axiom").loc[name]
    if name not in set(new.axioms["axiom"]):
        return AxiomComparison(name, float(before["agreement"]), math.nan, math.nan, math.nan, math.nan, [], [],
                               [f"{name} is missing from the new audit"])
    after = new.axioms.set_index("axiom").loc[name]
    settings = old.manifest["settings"]
    pairs = _same_pairs(name, old, new)
    if pairs is not None:
        low, high = _paired_agreement(name, str(before["expect"]), pairs, settings)
    else:
        count = lambda row: (round(row["agreement"] * row["n_pairs"]), int(row["n_pairs"]))  # noqa: E731
        low, high = newcombe_difference(*count(before), *count(after))
    changed = None if pairs is None else _changed_units(name, "heads", old, new, pairs, float(settings["alpha"]))
    heads_old = old.heads[old.heads["axiom"] == name].set_index("name")
    heads_new = new.heads[new.heads["axiom"] == name].set_index("name")
    shared = heads_old.index.intersection(heads_new.index)
    unmatched = different_models and not (len(shared) == len(heads_old) == len(heads_new))
    pair = pd.DataFrame({"old": heads_old.loc[shared, "effect"], "new": heads_new.loc[shared, "effect"]}).dropna()
    rho = float(stats.spearmanr(pair["old"], pair["new"]).statistic) if len(pair) > 2 and not unmatched else math.nan
    gained, lost = _gained_lost(heads_old.reset_index(), heads_new.reset_index())
    gained, lost = _marked(gained, changed), _marked(lost, changed)
    comparison = AxiomComparison(name, float(before["agreement"]), float(after["agreement"]), low, high,
                                 rho, [] if unmatched else gained, [] if unmatched else lost,
                                 changes={} if unmatched else _other_steps(name, old, new, pairs),
                                 paired=pairs is not None, heads_tested=changed is not None)
    drop = comparison.agreement_old - comparison.agreement_new
    if drop > max_drop + 1e-12:
        comparison.failures.append(f"{name}: agreement dropped by {drop:.1%}, more than the allowed {max_drop:.1%}")
    if unmatched:
        shapes = [" x ".join(map(str, head_map_shape(heads))) for heads in (heads_old, heads_new)]
        comparison.notes.append(f"the head maps differ in shape ({shapes[0]} vs {shapes[1]} layers x heads): "
                                "agreement is compared, heads are not matched or correlated")
        return comparison
    if heads_old.empty and heads_new.empty:
        comparison.notes.append("neither audit measured heads: agreement and the other steps' flags are compared")
    elif not len(shared) == len(heads_old) == len(heads_new):
        comparison.failures.append(f"{name}: the audits cover different heads ({_head_difference(heads_old, heads_new)})")
    elif not (rho >= min_rho):  # a NaN correlation (flat maps) fails too
        comparison.failures.append(f"{name}: head-map Spearman rho {rho:.3f} is below the required {min_rho}")
    counted = [entry for entry in lost if entry.endswith(CHANGED)] if changed is not None else lost
    if len(counted) > max_lost:
        changed_words = " whose effect changed significantly" if changed is not None else ""
        comparison.failures.append(f"{name}: {len(counted)} head(s){changed_words} lost their flag, more than the "
                                   f"allowed {max_lost}")
    return comparison


def _head_difference(old: pd.DataFrame, new: pd.DataFrame, shown: int = 5) -> str:
    """The heads (index: name) one audit has and the other lacks, the first few of each side."""
    parts = []
    for side, heads in (("old", old.index.difference(new.index, sort=False)),
                        ("new", new.index.difference(old.index, sort=False))):
        if len(heads):
            more = f" and {len(heads) - shown} more" if len(heads) > shown else ""
            parts.append(f"only in the {side}: {', '.join(map(str, heads[:shown]))}{more}")
    return "; ".join(parts) or f"{len(old)} vs {len(new)} rows, some names repeated"


def _check_thresholds(max_agreement_drop: float, min_head_map_correlation: float, max_lost_flags: int) -> None:
    """Refuse a threshold that is not finite or out of range: a NaN would pass (or fail) every comparison."""
    for flag, name, value, low, high in (
            ("--max-agreement-drop", "max_agreement_drop", max_agreement_drop, 0, 1),
            ("--min-head-map-correlation", "min_head_map_correlation", min_head_map_correlation, -1, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:  # NaN: False
            raise SettingsError(f"{flag} {value} ({name}) is not valid; use a number from {low} to {high}")
    if isinstance(max_lost_flags, bool) or not isinstance(max_lost_flags, numbers.Integral) or max_lost_flags < 0:
        raise SettingsError(f"--max-lost-flags {max_lost_flags} (max_lost_flags) is not valid; use a whole number "
                            "of at least 0")


def _settings_differ(old: Audit, new: Audit) -> list[str]:
    """Settings that make two audits incomparable (the model may differ: that is the point)."""
    before, after = old.manifest["settings"], new.manifest["settings"]
    keys = ("data", "n", "seed", "method", "threshold", "alpha", "tolerance", "unit", "stability", "selection")
    return [f"{key} {before.get(key)!r} vs {after.get(key)!r}" for key in keys if before.get(key) != after.get(key)]


def _identity_differs(old: Audit, new: Audit, allow_different_models: bool, allow_different_specs: bool) -> list[str]:
    """What makes two audits incomparable beyond their settings: the data's content, the ranker's kind,
    an axiom audited under one name with different specs (each allowed only where the caller says so)."""
    problems = []
    before, after = old.manifest.get("data_hash"), new.manifest.get("data_hash")
    if before and after and before != after:
        problems.append(f"the data differ in content (hash {before} vs {after})")
    kinds = old.manifest["model"].get("kind"), new.manifest["model"].get("kind")
    if kinds[0] != kinds[1] and not allow_different_models:
        problems.append(f"the rankers are of different kinds ({kinds[0]} vs {kinds[1]}); pass --allow-different-models "
                        "(allow_different_models=True) to compare them anyway")
    if not allow_different_specs:
        for name in old.axioms["axiom"]:
            hashes = [audit.manifest["axioms"].get(name, {}).get("spec_hash") for audit in (old, new)]
            if all(hashes) and hashes[0] != hashes[1]:
                problems.append(f"{name} was audited with different specs (hash {hashes[0]} vs {hashes[1]}); pass "
                                "--allow-different-specs (allow_different_specs=True) to compare them anyway")
    return problems


def _where(audit: Audit, given: Audit | str | Path) -> str:
    """An audit's folder, the path it was given as, or "an unsaved audit" (never the frames' repr)."""
    return str(audit.folder or (given if not isinstance(given, Audit) else "an unsaved audit"))


def describe_model(audit: Audit) -> str:
    """One line naming an audit's ranker: name, kind and weights digest, and the intervention it was audited under
    (the before and after audits of one intervention share model and weights: only that tells them apart)."""
    model = audit.manifest["model"]
    digest = f", weights {model['weights_digest']}" if model.get("weights_digest") else ""
    label = intervention_label(audit.manifest)
    return f"{model['name']} ({model.get('kind', '?')}{digest})" + (f" with {label}" if label else "")


def compare(old: Audit | str | Path, new: Audit | str | Path, max_agreement_drop: float = 0.05,
            min_head_map_correlation: float = 0.8, max_lost_flags: int = 0, *, allow_different_models: bool = False,
            allow_different_specs: bool = False) -> Comparison:
    """Compare two saved audits (folders or `Audit`s) axiom by axiom, over the axioms of the old audit.

    An axiom fails when its agreement falls by more than max_agreement_drop, its head-effect map's Spearman
    correlation is below min_head_map_correlation, or more than max_lost_flags heads lose their flag. Audits of the
    same pairs are compared pair by pair: a paired agreement interval, and each head's effect change tested over
    queries; then only flags lost with a significant change (marked with a dagger) count.
    Audits of different data, settings, ranker kinds or specs under one name are refused (the last two
    unless allowed).
    """
    _check_thresholds(max_agreement_drop, min_head_map_correlation, max_lost_flags)
    old_audit = old if isinstance(old, Audit) else load_audit(old)
    new_audit = new if isinstance(new, Audit) else load_audit(new)
    differ = _settings_differ(old_audit, new_audit)
    if differ:
        raise SettingsError(f"the audits were run with different settings ({'; '.join(differ)}); rerun one to match")
    problems = _identity_differs(old_audit, new_audit, allow_different_models, allow_different_specs)
    if problems:
        raise SettingsError(f"cannot compare {_where(old_audit, old)} with {_where(new_audit, new)}: {'; '.join(problems)}")
    rows = [
        _compare_axiom(name, old_audit, new_audit, max_agreement_drop, min_head_map_correlation, max_lost_flags,
                       allow_different_models)
        for name in old_audit.axioms["axiom"]
    ]
    label = lambda audit, given: f"{_where(audit, given)}: {describe_model(audit)}"  # noqa: E731
    return Comparison(label(old_audit, old), label(new_audit, new), rows, max_agreement_drop,
                      min_head_map_correlation, max_lost_flags, old_audit, new_audit)


