"""The `mechir-axioms` command: list axioms, and compile axioms into paired datasets."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .data import SAMPLE_NAME


def _list(args: argparse.Namespace) -> int:
    from .spec import list_axioms

    axioms = list_axioms(args.axiom_folder)
    width = max(len(axiom.name) for axiom in axioms)
    for axiom in axioms:
        print(f"{axiom.name:<{width}}  {axiom.expect:<12}  {axiom.title}")
    return 0


def _pairs(args: argparse.Namespace) -> int:
    from .loading import load_ranker
    from .pairs import make_pairs
    from .spec import load_axiom

    axioms = [load_axiom(name.strip(), args.axiom_folder) for name in args.axioms.split(",")]
    ranker = load_ranker(args.model)
    out = Path(args.out)
    for axiom in axioms:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pairs = make_pairs(axiom, args.data, ranker, n=args.n, seed=args.seed, filler=args.filler)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        folder = pairs.save(out / axiom.name)
        scored = pairs.score(ranker)
        dropped = ", ".join(f"{reason} ({count})" for reason, count in pairs.dropped.items()) or "none"
        print(
            f"{axiom.name}: {len(pairs)} pairs -> {folder}\n"
            f"  expect {axiom.expect}; mean score change {scored['delta'].mean():+.4f}, "
            f"rose in {(scored['delta'] > 0).mean():.0%} of pairs\n"
            f"  dropped: {dropped}"
        )
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="mechir-axioms", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show the axioms with their titles")
    listing.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    listing.set_defaults(run=_list)
    pairs = commands.add_parser("pairs", help="compile axioms into token-aligned paired datasets")
    pairs.add_argument("--axioms", default="TFC1,TDC,LNC1,STMC1,NULL", help="comma-separated axiom names")
    pairs.add_argument("--model", default=None, help="HF or sentence-transformers id or folder (default: packaged MiniLM)")
    pairs.add_argument("--data", default=None, help=f"JSONL/TSV/Parquet path or irds:ID (default: {SAMPLE_NAME})")
    pairs.add_argument("--n", type=int, default=200, help="pairs per axiom")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--filler", default=None, help="override the baseline filler word")
    pairs.add_argument("--out", default="reports/pairs", help="folder for the saved pair sets")
    pairs.add_argument("--axiom-folder", action="append", default=[], help="an extra folder of axiom specs")
    pairs.set_defaults(run=_pairs)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError, FileNotFoundError, OSError, ModuleNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mechir-axioms: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
