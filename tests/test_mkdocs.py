"""The documentation site: `mkdocs build --strict` passes, the API reference covers every exported name, and the
generated pages (axioms, CLI, the README's quick start, the performance tables) are filled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import json

import pytest

import mechir_axioms
from mechir_axioms.specs.axiom import list_axioms

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),
                            "-d", str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    return folder


def _api_html(site: Path) -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in sorted((site / "api").rglob("*.html")))


def test_api_reference_has_the_main_entry_points(site):
    html = _api_html(site)
    for name in ("audit", "load_ranker", "compare", "Settings"):
        where = f"mechir_axioms.{mechir_axioms._MODULE_OF[name]}.{name}"
        assert f'id="{where}"' in html, where


def test_api_reference_documents_every_export(site):
    html = _api_html(site)
    missing = [f"::: mechir_axioms.{module}.{name}" for module, names in mechir_axioms._EXPORTS.items()
               for name in names if f'id="mechir_axioms.{module}.{name}"' not in html]
    assert not missing, f"exported but not in docs/api/: add {missing}"


def test_generated_blocks_are_filled(site):
    pages = {path: (site / path).read_text(encoding="utf-8") for path in ("index.html", "axioms/index.html", "cli/index.html")}
    for path, html in pages.items():
        assert "<!-- generate:" not in html, path
    assert all(f"<code>{axiom.name}</code>" in pages["axioms/index.html"] for axiom in list_axioms())
    assert 'id="term-selectors"' in pages["axioms/index.html"]  # the spec reference from axioms/README.md
    assert "mechir-axioms audit" in pages["cli/index.html"] and "--resume" in pages["cli/index.html"]
    assert "pip install torch==2.13.0" in pages["index.html"]  # the README's quick start
    assert 'href="guide/performance/#the-main-job"' in pages["index.html"]  # its docs/ links, made site-relative


def test_performance_tables_are_generated(site):
    html = (site / "guide" / "performance" / "index.html").read_text(encoding="utf-8")
    assert "<!-- benchmark:" not in html and "<!-- generate:" not in html
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        assert f"<code>{record['benchmark']}</code>, {record['date']}" in html, path.name
