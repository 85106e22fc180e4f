"""The `mechir-axioms` arguments: one sub-command per job, the audit settings' flags derived from `Settings`."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Collection

from ..core.defaults import (DEFAULT_AXIOMS, DEMO_MODELS, DEVICES, DTYPES, EXECUTORS, INTERVENTION_OPS,
                             RANKER_KIND_NAMES, SAMPLE_NAME, VERDICTS)
from .commands import (_audit, _compare, _demo_model, _figure, _head_list, _intervene, _list, _pairs, _report,
                       _sae_train, _sweep, _verdicts)


def _with_defaults(command: argparse.ArgumentParser, **defaults: object) -> None:
    """Change some flags' defaults, and the "(default: ...)" their help shows, after _settings_flags added them."""
    for action in command._actions:
        if action.dest in defaults:
            value = defaults[action.dest]
            shown = (",".join(value) or "none") if isinstance(value, tuple) else value
            action.default = value
            action.help = re.sub(r"\(default: [^)]*\)$", f"(default: {shown})", action.help or "")


class _Given(argparse._StoreAction):
    """Stores a flag's value and notes that it was given (in `given`), which a default cannot tell: --resume takes
    the settings not given from the audit it continues."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _settings_flags(command: argparse.ArgumentParser) -> None:
    """One flag per audit setting, with the default, type and help that `Settings` declares; `--targets` is the
    old name of `--steps` (its "blocks" meant cells and blocks)."""
    from ..results.settings import flag_name, parse_names, setting_fields

    command.add_argument("--targets", dest="targets", type=parse_names, default=None, action=_Given,
                         help=argparse.SUPPRESS)
    for spec in setting_fields():
        meta = spec.metadata
        default = spec.default
        if meta["kind"] is tuple:
            command.add_argument(f"--{flag_name(spec.name)}", dest=spec.name, type=parse_names, action=_Given,
                                 default=tuple(default),
                                 help=f"{meta['help']} (default: {','.join(default) or 'none'})")
        else:
            kind = meta["kind"] if meta["kind"] in (int, float) else str
            command.add_argument(f"--{flag_name(spec.name)}", dest=spec.name, type=kind, default=default,
                                 action=_Given, choices=meta["choices"], help=meta["help"] + (f" (default: {default})" if default is not None else ""))


def _model_placement(command: argparse.ArgumentParser) -> None:
    command.add_argument("--kind", default=None, choices=list(RANKER_KIND_NAMES),
                         help="the ranker kind (default: inferred from the model folder)")
    command.add_argument("--device", default="cpu", help=f"where the model runs: {DEVICES} (default: cpu; auto picks "
                         "CUDA, then MPS, then the CPU)")
    command.add_argument("--dtype", default="float32", choices=DTYPES, help="the model's precision (default: float32)")


def _execution(command: argparse.ArgumentParser) -> None:
    command.add_argument("--executor", default="local", choices=list(EXECUTORS),
                         help="where patching chunks run: this process, or the workers of a Ray cluster (one actor per "
                         "GPU, or per --worker-threads CPUs); results are the same (default: local)")
    command.add_argument("--ray-address", default=None,
                         help="the Ray cluster to join (auto, ray://HOST:10001) (default: start a local one)")
    command.add_argument("--workers", type=int, default=None,
                         help="Ray workers (default: the cluster's GPUs, else its CPUs / --worker-threads)")
    command.add_argument("--worker-threads", type=int, default=None,
                         help="torch threads (and CPUs) per CPU worker (default: as many as this process uses, so that "
                         "results equal a local run bitwise)")

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; give a number of seconds above 0 (e.g. 30)")
        return value

    command.add_argument("--ray-timeout", type=seconds, default=30.0, metavar="SECONDS",
                         help="how long to wait for the Ray cluster at --ray-address (or RAY_ADDRESS) before giving up "
                         "(default: 30)")


def _threads(text: str) -> int:
    """--threads N: a whole number of at least 1, in the digits 0-9."""
    if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; give a whole number of threads of at least 1 (e.g. 4)")
    return int(text)


def _count(text: str) -> int:
    """A count of 0 or more, in the digits 0-9."""
    if not re.fullmatch(r"[0-9]{1,6}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; give a whole number of 0 or more (e.g. 3)")
    return int(text)


def _running(command: argparse.ArgumentParser) -> None:
    """How a command that loads a model runs on this machine: its torch threads and its progress bars."""
    command.add_argument("--threads", type=_threads, default=None, metavar="N",
                         help="torch threads of this process; on a shared or busy machine fewer threads than cores "
                         "can be many times faster (default: torch's own choice, one per core)")
    command.add_argument("--quiet", action="store_true",
                         help="show no progress bars, the model loading's included, e.g. for a log file; the "
                         "findings are printed as usual (default: off)")


def _axiom_folder(command: argparse.ArgumentParser) -> None:
    command.add_argument("--axiom-folder", action="append", default=[],
                         help="an extra folder of axiom specs; repeat for several (default: none, the packaged axioms)")


def _list_flags(listing: argparse.ArgumentParser) -> None:
    _axiom_folder(listing)
    listing.set_defaults(run=_list)


def _pairs_flags(pairs: argparse.ArgumentParser) -> None:
    from ..results.settings import Settings

    pairs.add_argument("--axioms", default=",".join(DEFAULT_AXIOMS),
                       help=f"comma-separated axiom names (default: {','.join(DEFAULT_AXIOMS)})")
    pairs.add_argument("--model", default=None, help="HF or sentence-transformers id or folder (default: packaged MiniLM)")
    pairs.add_argument("--data", default=None, help=f"JSONL/TSV/CSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    pairs.add_argument("--n", type=int, default=Settings.n, help=f"pairs per axiom (default: {Settings.n})")
    pairs.add_argument("--seed", type=int, default=Settings.seed, help=f"seed (default: {Settings.seed})")
    pairs.add_argument("--filler", default=None, help="override the baseline filler word (default: the axiom's own)")
    pairs.add_argument("--out", default="reports/pairs", help="folder for the saved pair sets (default: reports/pairs)")
    _axiom_folder(pairs)
    _model_placement(pairs)
    _running(pairs)
    pairs.set_defaults(run=_pairs)


def _audit_flags(auditing: argparse.ArgumentParser) -> None:
    _settings_flags(auditing)
    _model_placement(auditing)
    auditing.add_argument("--out", default="reports/audit",
                          help="folder for results and report.html (default: reports/audit)")
    auditing.add_argument("--resume", action="store_true", help="continue an interrupted audit in --out, with the settings "
                          "it started with (a setting flag given must agree with them) (default: off: start afresh)")
    auditing.add_argument("--fail-on", type=_verdicts, default=(), metavar="VERDICT[,VERDICT]",
                          help=f"exit with status 1 when an axiom's verdict is one of these ({', '.join(VERDICTS)}), "
                          "so that a CI job can gate on the audit alone (default: never)")
    _axiom_folder(auditing)
    _execution(auditing)
    _running(auditing)
    auditing.set_defaults(run=_audit)


def _sweep_flags(sweeping: argparse.ArgumentParser) -> None:
    _settings_flags(sweeping)
    _with_defaults(sweeping, axioms=("TFC1",), examples=0)
    _model_placement(sweeping)
    sweeping.add_argument("--vary", action="append", default=[], metavar="FACTOR=V1,V2",
                          help="a design choice and its values, one factor at a time around the spec: filler, position, "
                          "seed or baseline (default: three fillers, start and end, three seeds)")
    sweeping.add_argument("--out", default="reports/sweep",
                          help="folder for the variants' audits and report.html (default: reports/sweep)")
    sweeping.add_argument("--resume", action="store_true",
                          help="continue an interrupted sweep in --out (default: off: start afresh)")
    _axiom_folder(sweeping)
    _execution(sweeping)
    _running(sweeping)
    sweeping.set_defaults(run=_sweep)


def _report_flags(report: argparse.ArgumentParser) -> None:
    report.add_argument("folder", help="the audit's folder")
    report.set_defaults(run=_report)


def _compare_flags(comparing: argparse.ArgumentParser) -> None:
    comparing.add_argument("old", help="the baseline audit's folder")
    comparing.add_argument("new", help="the new checkpoint's audit folder")
    comparing.add_argument("--max-agreement-drop", type=float, default=0.05,
                           help="largest allowed fall in agreement (default: 0.05)")
    comparing.add_argument("--min-head-map-correlation", type=float, default=0.8,
                           help="smallest allowed Spearman correlation of the head-effect maps (default: 0.8)")
    comparing.add_argument("--max-lost-flags", type=int, default=0,
                           help="how many flagged heads may lose their flag; for audits of the same pairs, only flags "
                                "lost with a significant change of the head's effect count (default: 0)")
    comparing.add_argument("--allow-different-models", action="store_true",
                           help="compare audits of rankers of different kinds (default: off, refused)")
    comparing.add_argument("--allow-different-specs", action="store_true",
                           help="compare an axiom audited with different specs under one name (default: off, refused)")
    comparing.add_argument("--junit-xml", default=None,
                           help="also write the comparison as JUnit XML here (default: none)")
    comparing.add_argument("--html", default=None, metavar="PATH",
                           help="also write the comparison as a self-contained HTML report here (default: none)")
    comparing.set_defaults(run=_compare)


def _intervene_flags(intervening: argparse.ArgumentParser) -> None:
    from ..results.settings import INTERVENTION_DEFAULTS, parse_names

    changed = intervening.add_mutually_exclusive_group(required=True)
    changed.add_argument("--heads", type=_head_list, metavar="L.H[,L.H]",
                         help="the heads to change, as layer.head (e.g. 3.2,3.7)")
    changed.add_argument("--features", type=parse_names, metavar="SITE:LATENT[,...]",
                         help="the SAE features to change, as the features step names them (e.g. 3.resid_post:17), "
                         "of the SAEs given by --saes")
    intervening.add_argument("--op", default="ablate", choices=(*INTERVENTION_OPS, "steer"),
                             help="ablate: zero the heads' outputs (the features); mean: set heads to their mean over "
                             "--reference judged pairs; scale: multiply them by --factor; steer: add --factor to the "
                             "features at every position (default: ablate)")
    intervening.add_argument("--factor", type=float, default=None,
                             help="--op scale or steer: the factor (e.g. 2, or 0.5) (default: none; those ops need it)")
    intervening.add_argument("--reference", type=int, default=64,
                             help="--op mean: seeded judged pairs over which each head's mean output is taken (default: 64)")
    _settings_flags(intervening)
    _with_defaults(intervening, steps=INTERVENTION_DEFAULTS.steps, stability=INTERVENTION_DEFAULTS.stability)
    _model_placement(intervening)
    intervening.add_argument("--judged", default=None, metavar="PATH",
                             help="judged data to rank per query before and after (default: --data)")
    intervening.add_argument("--run", dest="ranking", default=None, metavar="PATH",
                             help="a run (qid, query, docno, text) to re-rank instead of each query's judged passages "
                             "(default: none)")
    intervening.add_argument("--chosen-by", default=None, metavar="DIR",
                             help="the saved audit that chose the heads or features: the report says how many of the "
                             "intervention's pairs and queries it also held (default: not compared)")
    intervening.add_argument("--out", default="reports/intervene",
                             help="folder for before/, after/, intervention.json, effectiveness.parquet and report.html "
                             "(default: reports/intervene)")
    _axiom_folder(intervening)
    _running(intervening)
    intervening.set_defaults(run=_intervene)


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (results.settings.parse_names, imported only when the flag is given)."""
    from ..results.settings import parse_names

    return parse_names(text)


def _figure_flags(figure: argparse.ArgumentParser) -> None:
    figure.add_argument("folders", nargs="+", metavar="DIR", help="saved audits' folders, one row each")
    figure.add_argument("--axioms", type=_names, default=None, help="comma-separated axioms, one column each "
                        "(default: those every audit has)")
    figure.add_argument("--out", action="append", required=True, help="the file to write; .pdf, .svg or .png picks the "
                        "format (repeat --out for several)")
    figure.add_argument("--frame", default="heads",
                        help="what each panel maps: heads (layer x head), cells (layer x block component x token "
                        "region) or any registered step with a map; features: the strongest SAE features per axiom as "
                        "bars; or circuit: one audit's flagged heads and paths for one axiom, as SVG (default: heads)")
    figure.add_argument("--unflagged", type=_count, default=0, metavar="N",
                        help="--frame circuit: also draw the N strongest unflagged edges, dashed (without it, an "
                        "axiom with no flagged edge has no circuit to draw and is refused) (default: 0)")
    figure.set_defaults(run=_figure)


def _sae_commands(sae: argparse.ArgumentParser) -> None:
    """`mechir-axioms sae train`: one flag per TrainingSettings field, with its default."""
    from dataclasses import fields

    from ..features.training_settings import TrainingSettings

    jobs = sae.add_subparsers(dest="sae_command", required=True)
    training = jobs.add_parser("train", help="train a TopK SAE (AuxK against dead latents) on one site's activations "
                               "and write it in SAELens's format")
    training.add_argument("--model", default=None, help="HF or sentence-transformers id or folder (default: packaged MiniLM)")
    training.add_argument("--site", required=True, help="the canonical hook name, e.g. blocks.3.hook_resid_post")
    training.add_argument("--data", default=None, help=f"JSONL/TSV/CSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    training.add_argument("--out", required=True, help="the SAE's folder (cfg.json, sae_weights.safetensors, "
                          "training.json)")
    training.add_argument("--resume", action="store_true",
                          help="continue an interrupted training run in --out (default: off: start afresh)")
    for spec in fields(TrainingSettings):
        kind = float if spec.name in ("lr", "aux_coefficient", "held_out") else int
        text = spec.metadata["help"]
        shown = "" if spec.default is None else f" (default: {spec.default:g})"
        training.add_argument(f"--{spec.name.replace('_', '-')}", dest=spec.name, type=kind, default=spec.default,
                              help=text + shown)
    _model_placement(training)
    _running(training)
    training.set_defaults(run=_sae_train)


def _demo_flags(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("kind", choices=DEMO_MODELS, help="the demo ranker: llm, a tiny random Qwen3 reranker (yes/no "
                      "logits) with a BPE trained on the bundled passages; its scores mean nothing")
    demo.add_argument("--out", required=True, help="a new folder for the model; load_ranker(DIR) and --model DIR "
                      "open it")
    demo.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    demo.set_defaults(run=_demo_model)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "list": ("show the axioms with their titles", _list_flags),
    "pairs": ("compile axioms into token-aligned paired datasets", _pairs_flags),
    "audit": ("audit a ranker on axioms and write an HTML report", _audit_flags),
    "sweep": ("audit axioms once per design variant; report which flags hold under all", _sweep_flags),
    "report": ("re-render report.html of a saved audit", _report_flags),
    "compare": ("compare two saved audits; exit 1 when a threshold is crossed", _compare_flags),
    "intervene": ("re-audit axioms and rank the judged data with and without an intervention on heads or SAE "
                  "features", _intervene_flags),
    "figure": ("draw saved audits as one figure: models x axioms, layer x head maps", _figure_flags),
    "sae": ("sparse autoencoders on a ranker's activations: train one", _sae_commands),
    "demo-model": ("build a tiny random demo ranker offline (llm: a Qwen3 reranker) to try a kind end to end",
                   _demo_flags),
}
"""Each command's one-line help and the function that adds its flags."""


def parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `mechir-axioms` parser. Given `commands`, only those get their flags; the others keep their name and
    help line, which is all the top-level --help shows. `main` builds only the command it runs, so that `list`, a
    saved audit's `report` and --help do not pay for what the model commands' flags import (the audit settings,
    results.settings: pandas). No command's flags import torch or transformers: --kind's choices and `sae train`'s
    settings come from core.defaults and features.training_settings."""
    main = argparse.ArgumentParser(prog="mechir-axioms", description=__doc__)
    subcommands = main.add_subparsers(dest="command", required=True)
    for name, (text, add_flags) in COMMANDS.items():
        command = subcommands.add_parser(name, help=text)
        if commands is None or name in commands:
            add_flags(command)
    return main
