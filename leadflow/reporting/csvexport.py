"""Report tables and the lead list as CSV that a spreadsheet can open safely.

The headers are the terminal's and the page's; numbers are written as numbers so they can
be summed (a rate as its percentage, 0.375 -> 37.5 under "Open %"; money under a header
naming its currency, "Value (USD)"), not as display text. ``export_report`` writes every
table of a report into one file, ``export_leads`` every lead of a filter, streamed.

Lead data (emails, company names) comes from web forms and imports, so a text cell starting
with ``= + - @`` (or a tab / carriage return, which some spreadsheets skip before reading a
formula) is prefixed with ``'``: the spreadsheet then shows it as text instead of running it.
A negative number is data, not a formula.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from leadflow.queries import leads_filtered
from leadflow.reporting.table import Cell, Column, Format, Table
from models.tables import LEADS

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Cell) -> str | int | float:
    """A cell value safe to hand to a spreadsheet."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        return value
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def export_csv(table: Table, path: Path) -> None:
    """Write ``table`` to ``path``: a header row, then one row per table row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([neutralise(_header(c)) for c in table.columns])
        for row in table.rows:
            writer.writerow([_cell(v, c) for v, c in zip(row, table.columns, strict=True)])


def _header(column: Column) -> str:
    """A money column's header names its currency: the cells are plain numbers."""
    if column.format is Format.MONEY and column.currency:
        return f"{column.header} ({column.currency})"
    return column.header


def _cell(value: Cell, column: Column) -> str | int | float:
    if column.format is Format.PERCENT and isinstance(value, int | float):
        return round(value * 100, 2)
    return neutralise(value)


def export_report(data: dict[str, Any], path: Path) -> None:
    """Every table of every pipeline of ``build_report``'s ``data`` in one file: per table
    a header row ``Pipeline, Table, <its headers>``, then its rows (the pipeline id and the
    table title in the first two cells, so a spreadsheet filter picks one table), then an
    empty row."""
    from leadflow.reporting.tables import pipeline_tables

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for p in data["pipelines"]:
            for table in pipeline_tables(p, data.get("currency")):
                first = [neutralise(p["id"]), neutralise(table.title)]
                writer.writerow(
                    ["Pipeline", "Table", *(neutralise(_header(c)) for c in table.columns)]
                )
                for row in table.rows:
                    writer.writerow(
                        [*first, *(_cell(v, c) for v, c in zip(row, table.columns, strict=True))]
                    )
                writer.writerow([])


# The columns of the lead list's CSV export, in order: who, what they are, where they are
# in the pipeline (not mail.context.LEAD_COLUMNS, the lead fields an email template sees).
EXPORTED_LEAD_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "industry",
    "company_size",
    "country",
    "source",
    "deal_value",
    "pipeline",
    "stage",
    "status",
    "stuck",
    "score",
    "grade",
    "stage_entered_at",
    "created_at",
)
LEAD_BATCH = 2000


def export_leads(
    conn: Connection,
    path: Path,
    *,
    stage: str | None = None,
    status: str | None = None,
    pipeline: str | None = None,
) -> int:
    """Every lead of the filter (highest score first, as ``leadflow leads``), fetched in
    batches of LEAD_BATCH rows; the number written. Text cells are neutralised: lead data
    comes from forms and imports."""
    columns = (LEADS.c[name] for name in EXPORTED_LEAD_COLUMNS)
    query = leads_filtered(*columns, stage=stage, status=status, pipeline=pipeline)
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPORTED_LEAD_COLUMNS)
        for row in conn.execution_options(yield_per=LEAD_BATCH).execute(query):
            writer.writerow([_plain(v) for v in row])
            count += 1
    return count


def _plain(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, int | float | str):
        return neutralise(value)
    return neutralise(str(value))
