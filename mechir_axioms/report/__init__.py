"""Self-contained HTML pages of results; importing the package registers each page with results.pages."""

from . import audit_page, comparison_page, intervention_page, summary, sweep_page  # noqa: F401  (registration)
