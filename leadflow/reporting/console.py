"""The report in a terminal (rich tables) and as one headline line for logs and chat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadflow.reporting.numbers import is_text, percent

BAR_WIDTH = 30
CONSOLE_WEEKS = 12
NONE = "-"


def headline(data: dict[str, Any]) -> str:
    """One line per report, e.g. ``312 leads: 41 prospect, 12 qualified; won 5 (win rate
    38%), callbacks 22``; pipelines are joined with `` | `` when there are several."""
    parts = []
    several = len(data["pipelines"]) > 1
    for p in data["pipelines"]:
        stages = ", ".join(f"{f['leads']} {f['stage']}" for f in p["funnel"] if f["kind"] == "open")
        result = p["outcomes"]
        line = (
            f"{p['leads']['total']} leads: {stages or 'no open stages'}; "
            f"won {result['won']} (win rate {percent(result['win_rate'])}), "
            f"callbacks {p['leads']['callback']}"
        )
        parts.append(f"{p['id']}: {line}" if several else line)
    return " | ".join(parts) if parts else "no pipelines"


def render_report(data: dict[str, Any], console: Console) -> None:
    """Funnel with bars, conversion, time in stage, aging, stuck leads, outcomes, velocity,
    sources, weekly trend and A/B variants, one block per pipeline."""
    period = data["period"]
    console.print(
        Text(f"Pipeline report: {period['since'] or 'all history'} → {period['until']}", "bold")
    )
    if data.get("unassigned_leads"):
        console.print(f"{data['unassigned_leads']} lead(s) not yet assigned to a pipeline")
    for p in data["pipelines"]:
        console.rule(Text(f"{p['name']} ({p['id']})"))
        console.print(Text(headline({"pipelines": [p]})))
        for table in _tables(p):
            if table.row_count:
                console.print(table)


def _tables(p: dict[str, Any]) -> list[Table]:
    return [
        _funnel(p),
        _conversion(p),
        _rows(
            "Time in stage (completed stays, days)",
            ["Stage", "Stays", "Median", "P90", "Mean"],
            [
                [r["name"], r["stays"], r["median_days"], r["p90_days"], r["mean_days"]]
                for r in p["time_in_stage"]
                if r["stays"]
            ],
        ),
        _rows(
            "Stage aging (active leads, days in stage)",
            ["Stage", "SLA", "Leads", "Avg", "Max", "Over SLA", "Flagged", "Stuck"],
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
        _rows(
            "Stuck leads (oldest first, up to 10 per stage)",
            ["Stage", "Email", "Company", "Days", "Why"],
            [
                [r["stage"], r["email"], r["company"], r["days_in_stage"], _why(r)]
                for r in p["stuck"]
            ],
        ),
        _summary(p),
        _rows(
            "Lead sources (leads created in the period)",
            ["Source", "Leads", "Won", "Conversion"],
            [
                [r["source"], r["leads"], r["won"], percent(r["conversion_rate"], 1)]
                for r in p["sources"]
            ],
        ),
        _rows(
            f"Weekly trend (last {CONSOLE_WEEKS} weeks)",
            ["Week of", "New leads", "Won"],
            [[r["week"], r["new_leads"], r["won"]] for r in p["weekly"][-CONSOLE_WEEKS:]],
        ),
        _rows(
            "Templates and A/B variants",
            [
                "Template",
                "Variant",
                "Sent",
                "Bounced",
                "Opened",
                "Clicked",
                "Replied",
                "Unsub",
                "Open %",
                "Reply %",
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
                    percent(r["reply_rate"], 1),
                ]
                for r in p["variants"]
            ],
        ),
    ]


def _cell(value: Any) -> Text:
    """Data never goes through rich markup: a company called "[red]x" prints as written."""
    if value is None:
        return Text(NONE, "dim")
    if isinstance(value, float):
        return Text(f"{value:,.2f}")
    return Text(str(value))


def _rows(title: str, headers: Sequence[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        textual = i == 0 or any(is_text(row[i]) for row in rows)
        table.add_column(header, justify="left" if textual else "right")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    return table


def _funnel(p: dict[str, Any]) -> Table:
    table = _rows("Funnel (leads per stage now)", ["Stage", "Kind", "Leads", "Value"], [])
    table.add_column("", justify="left")
    widest = max((f["leads"] for f in p["funnel"]), default=0) or 1
    for f in p["funnel"]:
        bar = "█" * round(BAR_WIDTH * f["leads"] / widest)
        colour = {"won": "green", "lost": "red"}.get(f["kind"], "cyan")
        table.add_row(
            _cell(f["name"]),
            _cell(f["kind"]),
            _cell(f["leads"]),
            _cell(f["value"]),
            Text(bar, colour),
        )
    table.add_row(
        _cell("callback list"), _cell("—"), _cell(p["leads"]["callback"]), _cell(None), Text("")
    )
    return table


def _conversion(p: dict[str, Any]) -> Table:
    return _rows(
        "Conversion (entries in the period → where they went next)",
        [
            "Stage",
            "Entered",
            "→ Next",
            "Advanced",
            "Back",
            "Recycled",
            "Lost",
            "Still in",
            "Next %",
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
                percent(r["to_next_rate"]),
                percent(r["drop_off_rate"]),
            ]
            for r in p["conversion"]
        ],
    )


def _summary(p: dict[str, Any]) -> Table:
    result, velocity, response = p["outcomes"], p["velocity"], p["first_response"]
    cycle = result["cycle_days"]
    figures: list[list[Any]] = [
        ["Won / lost (closed in period)", f"{result['won']} / {result['lost']}"],
        ["Win rate", percent(result["win_rate"], 1)],
        ["Win/loss ratio", result["win_loss_ratio"]],
        ["Won value", result["won_value"]],
        ["Average deal size", result["avg_deal_size"]],
        ["Sales cycle median / mean (days)", f"{_num(cycle['median'])} / {_num(cycle['mean'])}"],
        ["Open value", p["open_value"]],
        ["Weighted pipeline", p["weighted_pipeline"]],
        ["Target", p["target"]],
        ["Coverage", percent(p["coverage"], 1)],
        ["Velocity (value per day)", velocity["per_day"]],
        ["First response median (hours)", response["median_hours"]],
    ]
    return _rows("Win rate, value and velocity", ["Figure", "Value"], figures)


def _num(value: float | None) -> str:
    return NONE if value is None else f"{value:,.2f}"


def _why(row: dict[str, Any]) -> str:
    reasons = (["over SLA"] if row["over_sla"] else []) + (["flagged"] if row["flagged"] else [])
    return ", ".join(reasons)
