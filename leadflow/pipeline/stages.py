"""The stage engine: moves leads exactly as the YAML says, and records why.

For each batch of due leads (``status = 'active' and next_action_at <= now``) one SELECT asks
the database which action applies to each lead — a single CASE expression compiled from the
config, in priority order: pipeline assignment for new leads, then the exit rules of the
lead's stage (first match wins, subject to the target's entry rule), then the stage SLA, then
cadence completion. Python then applies the decisions with a few bulk statements: stage
updates, transition history, cancelled cadence messages, cadence enrollment, check-ins and
callbacks. A lead moves at most one stage per tick; it is looked at again on the next tick,
so a tick repeated at the same ``now`` changes nothing.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, not_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from leadflow.config.schema import Stage
from leadflow.pipeline.batching import IdRange
from leadflow.pipeline.moves import (
    LEAD_ROW_COLUMNS,
    REEVALUATE_AFTER,
    AdvanceOutcome,
    MoveWriter,
    load_rows,
)
from leadflow.rules.fields import TIME_DEPENDENT, LeadSql
from leadflow.runtime import Runtime
from models.tables import (
    CALLBACKS,
    LEADS,
    LeadStatus,
)

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)  # before any timestamp the engine writes
TIME_RECHECK = timedelta(days=1)


@dataclass(frozen=True)
class Decision:
    lead_id: int
    email: str
    pipeline: str | None
    stage: str | None
    action: str  # "", "assign", "exit", "sla", "done"
    target: str | None
    index: int


def due_condition(now: datetime) -> ColumnElement[bool]:
    """Active leads the engine must look at by ``now``, as asked when batches are planned.

    The always-true lower bound makes the range two-sided, so SQLite's planner (without
    statistics) reads the ``next_action_at`` index instead of scanning the table in id order.
    """
    lead = LEADS
    return and_(lead.c.status == LeadStatus.ACTIVE, lead.c.next_action_at.between(EARLIEST, now))


def _due_in_range(id_range: IdRange, now: datetime) -> ColumnElement[bool]:
    """Inside one batch the id range must lead, so the time test stays one-sided."""
    lead = LEADS
    return and_(
        lead.c.id >= id_range[0],
        lead.c.id <= id_range[1],
        lead.c.status == LeadStatus.ACTIVE,
        lead.c.next_action_at <= now,
    )


def _decision_case(rt: Runtime, sql: LeadSql) -> tuple[Any, list[tuple[str, str | None]]]:
    """One CASE over every pipeline/stage; returns it and the action table it indexes."""
    lead = LEADS
    loaded = rt.loaded
    whens: list[tuple[ColumnElement[bool], int]] = []
    actions: list[tuple[str, str | None]] = []

    def add(condition: ColumnElement[bool], action: str, target: str | None) -> None:
        whens.append((condition, len(actions)))
        actions.append((action, target))

    pipelines = loaded.config.pipelines
    default = next((p for p in pipelines if p.match is None), pipelines[0])
    for pipeline in pipelines:
        rule = loaded.matches.get(pipeline.id)
        if rule is not None:
            add(and_(lead.c.pipeline.is_(None), rule.to_sql(sql)), "assign", pipeline.id)
    add(lead.c.pipeline.is_(None), "assign", default.id)
    for pipeline in pipelines:
        for stage in pipeline.stages:
            here = and_(lead.c.pipeline == pipeline.id, lead.c.stage == stage.id)
            for exit_ in loaded.exits.get((pipeline.id, stage.id), []):
                condition = and_(here, exit_.rule.to_sql(sql))
                entry = loaded.entries.get((pipeline.id, exit_.to))
                if entry is not None:
                    condition = and_(condition, entry.to_sql(sql))
                add(condition, "exit", exit_.to)
            if stage.sla:
                late = and_(here, sql.field("days_in_stage") >= stage.sla.max_days)
                if stage.sla.action == "flag":
                    late = and_(late, not_(lead.c.stuck))
                add(late, "sla", stage.sla.to)
            if stage.on_enter.cadence or loaded.config.recycling.cadence:
                add(and_(here, sql.field("cadence_done")), "done", None)
    return case(*whens, else_=-1), actions


def plan_batch(
    conn: Connection, rt: Runtime, id_range: IdRange, *, now: datetime
) -> list[Decision]:
    """What the engine would do to the due leads in ``id_range`` (read-only)."""
    return [decision for decision, _row in _decide(conn, rt, id_range, now=now)]


def _decide(
    conn: Connection, rt: Runtime, id_range: IdRange, *, now: datetime
) -> list[tuple[Decision, Any]]:
    """Each due lead's decision with the row a move needs, in one query."""
    lead = LEADS
    sql = LeadSql(dialect=conn.dialect.name, now=now, attributes=rt.loaded.config.intake.attributes)
    decision, actions = _decision_case(rt, sql)
    query = select(*[lead.c[c] for c in LEAD_ROW_COLUMNS], decision.label("decision")).where(
        _due_in_range(id_range, now)
    )
    if conn.dialect.name == "postgresql":
        # Two runs of the same step at once (a tick and an on-demand `advance`) must not both
        # move a lead: rows another transaction is deciding are skipped, and they are no
        # longer due once it commits. (SQLite writers are serialised by BEGIN IMMEDIATE.)
        query = query.with_for_update(skip_locked=True, of=lead)
    out = []
    for row in conn.execute(query).all():
        index = row.decision
        action, target = actions[index] if index >= 0 else ("", None)
        decided = Decision(row.id, row.email, row.pipeline, row.stage, action, target, index)
        out.append((decided, row))
    return out


def _next_check(
    rt: Runtime,
    stage: Stage | None,
    pipeline_id: str,
    row: Any,
    now: datetime,
    *,
    stuck: bool | None = None,
) -> datetime | None:
    """When an unmoved lead must be looked at again without any new data.

    ``stuck`` overrides the row's flag for a lead being flagged in this very batch.
    """
    if stage is None:
        return None
    stuck = row.stuck if stuck is None else stuck
    candidates: list[datetime] = []
    if stage.sla and not (stage.sla.action == "flag" and stuck):
        candidates.append(row.stage_entered_at + timedelta(days=stage.sla.max_days))
    if row.cadence_done_at is not None and row.cadence_done_at > now:
        candidates.append(row.cadence_done_at)
    exits = rt.loaded.exits.get((pipeline_id, stage.id), [])
    if any(e.rule.fields & TIME_DEPENDENT for e in exits):
        candidates.append(now + TIME_RECHECK)
    later = [c for c in candidates if c > now]
    return min(later) if later else None


def advance_batch(
    conn: Connection, rt: Runtime, id_range: IdRange, *, now: datetime
) -> AdvanceOutcome:
    """Apply the stage engine to the due leads in ``id_range``; call inside a transaction."""
    decided = _decide(conn, rt, id_range, now=now)
    writer = MoveWriter(conn, rt, now)
    writer.outcome.examined = len(decided)
    if not decided:
        return writer.outcome
    reschedule: list[dict[str, Any]] = []
    for d, row in decided:
        unmoved = _apply(writer, d, row)
        if unmoved is not None:
            reschedule.append(unmoved)
    writer.lead_updates.extend(reschedule)
    writer.flush()
    return writer.outcome


def _apply(writer: MoveWriter, d: Decision, row: Any) -> dict[str, Any] | None:
    """Move the lead as ``d`` says; a lead that stays gets back its update (when to look again,
    whether it is stuck), written with the batch's others."""
    loaded = writer.rt.loaded
    pipeline_of_new = loaded.config.pipeline(d.target or "") if d.action == "assign" else None
    if pipeline_of_new is not None:
        first = pipeline_of_new.stages[0].id
        writer.move(row, pipeline_of_new.id, first, kind="intake", reason="new lead")
        return None
    pipeline_id = d.pipeline or ""
    stage = loaded.stage(pipeline_id, d.stage or "")
    if d.action == "exit" and d.target:
        exits = loaded.exits[(pipeline_id, d.stage or "")]
        reason = next((e.reason for e in exits if e.to == d.target), "")
        writer.move(row, pipeline_id, d.target, kind="rule", reason=reason)
        return None
    if d.action == "sla" and stage and stage.sla:
        return _over_sla(writer, row, pipeline_id, stage)
    if d.action == "done" and row.cadence:
        return _cadence_done(writer, row, pipeline_id, stage)
    return {
        "b_id": row.id,
        "stuck": row.stuck,
        "next_action_at": _next_check(writer.rt, stage, pipeline_id, row, writer.now),
    }


def _over_sla(
    writer: MoveWriter, row: Any, pipeline_id: str, stage: Stage
) -> dict[str, Any] | None:
    """The stage's SLA action: recycle, move, or flag the lead as stuck (it stays)."""
    sla = stage.sla
    assert sla is not None
    reason = sla.reason or f"over {sla.max_days} days in stage '{stage.id}'"
    if sla.action == "recycle":
        writer.recycle(row, pipeline_id, reason)
        return None
    if sla.action == "move" and sla.to:
        writer.move(row, pipeline_id, sla.to, kind="sla", reason=reason)
        return None
    writer.outcome.flagged += 1
    return {
        "b_id": row.id,
        "stuck": True,
        "next_action_at": _next_check(writer.rt, stage, pipeline_id, row, writer.now, stuck=True),
    }


def _cadence_done(
    writer: MoveWriter, row: Any, pipeline_id: str, stage: Stage | None
) -> dict[str, Any] | None:
    """The finished cadence's ``on_complete``: recycle, advance, or stay with no cadence."""
    cadences = writer.rt.loaded.config.cadences
    completion = cadences[row.cadence].on_complete if row.cadence in cadences else None
    if completion and completion.action == "recycle":
        writer.recycle(row, pipeline_id, completion.reason)
        return None
    if completion and completion.action == "advance" and completion.to:
        writer.move(row, pipeline_id, completion.to, kind="cadence", reason=completion.reason)
        return None
    return {
        "b_id": row.id,
        "stuck": row.stuck,
        "cadence": None,
        "cadence_done_at": None,
        "next_action_at": _next_check(writer.rt, stage, pipeline_id, row, writer.now),
    }


def manual_move(
    conn: Connection,
    rt: Runtime,
    lead_id: int,
    to_stage: str,
    *,
    reason: str,
    now: datetime,
    actor: str | None = None,
) -> AdvanceOutcome:
    """An audited move by a person: allowed to any stage of the lead's pipeline."""
    rows = load_rows(conn, [lead_id])
    row = rows[lead_id]
    pipeline_id = row.pipeline or rt.loaded.config.pipelines[0].id
    writer = MoveWriter(conn, rt, now)
    new_round = row.round
    if row.status == LeadStatus.CALLBACK:  # on the callback list: a manual move revives it
        conn.execute(
            update(CALLBACKS)
            .where(CALLBACKS.c.lead_id == lead_id, CALLBACKS.c.revived_at.is_(None))
            .values(revived_at=now)
        )
        new_round = row.round + 1
    writer.move(
        row,
        pipeline_id,
        to_stage,
        kind="manual",
        reason=reason,
        actor=actor or getpass.getuser(),
        new_round=new_round,
    )
    writer.flush()
    return writer.outcome


# --- the callback list --------------------------------------------------------------------


def callbacks_due_condition(now: datetime) -> ColumnElement[bool]:
    cb = CALLBACKS
    return and_(cb.c.revived_at.is_(None), cb.c.due_at <= now)


def revive_batch(
    conn: Connection, rt: Runtime, id_range: IdRange, *, now: datetime
) -> AdvanceOutcome:
    """Bring due callbacks back into the pipeline at the configured re-entry stage."""
    cb = CALLBACKS
    query = select(cb.c.id, cb.c.lead_id, cb.c.pipeline, cb.c.reason).where(
        cb.c.id >= id_range[0], cb.c.id <= id_range[1], callbacks_due_condition(now)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=cb)  # see plan_batch
    due = conn.execute(query).all()
    writer = MoveWriter(conn, rt, now)
    writer.outcome.examined = len(due)
    if not due:
        return writer.outcome
    rows = load_rows(conn, [d.lead_id for d in due])
    recycling = rt.loaded.config.recycling
    revived_ids = []
    for callback in due:
        row = rows[callback.lead_id]
        pipeline_id = callback.pipeline or row.pipeline or rt.loaded.config.pipelines[0].id
        if rt.loaded.stage(pipeline_id, recycling.reenter_stage) is None:
            pipeline_id = rt.loaded.config.pipelines[0].id
        writer.move(
            row,
            pipeline_id,
            recycling.reenter_stage,
            kind="revive",
            reason=f"callback due ({callback.reason})",
            cadence_override=recycling.cadence,
            new_round=row.round + 1,
        )
        revived_ids.append(callback.id)
    conn.execute(update(cb).where(cb.c.id.in_(revived_ids)).values(revived_at=now))
    writer.flush()
    # Rescored by the next tick, like a move is re-examined by it: setting ``now`` here would
    # make a tick repeated at the same ``now`` rescore the revived leads again.
    soon = now + REEVALUATE_AFTER
    lead = LEADS
    conn.execute(
        update(lead)
        .where(
            lead.c.id.in_([d.lead_id for d in due]),
            or_(lead.c.rescore_at.is_(None), lead.c.rescore_at > soon),
        )
        .values(rescore_at=soon)
    )
    return writer.outcome
