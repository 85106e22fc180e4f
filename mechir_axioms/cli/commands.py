"""What each `mechir-axioms` command does with its parsed flags (the parser is built in cli.arguments)."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.defaults import DEFAULT_MODEL, SAMPLE_NAME, VERDICTS
from ..core.errors import SettingsError

if TYPE_CHECKING:
    from ..results.settings import Settings


def _list(args: argparse.Namespace) -> int:
    from ..specs.axiom import list_axioms

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


@contextmanager
def _running(args: argparse.Namespace) -> Iterator[None]:
    """A model command's --threads (torch's threads while it runs, restored after, for a caller in the same process)
    and --quiet (no progress bars from transformers or the Hub either: loading a model draws one)."""
    import torch

    threads = torch.get_num_threads()
    with ExitStack() as stack:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
            stack.callback(torch.set_num_threads, threads)
        if args.quiet:
            stack.enter_context(_library_bars_off())
        yield


@contextmanager
def _library_bars_off() -> Iterator[None]:
    """Hugging Face's progress bars (transformers' weight loading, the Hub's downloads) off, then as they were."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging

    hub_off, transformers_on = are_progress_bars_disabled(), logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        if transformers_on:
            logging.enable_progress_bar()
        if hub_off:
            disable_progress_bars()
        else:
            enable_progress_bars()


def _saved_audits(*folders: str) -> None:
    """A saved audit's folder that is not there is named as missing, before anything is read or imported."""
    for folder in folders:
        if not Path(folder).exists():
            raise SettingsError(f"{folder} does not exist; give the folder of a saved audit")


def _executor(args: argparse.Namespace):
    """The executor the flags ask for (this process, or a RayExecutor on --ray-address with --workers workers),
    to be closed by the command that uses it."""
    if args.executor == "local":
        for flag, value in (("--ray-address", args.ray_address), ("--workers", args.workers),
                            ("--worker-threads", args.worker_threads)):
            if value is not None:
                raise SettingsError(f"{flag} applies to --executor ray only; add --executor ray or leave {flag} out")
        from ..executing.base import LocalExecutor

        return LocalExecutor()
    from ..executing.cluster import RayExecutor

    return RayExecutor(args.ray_address, args.workers, args.worker_threads, connect_timeout=args.ray_timeout)


def settings_of(args: argparse.Namespace) -> Settings:
    """The audit Settings the flags give (`--targets`, the old name of `--steps`, translated)."""
    from ..results.settings import Settings, setting_fields
    from ..results.steps import steps_from_targets

    settings = Settings(**{spec.name: getattr(args, spec.name) for spec in setting_fields()})
    if getattr(args, "targets", None):
        settings = settings.but(steps=steps_from_targets(args.targets))
    return settings


def resumed_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """With --resume, the settings the audit in --out started with: a setting's flag given on the command line must
    agree with them (refused before the model loads, naming each flag that differs); one left out is taken from
    the folder, so `--out DIR --resume` alone continues any audit."""
    from ..auditing.checkpoints import saved_settings
    from ..results.settings import Settings, flag_name, setting_fields

    saved = saved_settings(args.out) if args.resume else None
    if saved is None:
        return settings
    known = {spec.name for spec in setting_fields()}
    folder = Settings().but(**{key: value for key, value in saved.items() if key in known})
    given = set(getattr(args, "given", ())) | ({"steps"} if "targets" in getattr(args, "given", ()) else set())
    differ = [f"--{flag_name(key)} {_shown(getattr(settings, key))} (the audit has {_shown(getattr(folder, key))})"
              for key in sorted(set(saved) & known & given) if getattr(settings, key) != getattr(folder, key)]
    if differ:
        raise SettingsError(f"cannot resume the audit in {args.out} with other settings: {'; '.join(differ)}; leave "
                            "these flags out to continue with the audit's own settings, or choose another --out")
    continued = {key: getattr(folder, key) for key in saved if key in known}
    defaults = {"model": DEFAULT_MODEL, "data": SAMPLE_NAME}  # saved by name; None loads the packaged copies
    return settings.but(**{**continued, **{key: None for key, name in defaults.items() if continued.get(key) == name}})


def _whose(folder: str) -> str:
    """What the audit in `folder` audits, for a refusal to write over it ("" when it holds none)."""
    from ..auditing.checkpoints import saved_settings

    saved = saved_settings(folder)
    if not saved:
        return ""
    return (f" (it holds the audit of {saved.get('model') or DEFAULT_MODEL} on {', '.join(saved.get('axioms', []))}: "
            "--resume continues that audit, with its settings)")


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def print_findings(audit) -> None:
    """Per axiom its verdict and agreement, then one line per step that ran (flag counts, verified heads, paths)."""
    for row in audit.axioms.itertuples():
        if getattr(row, "expect", "") == "no_change" and getattr(row, "margin", float("nan")) == row.margin:
            decided = (f"mean change {row.mean_delta:+.2g}, 90% interval [{row.tost_low:+.2g}, {row.tost_high:+.2g}] "
                       f"{'within' if row.verdict == 'satisfied' else 'not within'} +/-{row.margin:.2g} (TOST)")
        else:
            decided = f"agreement {row.agreement:6.1%} [{row.agreement_low:.1%}, {row.agreement_high:.1%}]"
        print(f"{row.axiom:<10} {row.verdict:<12} {decided}")
        for line in audit.step_lines(row.axiom):
            print(f"{'':<10} {line}")


def _audit(args: argparse.Namespace) -> int:
    from ..auditing.pipeline import audit, audit_folder, check_settings
    from ..models.loading import load_ranker
    from ..specs.axiom import load_axiom

    settings = check_settings(resumed_settings(args, settings_of(args)))
    axioms = [load_axiom(name, args.axiom_folder) for name in settings.axioms]
    try:
        audit_folder(args.out, args.resume).check()  # before the model loads
    except SettingsError as error:
        raise SettingsError(f"{error}{_whose(args.out)}") from error
    with _running(args), _executor(args) as executor, _warnings_printed():
        ranker = load_ranker(settings.model, kind=args.kind, device=args.device, dtype=args.dtype)
        result = audit(ranker, axioms, settings.data, settings, folder=args.out, resume=args.resume, executor=executor,
                       progress=not args.quiet)
    print_findings(result)
    print(f"report: {result.report_path}")
    work = Path(args.out) / "work"
    if work.is_dir():
        size = sum(path.stat().st_size for path in work.rglob("*") if path.is_file()) / 2**20
        print(f"checkpoints: {work} ({size:.1f} MiB), kept so that --resume recomputes nothing; the results above "
              "do not need them, so delete the folder once you are done")
    failing = [f"{row.axiom} ({row.verdict})" for row in result.axioms.itertuples() if row.verdict in args.fail_on]
    if failing:
        print(f"fail: {', '.join(failing)}; --fail-on {','.join(args.fail_on)} asks for exit status 1")
        return 1
    return 0


def _verdicts(text: str) -> tuple[str, ...]:
    """--fail-on violated,inconclusive as a tuple of verdicts, each checked against VERDICTS."""
    from ..results.settings import parse_names

    names = parse_names(text)
    unknown = [name for name in names if name not in VERDICTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)} is not a verdict; choose from {', '.join(VERDICTS)}")
    return names


def _vary(values: list[str]) -> dict[str, list]:
    """--vary filler=a,the,and --vary seed=0,1,2 as {factor: [values]} (seeds as integers), checked as `sweep`
    checks it (known factors, non-empty lists, seeds from 0 to 2**32 - 1) before any model loads."""
    from ..auditing.designs import SEED_MAX, SEED_RULE, check_vary
    from ..results.settings import parse_names

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
    from ..auditing.designs import default_vary, sweep, sweep_folder, variants_of
    from ..auditing.pipeline import check_settings
    from ..models.loading import load_ranker
    from ..specs.axiom import load_axiom

    settings = check_settings(settings_of(args))
    axioms = [load_axiom(name, args.axiom_folder) for name in settings.axioms]
    vary = _vary(args.vary) if args.vary else None
    for axiom in axioms:  # every variant is valid, and the folder writable, before the model loads
        variants_of(axiom, default_vary(axiom, settings.seed) if vary is None else vary, settings.seed)
    sweep_folder(args.out, args.resume).check()
    with _running(args), _executor(args) as executor, _warnings_printed():
        ranker = load_ranker(settings.model, kind=args.kind, device=args.device, dtype=args.dtype)
        options = {key: value for key, value in settings.describe().items()
                   if key not in ("axioms", "model", "data", "seed")}
        result = sweep(ranker, axioms, vary, settings.data, seed=settings.seed, folder=args.out, resume=args.resume,
                       executor=executor, progress=not args.quiet, **options)
    ran = settings.steps
    for row in result.variants.itertuples():
        heads = f"{row.encodes}/{row.violates}" if "heads" in ran else "not run"
        cells = f"{row.cells_encodes}/{row.cells_violates}" if "cells" in ran else "not run"
        print(f"{row.axiom:<8} {row.variant:<18} {row.verdict:<12} agreement {row.agreement:6.1%}  "
              f"heads {heads}  cells {cells}")
    for axiom in result.variants["axiom"].unique():
        held = (", ".join(result.holding(axiom)) or "none") if "heads" in ran else "not run"
        print(f"{axiom}: heads flagged under every variant: {held}")
    print(f"report: {result.report_path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    _saved_audits(args.folder)
    from ..results.audit import rerender

    print(f"report: {rerender(args.folder)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    _saved_audits(args.old, args.new)
    from ..comparing import compare
    from ..core.outputs import check_file

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
    from ..models.head_edits import parse_heads

    try:
        heads = parse_heads(text)
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if not heads:
        raise argparse.ArgumentTypeError(f"{text!r} names no head; write LAYER.HEAD[,LAYER.HEAD...] (e.g. 3.2,3.7)")
    return heads


def _check_intervention_flags(args: argparse.Namespace) -> None:
    """--factor goes with --op scale (and steer, for features) only, which need it; --reference is a positive
    count; features need --saes and cannot take the mean."""
    factored = ("scale", "steer") if args.features is not None else ("scale",)
    if args.features is not None and args.op == "mean":
        raise SettingsError("--op mean applies to --heads; for --features use ablate, scale or steer")
    if args.heads is not None and args.op == "steer":
        raise SettingsError("--op steer applies to --features; for --heads use ablate, mean or scale")
    if args.features is not None and not args.saes:
        raise SettingsError("--features needs the folders of their SAEs: --saes DIR[,DIR]")
    if args.heads is not None and args.saes and "features" not in args.steps:
        raise SettingsError(f"--saes {','.join(args.saes)} is given with --heads: the SAEs name --features to "
                            "change, or add --steps ...,features to audit their features too")
    if args.op in factored and args.factor is None:
        raise SettingsError(f"--op {args.op} needs --factor (e.g. --factor 2)")
    if args.op not in factored and args.factor is not None:
        raise SettingsError(f"--factor applies to --op {' or '.join(factored)} only; leave it out for --op {args.op}")
    if args.reference < 1:
        raise SettingsError(f"--reference {args.reference} is not valid; use a number of reference pairs of at least 1")


def _intervene(args: argparse.Namespace) -> int:
    from ..assessing import assess_intervention
    from ..features.files import load_sae
    from ..features.interventions import parse_features
    from ..results.intervention import intervention_folder
    from ..models.head_edits import check_heads
    from ..models.loading import load_ranker
    from ..specs.axiom import load_axiom

    _check_intervention_flags(args)
    settings = settings_of(args)
    axioms = [load_axiom(name, args.axiom_folder) for name in settings.axioms]
    intervention_folder(args.out).check()  # before the model loads
    chooser = None
    if args.chosen_by is not None:
        from ..results.audit import load_audit

        _saved_audits(args.chosen_by)
        chooser = load_audit(args.chosen_by)  # a missing or unfinished audit fails before the model loads
    features = []
    if args.features is not None:
        saes = [load_sae(folder) for folder in settings.saes]  # bad SAE folders and names fail before the model loads
        features = parse_features(args.features, saes)
    with _running(args), _warnings_printed():
        ranker = load_ranker(settings.model, kind=args.kind, device=args.device, dtype=args.dtype)
        if not features:
            try:
                check_heads(ranker, args.heads)
            except SettingsError as error:
                raise SettingsError(f"--heads {','.join(f'{l}.{h}' for l, h in args.heads)}: {error}") from error
        result = assess_intervention(ranker, args.heads or (), args.op, args.factor, axioms, settings.data,
                                     settings.n, settings.seed, judged=args.judged, run=args.ranking,
                                     reference=args.reference, settings=settings, folder=args.out, features=features,
                                     progress=not args.quiet, chosen_by=chooser)
    print(result.table())
    print(f"report: {result.report_path}")
    return 0


def _sae_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..features.training import TrainingSettings, sae_folder, train_sae
    from ..models.loading import load_ranker

    settings = TrainingSettings(**{spec.name: getattr(args, spec.name) for spec in fields(TrainingSettings)})
    sae_folder(args.out, args.resume).check()  # bad settings and folders fail before the model loads
    with _running(args), _warnings_printed():
        ranker = load_ranker(args.model, kind=args.kind, device=args.device, dtype=args.dtype)
        sae, facts = train_sae(ranker, args.site, args.data, settings, out=args.out, resume=args.resume,
                               progress=not args.quiet)
    held = facts["held_out"]
    print(f"{sae.hook_name}: {sae.config.d_sae} latents, k {sae.config.k}, trained on {facts['training_tokens']} "
          f"tokens in {facts['seconds']:.0f} s")
    print(f"held out ({held['tokens']} tokens of unseen queries): fraction of variance unexplained {held['fvu']:.3f}, "
          f"L0 {held['l0']:.1f}, dead latents {held['dead_share']:.1%}")
    print(f"sae: {args.out}")
    return 0


def _figure(args: argparse.Namespace) -> int:
    _saved_audits(*args.folders)
    from ..plot import write_grid

    if args.unflagged and args.frame != "circuit":
        raise SettingsError("--unflagged draws unflagged edges of a circuit; it applies to --frame circuit only")
    for path in write_grid(args.folders, args.out, args.axioms, args.frame, args.unflagged):
        print(f"figure: {path}")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from ..core.outputs import OutputFolder
    from ..models.loading import load_ranker
    from ..pairs.compile import make_pairs
    from ..results.settings import parse_names
    from ..specs.axiom import load_axiom

    axioms = [load_axiom(name, args.axiom_folder) for name in parse_names(args.axioms)]
    output = OutputFolder(args.out, "pairs", "replace")
    output.check()  # before the model loads
    with _running(args):
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


def _demo_model(args: argparse.Namespace) -> int:
    from ..models.demo import demo_model

    print(f"demo model: {demo_model(args.kind, args.out, args.seed)} (random weights: try it with "
          f"`mechir-axioms audit --model {args.out} --n 20 --steps heads`)")
    return 0
