"""The pipeline as it stands: leads per stage and status, stage aging and stuck leads.

These read the ``lead`` table's current state (the report is normally run with
``until = now``); ages are measured at ``until``. A lead is stuck when it has been in its
stage for at least the stage's ``sla.max_days`` (the engine's own test) or is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, and_, case, func, literal, or_, select
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


def _sla_days(pipelines: Sequence[Pipeline]) -> ColumnElement[Any]:
    """Each (pipeline, stage)'s ``sla.max_days`` as one CASE; NULL where there is no SLA."""
    lead = LEADS
    whens = [
        (and_(lead.c.pipeline == p.id, lead.c.stage == s.id), literal(float(s.sla.max_days)))
        for p in pipelines
        for s in p.stages
        if s.sla is not None
    ]
    if not whens:
        return literal(None, Float)
    return case(*whens, else_=None)


def _age_and_stuck(
    scope: Scope, pipelines: Sequence[Pipeline]
) -> tuple[ColumnElement[float], ColumnElement[bool], ColumnElement[bool]]:
    lead = LEADS
    age = days_until(scope.dialect, scope.until, lead.c.stage_entered_at)
    over_sla = age >= _sla_days(pipelines)
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
    conn: Connection, scope: Scope, pipelines: Sequence[Pipeline]
) -> list[dict[str, Any]]:
    """The ``OLDEST_PER_STAGE`` longest-waiting stuck leads of every stage, oldest first."""
    lead = LEADS
    age, over_sla, stuck = _age_and_stuck(scope, pipelines)
    ranked = (
        select(
            lead.c.pipeline,
            lead.c.stage,
            lead.c.email,
            lead.c.company,
            lead.c.stuck.label("flagged"),
            age.label("days"),
            case((over_sla, True), else_=False).label("over_sla"),
            func.row_number()
            .over(
                partition_by=(lead.c.pipeline, lead.c.stage),
                order_by=(lead.c.stage_entered_at, lead.c.id),
            )
            .label("rank"),
        )
        .where(
            lead.c.status == LeadStatus.ACTIVE,
            lead.c.stage.is_not(None),
            stuck,
            *scope.in_pipeline(lead.c.pipeline),
        )
        .subquery()
    )
    rows = conn.execute(
        select(ranked).where(ranked.c.rank <= OLDEST_PER_STAGE).order_by(ranked.c.rank)
    ).all()
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
