"""One Settings, one default: Python, the CLI, the pytest plugin and `intervene` derive every audit setting from
the same fields, and the three ways to audit give identical frames."""

from __future__ import annotations

from dataclasses import fields

import pandas as pd
# Imported before pytester's sys.modules snapshot: re-imported after its restore, it would register pandas'
# Parquet types a second time and break every later test that reads Parquet.
import pandas.core.arrays.arrow.extension_types  # noqa: F401
import pytest

from mechir_axioms import Settings, audit, load_audit
from mechir_axioms.cli import main, parser
from mechir_axioms.cli.commands import settings_of
from mechir_axioms.results.settings import INTERVENTION_DEFAULTS, parse_setting

pytest_plugins = ["pytester"]


class _NoOptions:
    """A pytest config where nothing was given on the command line or in an ini file."""

    def getoption(self, name):
        return None

    def getini(self, name):
        return None


def test_every_entry_point_starts_from_the_same_settings():
    from mechir_axioms.pytest_plugin import session_settings

    python = Settings()
    assert python.method == "verified" and python.steps == ("heads", "cells", "blocks")
    assert settings_of(parser().parse_args(["audit"])) == python
    assert settings_of(parser().parse_args(["sweep"])).method == python.method
    assert settings_of(parser().parse_args(["intervene", "--heads", "0.1"])) == INTERVENTION_DEFAULTS
    assert INTERVENTION_DEFAULTS.method == python.method
    assert session_settings(_NoOptions()) == python


def test_the_old_targets_name_means_the_same_steps():
    assert Settings().but(targets=("heads", "blocks")).steps == ("heads", "cells", "blocks")
    assert settings_of(parser().parse_args(["audit", "--targets", "heads,paths"])).steps == ("heads", "paths")


def test_each_setting_is_an_option_everywhere():
    """Every field is a CLI flag and a plugin option and ini key; text turns into the field's kind one way."""
    flags = {action.dest for action in parser()._subparsers._group_actions[0].choices["audit"]._actions}
    for spec in fields(Settings):
        assert spec.name in flags
    assert parse_setting("n", "12") == 12 and parse_setting("axioms", "TFC1, NULL") == ("TFC1", "NULL")
    assert parse_setting("threshold", "0.1") == 0.1


SMALL = {"axioms": "TFC1", "n": "6", "steps": "heads,cells", "cell_pairs": "4", "stability": "0", "examples": "0"}


@pytest.mark.slow
def test_python_cli_and_plugin_give_identical_frames(pytester, minilm, tmp_path):
    """The same settings given the three ways (keywords, flags, pyproject.toml ini keys) give the same frames."""
    python = audit(minilm, **{key: parse_setting(key, value) for key, value in SMALL.items()}, progress=False)
    flags = [part for key, value in SMALL.items() for part in (f"--{key.replace('_', '-')}", value)]
    assert main(["audit", *flags, "--out", str(tmp_path / "cli")]) == 0
    cli = load_audit(tmp_path / "cli")
    pytester.makepyfile(test_inner="def test_audit(axiom_audit):\n    axiom_audit('TFC1')\n")
    ini = "\n".join(f'mechir_{key} = "{value}"' for key, value in SMALL.items())
    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\n{ini}\nmechir_report = \"{tmp_path / 'plugin'}\"\n")
    outcome = pytester.runpytest_subprocess()
    outcome.assert_outcomes(passed=1)
    plugin = load_audit(tmp_path / "plugin" / "TFC1")
    for other in (cli, plugin):
        assert other.manifest["settings"]["method"] == "verified"
        for name in ("axioms", "pairs", "heads", "cells"):
            frame = getattr(python, name)
            pd.testing.assert_frame_equal(getattr(other, name), frame, check_exact=False, rtol=0, atol=1e-12)
