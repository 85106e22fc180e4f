"""Write README.md's measured numbers from the benchmark records, so that the README cannot disagree with them.

The README holds no hand-typed measurement: each block between `<!-- generated: NAME -->` and
`<!-- end generated -->` is rendered here from benchmarks/results/ (benchmarks/record.py), and
tests/test_readme.py fails when a block is stale. Blocks:

- main-job: how long `mechir-axioms audit` (the main job) took, from audit-verified.json.
- sae: the default SAE's training time, quality and splice cost, from sae.json.
- sae-audit: the TFC1 feature audit with that SAE (exact against verified, the flagged features and what they fire
  on, their ablation on nDCG@10), from sae-audit.json.

    python scripts/readme_tables.py --check   # exit 1, naming the stale blocks, when README.md is out of date
    python scripts/readme_tables.py --write   # rewrite the blocks in place
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REGENERATE = "python scripts/readme_tables.py --write"
BLOCK = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


def _records() -> dict[str, dict[str, Any]]:
    """The benchmark records, read by benchmarks/record.py (loaded by path: benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("mechir_benchmark_record", ROOT / "benchmarks" / "record.py")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_records()


def main_job(records: dict[str, dict[str, Any]]) -> str:
    """The main job's time, date and machine, from its record (the first row's seconds)."""
    record = records["audit-verified"]
    seconds = record["rows"][0]["seconds"]
    machine = record["machine"]
    where = f"a {machine}" if machine.startswith("2-core") else machine
    return (f"On {where} this took {seconds:g} s ({seconds / 60:.1f} minutes) on {record['date']}\n"
            f"(`{record['command'].split(' --exact-from')[0]}`); timings on a machine shared with other work vary from run to run, see\n"
            "[Performance](docs/guide/performance.md#the-main-job).\n")


def sae(records: dict[str, dict[str, Any]]) -> str:
    """The default SAE's training time and quality, and what splicing it costs, from sae.json."""
    record = records["sae"]
    first, every = record["rows"][0], {row["judged data"]: row for row in record["rows"]}
    passages = next(row for name, row in every.items() if name.startswith("unseen passages"))
    return (f"Trained with the defaults ({first['latents']} latents, k = {first['k']}, {first['steps']} steps) in "
            f"{first['seconds (all)']:g} s ({record['machine']}, {record['date']}), the SAE leaves "
            f"{first['held-out FVU']:.3f} of the variance unexplained on held-out queries' texts (L0 {first['L0']:g}, "
            f"{first['dead latents']} dead latents). Spliced in, nDCG@10 on the judged TREC DL passages it did not "
            f"see is unchanged ({passages['nDCG@10 spliced']:.4f}); with the reconstruction alone in place of the "
            f"activation it falls from {passages['nDCG@10 plain']:.4f} to {passages['nDCG@10 reconstruction only']:.4f} "
            f"(see [what an SAE costs](docs/guide/performance.md#a-sparse-autoencoder-on-minilm)).\n")


def sae_audit(records: dict[str, dict[str, Any]]) -> str:
    """The feature audit: exact against verified, the flagged features with their top contexts, the ablation."""
    record = records["sae-audit"]
    exact, verified = record["rows"]
    tables = {table["title"].split(" (")[0]: table for table in record.get("tables", [])}
    found = next((table for title, table in tables.items() if title.startswith("Flagged features")), None)
    ablated = tables.get("The encoding features ablated")
    checked = record.get("details", {}).get("verification", {})
    below = checked.get("bound_below_threshold")
    shared = any("shared with" in note for note in record.get("notes", []) if note.startswith("The exact audit's"))
    lines = [f"On {exact['pairs']} TFC1 pairs, exact patching of every latent took {exact['seconds']:g} s"
             + (" (on cores shared with other work for part of it: an upper bound)" if shared else "") + " and "
             f"verified {verified['seconds']:g} s, {exact['seconds'] / verified['seconds']:.0f}x less "
             f"({record['machine']}, {record['date']}), with "
             f"{'the same' if verified['flags equal exact'] == 'yes' else 'DIFFERENT'} feature flags "
             f"({exact['flagged (encodes / violates)']} encoding / violating); verified patched "
             f"{verified['latents patched exactly']} latents exactly"
             + (f" in {checked['rounds']} rounds" if checked.get("rounds", 1) > 1 else "")
             + f", and its missed-flag bound is {verified['missed-flag bound']:g}"
             + ("" if below is None else f", {'below' if below else 'not below'} the threshold") + ". "]
    if found is not None:
        rows = found["rows"]
        lines.append(f"The verified audit of {found['title'].split('(')[1].split(')')[0]} flags "
                     f"{len(rows)} feature{'s' if len(rows) != 1 else ''}"
                     + (":\n\n| feature | flag | effect [95% CI] | fires | strongest contexts (firing token in brackets) |\n"
                        "|---|---|---|---|---|\n" + "".join(
                            f"| {row['feature']} | {row['flag']} | {row['effect']:+.3f} {row['95% CI']} | {row['fires']} | "
                            f"{row['top contexts'].replace('|', '<br>')} |\n" for row in rows) if rows else ".\n"))
    if ablated is not None:
        row = ablated["rows"][0]
        lines.append(f"\nAblating the encoding features ({row['intervention']}) changes nDCG@10 on {row['queries']} "
                     f"judged TREC DL queries ({row['passages']} passages) from {row['nDCG@10 before']:.4f} to "
                     f"{row['nDCG@10 after']:.4f} ({row['difference [95% CI]']}), and TFC1's agreement from "
                     f"{row['TFC1 agreement before']} to {row['TFC1 agreement after']}"
                     + (f" (measured {row['measured'].split(' (')[0]})" if row.get("measured", "this run") != "this run"
                        else "") + ".\n")
    return "".join(lines) if lines[-1].endswith("\n") else "".join(lines) + "\n"


def main_job_steps(records: dict[str, dict[str, Any]]) -> str:
    """The main job's seconds per step, before (benchmarks/results/audit-before.json) and now, all axioms summed."""
    def totals(name: str) -> dict[str, float]:
        table = next(table for table in records[name]["tables"] if table["title"].startswith("Seconds per axiom"))
        return next(row for row in table["rows"] if row["axiom"] == "all")

    before, now = totals("audit-before"), totals("audit-verified")
    steps = [column for column in now if column != "axiom"]
    steps += [column for column in before if column != "axiom" and column not in steps]
    head = (f"| step | before ({records['audit-before']['date']}) | now ({records['audit-verified']['date']}) |\n"
            "|---|---|---|\n")
    rows = "".join(f"| {step.removesuffix(' (s)')} | {before.get(step, '')} | {now.get(step, '')} |\n" for step in steps)
    total = (f"| **whole command** | **{records['audit-before']['rows'][0]['seconds']:g}** | "
             f"**{records['audit-verified']['rows'][0]['seconds']:g}** |\n")
    return head + rows + total


BLOCKS: dict[str, Callable[[dict[str, dict[str, Any]]], str]] = {"main-job": main_job, "main-job-steps": main_job_steps,
                                                                  "sae": sae, "sae-audit": sae_audit}


def render(text: str, records: dict[str, dict[str, Any]] | None = None) -> str:
    """`text` (the README) with every generated block rendered from the records; an unknown block is an error."""
    records = _records() if records is None else records

    def block(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"README.md: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name](records) + match.group(4)

    return BLOCK.sub(block, text)


def stale(text: str, records: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The names of the blocks whose text differs from what the records give."""
    rendered = {match.group(2): match.group(0) for match in BLOCK.finditer(render(text, records))}
    return [match.group(2) for match in BLOCK.finditer(text) if rendered[match.group(2)] != match.group(0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated block is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks")
    parser.add_argument("--readme", default=str(README), help="the README to check or write")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    if args.write:
        path.write_text(render(text), encoding="utf-8")
        return 0
    names = stale(text)
    for name in names:
        print(f"{path}: generated block {name!r} is stale; regenerate it with `{REGENERATE}`", file=sys.stderr)
    return 1 if names else 0


if __name__ == "__main__":
    sys.exit(main())
