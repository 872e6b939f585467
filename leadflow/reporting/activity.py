"""A pipeline's activity over the period: new and won leads by week, sources, message variants."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from leadflow.config.schema import Pipeline
from leadflow.reporting.numbers import ratio, round_rate
from leadflow.reporting.sqlfn import EPOCH_MONDAY, Scope, week_start


def weekly(
    p: Pipeline,
    new_weekly: dict[tuple[str | None, int], int],
    won_weekly: dict[tuple[str | None, int], int],
    scope: Scope,
) -> list[dict[str, Any]]:
    new = {w: n for (pid, w), n in new_weekly.items() if pid == p.id}
    won = {w: n for (pid, w), n in won_weekly.items() if pid == p.id}
    weeks = set(new) | set(won)
    last = _week_of(scope.until)
    if scope.since is not None:
        first = _week_of(scope.since)
    elif weeks:
        first = min(weeks)
    else:
        return []
    return [
        {"week": week_start(w).isoformat(), "new_leads": new.get(w, 0), "won": won.get(w, 0)}
        for w in range(first, max([last, *weeks]) + 1)
    ]


def sources(p: Pipeline, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [
        {
            "source": r["source"],
            "leads": r["leads"],
            "won": r["won"],
            "conversion_rate": round_rate(ratio(r["won"], r["leads"])),
        }
        for r in found
        if r["pipeline"] == p.id
    ]
    return sorted(rows, key=lambda r: (-r["leads"], r["source"]))


def variants(p: Pipeline, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in found:
        if r["pipeline"] != p.id:
            continue
        delivered = r["sent"] - r["bounced"]
        rows.append(
            {
                "template": r["template"],
                "variant": r["variant"],
                "sent": r["sent"],
                "delivered": delivered,
                "bounced": r["bounced"],
                "opened": r["opened"],
                "clicked": r["clicked"],
                "replied": r["replied"],
                "unsubscribed": r["unsubscribed"],
                "bounce_rate": round_rate(ratio(r["bounced"], r["sent"])),
                **{rate: round_rate(ratio(r[k], delivered)) for k, rate in _RATES.items()},
            }
        )
    return sorted(rows, key=lambda r: (r["template"] or "", r["variant"] or ""))


_RATES = {
    "opened": "open_rate",
    "clicked": "click_rate",
    "replied": "reply_rate",
    "unsubscribed": "unsubscribe_rate",
}


def _week_of(moment: datetime) -> int:
    return (moment.date() - EPOCH_MONDAY).days // 7
