"""A real report opened in headless Chromium: it loads without console errors, fetches nothing, and draws."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from mechir_axioms import audit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def report(minilm, tmp_path_factory):
    """A real MiniLM audit of two axioms (attribution heads, exact block cells on 12 pairs and blocks on one example)."""
    folder = tmp_path_factory.mktemp("browser") / "audit"
    audit(minilm, ["TFC1", "STMC1"], n=32, method="attribution", cell_pairs=12, examples=1, folder=folder, progress=False)
    return folder / "report.html"


def test_report_opens_in_chromium(report, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report.as_uri(), wait_until="load")
        drawn = page.evaluate("Array.from(document.querySelectorAll('canvas')).map(c => c.width)")
        cells = page.locator("svg rect").count()
        tooltip = page.locator("svg rect title").first.text_content()
        png = page.screenshot(full_page=True)
        browser.close()
    assert errors == []
    assert requests == [report.as_uri()], f"the report fetched {requests[1:]}"
    assert drawn and all(width > 0 for width in drawn)  # the inline script drew every canvas
    assert cells >= 2 * 72
    assert "effect" in tooltip and "q =" in tooltip
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.005  # dark text and cells, not an empty page
