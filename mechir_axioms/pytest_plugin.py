"""pytest plugin: audit a ranker's axioms from tests, with assertions that explain themselves.

Registered through the `pytest11` entry point, so installing mechir-axioms enables it. Every audit setting is an
option and an ini key (`--mechir-method exact`, or `mechir_method = "exact"` under `[tool.pytest.ini_options]`),
with the defaults and help of the audit `Settings`; the command line wins over the ini file. Also --mechir-kind,
--mechir-device, --mechir-dtype and --mechir-report (and their ini keys). Fixtures: `mechir_ranker` and
`axiom_audit` (a callable: the configured axioms are audited together, once per session, exactly as `audit()` and
the CLI audit them; an axiom outside them is audited on its own). Marker: `@pytest.mark.axioms("TFC1", "TDC")`
runs a test once per axiom with the axiom's name in its `axiom` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .core.defaults import AXIOM_NAME_RULE, DEVICES, DTYPES, is_axiom_name
from .core.errors import MechirError
from .core.outputs import OutputFolder
from .results.settings import Settings, parse_setting, screen_name, setting_fields

if TYPE_CHECKING:  # the heavy imports wait until a test asks for an audit
    import pandas as pd

    from .results.audit import Audit

DEFAULT_REPORT = "reports/pytest"


@dataclass
class AxiomResult:
    """One axiom's audit, with assertion helpers whose failures state expectation, measurement and report."""

    axiom: str
    audit: Audit

    @property
    def row(self) -> pd.Series:
        return self.audit.axioms.set_index("axiom").loc[self.axiom]

    @property
    def heads(self) -> pd.DataFrame:
        return self.audit.heads[self.audit.heads["axiom"] == self.axiom]

    @property
    def folder(self) -> Path | None:
        return self.audit.folder

    @property
    def report(self) -> str:
        return str(self.audit.report_path) if self.audit.report_path else "(not saved)"

    def _agreement(self) -> str:
        row = self.row
        queries = row.get("queries")
        behind = f" from {int(queries)} queries" if queries is not None and queries == queries else ""
        return (f"agreement {row['agreement']:.1%} [95% CI {row['agreement_low']:.1%}, "
                f"{row['agreement_high']:.1%}] over {row['n_pairs']} pairs{behind}")

    def _rule(self) -> str:
        settings = self.audit.manifest["settings"]
        how = {"verified": f"verified method: {screen_name(settings)} screened every head, flags rest on exact patching",
               "exact": "exact method", "attribution": "attribution method (AtP, an estimate)",
               "atp*": "atp* method (an estimate)"}.get(settings["method"], f"{settings['method']} method")
        return f"A flag needs an effect beyond +/-{settings['threshold']} at q <= {settings['alpha']} (heads: {how})"

    def _fail(self, message: str) -> None:
        __tracebackhide__ = True
        pytest.fail(f"{self.axiom} ({self.row['title']}): {message}\n  report: {self.report}", pytrace=False)

    def assert_agreement(self, at_least: float) -> None:
        """At least this share of pairs moved the way the axiom expects (the point estimate)."""
        __tracebackhide__ = True
        if not self.row["agreement"] >= at_least:
            self._fail(f"expected agreement of at least {at_least:.1%}, measured {self._agreement()}")

    def assert_satisfied(self) -> None:
        """The verdict is `satisfied`: the agreement's 95% interval lies above 50%."""
        __tracebackhide__ = True
        row = self.row
        if row["verdict"] != "satisfied" and row["expect"] == "no_change":
            self._fail(
                f"expected the verdict 'satisfied' (no systematic change: the 90% interval of the mean change inside "
                f"+/-{row['margin']:.3g}), measured '{row['verdict']}': mean change {row['mean_delta']:+.3g}, "
                f"90% t interval [{row['tost_low']:+.3g}, {row['tost_high']:+.3g}], TOST p = {row['tost_p']:.2g}; "
                f"{self._agreement()}"
            )
        if row["verdict"] != "satisfied":
            self._fail(
                f"expected the verdict 'satisfied' (expect {row['expect']}; agreement's 95% interval above 50%), "
                f"measured '{row['verdict']}': {self._agreement()}, mean score change {row['mean_delta']:+.3g} "
                f"[95% CI {row['mean_low']:+.3g}, {row['mean_high']:+.3g}], Wilcoxon p = {row['wilcoxon_p']:.2g}"
            )

    def assert_heads_flagged(self, heads: Sequence[str], flag: str = "encodes") -> None:
        """Every named head ("layer.head") carries `flag` ("encodes" or "violates")."""
        __tracebackhide__ = True
        table = self.heads.set_index("name")
        unknown = [head for head in heads if head not in table.index]
        if unknown:
            self._fail(f"no head named {', '.join(unknown)}; heads are named 'layer.head', e.g. '0.0'")
        missing = [head for head in heads if table.loc[head, "flag"] != flag]
        if missing:
            found = ", ".join(self.heads.loc[self.heads["flag"] == flag, "name"]) or "none"
            self._fail(
                f"expected heads {', '.join(heads)} to be flagged '{flag}'; not flagged: "
                + "; ".join(_describe(table.loc[head], head) for head in missing)
                + f". Heads flagged '{flag}': {found}. {self._rule()}"
            )

    def assert_no_violating_heads(self) -> None:
        """No head is flagged `violates` (significantly pushing the score against the axiom)."""
        __tracebackhide__ = True
        violating = self.heads[self.heads["flag"] == "violates"]
        if len(violating):
            self._fail(
                f"expected no head flagged 'violates', found {len(violating)}: "
                + "; ".join(_describe(row, row["name"]) for _, row in violating.iterrows())
            )


def _describe(row: pd.Series, name: str) -> str:
    if row["n"] == 0:
        return f"{name} untested (no pair changed its score by more than the tolerance)"
    measured = row.get("measured", "")
    how = {"exact": "exactly measured", "screened": "screened estimate, not verified"}.get(measured, measured)
    return (f"{name} {how + ' ' if how else ''}effect {row['effect']:+.3f} [95% CI {row['ci_low']:+.3f}, "
            f"{row['ci_high']:+.3f}], q = {row['q_value']:.2g}{', ' + row['flag'] if row['flag'] else ''}")


PLACEMENT = {"kind": ("the ranker kind (default: inferred from the model folder)", None),
             "device": (f"where the model runs: {DEVICES} (default: cpu)", "cpu"),
             "dtype": (f"the model's precision: {', '.join(DTYPES)} (default: float32)", "float32"),
             "report": (f"folder for the session's audits and their report.html (default: {DEFAULT_REPORT} under the "
                        "rootdir)", None)}
"""The plugin's options beyond the audit settings: where the ranker runs, and where reports go."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechir-axioms", "axiomatic audits of neural rankers")
    for spec in setting_fields():
        default = spec.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        text = spec.metadata["help"] + (f" (default: {shown})" if default is not None else "")
        group.addoption(f"--mechir-{spec.name.replace('_', '-')}", dest=f"mechir_{spec.name}", default=None, help=text)
        parser.addini(f"mechir_{spec.name}", text, default=None)
    for name, (text, _) in PLACEMENT.items():
        group.addoption(f"--mechir-{name}", dest=f"mechir_{name}", default=None, help=text)
        parser.addini(f"mechir_{name}", text, default=None)


def _option(config: pytest.Config, name: str) -> str | None:
    """An option's text: from the command line, else the ini file, else None."""
    given = config.getoption(f"mechir_{name}")
    if given is None:
        given = config.getini(f"mechir_{name}")
    return None if given in (None, "") else str(given)


def session_settings(config: pytest.Config) -> Settings:
    """The audit settings of this session: the options and ini keys over the Settings defaults."""
    given = {spec.name: _option(config, spec.name) for spec in setting_fields()}
    try:
        return Settings(**{name: parse_setting(name, text) for name, text in given.items() if text is not None})
    except MechirError as error:
        raise pytest.UsageError(f"mechir-axioms options: {error}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "axioms(*names): run the test once per axiom, passing its name as `axiom`")
    config.stash[_RESULTS] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("axioms")
    if marker is None:
        return
    if "axiom" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: @pytest.mark.axioms needs an `axiom` argument")
    metafunc.parametrize("axiom", list(marker.args), ids=list(marker.args))


_RESULTS = pytest.StashKey[dict]()


def _report_root(config: pytest.Config) -> Path:
    given = _option(config, "report")
    return Path(given) if given and Path(given).is_absolute() else config.rootpath / (given or DEFAULT_REPORT)


@pytest.fixture(scope="session")
def mechir_ranker(pytestconfig: pytest.Config):
    """The ranker under audit (mechir_model, on mechir_device in mechir_dtype), loaded once per session."""
    from .models.loading import load_ranker

    placement = {name: _option(pytestconfig, name) or default for name, (_, default) in PLACEMENT.items()}
    return load_ranker(session_settings(pytestconfig).model, kind=placement["kind"], device=placement["device"],
                       dtype=placement["dtype"])


@pytest.fixture(scope="session")
def axiom_audit(pytestconfig: pytest.Config, mechir_ranker) -> Callable[[str], AxiomResult]:
    """axiom_audit("TFC1") -> AxiomResult. The configured axioms (mechir_axioms) are audited together on the first
    request, as `audit()` and the CLI audit them, into <report>/<AXIOM+AXIOM...>; an axiom outside them is audited
    on its own into <report>/<AXIOM>. Each audit runs once per session and is saved with its report."""
    results: dict[str, AxiomResult] = pytestconfig.stash[_RESULTS]
    root = _report_root(pytestconfig)
    settings = session_settings(pytestconfig)

    def run(name: str) -> AxiomResult:
        from .auditing.pipeline import audit, check_settings
        from .specs.axiom import load_axiom

        __tracebackhide__ = True
        if name not in results:
            _check_name(name)
            names = settings.axioms if name in settings.axioms else (name,)
            for each in names:
                _check_name(each)
                load_axiom(each)  # an unknown axiom fails here, before any file is touched
            chosen = check_settings(settings.but(axioms=names))
            folder = _report_folder(root / "+".join(names))
            found = audit(mechir_ranker, names, chosen.data, chosen, folder=folder, progress=False)
            results.update({each: AxiomResult(each, found) for each in names})
        return results[name]

    return run


def _check_name(name: object) -> None:
    """An axiom name is a plain name (core.defaults.AXIOM_NAME_RULE), checked before any file is touched."""
    if not is_axiom_name(name):
        raise pytest.UsageError(f"axiom_audit({name!r}): an axiom name is {AXIOM_NAME_RULE} (see `mechir-axioms list`)")


def _report_folder(folder: Path) -> OutputFolder:
    """The output folder of one of this session's audits. An audit the plugin wrote there before is replaced
    (a test run's output), or resumed if it stopped part-way (a run killed by a timeout, say); anything else
    there is refused, and nothing of it is touched (see core.outputs)."""
    unfinished = (folder / "work" / "settings.json").is_file() and not (folder / "manifest.json").is_file()
    output = OutputFolder(folder, "audit", "continue" if unfinished else "replace", flag="--mechir-report",
                          origin="pytest")
    try:
        output.check()
    except MechirError as error:
        raise pytest.UsageError(str(error)) from None
    return output


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    results: dict[str, AxiomResult] = config.stash.get(_RESULTS, {})
    if not results:
        return
    terminalreporter.section("mechir-axioms")
    for name, result in results.items():
        row, lines = result.row, result.audit.step_lines(name)
        terminalreporter.write_line(
            f"{name}: {row['verdict']}, agreement {row['agreement']:.1%} [{row['agreement_low']:.1%}, "
            f"{row['agreement_high']:.1%}], {', '.join(lines)}; report {result.report}"
        )
