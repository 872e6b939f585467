"""The pipeline as it stands: leads per stage and status, stage aging and stuck leads.

These read the ``lead`` table's current state (the report is normally run with
``until = now``); ages are measured at ``until``. A lead is stuck when it has been in its
stage for at least the stage's ``sla.max_days`` (the engine's own test) or is flagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, Row, case, cast, func, literal, null, or_, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.config.schema import Pipeline
from leadflow.reporting.sqlfn import Scope, days_until
from models.tables import LEADS, LeadStatus

OLDEST_PER_STAGE = 10


@dataclass(frozen=True)
class StageCount:
    pipeline: str | None
    stage: str | None
    status: str
    leads: int
    value: float


@dataclass(frozen=True)
class StageAging:
    leads: int
    avg_days: float | None
    max_days: float | None
    over_sla: int
    flagged: int
    stuck: int


def stage_counts(conn: Connection, scope: Scope) -> list[StageCount]:
    """Leads and summed deal value per (pipeline, stage, status)."""
    lead = LEADS
    rows = conn.execute(
        select(
            lead.c.pipeline,
            lead.c.stage,
            lead.c.status,
            func.count(),
            func.coalesce(func.sum(lead.c.deal_value), 0.0),
        )
        .where(*scope.in_pipeline(lead.c.pipeline))
        .group_by(lead.c.pipeline, lead.c.stage, lead.c.status)
    ).all()
    return [StageCount(r[0], r[1], str(r[2]), int(r[3]), float(r[4])) for r in rows]


def per_stage(days: Mapping[tuple[str, str], float | None]) -> ColumnElement[Any]:
    """A CASE giving each (pipeline, stage) its number of days; NULL where it has none (a
    typed NULL: PostgreSQL cannot type a bare parameter used as a column and compared)."""
    lead = LEADS
    known: dict[str, dict[str, Any]] = {}
    for (p, s), d in sorted(days.items()):
        if d is not None:
            known.setdefault(p, {})[s] = literal(float(d))
    if not known:
        return cast(null(), Float)
    # Simple CASEs, pipeline then stage: one comparison per WHEN, per lead.
    return case(
        {p: case(stages, value=lead.c.stage) for p, stages in known.items()},
        value=lead.c.pipeline,
    )


def sla_rule(
    scope: Scope, pipelines: Sequence[Pipeline]
) -> tuple[ColumnElement[float], ColumnElement[Any], ColumnElement[bool]]:
    """The SLA rule, the one definition of the report (stage aging, stuck leads, deals at
    risk): a lead's days in stage at ``until``, its stage's ``sla.max_days`` (NULL where
    there is no SLA) and whether it is over it: days >= max_days, the stage engine's own
    test."""
    lead = LEADS
    age = days_until(scope.dialect, scope.until, lead.c.stage_entered_at)
    sla = per_stage(
        {(p.id, s.id): float(s.sla.max_days) for p in pipelines for s in p.stages if s.sla}
    )
    return age, sla, age >= sla


def _age_and_stuck(
    scope: Scope, pipelines: Sequence[Pipeline]
) -> tuple[ColumnElement[float], ColumnElement[bool], ColumnElement[bool]]:
    lead = LEADS
    age, _, over_sla = sla_rule(scope, pipelines)
    return age, over_sla, or_(lead.c.stuck, over_sla)


def stage_aging(
    conn: Connection, scope: Scope, pipelines: Sequence[Pipeline]
) -> dict[tuple[str, str], StageAging]:
    """Per (pipeline, stage) of active leads: age statistics and how many are stuck."""
    lead = LEADS
    age, over_sla, stuck = _age_and_stuck(scope, pipelines)
    rows = conn.execute(
        select(
            lead.c.pipeline,
            lead.c.stage,
            func.count(),
            func.avg(age),
            func.max(age),
            func.sum(case((over_sla, 1), else_=0)),
            func.sum(case((lead.c.stuck, 1), else_=0)),
            func.sum(case((stuck, 1), else_=0)),
        )
        .where(
            lead.c.status == LeadStatus.ACTIVE,
            lead.c.stage.is_not(None),
            *scope.in_pipeline(lead.c.pipeline),
        )
        .group_by(lead.c.pipeline, lead.c.stage)
    ).all()
    return {
        (r[0], r[1]): StageAging(
            int(r[2]),
            None if r[3] is None else float(r[3]),
            None if r[4] is None else float(r[4]),
            int(r[5] or 0),
            int(r[6] or 0),
            int(r[7] or 0),
        )
        for r in rows
    }


def oldest_stuck(
    conn: Connection,
    scope: Scope,
    pipelines: Sequence[Pipeline],
    stages: Iterable[tuple[str | None, str]],
) -> list[dict[str, Any]]:
    """The ``OLDEST_PER_STAGE`` longest-waiting stuck leads of every stage, oldest first.

    ``stages`` are the (pipeline, stage) pairs that have active leads (``stage_aging``'s).
    One ``ORDER BY stage_entered_at, id LIMIT 10`` per stage walks ``ix_lead_report_stage``
    from the oldest entry and stops at the tenth stuck lead, instead of ranking them all.
    """
    lead = LEADS
    age, over_sla, stuck = _age_and_stuck(scope, pipelines)
    columns = (
        lead.c.pipeline,
        lead.c.stage,
        lead.c.email,
        lead.c.company,
        lead.c.stuck.label("flagged"),
        age.label("days"),
        case((over_sla, True), else_=False).label("over_sla"),
    )
    ranked: list[tuple[int, Row[Any]]] = []
    for pipeline, stage in sorted(stages, key=lambda k: (k[0] or "", k[1])):
        same = lead.c.pipeline.is_(None) if pipeline is None else lead.c.pipeline == pipeline
        oldest = conn.execute(
            select(*columns)
            .where(
                same,
                lead.c.stage == stage,
                lead.c.status == LeadStatus.ACTIVE,
                stuck,
                *scope.in_pipeline(lead.c.pipeline),
            )
            .order_by(lead.c.stage_entered_at, lead.c.id)
            .limit(OLDEST_PER_STAGE)
        ).all()
        ranked += enumerate(oldest)
    ranked.sort(key=lambda pair: pair[0])  # by rank over all stages, as one ORDER BY would
    rows = [r for _, r in ranked]
    return [
        {
            "pipeline": r.pipeline,
            "stage": r.stage,
            "email": r.email,
            "company": r.company,
            "days_in_stage": None if r.days is None else round(float(r.days), 1),
            "over_sla": bool(r.over_sla),
            "flagged": bool(r.flagged),
        }
        for r in rows
    ]
