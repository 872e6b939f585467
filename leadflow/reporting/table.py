"""One report table, apart from where it is shown: a title, typed columns, plain cells.

Each table is defined once (``reporting.tables``) and every form of the report (terminal,
HTML page, CSV) draws it through ``show``, so the forms cannot drift apart in columns,
labels or rounding. Cells are plain values, never markup: a company called ``[red]x`` or
``<b>x</b>`` is data, and each renderer prints it as written (rich ``Text``, escaped HTML,
neutralised CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from leadflow.reporting.money import format_money
from leadflow.reporting.numbers import percent

Cell = str | int | float | None
MISSING = "-"


class Format(StrEnum):
    """How a column's cells read; text aligns left, the other formats right."""

    TEXT = "text"  # as written
    NUMBER = "number"  # counts as they are, fractional figures with two decimals
    PERCENT = "percent"  # a rate: 0.375 reads 37.5%, n/a when there was nothing to divide
    MONEY = "money"  # an amount in the column's currency: $20,193 (reporting.money)
    DAYS = "days"  # a number of days to one decimal, a whole one without: 12.3, 14 (days)


@dataclass(frozen=True)
class Column:
    header: str
    format: Format = Format.NUMBER
    currency: str | None = None  # of a MONEY column (ISO 4217); None: a plain number

    @property
    def numeric(self) -> bool:
        return self.format is not Format.TEXT


@dataclass(frozen=True)
class Table:
    """``key`` names the table for the renderers (the page puts a chart beside ``aging``)."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        width = len(self.columns)
        if any(len(row) != width for row in self.rows):
            raise ValueError(f"table {self.key}: every row needs {width} cells")

    @property
    def headers(self) -> list[str]:
        return [c.header for c in self.columns]

    def shown(self) -> list[list[str]]:
        """Every cell as people read it, the same in every form of the report."""
        return [
            [show(v, c.format, c.currency) for v, c in zip(row, self.columns, strict=True)]
            for row in self.rows
        ]


def show(value: Cell, format: Format, currency: str | None = None) -> str:
    """One cell as text: the single rounding and labelling rule of the report's forms."""
    if format is Format.PERCENT and not isinstance(value, str):
        return percent(value, 1)
    if value is None:
        return MISSING
    if format is Format.MONEY and isinstance(value, int | float):
        return format_money(value, currency) or MISSING
    if format is Format.DAYS and isinstance(value, int | float):
        return days(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def days(n: float) -> str:
    """A number of days as the report writes it: ``14``, ``12.3`` (one decimal, none when
    whole), the same in a table cell and in words (``tables.risk_reasons``)."""
    return f"{n:.0f}" if round(float(n), 1).is_integer() else f"{n:.1f}"
