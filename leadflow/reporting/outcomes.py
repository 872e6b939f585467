"""Wins, losses, sales cycle, lead sources and the weekly trend, from the ``lead`` table.

A lead counts as won in the period when its ``won_at`` falls inside it and as lost when it
was closed (``status = 'closed'``, which only a lost stage sets) inside it (``lost``, the
one definition, used by ``sales.stage_outcomes`` too). The sales cycle
is ``created_at`` → ``won_at`` of the leads won in the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.reporting.sqlfn import Distribution, Scope, days_between, distributions, week_index
from models.tables import LEADS, LeadStatus

NO_SOURCE = "(none)"


@dataclass(frozen=True)
class Closed:
    won: int
    won_value: float
    avg_deal_size: float | None
    lost: int


def lost(closed_when: ColumnElement[bool]) -> ColumnElement[bool]:
    """The lead was lost when ``closed_when`` (a test of ``closed_at``) holds: its status is
    ``closed``, which only a move to a lost stage sets (the move clears ``won_at``: a lost
    lead is never also won)."""
    return and_(LEADS.c.status == LeadStatus.CLOSED, closed_when)


def closed(conn: Connection, scope: Scope) -> dict[str | None, Closed]:
    lead = LEADS
    won = scope.within(lead.c.won_at)
    was_lost = lost(scope.within(lead.c.closed_at))
    rows = conn.execute(
        select(
            lead.c.pipeline,
            func.sum(case((won, 1), else_=0)),
            func.coalesce(func.sum(case((won, lead.c.deal_value), else_=None)), 0.0),
            func.avg(case((won, lead.c.deal_value), else_=None)),
            func.sum(case((was_lost, 1), else_=0)),
        )
        .where(won | was_lost, *scope.in_pipeline(lead.c.pipeline))
        .group_by(lead.c.pipeline)
    ).all()
    return {
        r[0]: Closed(int(r[1]), float(r[2]), None if r[3] is None else float(r[3]), int(r[4]))
        for r in rows
    }


def sales_cycle(conn: Connection, scope: Scope) -> dict[str | None, Distribution]:
    lead = LEADS
    cycles = select(
        lead.c.pipeline, days_between(scope.dialect, lead.c.won_at, lead.c.created_at).label("v")
    ).where(scope.within(lead.c.won_at), *scope.in_pipeline(lead.c.pipeline))
    return {key[0]: dist for key, dist in distributions(conn, cycles, ["pipeline"]).items()}


def sources(conn: Connection, scope: Scope) -> list[dict[str, Any]]:
    """Leads created in the period per source, and how many of them have been won by ``until``.

    Grouped by the stored source, in the order of ``ix_lead_report_source`` (no sort); a
    missing source is then counted as ``NO_SOURCE``.
    """
    lead = LEADS
    rows = conn.execute(
        select(
            lead.c.pipeline,
            lead.c.source,
            func.count(),
            func.sum(case((lead.c.won_at <= scope.until, 1), else_=0)),
        )
        .where(scope.within(lead.c.created_at), *scope.in_pipeline(lead.c.pipeline))
        .group_by(lead.c.pipeline, lead.c.source)
    ).all()
    tally: dict[tuple[str | None, str], list[int]] = {}
    for pipeline, source, leads, won in rows:
        counts = tally.setdefault((pipeline, NO_SOURCE if source is None else str(source)), [0, 0])
        counts[0] += int(leads)
        counts[1] += int(won or 0)
    return [
        {"pipeline": pipeline, "source": source, "leads": leads, "won": won}
        for (pipeline, source), (leads, won) in tally.items()
    ]


def weekly(conn: Connection, scope: Scope, column: str) -> dict[tuple[str | None, int], int]:
    """Leads per (pipeline, week index) whose ``column`` (created_at, won_at) is in the period."""
    lead = LEADS
    moment = lead.c[column]
    keyed = (
        select(lead.c.pipeline, week_index(scope.dialect, moment).label("week"))
        .where(scope.within(moment), *scope.in_pipeline(lead.c.pipeline))
        .subquery()
    )
    rows = conn.execute(
        select(keyed.c.pipeline, keyed.c.week, func.count()).group_by(
            keyed.c.pipeline, keyed.c.week
        )
    ).all()
    return {(r[0], int(r[1])): int(r[2]) for r in rows}
