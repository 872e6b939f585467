"""How a stage move is written: the lead row, its transition history, the cadence it leaves
and the one it enters, its check-ins, and recycling to the callback list.

The stage engine (``stages``: which move applies), revivals, manual moves and ``moved_stages``
(``stranded``) all decide *what* moves; ``MoveWriter`` collects those moves for a batch and
writes them in a few bulk statements, so every kind of move is recorded the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, insert, select, update

from leadflow.outbox.rows import outbox_row
from leadflow.pipeline.business_time import SendWindow, next_window_start
from leadflow.pipeline.cadence import step_due
from leadflow.runtime import Runtime
from models.bulk import execute_many
from models.db import insert_ignore
from models.tables import (
    CALLBACKS,
    LEADS,
    OUTBOX,
    TRANSITIONS,
    LeadStatus,
    MessageStatus,
)

REEVALUATE_AFTER = timedelta(seconds=1)  # a moved lead is looked at again by the next tick
CHECKIN_WINDOW = SendWindow(frozenset(range(5)), time(9, 0), time(17, 0))


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

    def summary(self) -> str:
        """Recycles show as moves to "(callback)"; counting them again would say it twice."""
        parts = [f"moved {sum(self.moves.values())}"]
        parts += [f"{a}→{b} {n}" for (a, b), n in sorted(self.moves.items())]
        if self.flagged:
            parts.append(f"flagged stuck {self.flagged}")
        return ", ".join(parts)


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
        self._due_memo: dict[tuple[str, str | None, str], datetime] = {}
        self._checkin_memo: dict[tuple[datetime, ZoneInfo], datetime] = {}

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
        first = self.rt.loaded.config.cadences[cadence_id].steps[0]
        due = self._first_due(cadence_id, lead.timezone, pipeline_id)
        self.outbox.append(
            self._outbox_row(lead, cadence_id, first.id, round_, stage_id, "cadence", due)
        )
        self.outcome.enrolled += 1

    def _first_due(self, cadence_id: str, lead_zone: str | None, pipeline_id: str) -> datetime:
        """When a cadence's first step is due for leads entering now in a zone: the same for
        every lead of a batch in that zone, so it is worked out once per zone."""
        key = (cadence_id, lead_zone, pipeline_id)
        due = self._due_memo.get(key)
        if due is None:
            due = self._due_memo[key] = step_due(
                self.now,
                self.rt.loaded.config.cadences[cadence_id].steps[0],
                window=self.rt.send_windows[cadence_id],
                tz=self.rt.send_zone(cadence_id, lead_zone, pipeline_id),
                holidays=self.rt.holidays,
            )
        return due

    def _checkin_due(self, after: datetime, tz: ZoneInfo) -> datetime:
        key = (after, tz)
        due = self._checkin_memo.get(key)
        if due is None:
            due = self._checkin_memo[key] = next_window_start(
                after, CHECKIN_WINDOW, tz=tz, holidays=self.rt.holidays
            )
        return due

    def _outbox_row(
        self, lead: Any, cadence: str, step: str, round_: int, stage: str, kind: str, due: datetime
    ) -> dict[str, Any]:
        return outbox_row(
            lead_id=lead.id,
            to_email=lead.email,
            cadence=cadence,
            step=step,
            round=round_,
            kind=kind,
            stage=stage,
            due_at=due,
            now=self.now,
        )

    def _schedule_checkins(
        self, lead: Any, pipeline_id: str, stage_id: str, plan_id: str, round_: int
    ) -> None:
        plan = self.rt.loaded.config.checkins[plan_id]
        tz = self.rt.zone(lead.timezone, pipeline_id)
        for checkin in plan.checkins:
            due = self._checkin_due(self.now + timedelta(days=checkin.after_days), tz)
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
            values["updated_at"] = self.now
            by_shape.setdefault(tuple(sorted(values)), []).append(values)
        for keys, rows in by_shape.items():
            columns: dict[str, Any] = {k: bindparam(k) for k in keys if k != "b_id"}
            statement = update(lead).where(lead.c.id == bindparam("b_id")).values(columns)
            execute_many(conn, statement, rows, key=("moves.lead", keys))
        execute_many(conn, insert(TRANSITIONS), self.transitions, key="moves.transition")
        execute_many(conn, insert(CALLBACKS), self.callbacks, key="moves.callback")
        insert_ignore(conn, outbox, self.outbox)


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
