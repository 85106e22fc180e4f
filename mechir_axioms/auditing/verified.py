"""`method="verified"`: a screen estimates every head in both directions, and each head whose screened effect could
reach a flag is measured exactly, so every flag the audit reports rests on exactly measured effects.

The screen of a head is |AtP effect|, or with the `screen` setting atp* the larger of that and GradDrop's mean
|effect| with one layer's gradient blocked. Heads whose screen is within `margin` of the threshold are patched exactly, the strongest first, up to
`verify` heads per axiom. The screen's error on the verified heads bounds what it may have missed: no
unverified head's exact effect is expected beyond its screen plus the 99th percentile of that error. While that
bound still reaches the threshold and the budget allows, further rounds patch the next heads whose screen is
within that error of the threshold: the margin grows to what the screen was measured to miss by.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..analysis.findings import symmetric_change
from ..models.names import act_name
from ..patching.methods import METHODS
from ..patching.plan import Variant
from ..patching.result import PatchResult
from .context import AuditContext, AxiomRecord


def share(change: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The share of the score change each component carries: sum over included pairs of change / sum of |delta|."""
    kept = ~np.isnan(size)
    if not kept.any():
        return np.full(change.shape[1:], np.nan)
    return np.nansum(change[kept], axis=0) / size[kept].sum()


def _dropped(result: PatchResult, layer: int) -> PatchResult:
    """One GradDrop variant of an AtP* result, as a result of its own."""
    return PatchResult(result.target, result.method, result.dropped[:, layer], result.dims, result.receiver_score,
                       result.donor_score, result.excluded, result.delta, result.labels, result.provenance)


def screen(denoising: PatchResult, noising: PatchResult, expect: str) -> tuple[np.ndarray, np.ndarray]:
    """(signed AtP share [layer, head], screen [layer, head]): the screen is |AtP|, or with AtP*'s GradDrop
    max(|AtP|, mean over blocked layers of |GradDrop share|), the size an exact effect may plausibly have."""
    change, size = symmetric_change(denoising, noising, expect)
    signed = share(change, size)
    if denoising.dropped is None:
        return signed, np.abs(signed)
    blocked = [share(symmetric_change(_dropped(denoising, layer), _dropped(noising, layer), expect)[0], size)
               for layer in range(denoising.dropped.shape[1])]
    return signed, np.maximum(np.abs(signed), np.mean(np.abs(blocked), axis=0))


def chosen(values: np.ndarray, threshold: float, margin: float, budget: int) -> list[tuple[int, ...]]:
    """Units (index tuples into `values`: (layer, head) for heads) whose screen reaches threshold - margin,
    strongest first, at most `budget`."""
    order = np.argsort(-values, axis=None, kind="stable")
    units = [tuple(int(i) for i in np.unravel_index(flat, values.shape)) for flat in order]
    return [unit for unit in units if values[unit] >= threshold - margin][:budget]


def _bound(values: np.ndarray, measured: np.ndarray, error: np.ndarray) -> tuple[float, float, float]:
    """(the largest unverified screen, the 99th percentile of the screen's error on the verified units (NaN when
    none), the missed-flag bound: their sum, or the screen alone when no error was measured)."""
    largest_left = float(values[~measured].max()) if (~measured).any() else 0.0
    error_99 = float(np.percentile(error, 99)) if len(error) else float("nan")
    return largest_left, error_99, largest_left + (error_99 if len(error) else 0.0)


def verified_heads(record: AxiomRecord, context: AuditContext,
                   method: str = "verified") -> tuple[tuple[np.ndarray, np.ndarray], PatchResult, dict[str, Any]]:
    """The symmetric change of every head (exact where verified, screened elsewhere), the first screening run, and
    what was verified: the heads, the screen's error on them and the bound on a missed flag. The two-stage
    `method` (patching.methods) names the exact measurement; the `screen` setting the screen."""
    return verified_units(record, context, "heads", method,
                          lambda unit: Variant(unit[0], act_name("z", unit[0]), head=unit[1]),
                          lambda unit: f"{unit[0]}.{unit[1]}")


def verified_units(record: AxiomRecord, context: AuditContext, target: str, method: str,
                   variant_of: Callable[[tuple[int, ...]], Variant], name_of: Callable[[tuple[int, ...]], str],
                   **job: Any) -> tuple[tuple[np.ndarray, np.ndarray], PatchResult, dict[str, Any]]:
    """`verified_heads` for any target: `variant_of(unit)` is the component an index tuple of the target's effects
    names, `name_of(unit)` its name; `job` holds the patching jobs' other parts (the SAEs of features)."""
    started = time.perf_counter()
    settings, stages = context.settings, METHODS[method]
    (change, size), denoising, noising = context.both_directions(record, f"{target}-screen",
                                                                 context.job(target, settings.screen, **job))
    signed, values = screen(denoising, noising, record.spec.expect)
    screened = time.perf_counter()
    measured = np.zeros(values.shape, dtype=bool)
    units: list[tuple[int, ...]] = []
    margin, error, rounds = settings.margin, np.array([]), 0
    while len(units) < settings.verify:
        batch = chosen(np.where(measured, -np.inf, values), settings.threshold, margin, settings.verify - len(units))
        if not batch:
            break
        rounds += 1
        exactly = context.job(target, stages.verify, variants=tuple(variant_of(unit) for unit in batch), **job)
        names = "-".join(name_of(unit) for unit in batch).replace(":", "_")
        name = f"{target}-verify-" + (names if len(names) <= 96 else hashlib.sha256(names.encode()).hexdigest()[:16])
        (exact_change, _), _, _ = context.both_directions(record, name, exactly)
        exact_share = share(exact_change, size)
        for index, unit in enumerate(batch):
            change[(slice(None), *unit)] = exact_change[:, index]
            measured[unit] = True
        units += batch
        error = np.concatenate([error, np.abs(signed[tuple(np.array(batch).T)] - exact_share)])
        _, error_99, bound = _bound(values, measured, error)
        if bound < settings.threshold:
            break
        margin = max(margin, error_99)  # the next round reaches as far as the screen errs
    largest_left, error_99, bound = _bound(values, measured, error)
    verification = {
        "screened_by": settings.screen, "budget": settings.verify, "margin": settings.margin,
        "candidates": int((values >= settings.threshold - settings.margin).sum()),
        "verified": [name_of(unit) for unit in units], "rounds": rounds, "margin_reached": margin,
        "measured": measured.tolist(), "screened_share": signed.tolist(), "screen_value": values.tolist(),
        "largest_unverified_screen": largest_left, "screen_error_p99": error_99,
        "missed_flag_bound": bound, "bound_below_threshold": bool(bound < settings.threshold),
        "seconds": {"screen": round(screened - started, 1), "verification": round(time.perf_counter() - screened, 1)},
    }
    return (change, size), denoising, verification
