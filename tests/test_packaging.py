"""The wheel's package list in pyproject.toml names every package of the source tree.

setuptools packs only the packages it is told about; a new subpackage left off the list installs fine in editable
mode and then is missing from the wheel. .ci/wheel-smoke catches that after a build; this catches it in a second.
"""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_of_the_source_tree_is_in_the_wheel_list():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in [ROOT / "mechir_axioms", *(ROOT / "mechir_axioms").rglob("*")]
        if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py"))
    }
    missing = sorted(on_disk - listed)
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(name for name in listed - {"mechir_axioms.axioms"}
                   if not (ROOT / name.replace(".", "/")).is_dir())
    assert not stale, f"pyproject.toml lists packages that do not exist: {stale}"
