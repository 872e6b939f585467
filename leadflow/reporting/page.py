"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network).

A Content-Security-Policy meta tag forbids every fetch, so even a hostile value that slipped
past escaping could not make the page load anything when it is opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from leadflow.reporting import charts
from leadflow.reporting.console import headline
from leadflow.reporting.numbers import is_text, percent

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
th:first-child,td:first-child,td.t{text-align:left}th{background:#eef0f4}
svg.chart{background:#fff;border:1px solid #e1e4ea;border-radius:8px;max-width:100%;height:auto}
svg text{font-size:12px;fill:#1f2430}svg text.num,svg text.axis{fill:#667085;font-size:11px}
svg text.legend-new{fill:#3b6fd8}svg text.legend-won{fill:#2e9e5b}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'"
NONE = "-"


def write_html(data: dict[str, Any], path: Path) -> None:
    """Write the whole report to ``path`` as a single HTML file."""
    period = data["period"]
    title = f"Pipeline report {period['since'] or 'all history'} to {period['until']}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="headline">{escape(headline(data))}</p>',
    ]
    if data.get("unassigned_leads"):
        parts.append(
            f'<p class="muted">{data["unassigned_leads"]} lead(s) not yet assigned '
            "to a pipeline.</p>"
        )
    for p in data["pipelines"]:
        parts.append(_pipeline(p))
    parts.append("</main></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")


def _pipeline(p: dict[str, Any]) -> str:
    result, cycle = p["outcomes"], p["outcomes"]["cycle_days"]
    cards = [
        ("Leads", p["leads"]["total"]),
        ("Open opportunities", p["leads"]["open"]),
        ("Callback list", p["leads"]["callback"]),
        ("Won / lost", f"{result['won']} / {result['lost']}"),
        ("Win rate", percent(result["win_rate"], 1)),
        ("Average deal", _fmt(result["avg_deal_size"])),
        ("Sales cycle median (d)", _fmt(cycle["median"])),
        ("Weighted pipeline", _fmt(p["weighted_pipeline"])),
        ("Coverage of target", percent(p["coverage"], 1)),
        ("Velocity per day", _fmt(p["velocity"]["per_day"])),
        ("First reply median (h)", _fmt(p["first_response"]["median_hours"])),
    ]
    card_html = "".join(
        f'<div class="card"><b>{escape(str(v))}</b><span>{escape(k)}</span></div>' for k, v in cards
    )
    return "\n".join(
        [
            f'<section><h2>{escape(p["name"])} <span class="muted">({escape(p["id"])})</span></h2>',
            f'<p class="headline">{escape(headline({"pipelines": [p]}))}</p>',
            f'<div class="cards">{card_html}</div>',
            "<h3>Funnel: leads per stage now</h3>",
            charts.funnel(p["funnel"], p["leads"]["callback"]),
            "<h3>Conversion: entries in the period and where they went next</h3>",
            _table(
                [
                    "Stage",
                    "Entered",
                    "→ Next stage",
                    "Advanced",
                    "Moved back",
                    "Recycled",
                    "Lost",
                    "Still in stage",
                    "Next %",
                    "Advance %",
                    "Drop-off %",
                ],
                [
                    [
                        r["name"],
                        r["entered"],
                        r["to_next"],
                        r["advanced"],
                        r["moved_back"],
                        r["recycled"],
                        r["lost"],
                        r["in_stage"],
                        percent(r["to_next_rate"], 1),
                        percent(r["advance_rate"], 1),
                        percent(r["drop_off_rate"], 1),
                    ]
                    for r in p["conversion"]
                ],
            ),
            "<h3>Time in stage (completed stays that ended in the period, days)</h3>",
            _table(
                ["Stage", "Stays", "Median", "P90", "Mean"],
                [
                    [r["name"], r["stays"], r["median_days"], r["p90_days"], r["mean_days"]]
                    for r in p["time_in_stage"]
                ],
            ),
            "<h3>Stage aging (active leads; red tick = SLA)</h3>",
            charts.aging(p["aging"]),
            _table(
                [
                    "Stage",
                    "SLA days",
                    "Leads",
                    "Avg days",
                    "Max days",
                    "Over SLA",
                    "Flagged",
                    "Stuck",
                ],
                [
                    [
                        r["name"],
                        r["sla_days"],
                        r["leads"],
                        r["avg_days"],
                        r["max_days"],
                        r["over_sla"],
                        r["flagged"],
                        r["stuck"],
                    ]
                    for r in p["aging"]
                ],
            ),
            "<h3>Stuck leads (10 oldest per stage)</h3>",
            _table(
                ["Stage", "Email", "Company", "Days in stage", "Over SLA", "Flagged"],
                [
                    [
                        r["stage"],
                        r["email"],
                        r["company"],
                        r["days_in_stage"],
                        "yes" if r["over_sla"] else "",
                        "yes" if r["flagged"] else "",
                    ]
                    for r in p["stuck"]
                ],
            )
            if p["stuck"]
            else '<p class="muted">None.</p>',
            "<h3>Weekly trend: new leads and wins</h3>",
            charts.weekly(p["weekly"]),
            "<h3>Conversion by lead source (leads created in the period)</h3>",
            _table(
                ["Source", "Leads", "Won", "Conversion"],
                [
                    [r["source"], r["leads"], r["won"], percent(r["conversion_rate"], 1)]
                    for r in p["sources"]
                ],
            ),
            "<h3>Templates and A/B variants</h3>",
            charts.variants(p["variants"]),
            _table(
                [
                    "Template",
                    "Variant",
                    "Sent",
                    "Bounced",
                    "Opened",
                    "Clicked",
                    "Replied",
                    "Unsubscribed",
                    "Open %",
                    "Click %",
                    "Reply %",
                    "Bounce %",
                ],
                [
                    [
                        r["template"],
                        r["variant"],
                        r["sent"],
                        r["bounced"],
                        r["opened"],
                        r["clicked"],
                        r["replied"],
                        r["unsubscribed"],
                        percent(r["open_rate"], 1),
                        percent(r["click_rate"], 1),
                        percent(r["reply_rate"], 1),
                        percent(r["bounce_rate"], 1),
                    ]
                    for r in p["variants"]
                ],
            ),
            "</section>",
        ]
    )


def _fmt(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _td(value: Any) -> str:
    klass = ' class="t"' if is_text(value) else ""
    return f"<td{klass}>{escape(_fmt(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
