"""What a sales manager reads first: the funnel, the forecast and the deals at risk (queries).

- Funnel: the leads created in the period, each counted once at the furthest stage of the
  main path (every stage but the lost ones, in config order) it reached by ``until``, from the
  transition history. A lead that skipped a stage (prospect -> meeting) has passed it, so
  the counts never grow down the path.
- Forecast: open deals (active leads with a deal value in open stages) grouped by stage and
  whole days in stage; ``build`` places each group in the month it is expected to close.
  Stage win rates observed in history (for stages whose probability the YAML leaves out):
  of the leads that ever entered the stage, won / (won + lost) by ``until``.
- At risk: open deals over their stage's SLA or its usual time (the p90 of past stays),
  flagged stuck, with no activity (an event, an email sent or a stage move) for
  ``idle_days``, or whose next step (``next_action_at``: a cadence email, an SLA check) is
  overdue by more than ``OVERDUE_GRACE``; the largest ``AT_RISK_SHOWN`` by deal value.

Every query groups in the database; Python only walks the grouped rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    not_,
    or_,
    select,
    union,
)
from sqlalchemy.sql.elements import ColumnElement

from leadflow.config.schema import Pipeline, Stage
from leadflow.reporting import outcomes, snapshot
from leadflow.reporting.sqlfn import Scope, days_until
from models.tables import EVENTS, LEADS, OUTBOX, TRANSITIONS, LeadStatus

AT_RISK_SHOWN = 20
IDLE_DAYS = 14  # no event, email sent or stage move in this many days: at risk
OVERDUE_GRACE = timedelta(days=1)  # ticks run every few minutes: a day late is missed
StageKey = tuple[str, str]


def main_path(p: Pipeline) -> list[Stage]:
    """The stages a deal moves through, in order: every stage but the lost ones."""
    return [s for s in p.stages if s.kind != "lost"]


def open_stages(p: Pipeline) -> list[Stage]:
    return [s for s in p.stages if s.kind == "open"]


def furthest_reached(
    conn: Connection, scope: Scope, pipelines: Sequence[Pipeline]
) -> dict[str, dict[int, int]]:
    """Per pipeline: leads created in the period by the index (in ``main_path``) of the
    furthest stage each entered by ``until``; a lead with no such move is at index 0.

    Over all history every lead is in the cohort, so the furthest stage is taken per lead
    from the transitions alone, in ``ix_transition_lead_at`` order (no sort; the index covers
    pipeline and stage too), then each looks up its lead; over a period the period's leads
    come first and each looks up its moves.
    """
    lead, t = LEADS, TRANSITIONS
    # Simple CASEs (pipeline, then stage: one comparison per WHEN, not two) for every move.
    index_in = {
        p.id: case({s.id: literal(i) for i, s in enumerate(main_path(p))}, value=t.c.to_stage)
        for p in pipelines
        if main_path(p)
    }
    if not index_in:
        return {}
    furthest = func.max(case(index_in, value=t.c.pipeline))
    cohort = [scope.within(lead.c.created_at), lead.c.pipeline.in_([p.id for p in pipelines])]
    everyone: dict[str, int] = {}
    if scope.since is None:
        moves = (
            select(t.c.lead_id, furthest.label("furthest"))
            .where(t.c.at <= scope.until)
            .group_by(t.c.lead_id)
            .subquery()
        )
        # The grouped moves drive the join, each seeking its lead by id (``+ 0`` keeps SQLite
        # from building a temporary index over a million grouped rows to join the other
        # way); the cohort's leads with no move by ``until`` are the ones left over.
        query = (
            select(lead.c.pipeline, moves.c.furthest, func.count())
            .select_from(moves.join(lead, lead.c.id == moves.c.lead_id + 0))
            .where(*cohort)
            .group_by(lead.c.pipeline, moves.c.furthest)
        )
        everyone = {
            str(pipeline): int(count)
            for pipeline, count in conn.execute(
                select(lead.c.pipeline, func.count()).where(*cohort).group_by(lead.c.pipeline)
            ).all()
        }
    else:
        per_lead = (
            select(lead.c.pipeline.label("pipeline"), furthest.label("furthest"))
            .select_from(lead.outerjoin(t, and_(t.c.lead_id == lead.c.id, t.c.at <= scope.until)))
            .where(*cohort)
            .group_by(lead.c.pipeline, lead.c.id)
            .subquery()
        )
        query = select(per_lead.c.pipeline, per_lead.c.furthest, func.count()).group_by(
            per_lead.c.pipeline, per_lead.c.furthest
        )
    found: dict[str, dict[int, int]] = {}
    for pipeline, index, count in conn.execute(query).all():
        at = found.setdefault(str(pipeline), {})
        at[int(index or 0)] = at.get(int(index or 0), 0) + int(count)
    for pipeline, count in everyone.items():  # no move at all: index 0
        at = found.setdefault(pipeline, {})
        unmoved = count - sum(at.values())
        if unmoved:
            at[0] = at.get(0, 0) + unmoved
    return found


def _in_open_stage(pipelines: Sequence[Pipeline]) -> ColumnElement[bool]:
    """The lead is in an open stage of one of ``pipelines`` (one plain test per pipeline, so
    the planner can walk ``(pipeline, stage)`` indexes)."""
    lead = LEADS
    tests = [
        and_(lead.c.pipeline == p.id, lead.c.stage.in_([s.id for s in open_stages(p)]))
        for p in pipelines
        if open_stages(p)
    ]
    if not tests:
        return literal(False)
    return tests[0] if len(tests) == 1 else or_(*tests)


def _whole_days(dialect: str, days: ColumnElement[float]) -> ColumnElement[int]:
    if dialect == "sqlite":  # CAST truncates toward zero; ages before 0 are clamped later
        return cast(days, Integer)
    return cast(func.floor(days), Integer)


@dataclass(frozen=True)
class DealGroup:
    """``deals`` open deals of ``stage`` worth ``value`` that entered it ``age`` whole days
    before ``until`` (None: no entry time)."""

    pipeline: str
    stage: str
    age: int | None
    deals: int
    value: float


def open_deals_by_age(
    conn: Connection, scope: Scope, pipelines: Sequence[Pipeline]
) -> list[DealGroup]:
    lead = LEADS
    age = _whole_days(
        scope.dialect, days_until(scope.dialect, scope.until, lead.c.stage_entered_at)
    )
    keyed = (
        select(lead.c.pipeline, lead.c.stage, age.label("age"), lead.c.deal_value)
        .where(
            lead.c.status == LeadStatus.ACTIVE,
            lead.c.deal_value.is_not(None),
            _in_open_stage(pipelines),
        )
        .subquery()
    )
    rows = conn.execute(
        select(
            keyed.c.pipeline,
            keyed.c.stage,
            keyed.c.age,
            func.count(),
            func.sum(keyed.c.deal_value),
        ).group_by(keyed.c.pipeline, keyed.c.stage, keyed.c.age)
    ).all()
    return [
        DealGroup(str(r[0]), str(r[1]), None if r[2] is None else int(r[2]), int(r[3]), float(r[4]))
        for r in rows
    ]


def stage_probability(
    stage: Stage, outcomes: tuple[int, int] | None
) -> tuple[float | None, str | None]:
    """The win probability of an open ``stage`` and where it comes from: its ``probability``
    when the YAML sets one (``"config"``), else its observed won / (won + lost)
    (``"history"``, from ``stage_outcomes``); (None, None) when neither is known, which the
    weighted pipeline and the forecast count as 0. The one definition both use."""
    if "probability" in stage.model_fields_set:
        return stage.probability, "config"
    won, lost = outcomes or (0, 0)
    if won + lost == 0:
        return None, None
    return won / (won + lost), "history"


def stage_outcomes(conn: Connection, scope: Scope) -> dict[StageKey, tuple[int, int]]:
    """Per (pipeline, stage): of the leads that ever entered it by ``until``, how many have
    been won and how many lost by then (leads still open or on the callback list are in
    neither)."""
    lead, t = LEADS, TRANSITIONS
    won = lead.c.won_at <= scope.until
    lost = outcomes.lost(lead.c.closed_at <= scope.until)
    rows = conn.execute(
        select(
            t.c.pipeline,
            t.c.to_stage,
            func.count(func.distinct(case((won, lead.c.id), else_=None))),
            func.count(func.distinct(case((lost, lead.c.id), else_=None))),
        )
        .select_from(lead.join(t, and_(t.c.lead_id == lead.c.id, t.c.at <= scope.until)))
        .where(or_(won, lost), t.c.to_stage.is_not(None), *scope.in_pipeline(t.c.pipeline))
        .group_by(t.c.pipeline, t.c.to_stage)
    ).all()
    return {(str(r[0]), str(r[1])): (int(r[2] or 0), int(r[3] or 0)) for r in rows}


@dataclass(frozen=True)
class Risk:
    """The at-risk deals of one pipeline: how many, their value, per reason, the largest."""

    count: int
    value: float
    by_reason: dict[str, int]
    deals: list[dict[str, Any]]


REASONS = ("over_sla", "over_usual", "flagged", "idle", "overdue")


def at_risk(
    conn: Connection,
    scope: Scope,
    pipeline: Pipeline,
    usual_days: Mapping[StageKey, float | None],
    idle_days: int,
) -> Risk:
    """The open deals of ``pipeline`` at risk at ``until`` (see the module docstring)."""
    lead, event, outbox = LEADS, EVENTS, OUTBOX
    until = scope.until
    age, sla, over_sla = snapshot.sla_rule(scope, [pipeline])
    usual = snapshot.per_stage(usual_days)
    cutoff = until - timedelta(days=idle_days)
    # The leads with an event or a sent email in the idle window, found once from the window's
    # rows (``ix_event_occurred``, ``ix_outbox_sent``), not looked up per open deal.
    recent = union(
        select(event.c.lead_id).where(event.c.occurred_at > cutoff, event.c.occurred_at <= until),
        select(outbox.c.lead_id).where(outbox.c.sent_at > cutoff, outbox.c.sent_at <= until),
    )
    lively = or_(lead.c.stage_entered_at > cutoff, lead.c.id.in_(recent))
    flags: dict[str, ColumnElement[bool]] = {
        "over_sla": over_sla,
        "over_usual": age > usual,
        "flagged": lead.c.stuck,
        "idle": not_(lively),
        "overdue": lead.c.next_action_at < until - OVERDUE_GRACE,
    }
    # Each open deal's age, SLA, usual days and activity computed once (``OFFSET 0`` keeps the
    # subquery from being flattened back into one copy of each expression per flag), then
    # the flags compared from its columns.
    deal = (
        select(
            lead.c.id,
            lead.c.deal_value,
            age.label("age"),
            sla.label("sla"),
            usual.label("usual"),
            lead.c.stuck,
            case((lively, 1), else_=0).label("lively"),
            lead.c.next_action_at,
        )
        .where(lead.c.status == LeadStatus.ACTIVE, _in_open_stage([pipeline]))
        .offset(0)
        .subquery()
    )
    marks: dict[str, ColumnElement[bool]] = {
        "over_sla": deal.c.age >= deal.c.sla,
        "over_usual": deal.c.age > deal.c.usual,
        "flagged": deal.c.stuck,
        "idle": deal.c.lively == 0,
        "overdue": deal.c.next_action_at < until - OVERDUE_GRACE,
    }
    at_risk_deal = or_(*marks.values())
    totals = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(deal.c.deal_value), 0.0),
            *[func.sum(case((mark, 1), else_=0)) for mark in marks.values()],
        ).where(at_risk_deal)
    ).one()
    # Largest first, then longest in stage; NULLS LAST spelled out: SQLite puts NULLs last
    # in a descending order, PostgreSQL first (SQLite >= 3.30 reads NULLS LAST).
    largest = (
        select(deal.c.id)
        .where(at_risk_deal)
        .order_by(deal.c.deal_value.desc().nulls_last(), deal.c.age.desc().nulls_last(), deal.c.id)
        .limit(AT_RISK_SHOWN)
        .scalar_subquery()
    )
    order = (lead.c.deal_value.desc().nulls_last(), age.desc().nulls_last(), lead.c.id)
    last_event = (
        select(func.max(event.c.occurred_at))
        .where(event.c.lead_id == lead.c.id, event.c.occurred_at <= until)
        .scalar_subquery()
    )
    last_sent = (
        select(func.max(outbox.c.sent_at))
        .where(outbox.c.lead_id == lead.c.id, outbox.c.sent_at <= until)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            lead.c.email,
            lead.c.company,
            func.coalesce(lead.c.owner, lead.c.attributes["owner"].as_string()).label("owner"),
            lead.c.stage,
            lead.c.deal_value,
            age.label("age"),
            sla.label("sla"),
            usual.label("usual"),
            lead.c.stage_entered_at,
            last_event.label("last_event"),
            last_sent.label("last_sent"),
            lead.c.next_action_at,
            *[case((flag, True), else_=False).label(name) for name, flag in flags.items()],
        )
        .where(lead.c.id.in_(largest))  # the details of the shown deals only
        .order_by(*order)
    ).all()
    return Risk(
        int(totals[0]),
        float(totals[1]),
        {name: int(n or 0) for name, n in zip(flags, totals[2:], strict=True)},
        [_deal(r._mapping, until) for r in rows],
    )


def _days_since(moment: datetime | None, until: datetime) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=until.tzinfo)
    return max(0, int((until - moment).total_seconds() // 86400))


def _deal(r: Mapping[Any, Any], until: datetime) -> dict[str, Any]:
    since = [
        _days_since(m, until) for m in (r["last_event"], r["last_sent"], r["stage_entered_at"])
    ]
    last = min((d for d in since if d is not None), default=None)  # the latest activity
    age = None if r["age"] is None else max(0.0, float(r["age"]))
    return {
        "email": r["email"],
        "company": r["company"],
        "owner": r["owner"],
        "stage": r["stage"],
        "value": r["deal_value"],
        "days_in_stage": None if age is None else round(age, 1),
        "sla_days": None if r["sla"] is None else int(r["sla"]),
        "usual_days": None if r["usual"] is None else round(float(r["usual"]), 1),
        "idle_days": last,
        "overdue_days": _days_since(r["next_action_at"], until) if r["overdue"] else None,
        "reasons": [name for name in REASONS if r[name]],
    }
