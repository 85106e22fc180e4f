"""How an audit's flags may be read, in plain words: the unit of inference, the flag rule and its guarantee, and
per axiom the queries behind it and whether they allow a flag at all."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..analysis.findings import strongest_first


def selected(row: dict[str, Any]) -> str:
    """A unit's selection share as a percentage (its replication rate in audits saved before selection)."""
    value = row.get("selection", row.get("replication", math.nan))
    return "n/a" if value is None or value != value else f"{100 * value:.0f}%"


def fragile(rows: pd.DataFrame, shown: int = 10) -> list[dict[str, Any]]:
    """Units the test on all queries flags but stability selection does not: shown as leads, strongest first."""
    if rows.empty or "test" not in rows:
        return []
    return strongest_first(rows[(rows["test"] != "") & (rows["flag"] == "")]).head(shown).to_dict("records")


def rule_text(settings: dict[str, Any]) -> str:
    """The unit of inference and the flag rule with its guarantee, for the report's legend."""
    alpha, threshold = settings["alpha"], settings["threshold"]
    if settings.get("unit", "pair") == "query":
        unit = ("The query is the unit of inference: every interval resamples whole queries (a cluster bootstrap) and "
                "every test flips the sign of all pairs of a query together, so an interval or a flag is a claim about "
                "new queries for this ranker, not only about the sampled pairs. Agreement's interval is Wilson's on the "
                "effective number of pairs (between the number of queries and of pairs).")
    else:
        unit = ("The pair is the unit of inference (unit=pair): intervals and tests treat pairs as independent, which "
                "holds when each query gives one pair; when queries give several pairs, intervals are too narrow for "
                "a claim about new queries.")
    test = (f"A unit's test asks whether the share of the score change it carries lies beyond &plusmn;{threshold}, "
            f"with Benjamini&ndash;Hochberg FDR {alpha} over all units of its kind.")
    splits, level = settings.get("stability", 0), settings.get("selection")
    if splits and level is not None:
        rule = (f"A unit is flagged when that test flags it on all queries and, besides, gives p &le; {alpha} on the "
                f"same side in at least {level:.0%} of {2 * splits} half samples: {splits} random splits of the queries "
                "into two disjoint halves, each half tested on its own (stability selection, Meinshausen and "
                "B&uuml;hlmann 2010, with complementary halves, "
                "Shah and Samworth 2013). Guarantee: when the units that carry nothing behave alike and the test "
                "picks them no more often than chance would, the expected "
                f"number of false flags of an axiom is at most q&sup2; / ((2 &times; {level} &minus; 1) p), with q the "
                "mean number of units a half flags and p the units tested; each axiom states its bound. Units that "
                "pass the test on all queries but too few halves are listed as fragile.")
    else:
        rule = "Flags rest on that test alone (stability=0: no stability selection, no bound on false flags)."
    return f"{unit} {test} {rule}"


def axiom_lines(facts: dict[str, Any], settings: dict[str, Any], titles: dict[str, str]) -> list[dict[str, str]]:
    """Per step of one axiom: the queries behind it, the smallest p-value they allow and the bound on false
    flags; a warning (style "warning") when no unit can reach the flag level."""
    lines = []
    for step, inference in facts.get("inference", {}).items():
        title, smallest = titles.get(step, step), inference["smallest_p"]
        text = (f"{title}: {inference['queries']} queries behind the {inference['unit']}-level statistics; the "
                f"smallest p-value they allow is {smallest:.2g}.")
        bound = inference.get("selection")
        if bound:
            text += (f" Stability selection: a half sample flags {bound['mean_flagged']:.2f} of {bound['components']} "
                     f"units on average, so the expected number of false flags is at most "
                     f"{bound['false_flags_bound']:.3g}.")
        style, half = "muted", inference.get("smallest_p_half", 0.0)
        if smallest <= settings["alpha"] < half:
            text += (f" Too few for stability selection: a half sample allows p-values down to {half:.2g} only, above "
                     f"alpha {settings['alpha']}, so no unit can be selected or flagged; audit more queries.")
            style = "warning"
        elif smallest > settings["alpha"]:
            text += (f" Too few {'queries' if inference['unit'] == 'query' else 'pairs'} for any flag: no p-value can "
                     f"reach alpha {settings['alpha']}, so no unit is flagged whatever its effect; audit more queries.")
            style = "warning"
        lines.append({"text": text, "style": style})
    return lines
