"""A pipeline's key figures: leads by status, stages now, weighted pipeline, outcomes, velocity.

- weighted pipeline = Σ stage probability * deal value over active leads in *open* stages
  (won deals are counted as won, not as pipeline); the stage probability is
  ``sales.stage_probability``'s: the stage's ``probability`` when the YAML sets it, else its
  observed won / (won + lost), else 0;
- win rate = won / (won + lost) over leads closed in the period; win/loss ratio = won / lost;
- velocity = open opportunities * win rate * average deal size / mean sales cycle (per day).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from leadflow.config.schema import Pipeline
from leadflow.reporting import outcomes, sales, snapshot
from leadflow.reporting.numbers import money, ratio, round_days, round_hours, round_rate
from leadflow.reporting.sqlfn import Distribution

Chances = dict[str, tuple[float | None, str | None]]


def chances(p: Pipeline, stage_outcomes: dict[sales.StageKey, tuple[int, int]]) -> Chances:
    """Each open stage's win probability and its source (``sales.stage_probability``)."""
    return {
        s.id: sales.stage_probability(s, stage_outcomes.get((p.id, s.id)))
        for s in sales.open_stages(p)
    }


def stages_now(
    p: Pipeline, counts: list[snapshot.StageCount], chance: Chances
) -> tuple[list[dict[str, Any]], dict[str, int], float, float]:
    """The stages' leads and values now, leads by status, weighted pipeline and open value."""
    in_stage: dict[str, int] = defaultdict(int)
    active_value: dict[str, float] = defaultdict(float)
    status: dict[str, int] = defaultdict(int)
    for c in counts:
        if c.pipeline != p.id:
            continue
        status[c.status] += c.leads
        if c.stage is not None:
            in_stage[c.stage] += c.leads
            if c.status == "active":
                active_value[c.stage] += c.value
    kinds = {s.id: s.kind for s in p.stages}
    rows = [
        {
            "stage": s.id,
            "name": s.display_name,
            "kind": s.kind,
            "probability": round_rate(chance[s.id][0]) if s.id in chance else s.probability,
            "leads": in_stage.get(s.id, 0),
            "value": money(active_value.get(s.id, 0.0)),
        }
        for s in p.stages
    ]
    rows += [  # stages the data has but the config no longer declares
        {
            "stage": sid,
            "name": sid,
            "kind": "unknown",
            "probability": 0.0,
            "leads": n,
            "value": money(active_value.get(sid, 0.0)),
        }
        for sid, n in sorted(in_stage.items())
        if sid not in kinds
    ]
    open_ids = [s.id for s in p.stages if s.kind == "open"]
    leads = {
        "total": sum(status.values()),
        "active": status.get("active", 0),
        "open": sum(in_stage.get(s, 0) for s in open_ids),
        "won": sum(n for sid, n in in_stage.items() if kinds.get(sid) == "won"),
        "callback": status.get("callback", 0),
        "closed": status.get("closed", 0),
    }
    weighted = sum(
        (chance[s.id][0] or 0.0) * active_value.get(s.id, 0.0) for s in sales.open_stages(p)
    )
    open_value = sum(active_value.get(s, 0.0) for s in open_ids)
    return rows, leads, weighted, open_value


def closed_outcomes(
    c: outcomes.Closed | None, cycle: Distribution | None
) -> tuple[dict[str, Any], tuple[float | None, float | None, float | None]]:
    """The outcome section, and unrounded win rate, deal size and cycle for velocity."""
    c = c or outcomes.Closed(0, 0.0, None, 0)
    win_rate = ratio(c.won, c.won + c.lost)
    section = {
        "won": c.won,
        "lost": c.lost,
        "win_rate": round_rate(win_rate),
        "win_loss_ratio": round_rate(ratio(c.won, c.lost)),
        "won_value": money(c.won_value),
        "avg_deal_size": money(c.avg_deal_size),
        "cycle_days": {
            "count": cycle.count if cycle else 0,
            "median": round_days(cycle.median if cycle else None),
            "mean": round_days(cycle.mean if cycle else None),
            "p90": round_days(cycle.p90 if cycle else None),
        },
    }
    return section, (win_rate, c.avg_deal_size, cycle.mean if cycle else None)


def velocity(
    open_leads: int, win_rate: float | None, deal: float | None, cycle: float | None
) -> dict[str, Any]:
    per_day = None
    if win_rate is not None and deal is not None and cycle:
        per_day = open_leads * win_rate * deal / cycle
    return {
        "open_opportunities": open_leads,
        "win_rate": round_rate(win_rate),
        "avg_deal_size": money(deal),
        "avg_cycle_days": round_days(cycle),
        "per_day": money(per_day),
    }


def hours(d: Distribution | None) -> dict[str, Any]:
    """A distribution in hours (the first response)."""
    return {
        "leads": d.count if d else 0,
        "median_hours": round_hours(d.median if d else None),
        "p90_hours": round_hours(d.p90 if d else None),
        "mean_hours": round_hours(d.mean if d else None),
    }
