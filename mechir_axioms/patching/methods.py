"""The registry of patching methods: each declares the targets it can measure, so callers ask "who can measure
this?" (`method_for`, `methods_for`) instead of branching on method names.

Targets are the names in plan.TARGETS, plus "variants" (hand-picked components, `patch_variants`) and "paths"
(sender heads into receivers, `patch_paths`). The engines live beside this module (exact.py, attribution.py,
paths.py); a two-stage method (screen, then verify) is run by the auditing layer, which composes two of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import SettingsError
from .plan import TARGETS

VARIANTS = "variants"
"""The target of `patch_variants`: a hand-picked list of components."""
PATHS = "paths"
"""The target of `patch_paths`: sender heads into sets of receivers."""
PLAN_TARGETS = ("blocks", "regions", "heads", "heads_by_pos", "mlp", "features")
"""The built-in targets of plan.TARGETS, which every single-stage method measures (any plan, the same engine)."""


@dataclass(frozen=True)
class Method:
    """A registered patching method: the targets it can measure and a line on what it does. A two-stage method
    names the method that screens every component (`screen`) and the one that measures the candidates (`verify`)."""

    name: str
    targets: tuple[str, ...]
    description: str
    estimate: bool
    screen: str | None = None
    verify: str | None = None

    @property
    def two_stage(self) -> bool:
        """Is this a screen followed by a verification (run by the auditing layer, not by `patch`)?"""
        return self.screen is not None


METHODS: dict[str, Method] = {}
"""The one patching-method registry: name -> Method, in registration order."""


def _known_targets() -> tuple[str, ...]:
    return (*TARGETS, VARIANTS, PATHS)


def register_method(method: Method) -> Method:
    """Add `method` to METHODS, checking that its targets exist and that its stages are registered methods."""
    if method.name in METHODS:
        raise SettingsError(f"patching method {method.name!r} is registered twice; pick another name")
    unknown = [target for target in method.targets if target not in _known_targets()]
    if unknown or not method.targets:
        raise SettingsError(f"patching method {method.name!r} has targets {list(method.targets)}; use a non-empty "
                            f"selection of {', '.join(_known_targets())}")
    if (method.screen is None) != (method.verify is None):
        raise SettingsError(f"patching method {method.name!r} has screen={method.screen!r} and "
                            f"verify={method.verify!r}; give both (a two-stage method) or neither")
    if method.screen is not None:
        for target in method.targets:
            method_for(method.screen, target)  # the screen measures every component of the target
        method_for(method.verify, VARIANTS)  # the verification measures the candidates, hand-picked
    METHODS[method.name] = method
    return method


def methods_for(target: str) -> list[str]:
    """The names of the methods that can measure `target`, in registration order."""
    return [name for name, method in METHODS.items() if target in method.targets]


def method_for(name: str, target: str) -> Method:
    """The method `name`, if it can measure `target`; else one sentence naming both and the methods that can."""
    able = methods_for(target)
    if not able:
        raise SettingsError(f"target={target!r} is not valid; use one of {', '.join(_known_targets())}")
    if name not in METHODS:
        raise SettingsError(f"method={name!r} is not valid; use one of {', '.join(able)} (the methods that can "
                            f"measure target {target!r})")
    if name not in able:
        raise SettingsError(f"method={name!r} cannot measure target {target!r}; methods that can: {', '.join(able)}")
    return METHODS[name]


register_method(Method(
    "exact", (*PLAN_TARGETS, VARIANTS, PATHS),
    "re-run the model with each component patched (batched, reusing cached layers): the effect itself",
    estimate=False,
))
register_method(Method(
    "attribution", (*PLAN_TARGETS, VARIANTS),
    "AtP: (donor - receiver activation) x gradient, one forward and backward pass per batch of pairs",
    estimate=True,
))
register_method(Method(
    "atp*", (*PLAN_TARGETS, VARIANTS),
    "AtP*: AtP with GradDrop's estimates beside it (each layer's attention inputs and MLP blocked in turn)",
    estimate=True,
))
register_method(Method(
    "verified", ("heads", "features"),
    "AtP (or AtP*, by the audit's screen setting) screens every head (feature), and every one that could reach a "
    "flag is measured exactly (run by audits)",
    estimate=False, screen="attribution", verify="exact",
))
