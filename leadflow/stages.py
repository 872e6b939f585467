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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, insert, literal, not_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from leadflow.batching import IdRange
from leadflow.business_time import SendWindow, next_window_start
from leadflow.cadence import step_due
from leadflow.config.schema import Stage
from leadflow.fields import TIME_DEPENDENT, LeadSql
from leadflow.runtime import Runtime
from models.db import insert_ignore
from models.tables import (
    CALLBACKS,
    LEADS,
    OUTBOX,
    TRANSITIONS,
    LeadStatus,
    MessageStatus,
)

REEVALUATE_AFTER = timedelta(seconds=1)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)  # before any timestamp the engine writes
TIME_RECHECK = timedelta(days=1)
CHECKIN_WINDOW = SendWindow(frozenset(range(5)), time(9, 0), time(17, 0))


@dataclass(frozen=True)
class Decision:
    lead_id: int
    email: str
    pipeline: str | None
    stage: str | None
    action: str  # "", "assign", "exit", "sla", "done"
    target: str | None
    index: int


@dataclass
class AdvanceOutcome:
    examined: int = 0
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)
    recycled: int = 0
    flagged: int = 0
    enrolled: int = 0
    checkins_scheduled: int = 0
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def merge(self, other: AdvanceOutcome) -> None:
        self.examined += other.examined
        self.moves.update(other.moves)
        self.recycled += other.recycled
        self.flagged += other.flagged
        self.enrolled += other.enrolled
        self.checkins_scheduled += other.checkins_scheduled
        for key, emails in other.examples.items():
            kept = self.examples.setdefault(key, [])
            kept.extend(emails[: max(0, 3 - len(kept))])

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "moves": [
                {"from": a, "to": b, "count": n, "examples": self.examples.get((a, b), [])[:3]}
                for (a, b), n in sorted(self.moves.items())
            ],
            "recycled": self.recycled,
            "flagged": self.flagged,
            "enrolled": self.enrolled,
            "checkins_scheduled": self.checkins_scheduled,
        }


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
    lead = LEADS
    sql = LeadSql(dialect=conn.dialect.name, now=now, attributes=rt.loaded.config.intake.attributes)
    decision, actions = _decision_case(rt, sql)
    query = select(lead.c.id, lead.c.email, lead.c.pipeline, lead.c.stage, decision).where(
        _due_in_range(id_range, now)
    )
    if conn.dialect.name == "postgresql":
        # Two runs of the same step at once (a tick and an on-demand `advance`) must not both
        # move a lead: rows another transaction is deciding are skipped, and they are no
        # longer due once it commits. (SQLite writers are serialised by BEGIN IMMEDIATE.)
        query = query.with_for_update(skip_locked=True, of=lead)
    rows = conn.execute(query).all()
    out = []
    for row_id, email, pipeline, stage, index in rows:
        action, target = actions[index] if index >= 0 else ("", None)
        out.append(Decision(row_id, email, pipeline, stage, action, target, index))
    return out


class MoveWriter:
    """Collects the bulk writes of one batch and flushes them in a few statements."""

    def __init__(self, conn: Connection, rt: Runtime, now: datetime) -> None:
        self.conn = conn
        self.rt = rt
        self.now = now
        self.lead_updates: list[dict[str, Any]] = []
        self.transitions: list[dict[str, Any]] = []
        self.cancel_cadence_for: list[int] = []
        self.outbox: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.outcome = AdvanceOutcome()

    def transition(
        self,
        lead_id: int,
        pipeline: str | None,
        from_stage: str | None,
        from_entered_at: datetime | None,
        to_stage: str | None,
        kind: str,
        reason: str,
        actor: str = "engine",
    ) -> None:
        """Record a move; ``from_entered_at`` (when ``from_stage`` was entered) makes the row
        a complete stay, so reports need not pair each row with the lead's previous one."""
        self.transitions.append(
            {
                "lead_id": lead_id,
                "pipeline": pipeline,
                "from_stage": from_stage,
                "from_entered_at": from_entered_at if from_stage is not None else None,
                "to_stage": to_stage,
                "at": self.now,
                "kind": kind,
                "reason": reason[:500],
                "actor": actor,
                "config_hash": self.rt.config_hash,
            }
        )

    def move(
        self,
        lead: Any,
        pipeline_id: str,
        to_stage: str,
        *,
        kind: str,
        reason: str,
        actor: str = "engine",
        cadence_override: str | None = None,
        new_round: int | None = None,
    ) -> None:
        """Put ``lead`` (a row with id, email, stage, round, timezone, attributes) into a stage."""
        stage = self.rt.loaded.stage(pipeline_id, to_stage)
        if stage is None:
            raise ValueError(f"unknown stage '{to_stage}' in pipeline '{pipeline_id}'")
        round_ = lead.round if new_round is None else new_round
        values: dict[str, Any] = {
            "b_id": lead.id,
            "pipeline": pipeline_id,
            "stage": to_stage,
            "stage_entered_at": self.now,
            "status": LeadStatus.ACTIVE,
            "stuck": False,
            "cadence": None,
            "cadence_done_at": None,
            "round": round_,
            "next_action_at": self.now + REEVALUATE_AFTER,
            "won_at": None,
            "closed_at": None,
        }
        if stage.kind == "won":
            values["won_at"] = getattr(lead, "won_at", None) or self.now
        if stage.kind == "lost":
            values["status"] = LeadStatus.CLOSED
            values["closed_at"] = self.now
            values["next_action_at"] = None
        self.cancel_cadence_for.append(lead.id)
        self.transition(
            lead.id, pipeline_id, lead.stage, lead.stage_entered_at, to_stage, kind, reason, actor
        )
        self.outcome.moves[(lead.stage or "(new)", to_stage)] += 1
        examples = self.outcome.examples.setdefault((lead.stage or "(new)", to_stage), [])
        if len(examples) < 3:
            examples.append(lead.email)
        cadence_id = cadence_override or stage.on_enter.cadence
        if cadence_id and stage.kind != "lost":
            self._enroll(lead, pipeline_id, to_stage, cadence_id, round_)
            values["cadence"] = cadence_id
        if stage.on_enter.checkins:
            self._schedule_checkins(lead, pipeline_id, to_stage, stage.on_enter.checkins, round_)
        self.lead_updates.append(values)

    def _enroll(
        self, lead: Any, pipeline_id: str, stage_id: str, cadence_id: str, round_: int
    ) -> None:
        cadence = self.rt.loaded.config.cadences[cadence_id]
        first = cadence.steps[0]
        tz = self.rt.send_zone(cadence_id, lead.timezone, pipeline_id)
        due = step_due(
            self.now,
            first,
            window=self.rt.send_windows[cadence_id],
            tz=tz,
            holidays=self.rt.holidays,
        )
        self.outbox.append(
            self._outbox_row(lead, cadence_id, first.id, round_, stage_id, "cadence", due)
        )
        self.outcome.enrolled += 1

    def _outbox_row(
        self, lead: Any, cadence: str, step: str, round_: int, stage: str, kind: str, due: datetime
    ) -> dict[str, Any]:
        return {
            "lead_id": lead.id,
            "cadence": cadence,
            "step": step,
            "round": round_,
            "kind": kind,
            "stage": stage,
            "to_email": lead.email,
            "status": MessageStatus.PENDING,
            "due_at": due,
            "attempts": 0,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def _schedule_checkins(
        self, lead: Any, pipeline_id: str, stage_id: str, plan_id: str, round_: int
    ) -> None:
        plan = self.rt.loaded.config.checkins[plan_id]
        tz = self.rt.zone(lead.timezone, pipeline_id)
        for checkin in plan.checkins:
            due = next_window_start(
                self.now + timedelta(days=checkin.after_days),
                CHECKIN_WINDOW,
                tz=tz,
                holidays=self.rt.holidays,
            )
            self.outbox.append(
                self._outbox_row(lead, plan_id, checkin.id, round_, stage_id, "checkin", due)
            )
            self.outcome.checkins_scheduled += 1
        attributes = lead.attributes or {}
        for renewal in plan.renewals:
            raw = attributes.get(renewal.date_field)
            try:
                contract_end = date.fromisoformat(str(raw)[:10]) if raw else None
            except ValueError:
                contract_end = None
            if contract_end is None:
                continue
            local = datetime.combine(
                contract_end - timedelta(days=renewal.days_before), time(10, 0), tz
            )
            due = next_window_start(
                max(local, self.now), CHECKIN_WINDOW, tz=tz, holidays=self.rt.holidays
            )
            self.outbox.append(
                self._outbox_row(lead, plan_id, renewal.id, round_, stage_id, "checkin", due)
            )
            self.outcome.checkins_scheduled += 1

    def recycle(self, lead: Any, pipeline_id: str, reason: str) -> None:
        recycling = self.rt.loaded.config.recycling
        if lead.recycle_count >= recycling.max_recycles:
            pipeline = self.rt.loaded.config.pipeline(pipeline_id)
            lost = (
                recycling.lost_stage
                or next((s.id for s in pipeline.stages if s.kind == "lost"), None)
                if pipeline
                else None
            )
            if lost:
                self.move(
                    lead,
                    pipeline_id,
                    lost,
                    kind="recycle_limit",
                    reason=f"{reason}; recycled {lead.recycle_count} times already",
                )
                return
        self.cancel_cadence_for.append(lead.id)
        self.transition(
            lead.id, pipeline_id, lead.stage, lead.stage_entered_at, None, "recycle", reason
        )
        self.outcome.recycled += 1
        self.outcome.moves[(lead.stage or "(new)", "(callback)")] += 1
        self.callbacks.append(
            {
                "lead_id": lead.id,
                "pipeline": pipeline_id,
                "from_stage": lead.stage,
                "reason": reason[:500],
                "due_at": self.now + timedelta(days=recycling.callback_days),
                "created_at": self.now,
            }
        )
        self.lead_updates.append(
            {
                "b_id": lead.id,
                "pipeline": pipeline_id,
                "stage": None,
                "stage_entered_at": self.now,
                "status": LeadStatus.CALLBACK,
                "stuck": False,
                "cadence": None,
                "cadence_done_at": None,
                "round": lead.round,
                "next_action_at": None,
                "won_at": None,
                "closed_at": None,
                "recycle_count": lead.recycle_count + 1,
            }
        )

    def _drop_cadences_already_run(self) -> None:
        """A cadence runs at most once per round: a lead moved back into a stage whose cadence
        it already received in this round is not enrolled again (only a revival from the
        callback list starts a new round), so it never waits on a cadence with nothing left."""
        first_steps = [r for r in self.outbox if r["kind"] == "cadence"]
        if not first_steps:
            return
        existing = {
            tuple(row)
            for row in self.conn.execute(
                select(OUTBOX.c.lead_id, OUTBOX.c.cadence, OUTBOX.c.step, OUTBOX.c.round).where(
                    OUTBOX.c.lead_id.in_(sorted({r["lead_id"] for r in first_steps})),
                    OUTBOX.c.kind == "cadence",
                )
            )
        }
        repeated = {
            r["lead_id"]
            for r in first_steps
            if (r["lead_id"], r["cadence"], r["step"], r["round"]) in existing
        }
        if not repeated:
            return
        self.outbox = [
            r for r in self.outbox if r["lead_id"] not in repeated or r["kind"] != "cadence"
        ]
        for values in self.lead_updates:
            if values["b_id"] in repeated and values.get("cadence"):
                values["cadence"] = None
        self.outcome.enrolled -= len(repeated)

    def flush(self) -> None:
        conn = self.conn
        lead = LEADS
        outbox = OUTBOX
        if self.cancel_cadence_for:
            conn.execute(
                update(outbox)
                .where(
                    outbox.c.lead_id.in_(sorted(set(self.cancel_cadence_for))),
                    outbox.c.kind == "cadence",
                    outbox.c.status.in_([MessageStatus.PENDING, MessageStatus.DEFERRED]),
                )
                .values(
                    status=MessageStatus.CANCELLED,
                    last_error="stopped: stage changed",
                    updated_at=self.now,
                )
            )
        self._drop_cadences_already_run()
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for values in self.lead_updates:
            by_shape.setdefault(tuple(sorted(values)), []).append(values)
        for keys, rows in by_shape.items():
            columns: dict[str, Any] = {k: bindparam(k) for k in keys if k != "b_id"}
            columns["updated_at"] = literal(self.now, lead.c.updated_at.type)
            conn.execute(update(lead).where(lead.c.id == bindparam("b_id")).values(columns), rows)
        if self.transitions:
            conn.execute(insert(TRANSITIONS), self.transitions)
        if self.callbacks:
            conn.execute(insert(CALLBACKS), self.callbacks)
        insert_ignore(conn, outbox, self.outbox)


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


LEAD_ROW_COLUMNS = (
    "id",
    "email",
    "status",
    "pipeline",
    "stage",
    "stage_entered_at",
    "round",
    "recycle_count",
    "timezone",
    "attributes",
    "stuck",
    "cadence",
    "cadence_done_at",
    "won_at",
)


def load_rows(conn: Connection, ids: Sequence[int]) -> dict[int, Any]:
    lead = LEADS
    rows = conn.execute(
        select(*[lead.c[c] for c in LEAD_ROW_COLUMNS]).where(lead.c.id.in_(list(ids)))
    ).all()
    return {row.id: row for row in rows}


def advance_batch(
    conn: Connection, rt: Runtime, id_range: IdRange, *, now: datetime
) -> AdvanceOutcome:
    """Apply the stage engine to the due leads in ``id_range``; call inside a transaction."""
    decisions = plan_batch(conn, rt, id_range, now=now)
    writer = MoveWriter(conn, rt, now)
    writer.outcome.examined = len(decisions)
    if not decisions:
        return writer.outcome
    rows = load_rows(conn, [d.lead_id for d in decisions])
    reschedule: list[dict[str, Any]] = []
    for d in decisions:
        row = rows[d.lead_id]
        pipeline_of_new = (
            rt.loaded.config.pipeline(d.target or "") if d.action == "assign" else None
        )
        if pipeline_of_new is not None:
            writer.move(
                row,
                pipeline_of_new.id,
                pipeline_of_new.stages[0].id,
                kind="intake",
                reason="new lead",
            )
            continue
        pipeline_id = d.pipeline or ""
        stage = rt.loaded.stage(pipeline_id, d.stage or "")
        if d.action == "exit" and d.target:
            reason = next(
                (
                    e.reason
                    for e in rt.loaded.exits[(pipeline_id, d.stage or "")]
                    if e.to == d.target
                ),
                "",
            )
            writer.move(row, pipeline_id, d.target, kind="rule", reason=reason)
            continue
        if d.action == "sla" and stage and stage.sla:
            sla = stage.sla
            reason = sla.reason or f"over {sla.max_days} days in stage '{stage.id}'"
            if sla.action == "recycle":
                writer.recycle(row, pipeline_id, reason)
                continue
            if sla.action == "move" and sla.to:
                writer.move(row, pipeline_id, sla.to, kind="sla", reason=reason)
                continue
            writer.outcome.flagged += 1
            reschedule.append(
                {
                    "b_id": row.id,
                    "stuck": True,
                    "next_action_at": _next_check(rt, stage, pipeline_id, row, now, stuck=True),
                }
            )
            continue
        if d.action == "done" and row.cadence:
            completion = (
                rt.loaded.config.cadences[row.cadence].on_complete
                if row.cadence in rt.loaded.config.cadences
                else None
            )
            if completion and completion.action == "recycle":
                writer.recycle(row, pipeline_id, completion.reason)
                continue
            if completion and completion.action == "advance" and completion.to:
                writer.move(
                    row, pipeline_id, completion.to, kind="cadence", reason=completion.reason
                )
                continue
            reschedule.append(
                {
                    "b_id": row.id,
                    "stuck": row.stuck,
                    "cadence": None,
                    "cadence_done_at": None,
                    "next_action_at": _next_check(rt, stage, pipeline_id, row, now),
                }
            )
            continue
        reschedule.append(
            {
                "b_id": row.id,
                "stuck": row.stuck,
                "next_action_at": _next_check(rt, stage, pipeline_id, row, now),
            }
        )
    writer.lead_updates.extend(reschedule)
    writer.flush()
    return writer.outcome


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
