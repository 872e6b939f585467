"""What the report shows, written once: its title lines and one function per table.

The terminal, the HTML page and the CSV export all draw these same ``Table`` values, so a
column, label or rounding changed here changes in every form. Each function reads one
pipeline section of ``build_report``'s dict. One module over 400 lines because it is one
concept: splitting the tables apart would hide the order and the shared formatting they are
read in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from leadflow.reporting.numbers import percent
from leadflow.reporting.snapshot import OLDEST_PER_STAGE
from leadflow.reporting.table import Cell, Column, Format, Table, days, show

WEEKS_SHOWN = 12
TEXT, NUMBER, PERCENT, MONEY, DAYS = (
    Format.TEXT,
    Format.NUMBER,
    Format.PERCENT,
    Format.MONEY,
    Format.DAYS,
)
Section = dict[str, Any]


def report_title(data: dict[str, Any]) -> str:
    """``Pipeline report: all history to 2026-12-07 15:37 UTC`` (the period, to the minute)."""
    period = data["period"]
    since = _instant(period["since"]) if period["since"] else "all history"
    return f"Pipeline report: {since} to {_instant(period['until'])}"


def _instant(iso: str) -> str:
    return f"{datetime.fromisoformat(iso).astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def unassigned_note(data: dict[str, Any]) -> str | None:
    n = data.get("unassigned_leads")
    return f"{_count(n, 'lead')} not yet assigned to a pipeline." if n else None


def _count(n: int, noun: str) -> str:
    """``1 lead``, ``292 leads``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def headline(data: dict[str, Any]) -> str:
    """One line per report, e.g. ``312 leads: 41 in Prospect, 12 in Qualified; won 5 (win
    rate 38%), 22 on the callback list``; pipelines are joined with `` | `` when there are
    several."""
    parts = []
    several = len(data["pipelines"]) > 1
    for p in data["pipelines"]:
        stages = ", ".join(
            f"{f['leads']:,} in {f['name']}" for f in p["stages_now"] if f["kind"] == "open"
        )
        result = p["outcomes"]
        line = (
            f"{_count(p['leads']['total'], 'lead')}: {stages or 'no open stages'}; "
            f"won {result['won']:,} (win rate {percent(result['win_rate'])}), "
            f"{p['leads']['callback']:,} on the callback list"
        )
        parts.append(f"{p['id']}: {line}" if several else line)
    return " | ".join(parts) if parts else "no pipelines"


def pipeline_tables(p: Section, currency: str | None = None) -> list[Table]:
    """Every table of one pipeline, in the order both the terminal and the page show them;
    amounts in ``currency`` (the report's ``currency``; None: plain numbers)."""
    tables = [make(p, currency) for make in TABLES]
    return [t for t in tables if t.rows or t.key not in OPTIONAL]


def _table(
    key: str,
    title: str,
    columns: list[tuple[str, Format]],
    rows: list[list[Cell]],
    *notes: str,
    currency: str | None = None,
) -> Table:
    return Table(
        key,
        title,
        tuple(Column(h, f, currency if f is MONEY else None) for h, f in columns),
        tuple(tuple(r) for r in rows),
        notes,
    )


def figures(p: Section, currency: str | None = None) -> Table:
    """The headline figures; each row formats its own value, so the column is text."""
    result, cycle = p["outcomes"], p["outcomes"]["cycle_days"]
    num = _number

    def cash(value: Cell) -> str:
        return show(value, MONEY, currency)

    rows: list[list[Cell]] = [
        ["Leads", num(p["leads"]["total"])],
        ["Open opportunities", num(p["leads"]["open"])],
        ["Callback list", num(p["leads"]["callback"])],
        ["Won / lost (closed in the period)", f"{result['won']} / {result['lost']}"],
        ["Win rate", show(result["win_rate"], PERCENT)],
        ["Win/loss ratio", num(result["win_loss_ratio"])],
        ["Won value", cash(result["won_value"])],
        ["Average deal size", cash(result["avg_deal_size"])],
        ["Sales cycle median / mean (days)", f"{num(cycle['median'])} / {num(cycle['mean'])}"],
        ["Open value", cash(p["open_value"])],
        ["Weighted pipeline", cash(p["weighted_pipeline"])],
        ["Pipeline target", cash(p["target"])],
        [_coverage_label(p["target"], cash), show(p["coverage"], PERCENT)],
        ["Velocity (value per day)", cash(p["velocity"]["per_day"])],
        ["First response median (hours)", num(p["first_response"]["median_hours"])],
    ]
    return _table(
        "figures",
        "Key figures",
        [("Figure", TEXT), ("Value", NUMBER)],
        rows,
        "Coverage: the weighted pipeline (open deal values times their stage's probability) "
        "over the pipeline's target (pipelines[].target in pipeline.yaml).",
    )


def _coverage_label(target: float | None, cash: Callable[[Cell], str]) -> str:
    """Which target the coverage is of: the pipeline's ``target``, met by weighted pipeline."""
    if target is None:
        return "Coverage of target (no target set)"
    return f"Coverage of the {cash(target)} target"


def _number(value: Cell) -> str:
    return show(value, NUMBER)


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def forecast(p: Section, currency: str | None = None) -> Table:
    f = p["forecast"]
    return _table(
        "forecast",
        "Forecast by expected close month (open deals)",
        [("Month", TEXT), ("Deals", NUMBER), ("Open value", MONEY), ("Forecast", MONEY)],
        [[r["month"], r["deals"], r["value"], r["weighted"]] for r in f["months"]],
        "Forecast: deal value times its stage's win probability. Expected close: the report's "
        "end plus what is left of the median time in the deal's stage and the medians of the "
        "open stages after it (past stays); months in UTC.",
        currency=currency,
    )


def forecast_basis(p: Section, currency: str | None = None) -> Table:
    sources = {"config": "pipeline.yaml", "history": "won / closed in history", None: "unknown"}
    return _table(
        "forecast_basis",
        "Forecast basis (per open stage)",
        [
            ("Stage", TEXT),
            ("Win probability", PERCENT),
            ("From", TEXT),
            ("Median days in stage", NUMBER),
            ("Days to close from entry", NUMBER),
        ],
        [
            [
                r["name"],
                r["probability"],
                sources.get(r["probability_source"], r["probability_source"]),
                r["median_days"],
                r["days_to_close"],
            ]
            for r in p["forecast"]["stages"]
        ],
        "A stage without its probability in pipeline.yaml uses the share of the leads that "
        "entered it and were later won, of those won or lost; an unknown one counts as 0%.",
    )


def risk_reasons(deal: dict[str, Any]) -> list[str]:
    """Why a deal is at risk, in words: ``over the 30-day SLA``, ``no activity for 20 days``."""
    reasons = set(deal["reasons"])
    words = []
    if "over_sla" in reasons:
        words.append(f"over the {deal['sla_days']}-day SLA")
    else:
        if "over_usual" in reasons:
            words.append(f"longer than usual ({_days(deal['usual_days'])})")
        if "flagged" in reasons:
            words.append("flagged stuck")
    if "idle" in reasons:
        idle = deal["idle_days"]
        words.append("no activity recorded" if idle is None else f"no activity for {_days(idle)}")
    if "overdue" in reasons:
        words.append(f"next step {_days(deal['overdue_days'] or 0)} overdue")
    return words


def _days(n: float) -> str:
    """``1 day``, ``25 days``, ``2.5 days``."""
    return f"{days(n)} day{'' if days(n) == '1' else 's'}"


def at_risk(p: Section, currency: str | None = None) -> Table:
    risk = p["at_risk"]
    deals = risk["deals"]
    owners = any(d["owner"] for d in deals)  # no owner in the data: no column
    columns = [("Email", TEXT), ("Company", TEXT)]
    columns += [("Owner", TEXT)] if owners else []
    columns += [("Stage", TEXT), ("Value", MONEY), ("Days in stage", DAYS), ("Why", TEXT)]
    rows: list[list[Cell]] = [
        [
            d["email"],
            d["company"],
            *([d["owner"]] if owners else []),
            d["stage_name"],
            d["value"],
            d["days_in_stage"],  # one decimal, as the reasons: 12.3 next to "(12.3 days)"
            "; ".join(risk_reasons(d)),
        ]
        for d in deals
    ]
    shown = "" if risk["count"] == len(deals) else f"; the {len(deals)} largest shown"
    total = show(risk["value"], MONEY, currency)
    return _table(
        "at_risk",
        "Deals at risk (largest first)",
        columns,
        rows,
        f"{_count(risk['count'], 'open deal')} at risk, worth {total}{shown}.",
        "At risk: over the stage's SLA, longer in it than usual (than 9 in 10 past stays), "
        "flagged stuck, "
        f"no activity (an event, an email sent or a stage move) for {risk['idle_days']} days, "
        "or the next step (a cadence email, an SLA check) overdue by more than a day.",
        currency=currency,
    )


def leaderboard(p: Section, currency: str | None = None) -> Table:
    """The owners of the pipeline's leads (no team, no rows: the table is left out)."""
    return _table(
        "leaderboard",
        "Team leaderboard (won value first)",
        [
            ("Owner", TEXT),
            ("Open", NUMBER),
            ("New", NUMBER),
            ("Won", NUMBER),
            ("Won value", MONEY),
            ("Lost", NUMBER),
            ("Win rate", PERCENT),
            ("Days to win", DAYS),
            ("Stuck", NUMBER),
        ],
        [
            [
                o["owner"],
                o["open"],
                o["new"],
                o["won"],
                o["won_value"],
                o["lost"],
                o["win_rate"],
                o["days_to_win"],
                o["stuck"],
            ]
            for o in p.get("leaderboard", [])
        ],
        "Open: active and not won. New, won, lost: in the period. Win rate: won / (won + lost). "
        "Days to win: from created to won, the mean of the period's wins. Leads nobody owns "
        "are left out.",
        currency=currency,
    )


OPTIONAL = frozenset({"leaderboard"})  # left out when empty (a report without a team)


def funnel(p: Section, currency: str | None = None) -> Table:
    f = p["funnel"]
    return _table(
        "funnel",
        "Funnel (leads created in the period, by the furthest stage each reached)",
        [("Stage", TEXT), ("Reached", NUMBER), ("→ Next %", PERCENT), ("Of all %", PERCENT)],
        [[r["name"], r["reached"], r["to_next_rate"], r["of_cohort_rate"]] for r in f["stages"]],
        "A lead that skipped a stage has passed it; a lead lost at a stage reached it. → Next: "
        "the share that reached the following stage.",
    )


def stages(p: Section, currency: str | None = None) -> Table:
    rows: list[list[Cell]] = [
        [f["name"], f["kind"], f["leads"], f["value"]] for f in p["stages_now"]
    ]
    rows.append(["Callback list", None, p["leads"]["callback"], None])
    return _table(
        "stages",
        "Leads per stage now (lost and the callback list included)",
        [("Stage", TEXT), ("Kind", TEXT), ("Leads", NUMBER), ("Value", MONEY)],
        rows,
        "Value: deal value of the active leads in the stage.",
        currency=currency,
    )


def conversion(p: Section, currency: str | None = None) -> Table:
    counts = ("entered", "to_next", "advanced", "moved_back", "recycled", "lost", "in_stage")
    rates = ("to_next_rate", "advance_rate", "drop_off_rate")
    return _table(
        "conversion",
        "Conversion (entries in the period and where they went next)",
        [
            ("Stage", TEXT),
            ("Entered", NUMBER),
            ("→ Next", NUMBER),
            ("Advanced", NUMBER),
            ("Back", NUMBER),
            ("Recycled", NUMBER),
            ("Lost", NUMBER),
            ("Still in", NUMBER),
            ("Next %", PERCENT),
            ("Advance %", PERCENT),
            ("Drop-off %", PERCENT),
        ],
        [[r["name"], *(r[k] for k in counts), *(r[k] for k in rates)] for r in p["conversion"]],
        "→ Next: to the following stage; Advanced: to any later one; Back: to an earlier one.",
    )


def time_in_stage(p: Section, currency: str | None = None) -> Table:
    return _table(
        "time_in_stage",
        "Time in stage (completed stays that ended in the period, days)",
        [("Stage", TEXT), ("Stays", NUMBER), ("Median", NUMBER), ("P90", NUMBER), ("Mean", NUMBER)],
        [
            [r["name"], r["stays"], r["median_days"], r["p90_days"], r["mean_days"]]
            for r in p["time_in_stage"]
        ],
        "Leads still in a stage are not here: their age is in Stage aging.",
    )


def aging(p: Section, currency: str | None = None) -> Table:
    keys = ("sla_days", "leads", "avg_days", "max_days", "over_sla", "flagged", "stuck")
    return _table(
        "aging",
        "Stage aging (active leads in open stages, days in stage)",
        [
            ("Stage", TEXT),
            ("SLA days", NUMBER),
            ("Leads", NUMBER),
            ("Avg days", NUMBER),
            ("Max days", NUMBER),
            ("Over SLA", NUMBER),
            ("Flagged", NUMBER),
            ("Stuck", NUMBER),
        ],
        [[r["name"], *(r[k] for k in keys)] for r in p["aging"]],
        "Stuck: over the stage's SLA or flagged.",
    )


def stuck(p: Section, currency: str | None = None) -> Table:
    names = {f["stage"]: f["name"] for f in p["stages_now"]}
    return _table(
        "stuck",
        f"Stuck leads (oldest first, up to {OLDEST_PER_STAGE} per stage)",
        [
            ("Stage", TEXT),
            ("Email", TEXT),
            ("Company", TEXT),
            ("Days in stage", NUMBER),
            ("Over SLA", TEXT),
            ("Flagged", TEXT),
        ],
        [
            [
                names.get(r["stage"], r["stage"]),
                r["email"],
                r["company"],
                r["days_in_stage"],
                _yes(r["over_sla"]),
                _yes(r["flagged"]),
            ]
            for r in p["stuck"]
        ],
    )


def weekly(p: Section, currency: str | None = None) -> Table:
    return _table(
        "weekly",
        f"Weekly trend (last {WEEKS_SHOWN} weeks)",
        [("Week of", TEXT), ("New leads", NUMBER), ("Won", NUMBER)],
        [[r["week"], r["new_leads"], r["won"]] for r in p["weekly"][-WEEKS_SHOWN:]],
    )


def sources(p: Section, currency: str | None = None) -> Table:
    return _table(
        "sources",
        "Conversion by lead source (leads created in the period)",
        [("Source", TEXT), ("Leads", NUMBER), ("Won", NUMBER), ("Conversion", PERCENT)],
        [[r["source"], r["leads"], r["won"], r["conversion_rate"]] for r in p["sources"]],
    )


def variants(p: Section, currency: str | None = None) -> Table:
    counts = ("sent", "bounced", "opened", "clicked", "replied", "unsubscribed")
    rates = ("open_rate", "click_rate", "reply_rate", "bounce_rate")
    return _table(
        "variants",
        "Templates and A/B variants (emails sent in the period)",
        [
            ("Template", TEXT),
            ("Variant", TEXT),
            *((h, NUMBER) for h in ("Sent", "Bounced", "Opened", "Clicked", "Replied", "Unsub")),
            ("Open %", PERCENT),
            ("Click %", PERCENT),
            ("Reply %", PERCENT),
            ("Bounce %", PERCENT),
        ],
        [
            [r["template"], r["variant"], *(r[k] for k in counts), *(r[k] for k in rates)]
            for r in p["variants"]
        ],
        "Open, click and reply % are of delivered emails (sent less bounced); bounce % of sent.",
    )


TABLES: tuple[Callable[[Section, str | None], Table], ...] = (
    figures,
    forecast,
    forecast_basis,
    at_risk,
    leaderboard,
    funnel,
    stages,
    conversion,
    time_in_stage,
    aging,
    stuck,
    weekly,
    sources,
    variants,
)
