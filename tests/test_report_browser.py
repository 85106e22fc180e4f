"""A real report opened in headless Chromium: it loads without console errors, fetches nothing, and draws."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mechir_axioms import audit

from browser import chromium, open_page

pytestmark = pytest.mark.slow  # real-model audits, subprocesses or browsers: the full suite runs it



@pytest.fixture(scope="module")
def report(minilm, tmp_path_factory):
    """A real MiniLM audit of two axioms (attribution heads, exact block cells on 12 pairs and blocks on one example)."""
    folder = tmp_path_factory.mktemp("browser") / "audit"
    audit(minilm, ["TFC1", "STMC1"], n=32, method="attribution", cell_pairs=12, examples=1, folder=folder, progress=False)
    return folder / "report.html"


def test_report_opens_in_chromium(report, tmp_path):
    from PIL import Image
    with chromium() as browser:
        page, errors, requests = open_page(browser, report)
        drawn = page.evaluate("Array.from(document.querySelectorAll('canvas')).map(c => c.width)")
        cells = page.locator("svg rect").count()
        tooltip = page.locator("svg rect title").first.text_content()
        png = page.screenshot(full_page=True)
    assert errors == []
    assert requests == [report.as_uri()], f"the report fetched {requests[1:]}"
    assert drawn and all(width > 0 for width in drawn)  # the inline script drew every canvas
    assert cells >= 2 * 72
    assert "effect" in tooltip and "q =" in tooltip
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.005  # dark text and cells, not an empty page
