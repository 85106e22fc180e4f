"""Benchmark: ablating the heads an audit of the TREC DL cross-encoder flags, and what that does to the axiom and
to nDCG@10, MRR@10 and MAP on the judged TREC DL passages.

It audits the cross-encoder on one axiom (unless --audit already holds that audit), takes the audit's suggested
`mechir-axioms intervene` command that ablates the heads violating the axiom (if none violates it, the same command
ablating the strongest encoding heads instead), points it at the judged data, runs it, and prints the axiom's
agreement and the measures before and after with their paired intervals and p-values, and the commands' timings;
writes the record benchmarks/results/intervene.json (benchmarks/record.py).

    python benchmarks/intervene.py [--axiom LNC1] [--audit benchmarks/results/intervene-audit] [--out reports/intervene-ce-lnc1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

from record import ROOT, markdown, write_record

from mechir_axioms import load_audit
from mechir_axioms.results.suggestions import Suggestion, intervene_command

TREC_DL = ROOT.parent / "shared" / "data" / "trec-dl-passages.jsonl.gz"
CROSS_ENCODER = ROOT.parent / "shared" / "models" / "minilm-l6-cross-encoder-trecdl"


def _timed(command: str) -> float:
    """Run a shell command line (failing loudly), returning its wall-clock seconds."""
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    subprocess.run(shlex.split(command), check=True)
    return time.perf_counter() - start


def _ablation(suggestions: list[Suggestion], axiom: str) -> tuple[str, str]:
    """The suggested command that ablates the axiom's violating heads, else one ablating its encoding heads."""
    for op in ("ablate", "scale"):
        chosen = [s for s in suggestions if s.axiom == axiom and s.op == op]
        if chosen:
            if op == "ablate":
                return chosen[0].command, "violating"
            arguments = shlex.split(chosen[0].command)
            model = arguments[arguments.index("--model") + 1] if "--model" in arguments else None
            n, seed = (int(arguments[arguments.index(flag) + 1]) for flag in ("--n", "--seed"))
            return intervene_command(chosen[0].heads, "ablate", [axiom], model=model, n=n, seed=seed), "encoding"
    raise SystemExit(f"the audit flags no head for {axiom}: nothing to intervene on")


def _percent(value: float) -> str:
    return f"{100 * value:+.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axiom", default="LNC1")
    parser.add_argument("--audit", default=str(ROOT / "benchmarks" / "results" / "intervene-audit"),
                        help="the audit's folder (audited first when absent)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "intervene-ce-lnc1"))
    args = parser.parse_args()
    audit_command = (f"mechir-axioms audit --model {CROSS_ENCODER} --axioms {args.axiom} --steps heads "
                     f"--out {args.audit}")
    audit_seconds = None if (Path(args.audit) / "manifest.json").is_file() else _timed(audit_command)
    flagged = load_audit(args.audit)
    if audit_seconds is None:
        audit_seconds = flagged.manifest["seconds"]
    suggested, which = _ablation(flagged.suggest_interventions(), args.axiom)
    arguments = shlex.split(suggested)
    del arguments[arguments.index("--out") : arguments.index("--out") + 2]  # the suggestion's folder, replaced
    command = shlex.join([*arguments, "--data", str(TREC_DL), "--out", args.out])
    intervene_seconds = _timed(command)
    facts = json.loads((Path(args.out) / "intervention.json").read_text())
    axiom_columns = ["axiom", "agreement before → after", "change [95% CI]", "paired p", "mean score change", "verdict"]
    axioms = [dict(zip(axiom_columns, [
        a["axiom"], f"{100 * a['agreement_before']:.1f}% → {100 * a['agreement_after']:.1f}%",
        f"{_percent(a['agreement_change'])} [{_percent(a['agreement_low'])}, {_percent(a['agreement_high'])}]",
        f"{a['agreement_p']:.2g}", f"{a['mean_before']:+.3f} → {a['mean_after']:+.3f}",
        f"{a['verdict_before']} → {a['verdict_after']}"])) for a in facts["axioms"]]
    measure_columns = ["measure", "before", "after", "change [95% CI]", "randomization p", "paired t-test p"]
    measures = [dict(zip(measure_columns, [
        m["measure"], f"{m['before']:.4f}", f"{m['after']:.4f}",
        f"{m['difference']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]", f"{m['p_value']:.2g}",
        f"{m['t_test_p']:.2g}"])) for m in facts["measures"]]
    timings = [{"command": f"`{audit_command}`", "seconds": round(audit_seconds)},
               {"command": f"`{command}`", "seconds": round(intervene_seconds)}]
    print(f"\n{facts['intervention']['label']} ({which} heads of {args.axiom}); {facts['passages']} judged passages of "
          f"{facts['queries']} queries\n")
    print(markdown(axiom_columns, axioms))
    print()
    print(markdown(measure_columns, measures))
    print()
    print(markdown(["command", "seconds"], timings))
    verb = "violate" if which == "violating" else "encode"
    write_record("intervene", axioms, axiom_columns,
                 title=f"Ablating the heads that {verb} {args.axiom} in the TREC DL cross-encoder",
                 notes=[f"{facts['intervention']['label']}. {facts['passages']:,} judged passages of {facts['queries']} "
                        "queries."],
                 tables=[{"title": "Ranking effectiveness before and after", "columns": measure_columns, "rows": measures},
                         {"title": "The two commands", "columns": ["command", "seconds"], "rows": timings}],
                 details={"audit_command": audit_command, "audit_seconds": round(audit_seconds, 1),
                          "intervene_command": command, "intervene_seconds": round(intervene_seconds, 1),
                          "heads_from": which, "intervention": facts["intervention"], "axioms": facts["axioms"],
                          "measures": facts["measures"], "queries": facts["queries"], "passages": facts["passages"]})


if __name__ == "__main__":
    main()
