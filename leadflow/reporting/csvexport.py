"""A report table as CSV that a spreadsheet can open safely.

The headers are the terminal's and the page's; numbers are written as numbers so they can
be summed (a rate as its percentage, 0.375 -> 37.5 under "Open %"), not as display text.

Lead data (emails, company names) comes from web forms and imports, so a text cell starting
with ``= + - @`` (or a tab / carriage return, which some spreadsheets skip before reading a
formula) is prefixed with ``'``: the spreadsheet then shows it as text instead of running it.
A negative number is data, not a formula.
"""

from __future__ import annotations

import csv
from pathlib import Path

from leadflow.reporting.table import Cell, Column, Format, Table

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
