"""``build_report``: run the aggregate queries once for all pipelines, then shape per pipeline.

Derived figures follow the usual sales definitions:

- weighted pipeline = Σ stage probability * deal value over active leads in *open* stages
  (won deals are counted as won, not as pipeline); coverage = weighted pipeline / target;
  the stage probability is ``sales.stage_probability``'s, the forecast's too: the stage's
  ``probability`` when the YAML sets it, else its observed won / (won + lost), else 0;
- win rate = won / (won + lost) over leads closed in the period; win/loss ratio = won / lost;
- velocity = open opportunities * win rate * average deal size / mean sales cycle (per day);
- funnel = leads created in the period by the furthest stage of the main
  path each reached; a stage's conversion = reached the next stage / reached this one;
- forecast = Σ probability * deal value of open deals, in the month each is expected to
  close: ``until`` + what is left of the median time in its stage + the medians of the open
  stages after it (stays of all history up to ``until``); its total weighted is the
  weighted pipeline's (same deals, same probabilities);
- at risk: see ``reporting.sales``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection

from leadflow.config import LoadedConfig
from leadflow.config.schema import Pipeline
from leadflow.reporting import flow, messaging, outcomes, sales, snapshot
from leadflow.reporting.numbers import money, ratio, round_days, round_hours, round_rate
from leadflow.reporting.sqlfn import EPOCH_MONDAY, Distribution, Scope, week_start


def build_report(
    conn: Connection,
    loaded: LoadedConfig,
    *,
    since: datetime | None,
    until: datetime,
    pipeline: str | None,
    idle_days: int = sales.IDLE_DAYS,
) -> dict[str, Any]:
    """Every metric for [since, until] (since=None: all history), JSON-ready; a deal with no
    activity for ``idle_days`` is at risk."""
    config = loaded.config
    if pipeline is not None and config.pipeline(pipeline) is None:
        known = ", ".join(p.id for p in config.pipelines)
        raise ValueError(f"unknown pipeline '{pipeline}' (known: {known})")
    until = _aware(until, "until")
    since = None if since is None else _aware(since, "since")
    if since is not None and since > until:
        raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    if idle_days < 1:
        raise ValueError(f"idle_days must be at least 1, not {idle_days}")
    pipelines = [p for p in config.pipelines if pipeline is None or p.id == pipeline]
    scope = Scope(conn.dialect.name, since, until, pipeline)
    facts = _Facts(conn, scope, pipelines, idle_days)
    return {
        "period": {"since": since.isoformat() if since else None, "until": until.isoformat()},
        "currency": config.currency,
        "pipeline": pipeline,
        "unassigned_leads": sum(c.leads for c in facts.counts if c.pipeline is None),
        "pipelines": [facts.section(p) for p in pipelines],
    }


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


class _Facts:
    """The aggregated rows of one report, fetched once and sliced per pipeline."""

    def __init__(
        self, conn: Connection, scope: Scope, pipelines: list[Pipeline], idle_days: int
    ) -> None:
        self.scope = scope
        self.idle_days = idle_days
        self.counts = snapshot.stage_counts(conn, scope)
        self.aging = snapshot.stage_aging(conn, scope, pipelines)
        self.stuck = snapshot.oldest_stuck(conn, scope, pipelines, self.aging)
        self.flows = flow.flows(conn, scope)
        self.stays = flow.time_in_stage(conn, scope)
        self.closed = outcomes.closed(conn, scope)
        self.cycles = outcomes.sales_cycle(conn, scope)
        self.sources = outcomes.sources(conn, scope)
        self.new_weekly = outcomes.weekly(conn, scope, "created_at")
        self.won_weekly = outcomes.weekly(conn, scope, "won_at")
        self.variants = messaging.variant_results(conn, scope)
        self.response = messaging.first_response(conn, scope)
        self.reached = sales.furthest_reached(conn, scope, pipelines)
        history = Scope(scope.dialect, None, scope.until, scope.pipeline)
        self.history_stays = (
            self.stays if scope.since is None else flow.time_in_stage(conn, history)
        )
        self.deal_groups = sales.open_deals_by_age(conn, scope, pipelines)
        undeclared = any(
            "probability" not in s.model_fields_set for p in pipelines for s in sales.open_stages(p)
        )
        self.stage_outcomes = sales.stage_outcomes(conn, scope) if undeclared else {}
        self.risk = {
            p.id: sales.at_risk(conn, scope, p, self._usual_days(p), idle_days) for p in pipelines
        }

    def _usual_days(self, p: Pipeline) -> dict[tuple[str, str], float | None]:
        """The p90 of each open stage's past stays: longer is longer than usual."""
        found = {}
        for s in sales.open_stages(p):
            d = self.history_stays.get((p.id, s.id))
            found[(p.id, s.id)] = d.p90 if d else None
        return found

    def section(self, p: Pipeline) -> dict[str, Any]:
        stages_now, leads, weighted, open_value = self._stages_now(p)
        result, exact = self._outcomes(p)
        velocity = _velocity(leads["open"], *exact)
        return {
            "id": p.id,
            "name": p.name or p.id,
            "leads": leads,
            "forecast": self._forecast(p),
            "at_risk": self._at_risk(p),
            "funnel": self._funnel(p),
            "stages_now": stages_now,
            "conversion": self._conversion(p),
            "time_in_stage": self._time_in_stage(p),
            "aging": self._aging(p),
            "stuck": self._stuck(p),
            "outcomes": result,
            "open_value": money(open_value),
            "weighted_pipeline": money(weighted),
            "target": p.target,
            "coverage": round_rate(ratio(weighted, p.target)),
            "velocity": velocity,
            "weekly": self._weekly(p),
            "sources": self._sources(p),
            "variants": self._variants(p),
            "first_response": _hours(self.response.get(p.id)),
        }

    def _stages_now(self, p: Pipeline) -> tuple[list[dict[str, Any]], dict[str, int], float, float]:
        in_stage: dict[str, int] = defaultdict(int)
        active_value: dict[str, float] = defaultdict(float)
        status: dict[str, int] = defaultdict(int)
        for c in self.counts:
            if c.pipeline != p.id:
                continue
            status[c.status] += c.leads
            if c.stage is not None:
                in_stage[c.stage] += c.leads
                if c.status == "active":
                    active_value[c.stage] += c.value
        kinds = {s.id: s.kind for s in p.stages}
        chance = self._chances(p)
        stages_now = [
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
        stages_now += [  # stages the data has but the config no longer declares
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
        return stages_now, leads, weighted, open_value

    def _chances(self, p: Pipeline) -> dict[str, tuple[float | None, str | None]]:
        """Each open stage's win probability and its source (``sales.stage_probability``)."""
        return {
            s.id: sales.stage_probability(s, self.stage_outcomes.get((p.id, s.id)))
            for s in sales.open_stages(p)
        }

    def _funnel(self, p: Pipeline) -> dict[str, Any]:
        counts = self.reached.get(p.id, {})
        path = sales.main_path(p)
        reached = [sum(n for k, n in counts.items() if k >= i) for i in range(len(path))]
        cohort = sum(counts.values())
        rows = [
            {
                "stage": s.id,
                "name": s.display_name,
                "kind": s.kind,
                "reached": reached[i],
                "to_next_rate": (
                    round_rate(ratio(reached[i + 1], reached[i])) if i + 1 < len(path) else None
                ),
                "of_cohort_rate": round_rate(ratio(reached[i], cohort)),
            }
            for i, s in enumerate(path)
        ]
        return {"cohort": cohort, "stages": rows}

    def _forecast(self, p: Pipeline) -> dict[str, Any]:
        opens = sales.open_stages(p)
        median: dict[str, float | None] = {}
        for s in opens:
            d = self.history_stays.get((p.id, s.id))
            median[s.id] = d.median if d else None
        after: dict[str, float] = {}
        left = 0.0
        for s in reversed(opens):
            after[s.id] = left
            left += median[s.id] or 0.0
        chances = self._chances(p)
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
        for g in self.deal_groups:
            if g.pipeline != p.id or g.stage not in after:
                continue
            age = max(g.age or 0, 0)
            days = max((median[g.stage] or 0.0) - age, 0.0) + after[g.stage]
            month = months[f"{self.scope.until + timedelta(days=days):%Y-%m}"]
            month[0] += g.deals
            month[1] += g.value
            month[2] += (chance[g.stage] or 0.0) * g.value
        rows = [
            {"month": m, "deals": int(n), "value": money(v), "weighted": money(w)}
            for m, (n, v, w) in (
                (m, months.get(m, [0, 0.0, 0.0])) for m in _months(months, self.scope.until)
            )
        ]
        return {
            "deals": sum(r["deals"] for r in rows),
            "value": money(sum(v for _, v, _ in months.values())),
            "weighted": money(sum(w for _, _, w in months.values())),
            "months": rows,
            "stages": basis,
        }

    def _at_risk(self, p: Pipeline) -> dict[str, Any]:
        risk = self.risk[p.id]
        names = {s.id: s.display_name for s in p.stages}
        return {
            "idle_days": self.idle_days,
            "count": risk.count,
            "value": money(risk.value),
            "by_reason": risk.by_reason,
            "deals": [{**d, "stage_name": names.get(d["stage"], d["stage"])} for d in risk.deals],
        }

    def _conversion(self, p: Pipeline) -> list[dict[str, Any]]:
        order = {s.id: i for i, s in enumerate(p.stages)}
        lost = {s.id for s in p.stages if s.kind == "lost"}
        progress = [s for s in p.stages if s.kind != "lost"]
        following = {a.id: b.id for a, b in pairwise(progress)}
        tally: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for f in self.flows:
            if f.pipeline != p.id or f.stage not in order:
                continue
            t = tally[f.stage]
            t["entered"] += f.count
            if not f.moved:
                t["in_stage"] += f.count
            elif f.next_stage is None:
                t["recycled"] += f.count
            elif f.next_stage in lost:
                t["lost"] += f.count
            elif order.get(f.next_stage, -1) > order[f.stage]:
                t["advanced"] += f.count
                if f.next_stage == following.get(f.stage):
                    t["to_next"] += f.count
            else:
                t["moved_back"] += f.count
        rows = []
        for s in progress:
            t = tally[s.id]
            entered = t["entered"]
            rows.append(
                {
                    "stage": s.id,
                    "name": s.display_name,
                    "next_stage": following.get(s.id),
                    **{
                        k: t[k]
                        for k in (
                            "entered",
                            "to_next",
                            "advanced",
                            "moved_back",
                            "recycled",
                            "lost",
                            "in_stage",
                        )
                    },
                    "to_next_rate": round_rate(ratio(t["to_next"], entered)),
                    "advance_rate": round_rate(ratio(t["advanced"], entered)),
                    "drop_off_rate": round_rate(ratio(t["recycled"] + t["lost"], entered)),
                }
            )
        return rows

    def _time_in_stage(self, p: Pipeline) -> list[dict[str, Any]]:
        rows = []
        for s in p.stages:
            if s.kind == "lost":
                continue
            d = self.stays.get((p.id, s.id))
            rows.append(
                {
                    "stage": s.id,
                    "name": s.display_name,
                    "stays": d.count if d else 0,
                    "median_days": round_days(d.median if d else None),
                    "p90_days": round_days(d.p90 if d else None),
                    "mean_days": round_days(d.mean if d else None),
                }
            )
        return rows

    def _aging(self, p: Pipeline) -> list[dict[str, Any]]:
        rows = []
        for s in p.stages:
            if s.kind != "open":
                continue
            a = self.aging.get((p.id, s.id)) or snapshot.StageAging(0, None, None, 0, 0, 0)
            rows.append(
                {
                    "stage": s.id,
                    "name": s.display_name,
                    "sla_days": s.sla.max_days if s.sla else None,
                    "leads": a.leads,
                    "avg_days": round_days(a.avg_days),
                    "max_days": round_days(a.max_days),
                    "over_sla": a.over_sla,
                    "flagged": a.flagged,
                    "stuck": a.stuck,
                }
            )
        return rows

    def _stuck(self, p: Pipeline) -> list[dict[str, Any]]:
        order = {s.id: i for i, s in enumerate(p.stages)}
        mine = [dict(r) for r in self.stuck if r["pipeline"] == p.id]
        mine.sort(key=lambda r: order.get(r["stage"], len(order)))  # stable: oldest first
        for r in mine:
            del r["pipeline"]
        return mine

    def _outcomes(
        self, p: Pipeline
    ) -> tuple[dict[str, Any], tuple[float | None, float | None, float | None]]:
        """The outcome section, and unrounded win rate, deal size and cycle for velocity."""
        c = self.closed.get(p.id) or outcomes.Closed(0, 0.0, None, 0)
        cycle = self.cycles.get(p.id)
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

    def _weekly(self, p: Pipeline) -> list[dict[str, Any]]:
        new = {w: n for (pid, w), n in self.new_weekly.items() if pid == p.id}
        won = {w: n for (pid, w), n in self.won_weekly.items() if pid == p.id}
        weeks = set(new) | set(won)
        last = _week_of(self.scope.until)
        if self.scope.since is not None:
            first = _week_of(self.scope.since)
        elif weeks:
            first = min(weeks)
        else:
            return []
        return [
            {"week": week_start(w).isoformat(), "new_leads": new.get(w, 0), "won": won.get(w, 0)}
            for w in range(first, max([last, *weeks]) + 1)
        ]

    def _sources(self, p: Pipeline) -> list[dict[str, Any]]:
        rows = [
            {
                "source": r["source"],
                "leads": r["leads"],
                "won": r["won"],
                "conversion_rate": round_rate(ratio(r["won"], r["leads"])),
            }
            for r in self.sources
            if r["pipeline"] == p.id
        ]
        return sorted(rows, key=lambda r: (-r["leads"], r["source"]))

    def _variants(self, p: Pipeline) -> list[dict[str, Any]]:
        rows = []
        for r in self.variants:
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


def _week_of(moment: datetime) -> int:
    return (moment.date() - EPOCH_MONDAY).days // 7


def _velocity(
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


def _hours(d: Distribution | None) -> dict[str, Any]:
    return {
        "leads": d.count if d else 0,
        "median_hours": round_hours(d.median if d else None),
        "p90_hours": round_hours(d.p90 if d else None),
        "mean_hours": round_hours(d.mean if d else None),
    }
