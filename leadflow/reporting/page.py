"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network).

Every table of ``reporting.tables`` is drawn here with the same headers and cell text as in
the terminal; the page adds an SVG chart beside some of them and shows the key figures as
cards. Every value is escaped, and a Content-Security-Policy meta tag forbids every fetch,
so even a hostile value that slipped past escaping could not make the page load anything.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from leadflow.reporting import charts
from leadflow.reporting.table import Table
from leadflow.reporting.tables import headline, pipeline_tables, report_title, unassigned_note

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2430;
margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid
#d9dde5;padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
.muted{color:#667085}.headline{font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:18px}.card span{color:#667085;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #e1e4ea;padding:4px 8px;text-align:right}
th.t,td.t{text-align:left}th{background:#eef0f4}
.note{color:#667085;font-size:12px;margin:0 0 12px}
.scroll{overflow-x:auto;max-width:100%}
svg.chart{background:#fff;border:1px solid #e1e4ea;border-radius:8px;max-width:100%;height:auto}
svg text{font-size:12px;fill:#1f2430}svg text.num,svg text.axis{fill:#667085;font-size:11px}
svg text.legend-new{fill:#3b6fd8}svg text.legend-won{fill:#2e9e5b}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'"
Section = dict[str, Any]
# Charts drawn above a table (by table key); they read the report's rows, not the table.
CHARTS: dict[str, Callable[[Section, str | None], str]] = {
    "forecast": lambda p, currency: charts.forecast(p["forecast"]["months"], currency),
    "funnel": lambda p, currency: charts.funnel(p["funnel"]["stages"]),
    "stages": lambda p, currency: charts.stages(p["stages_now"], p["leads"]["callback"]),
    "aging": lambda p, currency: charts.aging(p["aging"]),
    "weekly": lambda p, currency: charts.weekly(p["weekly"]),
    "variants": lambda p, currency: charts.variants(p["variants"]),
}
CHART_NOTES = {
    "weekly": "The chart covers every week of the period; the table the latest ones.",
}
CARDS = "figures"  # the table shown as cards at the top of each pipeline


def write_html(data: dict[str, Any], path: Path) -> None:
    """Write the whole report to ``path`` as a single HTML file."""
    title = report_title(data)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
    ]
    note = unassigned_note(data)
    if note:
        parts.append(f'<p class="muted">{escape(note)}</p>')
    parts += [_pipeline(p, data.get("currency")) for p in data["pipelines"]]
    parts.append("</main></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")


def _pipeline(p: Section, currency: str | None) -> str:
    name, pid = escape(p["name"]), escape(p["id"])
    parts = [
        f'<section><h2>{name} <span class="muted">({pid})</span></h2>',
        f'<p class="headline">{escape(headline({"pipelines": [p]}))}</p>',
    ]
    for table in pipeline_tables(p, currency):
        if table.key == CARDS:
            parts.append(_cards(table))
            parts += [f'<p class="note">{escape(n)}</p>' for n in table.notes]
            continue
        parts.append(f"<h3>{escape(table.title)}</h3>")
        if table.key in CHARTS:
            parts.append(CHARTS[table.key](p, currency))
            if table.key in CHART_NOTES:
                parts.append(f'<p class="note">{escape(CHART_NOTES[table.key])}</p>')
        parts.append(to_html(table) if table.rows else '<p class="muted">None.</p>')
        parts += [f'<p class="note">{escape(n)}</p>' for n in table.notes]
    parts.append("</section>")
    return "\n".join(parts)


def _cards(table: Table) -> str:
    """A two-column table (label, value) as a row of cards."""
    cards = "".join(
        f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'
        for label, value in table.shown()
    )
    return f'<div class="cards">{cards}</div>'


def to_html(table: Table) -> str:
    """``table`` as an HTML table: the same headers and cell text as the terminal's."""
    align = [' class="t"' if not c.numeric else "" for c in table.columns]
    head = "".join(
        f"<th{a}>{escape(c.header)}</th>" for a, c in zip(align, table.columns, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{a}>{escape(v)}</td>" for a, v in zip(align, row, strict=True))
        + "</tr>"
        for row in table.shown()
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
