"""``build_report``: run the aggregate queries once for all pipelines, then assemble the report.

The figures themselves are shaped per pipeline by ``figures`` (key figures: leads, weighted
pipeline, outcomes, velocity; coverage = weighted pipeline / target), ``forecast`` (forecast,
at risk), ``stages`` (funnel, conversion, time in stage, aging, stuck) and ``activity``
(weekly, sources, variants); each module states the definitions it follows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from leadflow.config import LoadedConfig
from leadflow.config.schema import Pipeline
from leadflow.reporting import (
    activity,
    figures,
    flow,
    forecast,
    messaging,
    outcomes,
    owners,
    sales,
    snapshot,
    stages,
)
from leadflow.reporting.numbers import money, ratio, round_rate
from leadflow.reporting.sqlfn import Scope


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
        self.owners = owners.leaderboard(conn, scope)
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
        """One pipeline's part of the report."""
        chances = figures.chances(p, self.stage_outcomes)
        stages_now, leads, weighted, open_value = figures.stages_now(p, self.counts, chances)
        result, exact = figures.closed_outcomes(self.closed.get(p.id), self.cycles.get(p.id))
        velocity = figures.velocity(leads["open"], *exact)
        return {
            "id": p.id,
            "name": p.name or p.id,
            "leads": leads,
            "forecast": forecast.forecast(
                p, self.history_stays, chances, self.deal_groups, self.scope.until
            ),
            "at_risk": forecast.at_risk(p, self.risk[p.id], self.idle_days),
            "leaderboard": self.owners.get(p.id, []),
            "funnel": stages.funnel(p, self.reached.get(p.id, {})),
            "stages_now": stages_now,
            "conversion": stages.conversion(p, self.flows),
            "time_in_stage": stages.time_in_stage(p, self.stays),
            "aging": stages.aging(p, self.aging),
            "stuck": stages.stuck(p, self.stuck),
            "outcomes": result,
            "open_value": money(open_value),
            "weighted_pipeline": money(weighted),
            "target": p.target,
            "coverage": round_rate(ratio(weighted, p.target)),
            "velocity": velocity,
            "weekly": activity.weekly(p, self.new_weekly, self.won_weekly, self.scope),
            "sources": activity.sources(p, self.sources),
            "variants": activity.variants(p, self.variants),
            "first_response": figures.hours(self.response.get(p.id)),
        }
