"""mechir-axioms: axiomatic diagnostics for neural rankers, by activation patching over real HF models.

Names are imported on first use, so that loading the pytest plugin or the CLI's argument parser does not
pay for torch and transformers until an audit actually runs.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "auditing.designs": ["sweep"],
    "auditing.pipeline": ["audit"],
    "auditing.registry": ["audit_step"],
    "comparing": ["compare"],
    "core.errors": ["DataError", "MechirError", "ModelError", "NonFiniteError", "OutputError", "SettingsError", "SpecError",
                    "WorkerError"],
    "executing.base": ["Executor", "LocalExecutor"],
    "assessing": ["assess_intervention"],
    "executing.cluster": ["RayExecutor"],
    "features.files": ["load_sae", "save_sae"],
    "features.interventions": ["intervene"],
    "features.sae": ["SaeConfig", "SparseAutoencoder"],
    "features.splice": ["spliced"],
    "features.training": ["TrainingSettings", "train_sae"],
    "models.head_edits": ["Intervention"],
    "models.loading": ["load_ranker"],
    "models.names": ["act_name"],
    "models.rankers": ["BiEncoder", "CrossEncoder", "ModelInput", "MonoT5", "Ranker", "register_kind"],
    "pairs.compile": ["make_pairs"],
    "passages.loading": ["load_data"],
    "pairs.pairset": ["PairSet"],
    "pyterrier": ["RankerTransformer"],
    "results.audit": ["Audit", "load_audit"],
    "results.comparison": ["Comparison"],
    "results.intervention": ["InterventionResult"],
    "results.settings": ["Settings"],
    "results.steps": ["Step", "STEPS"],
    "results.suggestions": ["Suggestion"],
    "results.sweep": ["Sweep"],
    "patching.api": ["patch", "patch_variants"],
    "patching.paths": ["patch_paths"],
    "patching.plan": ["Variant"],
    "patching.runs": ["CleanRuns"],
    "patching.result": ["PatchResult"],
    "specs.axiom": ["Axiom", "list_axioms", "load_axiom"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *sorted(_MODULE_OF)]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'mechir_axioms' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
