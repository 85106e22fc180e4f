"""The `mechir-axioms` arguments: one sub-command per job, the audit settings' flags derived from `Settings`."""

from __future__ import annotations

import argparse
import re

from ..core.defaults import DEFAULT_AXIOMS, DEVICES, DTYPES, EXECUTORS, INTERVENTION_OPS, SAMPLE_NAME, VERDICTS
from ..results.settings import INTERVENTION_DEFAULTS, Settings, flag_name, parse_names, setting_fields
from .commands import (_audit, _compare, _figure, _head_list, _intervene, _list, _pairs, _report, _sae_train, _sweep,
                       _verdicts)


def _with_defaults(command: argparse.ArgumentParser, **defaults: object) -> None:
    """Change some flags' defaults, and the "(default: ...)" their help shows, after _settings_flags added them."""
    for action in command._actions:
        if action.dest in defaults:
            value = defaults[action.dest]
            shown = ",".join(value) if isinstance(value, tuple) else value
            action.default = value
            action.help = re.sub(r"\(default: [^)]*\)$", f"(default: {shown})", action.help or "")


def _settings_flags(command: argparse.ArgumentParser) -> None:
    """One flag per audit setting, with the default, type and help that `Settings` declares; `--targets` is the
    old name of `--steps` (its "blocks" meant cells and blocks)."""
    command.add_argument("--targets", dest="targets", type=parse_names, default=None, help=argparse.SUPPRESS)
    for spec in setting_fields():
        meta = spec.metadata
        default = spec.default
        if meta["kind"] is tuple:
            command.add_argument(f"--{flag_name(spec.name)}", dest=spec.name, type=parse_names,
                                 default=tuple(default), help=f"{meta['help']} (default: {','.join(default)})")
        else:
            kind = meta["kind"] if meta["kind"] in (int, float) else str
            command.add_argument(f"--{flag_name(spec.name)}", dest=spec.name, type=kind, default=default,
                                 choices=meta["choices"], help=meta["help"] + (f" (default: {default})" if default is not None else ""))


def _model_placement(command: argparse.ArgumentParser) -> None:
    from ..models.rankers import RANKER_KINDS

    command.add_argument("--kind", default=None, choices=list(RANKER_KINDS),
                         help="the ranker kind (default: inferred from the model folder)")
    command.add_argument("--device", default="cpu", help=f"where the model runs: {DEVICES} (default: cpu; auto picks "
                         "CUDA, then MPS, then the CPU)")
    command.add_argument("--dtype", default="float32", choices=DTYPES, help="the model's precision (default: float32)")


def _execution(command: argparse.ArgumentParser) -> None:
    command.add_argument("--executor", default="local", choices=list(EXECUTORS),
                         help="where patching chunks run: this process, or the workers of a Ray cluster (one actor per "
                         "GPU, or per --worker-threads CPUs); results are the same (default: local)")
    command.add_argument("--ray-address", default=None,
                         help="the Ray cluster to join (auto, ray://HOST:10001); default: start a local one")
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


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="mechir-axioms", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show the axioms with their titles")
    listing.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    listing.set_defaults(run=_list)
    pairs = commands.add_parser("pairs", help="compile axioms into token-aligned paired datasets")
    pairs.add_argument("--axioms", default=",".join(DEFAULT_AXIOMS), help="comma-separated axiom names")
    pairs.add_argument("--model", default=None, help="HF or sentence-transformers id or folder (default: packaged MiniLM)")
    pairs.add_argument("--data", default=None, help=f"JSONL/TSV/CSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    pairs.add_argument("--n", type=int, default=Settings.n, help=f"pairs per axiom (default: {Settings.n})")
    pairs.add_argument("--seed", type=int, default=Settings.seed, help=f"seed (default: {Settings.seed})")
    pairs.add_argument("--filler", default=None, help="override the baseline filler word")
    pairs.add_argument("--out", default="reports/pairs", help="folder for the saved pair sets")
    pairs.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    _model_placement(pairs)
    pairs.set_defaults(run=_pairs)
    auditing = commands.add_parser("audit", help="audit a ranker on axioms and write an HTML report")
    _settings_flags(auditing)
    _model_placement(auditing)
    auditing.add_argument("--out", default="reports/audit", help="folder for results and report.html")
    auditing.add_argument("--resume", action="store_true", help="continue an interrupted audit in --out")
    auditing.add_argument("--fail-on", type=_verdicts, default=(), metavar="VERDICT[,VERDICT]",
                          help=f"exit with status 1 when an axiom's verdict is one of these ({', '.join(VERDICTS)}), "
                          "so that a CI job can gate on the audit alone (default: never)")
    auditing.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    _execution(auditing)
    auditing.set_defaults(run=_audit)
    sweeping = commands.add_parser("sweep", help="audit axioms once per design variant; report which flags hold under all")
    _settings_flags(sweeping)
    _model_placement(sweeping)
    sweeping.set_defaults(axioms=("TFC1",), examples=0)
    sweeping.add_argument("--vary", action="append", default=[], metavar="FACTOR=V1,V2",
                          help="a design choice and its values, one factor at a time around the spec: filler, position, "
                          "seed or baseline (default: three fillers, start and end, three seeds)")
    sweeping.add_argument("--out", default="reports/sweep", help="folder for the variants' audits and report.html")
    sweeping.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    sweeping.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    _execution(sweeping)
    sweeping.set_defaults(run=_sweep)
    report = commands.add_parser("report", help="re-render report.html of a saved audit")
    report.add_argument("folder", help="the audit's folder")
    report.set_defaults(run=_report)
    comparing = commands.add_parser("compare", help="compare two saved audits; exit 1 when a threshold is crossed")
    comparing.add_argument("old", help="the baseline audit's folder")
    comparing.add_argument("new", help="the new checkpoint's audit folder")
    comparing.add_argument("--max-agreement-drop", type=float, default=0.05, help="largest allowed fall in agreement")
    comparing.add_argument("--min-head-map-correlation", type=float, default=0.8,
                           help="smallest allowed Spearman correlation of the head-effect maps")
    comparing.add_argument("--max-lost-flags", type=int, default=0,
                           help="how many flagged heads may lose their flag (default 0); for audits of the same "
                                "pairs, only flags lost with a significant change of the head's effect count")
    comparing.add_argument("--allow-different-models", action="store_true",
                           help="compare audits of rankers of different kinds (refused by default)")
    comparing.add_argument("--allow-different-specs", action="store_true",
                           help="compare an axiom audited with different specs under one name (refused by default)")
    comparing.add_argument("--junit-xml", default=None, help="also write the comparison as JUnit XML here")
    comparing.add_argument("--html", default=None, metavar="PATH",
                           help="also write the comparison as a self-contained HTML report here")
    comparing.set_defaults(run=_compare)
    intervening = commands.add_parser(
        "intervene", help="re-audit axioms and rank the judged data with and without an intervention on heads or SAE "
        "features")
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
                             help="--op scale or steer: the factor (e.g. 2, or 0.5)")
    intervening.add_argument("--reference", type=int, default=64,
                             help="--op mean: seeded judged pairs over which each head's mean output is taken (default: 64)")
    _settings_flags(intervening)
    _with_defaults(intervening, steps=INTERVENTION_DEFAULTS.steps, stability=INTERVENTION_DEFAULTS.stability)
    _model_placement(intervening)
    intervening.add_argument("--judged", default=None, metavar="PATH",
                             help="judged data to rank per query before and after (default: --data)")
    intervening.add_argument("--run", dest="ranking", default=None, metavar="PATH",
                             help="a run (qid, query, docno, text) to re-rank instead of each query's judged passages")
    intervening.add_argument("--out", default="reports/intervene",
                             help="folder for before/, after/, intervention.json, effectiveness.parquet and report.html")
    intervening.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    intervening.set_defaults(run=_intervene)
    figure = commands.add_parser("figure", help="draw saved audits as one figure: models x axioms, layer x head maps")
    figure.add_argument("folders", nargs="+", metavar="DIR", help="saved audits' folders, one row each")
    figure.add_argument("--axioms", type=parse_names, default=None, help="comma-separated axioms, one column each "
                        "(default: those every audit has)")
    figure.add_argument("--out", action="append", required=True, help="the file to write; .pdf, .svg or .png picks the "
                        "format (repeat --out for several)")
    figure.add_argument("--frame", default="heads",
                        help="what each panel maps: heads (layer x head), cells (layer x block component x token "
                        "region) or any registered step with a map; features: the strongest SAE features per axiom as "
                        "bars; or circuit: one audit's flagged heads and paths for one axiom, as SVG (default: heads)")
    figure.set_defaults(run=_figure)
    _sae_commands(commands)
    return main


def _sae_commands(commands: argparse._SubParsersAction) -> None:
    """`mechir-axioms sae train`: one flag per TrainingSettings field, with its default."""
    from dataclasses import fields

    from ..features.training import TrainingSettings

    sae = commands.add_parser("sae", help="sparse autoencoders on a ranker's activations: train one")
    jobs = sae.add_subparsers(dest="sae_command", required=True)
    training = jobs.add_parser("train", help="train a TopK SAE (AuxK against dead latents) on one site's activations "
                               "and write it in SAELens's format")
    training.add_argument("--model", default=None, help="HF or sentence-transformers id or folder (default: packaged MiniLM)")
    training.add_argument("--site", required=True, help="the canonical hook name, e.g. blocks.3.hook_resid_post")
    training.add_argument("--data", default=None, help=f"JSONL/TSV/CSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    training.add_argument("--out", required=True, help="the SAE's folder (cfg.json, sae_weights.safetensors, "
                          "training.json)")
    training.add_argument("--resume", action="store_true", help="continue an interrupted training run in --out")
    for spec in fields(TrainingSettings):
        kind = float if spec.name in ("lr", "aux_coefficient", "held_out") else int
        text = spec.metadata["help"]
        shown = "" if spec.default is None else f" (default: {spec.default:g})"
        training.add_argument(f"--{spec.name.replace('_', '-')}", dest=spec.name, type=kind, default=spec.default,
                              help=text + shown)
    _model_placement(training)
    training.set_defaults(run=_sae_train)
