"""The `mechir-axioms` command: list axioms, compile them into pairs, audit a ranker, render reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import MechirError
from .arguments import parser

__all__ = ["main", "parser"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv[:1]).parse_args(argv)  # only the command given gets its flags: `list` and --help stay light
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
    from ..core.outputs import LEDGER

    out = getattr(args, "out", None)
    if args.command in ("audit", "sweep") and isinstance(out, str) and (Path(out) / LEDGER).is_file():
        return f"the finished steps are kept in {out}: run the same command with --resume to continue"
    if isinstance(out, str):
        return f"nothing was written to {out}"
    return "nothing was written"

