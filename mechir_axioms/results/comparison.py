"""`Comparison`: two audits compared axiom by axiom (agreement, head maps, flags), with the gate's verdict."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import SettingsError
from ..core.outputs import check_file, write_file
from .audit import Audit
from .pages import render_page
from .steps import STEPS


@dataclass
class AxiomComparison:
    """One axiom in both audits: agreement change, head-map correlation, flags gained and lost."""

    axiom: str
    agreement_old: float
    agreement_new: float
    difference_low: float
    difference_high: float
    correlation: float
    gained: list[str]
    lost: list[str]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    changes: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    """Flags gained and lost by the other flagged steps both audits ran (block cells, edges, ...), by step: shown,
    not gated (the thresholds are about heads)."""
    paired: bool = False
    """Whether both audits scored the same pairs, so that the agreement interval is paired (a cluster bootstrap of
    the per-pair differences) rather than Newcombe's for two independent samples."""
    heads_tested: bool = False
    """Whether each head's effect change was tested pair by pair; then only flags lost with a significant change
    (marked with a dagger) count toward max_lost_flags."""

    @property
    def significant(self) -> bool:
        """Whether the 95% interval of the agreement difference excludes 0."""
        return self.difference_low > 0 or self.difference_high < 0

    @property
    def change(self) -> float:
        """The agreement change, new - old (NaN when the axiom is missing from the new audit)."""
        return self.agreement_new - self.agreement_old


@dataclass
class Comparison:
    """The comparison of two audits; `ok` is False when any threshold is crossed."""

    old: str
    new: str
    axioms: list[AxiomComparison]
    max_agreement_drop: float
    min_head_map_correlation: float
    max_lost_flags: int
    old_audit: Audit | None = field(default=None, repr=False, compare=False)
    """The audits compared, kept so that `to_html` can draw their head maps (None when built by hand)."""
    new_audit: Audit | None = field(default=None, repr=False, compare=False)

    @property
    def failures(self) -> list[str]:
        return [failure for axiom in self.axioms for failure in axiom.failures]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        """PASS, or FAIL with the number of thresholds crossed: the last word of the table and the report."""
        return "PASS" if self.ok else f"FAIL ({len(self.failures)} threshold(s) crossed)"

    @property
    def thresholds(self) -> str:
        """The thresholds in words, as the table and the report state them."""
        tested = " with a significant change" if any(axiom.heads_tested for axiom in self.axioms) else ""
        return (f"agreement may drop by at most {self.max_agreement_drop:.1%}; "
                f"head-map Spearman rho at least {self.min_head_map_correlation}; "
                f"at most {self.max_lost_flags} flagged head(s) may lose their flag{tested}")

    def table(self) -> str:
        """A plain-text table, one block per axiom, and the verdict."""
        lines = [f"mechir-axioms compare\n  old: {self.old}\n  new: {self.new}", ""]
        header = f"{'axiom':<10} {'agreement old -> new':<22} {'change [95% CI]':<26} {'head-map rho':>12}  status"
        lines += [header, "-" * len(header)]
        for axiom in self.axioms:
            change = axiom.change
            interval = f"{change:+.1%} [{axiom.difference_low:+.1%}, {axiom.difference_high:+.1%}]"
            mark = " *" if axiom.significant else ""
            lines.append(
                f"{axiom.axiom:<10} {axiom.agreement_old:>7.1%} -> {axiom.agreement_new:<10.1%} {interval + mark:<26} "
                f"{axiom.correlation:>12.3f}  {'FAIL' if axiom.failures else 'ok'}"
            )
            if axiom.gained:
                lines.append(f"{'':<10} flags gained: {', '.join(axiom.gained)}")
            if axiom.lost:
                lines.append(f"{'':<10} flags lost:   {', '.join(axiom.lost)}")
            for step, (gained, lost) in axiom.changes.items():
                lines += [f"{'':<10} {STEPS[step].unit} flags {verb}: {', '.join(names)}"
                          for verb, names in (("gained", gained), ("lost", lost)) if names]
            lines += [f"{'':<10} ! {failure}" for failure in axiom.failures]
            lines += [f"{'':<10} note: {note}" for note in axiom.notes]
        lines += legend(self.axioms)
        lines += ["", f"thresholds: {self.thresholds}", f"result: {self.verdict}"]
        return "\n".join(lines)

    def to_html(self, path: str | Path) -> Path:
        """Write a self-contained HTML report: both head maps and their difference per axiom, flags, verdict."""
        if self.old_audit is None or self.new_audit is None:
            raise SettingsError("this Comparison holds no audits to draw; make it with compare(old, new)")
        check_file(path, "compare", "--html")
        page = render_page(self)
        return write_file(path, "compare", lambda temporary: temporary.write_text(page, encoding="utf-8"), "--html")

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter: per axiom the agreement change, head-map rho, flags gained and lost."""
        return render_page(self, "summary")

    def to_junit(self, path: str | Path) -> Path:
        """Write the comparison as a JUnit XML test suite, one test case per axiom."""
        suite = ElementTree.Element("testsuite", name="mechir-axioms compare", tests=str(len(self.axioms)),
                                    failures=str(sum(bool(axiom.failures) for axiom in self.axioms)))
        for axiom in self.axioms:
            case = ElementTree.SubElement(suite, "testcase", classname="mechir_axioms.compare", name=axiom.axiom)
            if axiom.failures:
                failure = ElementTree.SubElement(case, "failure", message="; ".join(axiom.failures))
                failure.text = self.table()
        return write_file(path, "compare", lambda temporary: ElementTree.ElementTree(suite).write(
            temporary, encoding="utf-8", xml_declaration=True), "--junit-xml")


def legend(axioms: list[AxiomComparison]) -> list[str]:
    """The footnotes of a comparison's table: how the agreement interval was made and what a dagger marks."""
    lines = [""]
    if any(axiom.paired for axiom in axioms):
        lines.append("agreement change: paired 95% interval (both audits scored the same pairs; cluster bootstrap of "
                     "the per-pair differences over the unit of inference)")
    if not all(axiom.paired for axiom in axioms):
        lines.append("agreement change: 95% Newcombe interval for two independent samples (the audits hold different "
                     "pairs)")
    if any(axiom.significant for axiom in axioms):
        lines.append("* the agreement change is significant (its 95% interval excludes 0)")
    entries = [entry for axiom in axioms for entry in (*axiom.gained, *axiom.lost,
                                                       *(name for pair in axiom.changes.values() for side in pair
                                                         for name in side))]
    if any(entry.endswith(" †") for entry in entries):
        lines.append("† the unit's effect changed significantly (paired permutation test swapping whole queries, BH "
                     "over the axiom's units); only such lost head flags count toward the limit")
    return lines
