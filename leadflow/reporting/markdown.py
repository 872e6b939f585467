"""The report as the Prefect UI shows it: a markdown summary (headline and key figures) and
plain rows for table artifacts, drawn from the same ``reporting.tables`` as the terminal,
the HTML page and the CSV export, so every form has the same columns, labels and rounding.

Cells are data: in markdown every character markdown would read as markup is escaped, so a
company called ``[x](javascript:...)`` or ``*x*`` shows as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from leadflow.reporting.table import Table
from leadflow.reporting.tables import (
    at_risk,
    conversion,
    figures,
    forecast,
    funnel,
    headline,
    report_title,
    stages,
    stuck,
    unassigned_note,
    variants,
)

# The tables published as table artifacts of their own, per pipeline (the key figures are in
# the markdown summary; the HTML report has every table).
ARTIFACT_TABLES = (forecast, at_risk, funnel, stages, conversion, stuck, variants)
_MARKUP = re.compile(r"([\\`*_\[\]<>|#~])")


def escape(text: str) -> str:
    """``text`` as markdown shows it literally, on one line."""
    return _MARKUP.sub(r"\\\1", " ".join(text.split()))


def table_markdown(table: Table) -> list[str]:
    """A markdown table (numbers aligned right) with its notes; "None." when it is empty."""
    if not table.rows:
        return ["None.", ""]
    lines = [
        "| " + " | ".join(escape(h) for h in table.headers) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|",
    ]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in table.shown()]
    lines.append("")
    lines += [f"_{escape(note)}_" for note in table.notes]
    return [*lines, ""] if table.notes else lines


def report_markdown(data: dict[str, Any], html: Path | None = None) -> str:
    """The report's summary: title, per pipeline its headline and key figures, and where the
    whole report (every table, charts) is."""
    lines = [f"# {escape(report_title(data))}", ""]
    note = unassigned_note(data)
    if note:
        lines += [escape(note), ""]
    for p in data["pipelines"]:
        lines += [f"## {escape(p['name'])}", "", f"**{escape(headline({'pipelines': [p]}))}**", ""]
        lines += table_markdown(figures(p, data.get("currency")))
    if html is not None:
        lines += [f"The whole report (every table, with charts): [{html.name}]({html.as_uri()})"]
        lines += [f"({escape(str(html))})", ""]
    return "\n".join(lines)


def table_rows(table: Table) -> list[dict[str, str]]:
    """The table as a table artifact's rows: header -> cell as people read it."""
    return [dict(zip(table.headers, row, strict=True)) for row in table.shown()]


def artifact_tables(data: dict[str, Any]) -> list[tuple[str, Table]]:
    """``(artifact key, table)`` for every table published on its own: ``report-funnel``, or
    ``report-funnel-<pipeline>`` when the config has several pipelines."""
    several = len(data["pipelines"]) > 1
    found = []
    for p in data["pipelines"]:
        suffix = "-" + p["id"].replace("_", "-") if several else ""
        for make in ARTIFACT_TABLES:
            table = make(p, data.get("currency"))
            found.append((f"report-{table.key.replace('_', '-')}{suffix}", table))
    return found
