"""Names and defaults that several layers and the light-weight interfaces (CLI parser, pytest options) share.

They live here, below everything, so that building the CLI's parser or registering the pytest plugin's
options imports neither torch nor transformers, and each fact still has one source.
"""

from __future__ import annotations

import re
from pathlib import Path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The name the packaged default ranker (the `default-model` extra) goes by."""
DEFAULT_AXIOMS = ("TFC1", "TDC", "LNC1", "STMC1", "NULL")
"""What an audit covers unless told otherwise: four behaviours and the NULL calibration control."""
SAMPLE_NAME = "bundled TREC DL 2019/2020 sample"
"""The name of the bundled data used when no data is given."""
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "trec-dl-sample.jsonl.gz"
"""Its file (JSON lines, gzipped), shipped in the package."""
RANKER_KIND_NAMES = ("bi", "cross", "t5", "llm", "sparse", "late")
"""The built-in ranker kinds, in the order models.rankers registers them (its RANKER_KINDS; a test keeps the two
equal): the CLI's --kind offers them without importing the rankers, torch and transformers."""
DEMO_MODELS = ("llm",)
"""The tiny random demo rankers `mechir-axioms demo-model` builds offline (models.demo)."""
DEFAULT_TOLERANCE = 1e-3
"""Pairs whose two scores differ by less than this are not patched: the metric's denominator is noise there."""
DEFAULT_BATCH_SIZE = 8
"""Sequences per forward pass when patching, unless told otherwise."""
CLEAN_RUN_BYTES = 2**30
"""What one process may hold of clean runs for reuse (patching.runs.CleanRuns): 1 GiB, least recently used
dropped first."""
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DTYPES = ("float32", "bfloat16", "float16")
"""Precisions a ranker may run in; float32 is the default and the one parity is tested in."""

EXECUTORS = ("local", "ray")
"""Where an audit's patching chunks run (executing.registry.EXECUTORS implements each; the CLI offers these)."""
INTERVENTION_OPS = ("ablate", "mean", "scale")
"""What an intervention does to the named heads' outputs (models.head_edits implements each)."""
VERDICTS = ("satisfied", "violated", "inconclusive")  # what an axiom's behaviour can be judged

AXIOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
AXIOM_NAME_RULE = "letters, digits and . _ + -, beginning with a letter or digit, without '..' or path separators"
"""What an axiom's name may be, wherever it is read (specs, the pytest plugin): it names folders of results."""


def is_axiom_name(name: object) -> bool:
    """Is `name` a plain axiom name (safe to join into a path: no separators, no '..', nothing absolute)?"""
    return isinstance(name, str) and bool(AXIOM_NAME.fullmatch(name)) and ".." not in name
