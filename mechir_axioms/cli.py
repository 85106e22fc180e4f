"""The `mechir-axioms` command: list axioms, compile them into pairs, audit a ranker, render reports."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .auditing.settings import Settings, flag_name, parse_names, setting_fields
from .core.defaults import DEFAULT_AXIOMS, DEVICES, DTYPES, EXECUTORS, INTERVENTION_OPS, SAMPLE_NAME, VERDICTS
from .core.errors import MechirError, SettingsError


def _list(args: argparse.Namespace) -> int:
    from .specs.axiom import list_axioms

    axioms = list_axioms(args.axiom_folder)
    width = max(len(axiom.name) for axiom in axioms)
    for axiom in axioms:
        print(f"{axiom.name:<{width}}  {axiom.expect:<12}  {axiom.title}")
    return 0


@contextmanager
def _warnings_printed() -> Iterator[None]:
    """Show library warnings (fewer pairs than asked, truncated texts) as one line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                if not issubclass(warning.category, DeprecationWarning):
                    print(f"warning: {warning.message}", file=sys.stderr)


def _executor(args: argparse.Namespace):
    """The executor the flags ask for (this process, or a RayExecutor on --ray-address with --workers workers),
    to be closed by the command that uses it."""
    if args.executor == "local":
        for flag, value in (("--ray-address", args.ray_address), ("--workers", args.workers),
                            ("--worker-threads", args.worker_threads)):
            if value is not None:
                raise SettingsError(f"{flag} applies to --executor ray only; add --executor ray or leave {flag} out")
        from .executing.base import LocalExecutor

        return LocalExecutor()
    from .executing.cluster import RayExecutor

    return RayExecutor(args.ray_address, args.workers, args.worker_threads, connect_timeout=args.ray_timeout)


def _audit(args: argparse.Namespace) -> int:
    from .auditing.run import audit, audit_folder
    from .models.loading import load_ranker
    from .specs.axiom import load_axiom

    settings = Settings(**{spec.name: getattr(args, spec.name) for spec in setting_fields()})
    axioms = [load_axiom(name, args.axiom_folder) for name in settings.axioms]
    audit_folder(args.out, args.resume).check()  # before the model loads
    with _executor(args) as executor, _warnings_printed():
        ranker = load_ranker(settings.model, kind=args.kind, device=args.device, dtype=args.dtype)
        options = {key: value for key, value in settings.describe().items() if key not in ("axioms", "model", "data")}
        result = audit(ranker, axioms, settings.data, **{**options, "targets": settings.targets},
                       folder=args.out, resume=args.resume, executor=executor)
    targets = result.manifest["settings"]["targets"]
    for row in result.axioms.itertuples():
        found = [f"{label} encoding {encodes}, violating {violates}" for label, target, encodes, violates in (
            ("heads", "heads", row.encodes, row.violates), ("block cells", "blocks", row.cells_encodes, row.cells_violates),
        ) if target in targets]
        print(f"{row.axiom:<10} {row.verdict:<12} agreement {row.agreement:6.1%} "
              f"[{row.agreement_low:.1%}, {row.agreement_high:.1%}]  {'; '.join(found)}")
        facts = result.manifest["axioms"][row.axiom].get("verification")
        if facts:
            below = "below" if facts["bound_below_threshold"] else "NOT below"
            print(f"{'':<10} heads verified exactly: {', '.join(facts['verified']) or 'none'}; missed-flag bound "
                  f"{facts['missed_flag_bound']:.3f}, {below} the threshold {result.manifest['settings']['threshold']}")
        if "paths" in targets:
            edges = result.flagged(row.axiom, frame="paths")
            print(f"{'':<10} paths flagged ({result.manifest['axioms'][row.axiom]['paths']['edges']} measured): "
                  f"{', '.join(f'{edge.sender}>{edge.receiver}' for edge in edges.itertuples()) or 'none'}")
    print(f"report: {result.report_path}")
    failing = [f"{row.axiom} ({row.verdict})" for row in result.axioms.itertuples() if row.verdict in args.fail_on]
    if failing:
        print(f"fail: {', '.join(failing)}; --fail-on {','.join(args.fail_on)} asks for exit status 1")
        return 1
    return 0


def _verdicts(text: str) -> tuple[str, ...]:
    """--fail-on violated,inconclusive as a tuple of verdicts, each checked against VERDICTS."""
    names = parse_names(text)
    unknown = [name for name in names if name not in VERDICTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)} is not a verdict; choose from {', '.join(VERDICTS)}")
    return names


def _vary(values: list[str]) -> dict[str, list]:
    """--vary filler=a,the,and --vary seed=0,1,2 as {factor: [values]} (seeds as integers), checked as `sweep`
    checks it (known factors, non-empty lists, seeds from 0 to 2**32 - 1) before any model loads."""
    from .auditing.sweep import SEED_MAX, SEED_RULE, check_vary

    vary: dict[str, list] = {}
    for item in values:
        factor, _, listed = item.partition("=")
        if not listed:
            raise SettingsError(f"--vary {item!r} is not valid; write factor=value,value (e.g. filler=a,the,and)")
        names = list(parse_names(listed))
        if factor.strip() == "seed":  # ASCII digits only: str.isdigit and int() also take '²' or '٣'
            if not all(re.fullmatch(r"[0-9]{1,10}", name) and int(name) <= SEED_MAX for name in names):
                raise SettingsError(f"--vary {item!r} is not valid; {SEED_RULE}, written in the digits 0-9")
            names = [int(name) for name in names]
        vary[factor.strip()] = names
    check_vary(vary)
    return vary


def _sweep(args: argparse.Namespace) -> int:
    from .auditing.sweep import default_vary, sweep, sweep_folder, variants_of
    from .models.loading import load_ranker
    from .specs.axiom import load_axiom

    settings = Settings(**{spec.name: getattr(args, spec.name) for spec in setting_fields()})
    axioms = [load_axiom(name, args.axiom_folder) for name in settings.axioms]
    vary = _vary(args.vary) if args.vary else None
    for axiom in axioms:  # every variant is valid, and the folder writable, before the model loads
        variants_of(axiom, default_vary(axiom, settings.seed) if vary is None else vary, settings.seed)
    sweep_folder(args.out, args.resume).check()
    with _executor(args) as executor, _warnings_printed():
        ranker = load_ranker(settings.model, kind=args.kind, device=args.device, dtype=args.dtype)
        options = {key: value for key, value in settings.describe().items() if key not in ("axioms", "model", "data", "seed")}
        result = sweep(ranker, axioms, vary, settings.data, seed=settings.seed, folder=args.out, resume=args.resume,
                       executor=executor, **{**options, "targets": settings.targets})
    for row in result.variants.itertuples():
        print(f"{row.axiom:<8} {row.variant:<18} {row.verdict:<12} agreement {row.agreement:6.1%}  "
              f"heads {row.encodes}/{row.violates}  cells {row.cells_encodes}/{row.cells_violates}")
    for axiom in result.variants["axiom"].unique():
        print(f"{axiom}: heads flagged under every variant: {', '.join(result.holding(axiom)) or 'none'}")
    print(f"report: {result.report_path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .auditing.result import rerender

    print(f"report: {rerender(args.folder)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .comparing import compare
    from .core.outputs import check_file

    for flag, path in (("--junit-xml", args.junit_xml), ("--html", args.html)):
        if path:
            check_file(path, "compare", flag)  # before the audits are read
    comparison = compare(args.old, args.new, args.max_agreement_drop, args.min_head_map_correlation, args.max_lost_flags,
                         allow_different_models=args.allow_different_models,
                         allow_different_specs=args.allow_different_specs)
    print(comparison.table())
    if args.junit_xml:
        print(f"junit: {comparison.to_junit(args.junit_xml)}")
    if args.html:
        print(f"html: {comparison.to_html(args.html)}")
    return 0 if comparison.ok else 1


def _head_list(text: str) -> tuple[tuple[int, int], ...]:
    """--heads 3.2,3.7 as (layer, head) pairs; a malformed head is argparse's error naming the flag."""
    from .models.interventions import parse_heads

    try:
        heads = parse_heads(text)
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if not heads:
        raise argparse.ArgumentTypeError(f"{text!r} names no head; write LAYER.HEAD[,LAYER.HEAD...] (e.g. 3.2,3.7)")
    return heads


def _check_intervention_flags(args: argparse.Namespace) -> None:
    """--factor goes with --op scale only, which needs it; --reference is a positive count."""
    if args.op == "scale" and args.factor is None:
        raise SettingsError("--op scale needs --factor (e.g. --factor 2)")
    if args.op != "scale" and args.factor is not None:
        raise SettingsError(f"--factor applies to --op scale only; leave it out for --op {args.op}")
    if args.reference < 1:
        raise SettingsError(f"--reference {args.reference} is not valid; use a number of reference pairs of at least 1")


def _intervene(args: argparse.Namespace) -> int:
    from .intervening import assess_intervention, intervention_folder
    from .models.interventions import check_heads
    from .models.loading import load_ranker
    from .specs.axiom import load_axiom

    _check_intervention_flags(args)
    settings = Settings(**{spec.name: getattr(args, spec.name) for spec in setting_fields()})
    axioms = [load_axiom(name, args.axiom_folder) for name in settings.axioms]
    intervention_folder(args.out).check()  # before the model loads
    with _warnings_printed():
        ranker = load_ranker(settings.model, kind=args.kind, device=args.device, dtype=args.dtype)
        try:
            check_heads(ranker, args.heads)
        except SettingsError as error:
            raise SettingsError(f"--heads {','.join(f'{l}.{h}' for l, h in args.heads)}: {error}") from error
        options = {key: value for key, value in settings.describe().items()
                   if key not in ("axioms", "model", "data", "n", "seed")}
        result = assess_intervention(ranker, args.heads, args.op, args.factor, axioms, settings.data, settings.n,
                                     settings.seed, judged=args.judged, run=args.ranking, reference=args.reference,
                                     folder=args.out, **{**options, "targets": settings.targets})
    print(result.table())
    print(f"report: {result.report_path}")
    return 0


def _with_defaults(command: argparse.ArgumentParser, **defaults: object) -> None:
    """Change some flags' defaults, and the "(default: ...)" their help shows, after _settings_flags added them."""
    for action in command._actions:
        if action.dest in defaults:
            value = defaults[action.dest]
            shown = ",".join(value) if isinstance(value, tuple) else value
            action.default = value
            action.help = re.sub(r"\(default: [^)]*\)$", f"(default: {shown})", action.help or "")


def _figure(args: argparse.Namespace) -> int:
    from .plot import write_grid

    for path in write_grid(args.folders, args.out, args.axioms, args.frame):
        print(f"figure: {path}")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from .core.outputs import OutputFolder
    from .models.loading import load_ranker
    from .pairs.compile import make_pairs
    from .specs.axiom import load_axiom

    axioms = [load_axiom(name, args.axiom_folder) for name in parse_names(args.axioms)]
    output = OutputFolder(args.out, "pairs", "replace")
    output.check()  # before the model loads
    with _warnings_printed():
        ranker = load_ranker(args.model, kind=args.kind, device=args.device, dtype=args.dtype)
    with output as out:
        for axiom in axioms:
            with _warnings_printed():
                pairs = make_pairs(axiom, args.data, ranker, n=args.n, seed=args.seed, filler=args.filler)
            folder = pairs.save(out.at(axiom.name))
            scored = pairs.score(ranker)
            dropped = ", ".join(f"{reason} ({count})" for reason, count in pairs.dropped.items()) or "none"
            print(
                f"{axiom.name}: {len(pairs)} pairs -> {folder}\n"
                f"  expect {axiom.expect}; mean score change {scored['delta'].mean():+.4f}, "
                f"rose in {(scored['delta'] > 0).mean():.0%} of pairs\n"
                f"  dropped: {dropped}"
            )
    return 0


def _settings_flags(command: argparse.ArgumentParser) -> None:
    """One flag per audit setting, with the default, type and help that `Settings` declares."""
    for spec in setting_fields():
        meta = spec.metadata
        default = meta["cli_default"]
        if meta["kind"] is tuple:
            command.add_argument(f"--{flag_name(spec.name)}", dest=spec.name, type=parse_names,
                                 default=tuple(default), help=f"{meta['help']} (default: {','.join(default)})")
        else:
            kind = meta["kind"] if meta["kind"] in (int, float) else str
            command.add_argument(f"--{flag_name(spec.name)}", dest=spec.name, type=kind, default=default,
                                 choices=meta["choices"], help=meta["help"] + (f" (default: {default})" if default is not None else ""))


def _model_placement(command: argparse.ArgumentParser) -> None:
    from .models.rankers import RANKER_KINDS

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
                           help="how many flagged heads may lose their flag (default 0)")
    comparing.add_argument("--allow-different-models", action="store_true",
                           help="compare audits of rankers of different kinds (refused by default)")
    comparing.add_argument("--allow-different-specs", action="store_true",
                           help="compare an axiom audited with different specs under one name (refused by default)")
    comparing.add_argument("--junit-xml", default=None, help="also write the comparison as JUnit XML here")
    comparing.add_argument("--html", default=None, metavar="PATH",
                           help="also write the comparison as a self-contained HTML report here")
    comparing.set_defaults(run=_compare)
    intervening = commands.add_parser(
        "intervene", help="re-audit axioms and rank the judged data with and without an intervention on heads")
    intervening.add_argument("--heads", type=_head_list, required=True, metavar="L.H[,L.H]",
                             help="the heads to change, as layer.head (e.g. 3.2,3.7)")
    intervening.add_argument("--op", default="ablate", choices=INTERVENTION_OPS,
                             help="ablate: zero the heads' outputs; mean: set them to their mean over --reference judged "
                             "pairs; scale: multiply them by --factor (default: ablate)")
    intervening.add_argument("--factor", type=float, default=None, help="--op scale: the factor (e.g. 2, or 0.5)")
    intervening.add_argument("--reference", type=int, default=64,
                             help="--op mean: seeded judged pairs over which each head's mean output is taken (default: 64)")
    _settings_flags(intervening)
    _with_defaults(intervening, method="attribution", targets=("heads",), stability=0)
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
                        help="what each panel maps: heads (layer x head) or cells (layer x block component x token "
                        "region); or circuit: one audit's flagged heads and paths for one axiom, as SVG (default: heads)")
    figure.set_defaults(run=_figure)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (MechirError, OSError) as error:  # a user's mistake, or the file system's: one sentence, exit 2
        print(f"mechir-axioms: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mechir-axioms: interrupted; {_what_was_kept(args)}", file=sys.stderr)
        return 130


def _what_was_kept(args: argparse.Namespace) -> str:
    """After Ctrl-C: whether the output folder keeps finished steps (a resumable audit or sweep) or nothing."""
    from .core.outputs import LEDGER

    out = getattr(args, "out", None)
    if args.command in ("audit", "sweep") and isinstance(out, str) and (Path(out) / LEDGER).is_file():
        return f"the finished steps are kept in {out}: run the same command with --resume to continue"
    if isinstance(out, str):
        return f"nothing was written to {out}"
    return "nothing was written"


if __name__ == "__main__":
    sys.exit(main())
