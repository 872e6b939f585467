"""The report in a terminal: every table of ``reporting.tables`` as a rich table.

Everything printed is a rich ``Text``, never a markup string, so lead data such as a company
called ``[bold]x[/bold]`` prints as written. The only addition to the shared tables is the
bar column of the funnel and of the leads per stage, drawn from their counts.
"""

from __future__ import annotations

from typing import Any

from rich import table as rich
from rich.console import Console
from rich.text import Text

from leadflow.reporting.table import MISSING, Table
from leadflow.reporting.tables import headline, pipeline_tables, report_title, unassigned_note

BAR_WIDTH = 30
# Tables drawn with a bar column, and the column it measures.
BARS = {"funnel": "Reached", "stages": "Leads"}
KIND_COLOURS = {"won": "green", "lost": "red"}


def render_report(data: dict[str, Any], console: Console) -> None:
    """The title, then per pipeline its headline and every table."""
    console.print(Text(report_title(data), "bold"))
    note = unassigned_note(data)
    if note:
        console.print(Text(note))
    for p in data["pipelines"]:
        console.rule(Text(f"{p['name']} ({p['id']})"))
        console.print(Text(headline({"pipelines": [p]})))
        for table in pipeline_tables(p, data.get("currency")):
            _print(table, console)


def _print(table: Table, console: Console) -> None:
    """Title and notes as lines of their own: a rich title would wrap at the table's width."""
    console.print(Text(table.title, "bold"))
    console.print(to_rich(table) if table.rows else Text("None.", "dim"))
    for note in table.notes:
        console.print(Text(note, "dim"))


def to_rich(table: Table) -> rich.Table:
    """``table`` as rich draws it: the same headers and cell text as the HTML page."""
    out = rich.Table()
    for column in table.columns:
        out.add_column(Text(column.header), justify="right" if column.numeric else "left")
    bars = _bars(table)
    if bars:
        out.add_column(Text(""), justify="left")
    for i, row in enumerate(table.shown()):
        cells = [Text(v, "dim") if v == MISSING else Text(v) for v in row]
        out.add_row(*cells, *bars[i : i + 1])
    return out


def _bars(table: Table) -> list[Text]:
    """One bar per row, scaled to the widest, coloured by the row's Kind when it has one."""
    measured = BARS.get(table.key)
    if measured is None:
        return []
    headers = table.headers
    at, kind = headers.index(measured), headers.index("Kind") if "Kind" in headers else None
    counts = [v if isinstance(v, int | float) else 0 for v in (r[at] for r in table.rows)]
    widest = max(counts, default=0) or 1
    return [
        Text(
            "█" * round(BAR_WIDTH * n / widest),
            KIND_COLOURS.get(str(row[kind]), "cyan") if kind is not None else "cyan",
        )
        for n, row in zip(counts, table.rows, strict=True)
    ]
