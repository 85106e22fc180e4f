"""The registry of HTML pages: how each kind of result is rendered, filled by the report layer.

Results sit below the report, so they cannot call it; the report registers one renderer per result class with
`@page(Audit)`, and a result's `save` asks `render_page` for its page. Like a plugin group, the report is loaded
by name on first use when nothing has imported it yet, so a result saved from any layer still gets its page.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

RENDERERS = "mechir_axioms.report"
"""The package whose import registers the built-in pages."""

VIEWS = ("report", "summary")
"""What a result is rendered as: its self-contained report, or the compact summary Jupyter shows."""
PAGES: dict[tuple[type, str], Callable[[Any], str]] = {}
"""(result class, view) -> render(result) -> HTML."""

Render = TypeVar("Render", bound=Callable[[Any], str])


def page(kind: type, view: str = "report") -> Callable[[Render], Render]:
    """Register the decorated function as the `view` of results of class `kind`."""
    def register(render: Render) -> Render:
        PAGES[kind, view] = render
        return render

    return register


def render_page(result: Any, view: str = "report") -> str:
    """The HTML `view` of `result`, by the renderer registered for its class (or a parent class)."""
    if not PAGES:
        importlib.import_module(RENDERERS)
    for kind in type(result).__mro__:
        if (kind, view) in PAGES:
            return PAGES[kind, view](result)
    raise TypeError(f"no {view} is registered for {type(result).__name__}; register one with results.pages.page")


class SavedWithPage:
    """A result saved in a folder with its report.html, and shown in Jupyter by its summary view."""

    folder: Path | None

    @property
    def report_path(self) -> Path | None:
        return self.folder / "report.html" if self.folder else None

    def _repr_html_(self) -> str:
        """A compact summary for Jupyter (the registered "summary" view)."""
        return render_page(self, "summary")
