"""Open deals ahead: the forecast by expected month of closing, and the deals at risk.

forecast = Σ probability * deal value of open deals, in the month each is expected to
close: ``until`` + what is left of the median time in its stage + the medians of the open
stages after it (stays of all history up to ``until``); its total weighted is the weighted
pipeline's (same deals, same probabilities). At risk: see ``reporting.sales``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from leadflow.config.schema import Pipeline
from leadflow.reporting import sales
from leadflow.reporting.figures import Chances
from leadflow.reporting.numbers import money, round_days, round_rate
from leadflow.reporting.sqlfn import Distribution


def forecast(
    p: Pipeline,
    history_stays: dict[tuple[str | None, str], Distribution],
    chances: Chances,
    deal_groups: list[sales.DealGroup],
    until: datetime,
) -> dict[str, Any]:
    opens = sales.open_stages(p)
    median: dict[str, float | None] = {}
    for s in opens:
        d = history_stays.get((p.id, s.id))
        median[s.id] = d.median if d else None
    after: dict[str, float] = {}
    left = 0.0
    for s in reversed(opens):
        after[s.id] = left
        left += median[s.id] or 0.0
    basis, chance = [], {}
    for s in opens:
        probability, source = chances[s.id]
        chance[s.id] = probability
        basis.append(
            {
                "stage": s.id,
                "name": s.display_name,
                "probability": round_rate(probability),
                "probability_source": source,
                "median_days": round_days(median[s.id]),
                "days_to_close": round_days((median[s.id] or 0.0) + after[s.id]),
            }
        )
    months: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for g in deal_groups:
        if g.pipeline != p.id or g.stage not in after:
            continue
        age = max(g.age or 0, 0)
        days = max((median[g.stage] or 0.0) - age, 0.0) + after[g.stage]
        month = months[f"{until + timedelta(days=days):%Y-%m}"]
        month[0] += g.deals
        month[1] += g.value
        month[2] += (chance[g.stage] or 0.0) * g.value
    rows = [
        {"month": m, "deals": int(n), "value": money(v), "weighted": money(w)}
        for m, (n, v, w) in ((m, months.get(m, [0, 0.0, 0.0])) for m in _months(months, until))
    ]
    return {
        "deals": sum(r["deals"] for r in rows),
        "value": money(sum(v for _, v, _ in months.values())),
        "weighted": money(sum(w for _, _, w in months.values())),
        "months": rows,
        "stages": basis,
    }


def at_risk(p: Pipeline, risk: sales.Risk, idle_days: int) -> dict[str, Any]:
    names = {s.id: s.display_name for s in p.stages}
    return {
        "idle_days": idle_days,
        "count": risk.count,
        "value": money(risk.value),
        "by_reason": risk.by_reason,
        "deals": [{**d, "stage_name": names.get(d["stage"], d["stage"])} for d in risk.deals],
    }


def _months(found: dict[str, Any], until: datetime) -> list[str]:
    """Every month (``2026-04``) from ``until``'s to the last in ``found``; none if empty."""
    if not found:
        return []
    year, month = until.year, until.month
    last = max(found)
    shown = []
    while f"{year:04d}-{month:02d}" <= last:
        shown.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return shown
