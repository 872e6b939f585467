"""Inline SVG charts drawn in Python, so the HTML report needs no script and no network.

Inline ``<svg>`` in HTML5 needs no namespace declaration, so the page holds no URL at all.

Every label is escaped: stage names, templates and sources come from config and data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from leadflow.reporting.money import format_money

WIDTH = 720
LABEL_W = 190
ROW_H = 26
BAR_H = 18
BLUE, GREEN, RED, GREY, AMBER, PURPLE = (
    "#3b6fd8",
    "#2e9e5b",
    "#d0453a",
    "#c7ccd6",
    "#e0a020",
    "#8a5cd0",
)
KIND_COLOURS = {"open": BLUE, "won": GREEN, "lost": RED}


def _svg(height: int, body: list[str], title: str) -> str:
    return (
        f'<svg role="img" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" class="chart"><title>{escape(title)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str = "") -> str:
    tooltip = f"<title>{escape(tip)}</title>" if tip else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
        f'fill="{fill}" rx="2">{tooltip}</rect>'
    )


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def funnel(rows: Sequence[dict[str, Any]]) -> str:
    """A real funnel: one centred bar per stage of the main path, in path order, as wide as
    the leads that reached it (so it narrows), joined by shaded bands; the stage name on
    the left, the count and the share of the previous stage that got there on the right."""
    span = WIDTH - LABEL_W - 130
    centre = LABEL_W + span / 2
    widest = max((r["reached"] for r in rows), default=0) or 1
    gap = 10
    body = []
    previous: tuple[float, float] | None = None  # the bar above: its bottom y and width
    for i, r in enumerate(rows):
        y = 8 + i * (ROW_H + gap)
        w = max(span * r["reached"] / widest, 2 if r["reached"] else 0)
        if previous is not None:
            top, above = previous
            band = (
                f"{centre - above / 2:.1f},{top:.1f} {centre + above / 2:.1f},{top:.1f} "
                f"{centre + w / 2:.1f},{y:.1f} {centre - w / 2:.1f},{y:.1f}"
            )
            body.append(f'<polygon points="{band}" fill="#e3e8f2"/>')
        body.append(_text(LABEL_W - 8, y + 13, r["name"], anchor="end"))
        body.append(_rect(centre - w / 2, y, w, BAR_H, BLUE, f"{r['name']}: {r['reached']}"))
        label = _num(r["reached"])
        if i:
            rate = rows[i - 1]["to_next_rate"]
            label += f"  ({'n/a' if rate is None else f'{rate * 100:.0f}%'} of previous)"
        body.append(_text(WIDTH - 8, y + 13, label, anchor="end", cls="num"))
        previous = (y + BAR_H, w)
    if not rows or not rows[0]["reached"]:
        body.append(
            _text(LABEL_W, 20 + len(rows) * (ROW_H + gap), "No leads created in the period.")
        )
    height = (
        16 + max(len(rows), 1) * (ROW_H + gap) + (16 if not rows or not rows[0]["reached"] else 0)
    )
    return _svg(height, body, "Funnel: leads that reached each stage")


def stages(rows: Sequence[dict[str, Any]], callbacks: int) -> str:
    """Leads per stage now: one bar per stage in pipeline order, plus the callback list,
    coloured by the stage's kind, with a legend of the kinds shown."""
    items = [(r["name"], r["leads"], KIND_COLOURS.get(r["kind"], GREY)) for r in rows]
    items.append(("Callback list", callbacks, AMBER))
    widest = max((n for _, n, _ in items), default=0) or 1
    span = WIDTH - LABEL_W - 70
    body = []
    for i, (name, count, colour) in enumerate(items):
        y = 8 + i * ROW_H
        w = max(span * count / widest, 2 if count else 0)
        body.append(_text(LABEL_W - 8, y + 13, name, anchor="end"))
        body.append(_rect(LABEL_W, y, w, BAR_H, colour, f"{name}: {count}"))
        body.append(_text(WIDTH - 8, y + 13, _num(count), anchor="end", cls="num"))
    legend_y = 16 + len(items) * ROW_H + 4
    shown = {colour for _, count, colour in items if count}
    x = 8.0
    for colour, words in KIND_WORDS:
        if colour in shown:
            body.append(_rect(x, legend_y, 14, 10, colour))
            body.append(_text(x + 20, legend_y + 9, words, cls="axis"))
            x += 40 + 7 * len(words)
    return _svg(legend_y + LEGEND_H, body, "Leads per stage now")


KIND_WORDS = (
    (BLUE, "open stage"),
    (GREEN, "won"),
    (RED, "lost"),
    (GREY, "stage not in the config"),
    (AMBER, "callback list"),
)


def forecast(rows: Sequence[dict[str, Any]], currency: str | None) -> str:
    """Open value (grey) and forecast (blue) per expected close month, as paired columns on
    an amount axis in the config's currency, with axis titles and a legend."""
    height, top, bottom, left = 270, 16, 64, 84
    plot_w, plot_h = WIDTH - left - 12, height - top - bottom
    ticks = axis_ticks(max([r["value"] or 0 for r in rows] + [1]))
    peak = ticks[-1]
    body = _value_axis(
        ticks, lambda tick: format_money(tick, currency) or "", left=left, top=top, plot_h=plot_h
    )
    slot = plot_w / max(len(rows), 1)
    series = (("value", GREY, "open value"), ("weighted", BLUE, "forecast"))
    for i, r in enumerate(rows):
        x = left + i * slot
        for j, (key, colour, words) in enumerate(series):
            amount = r[key] or 0.0
            h = plot_h * amount / peak
            tip = f"{r['month']}: {words} {format_money(amount, currency)}, {r['deals']} deals"
            body.append(
                _rect(x + slot * (0.1 + 0.4 * j), top + plot_h - h, slot * 0.38, h, colour, tip)
            )
        body.append(_text(x + slot / 2, top + plot_h + 16, r["month"], anchor="middle", cls="axis"))
    body.append(
        _text(
            left + plot_w / 2,
            top + plot_h + 32,
            "Expected close month",
            anchor="middle",
            cls="axis",
        )
    )
    unit = f"Amount ({currency})" if currency else "Amount"
    body.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{escape(unit)}</text>'
    )
    legend_y = height - 14
    for j, (_, colour, words) in enumerate(series):
        x = left + j * 140
        body.append(_rect(x, legend_y - 9, 14, 10, colour))
        body.append(_text(x + 20, legend_y, words, cls="axis"))
    if not rows:
        body.append(_text(left + 8, top + 20, "No open deals with a value."))
    return _svg(height, body, "Forecast by expected close month")


def aging(rows: Sequence[dict[str, Any]]) -> str:
    """Average (dark) and oldest (light) days in stage, with the stage SLA as a red tick."""
    shown = [r for r in rows if r["leads"]]
    scale_max = max([r["max_days"] or 0 for r in shown] + [r["sla_days"] or 0 for r in shown] + [1])
    span = WIDTH - LABEL_W - 140
    body = []
    for i, r in enumerate(shown):
        y = 8 + i * ROW_H
        avg, oldest = r["avg_days"] or 0.0, r["max_days"] or 0.0
        colour = RED if r["stuck"] else BLUE
        body.append(_text(LABEL_W - 8, y + 13, r["name"], anchor="end"))
        body.append(
            _rect(LABEL_W, y, span * oldest / scale_max, BAR_H, GREY, f"oldest {oldest:.1f} days")
        )
        body.append(
            _rect(
                LABEL_W, y + 4, span * avg / scale_max, BAR_H - 8, colour, f"average {avg:.1f} days"
            )
        )
        if r["sla_days"]:
            x = LABEL_W + span * r["sla_days"] / scale_max
            body.append(
                f'<line x1="{x:.1f}" y1="{y - 2}" x2="{x:.1f}" y2="{y + BAR_H + 2}" '
                f'stroke="{RED}" stroke-width="2"><title>SLA {r["sla_days"]} days'
                "</title></line>"
            )
        label = f"{avg:.1f} d avg" + (f", {r['stuck']} stuck" if r["stuck"] else "")
        body.append(_text(WIDTH - 8, y + 13, label, anchor="end", cls="num"))
    if not shown:
        body.append(_text(LABEL_W, 20, "No active leads in open stages."))
    legend_y = 16 + max(len(shown), 1) * ROW_H + 4
    body += _aging_legend(legend_y)
    return _svg(legend_y + LEGEND_H, body, "Stage aging")


LEGEND_H = 24


def _aging_legend(y: float) -> list[str]:
    """What the aging chart's marks mean, drawn under it: each swatch then its words."""
    items = [
        (_rect(0, y, 14, 10, BLUE), "average days in stage"),
        (_rect(0, y, 14, 10, RED), "average, stage with stuck leads"),
        (_rect(0, y, 14, 10, GREY), "oldest lead"),
        (
            f'<line x1="7" y1="{y - 2}" x2="7" y2="{y + 12}" stroke="{RED}" stroke-width="2"/>',
            "SLA (max days)",
        ),
    ]
    out, x = [], 8.0
    widths = (170, 215, 100, 100)
    for (mark, words), width in zip(items, widths, strict=True):
        out.append(f'<g transform="translate({x:.1f},0)">{mark}</g>')
        out.append(_text(x + 20, y + 9, words, cls="axis"))
        x += width
    return out


def _value_axis(
    ticks: Sequence[int], fmt: Callable[[int], str], *, left: float, top: float, plot_h: float
) -> list[str]:
    """The value axis of a column chart: a grid line per tick (the zero line darker) across
    the plot, its label ``fmt(tick)`` to the left; ``ticks`` from ``axis_ticks``."""
    peak = ticks[-1]
    body = []
    for tick in ticks:
        y = top + plot_h - plot_h * tick / peak
        colour = GREY if tick == 0 else "#eef0f4"
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{WIDTH - 12}" y2="{y:.1f}" stroke="{colour}"/>'
        )
        body.append(_text(left - 6, y + 4, fmt(tick), anchor="end", cls="num"))
    return body


def axis_ticks(peak: float, most: int = 6) -> list[int]:
    """Round values from 0 to at least ``peak``, at most ``most`` of them (a step of 1, 2 or
    5 times a power of ten): 37 -> 0, 10, 20, 30, 40; 3 -> 0, 1, 2, 3."""
    if peak <= 0:
        return [0, 1]
    raw = peak / (most - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(1, round(step))  # counts: no half leads
    count = math.ceil(peak / step)
    return [i * step for i in range(count + 1)]


def weekly(rows: Sequence[dict[str, Any]]) -> str:
    """New leads (blue) and wins (green) per week as paired columns."""
    height, top, bottom, left = 240, 16, 40, 44
    plot_w, plot_h = WIDTH - left - 12, height - top - bottom
    ticks = axis_ticks(max([r["new_leads"] for r in rows] + [r["won"] for r in rows] + [1]))
    peak = ticks[-1]
    body = _value_axis(ticks, _num, left=left, top=top, plot_h=plot_h)
    slot = plot_w / max(len(rows), 1)
    every = max(1, len(rows) // 8)
    for i, r in enumerate(rows):
        x = left + i * slot
        for j, (key, colour) in enumerate((("new_leads", BLUE), ("won", GREEN))):
            h = plot_h * r[key] / peak
            body.append(
                _rect(
                    x + slot * (0.1 + 0.4 * j),
                    top + plot_h - h,
                    slot * 0.38,
                    h,
                    colour,
                    f"week of {r['week']}: {r[key]} {key.replace('_', ' ')}",
                )
            )
        if i % every == 0:
            body.append(
                _text(
                    x + slot / 2, height - bottom + 16, r["week"][5:], anchor="middle", cls="axis"
                )
            )
    middle = top + plot_h / 2
    body.append(
        f'<text x="12" y="{middle:.1f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 12 {middle:.1f})">Leads</text>'
    )
    body.append(_text(left, height - 6, "■ new leads", cls="legend-new"))
    body.append(_text(left + 110, height - 6, "■ won", cls="legend-won"))
    if not rows:
        body.append(_text(left + 8, top + 20, "No weeks in the period."))
    return _svg(height, body, "Weekly new leads and wins")


def variants(rows: Sequence[dict[str, Any]]) -> str:
    """Open, click and reply rates side by side for each template / variant."""
    metrics = (
        ("open_rate", BLUE, "open"),
        ("click_rate", PURPLE, "click"),
        ("reply_rate", GREEN, "reply"),
    )
    group_h = ROW_H * 2 + 6
    span = WIDTH - LABEL_W - 110
    peak = max([r[k] or 0.0 for r in rows for k, _, _ in metrics] + [0.01])
    body = []
    for i, r in enumerate(rows):
        y = 8 + i * group_h
        label = f"{r['template']} · {r['variant']}" if r["variant"] else str(r["template"])
        body.append(_text(LABEL_W - 8, y + 14, label, anchor="end"))
        body.append(_text(LABEL_W - 8, y + 30, f"{r['sent']} sent", anchor="end", cls="axis"))
        for j, (key, colour, name) in enumerate(metrics):
            value = r[key] or 0.0
            top = y + j * 15
            body.append(
                _rect(
                    LABEL_W, top, span * value / peak, 12, colour, f"{name} rate {value * 100:.1f}%"
                )
            )
            body.append(
                _text(
                    LABEL_W + span * value / peak + 6,
                    top + 10,
                    f"{name} {value * 100:.1f}%",
                    cls="axis",
                )
            )
    if not rows:
        body.append(_text(LABEL_W, 20, "No emails sent in the period."))
    return _svg(16 + max(len(rows), 1) * group_h, body, "A/B variant comparison")
