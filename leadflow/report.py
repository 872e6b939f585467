"""Pipeline metrics and reports: the public facade over ``leadflow.reporting``.

``build_report`` asks the database for aggregated rows only (GROUP BY and window functions,
portable across SQLite ≥ 3.25 and PostgreSQL) and returns a JSON-ready dict; the other
functions present that dict: rich tables, a self-contained HTML page, a one-line headline,
and a spreadsheet-safe CSV of any list of rows from it.
"""

from __future__ import annotations

from leadflow.reporting.build import build_report
from leadflow.reporting.console import headline, render_report
from leadflow.reporting.csvexport import export_csv
from leadflow.reporting.page import write_html

__all__ = ["build_report", "export_csv", "headline", "render_report", "write_html"]
