"""Recording what SMTP said about claimed rows, and what follows a send.

The retry policy: a temporary failure is tried again after ``BACKOFF`` (``THROTTLE_BACKOFF``
when the server asked us to slow down) until ``MAX_ATTEMPTS``, then fails for good; a bounce
suppresses the address. A sent cadence message queues the cadence's next step, or after the last
step marks the cadence complete so the stage engine applies its ``on_complete``.
Only rows still claimed (``sending``) are touched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, func, update

from leadflow.outbox.claimed import Claimed
from leadflow.outbox.rows import outbox_row
from leadflow.pipeline.cadence import following_step, step_due
from leadflow.pipeline.events import EventIn, record_events
from leadflow.pipeline.moves import REEVALUATE_AFTER
from leadflow.pipeline.suppression import suppress_many
from leadflow.runtime import Runtime
from models.db import insert_ignore
from models.tables import LEADS, OUTBOX, MessageStatus

MAX_ATTEMPTS = 6
BACKOFF = (
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=8),
)
THROTTLE_BACKOFF = timedelta(minutes=30)

# (outcome, SMTP code, detail, Message-ID, subject) for one claimed row
SmtpResult = tuple[str, int | None, str, str | None, str | None]


@dataclass
class RecordOutcome:
    counts: Counter[str] = field(default_factory=Counter)
    next_steps: int = 0
    completed: int = 0


def record_results(
    conn: Connection,
    rt: Runtime,
    claimed: Sequence[Claimed],
    results: Sequence[SmtpResult],
    *,
    now: datetime,
) -> RecordOutcome:
    """Store SMTP outcomes: ``results[i] = (outcome, code, detail, message_id, subject)``.

    Only rows still claimed by us (``status = 'sending'``) are touched.
    """
    recorder = _Recorder(rt, now)
    for item, result in zip(claimed, results, strict=True):
        recorder.add(item, result)
    recorder.write(conn)
    return recorder.out


def _new_state(item: Claimed, result: SmtpResult, *, now: datetime) -> dict[str, Any]:
    """The row's values after ``result`` (bound as ``b_id``, ``status``, ``code``, ...): the
    retry policy."""
    outcome, code, detail, message_id, subject = result
    values: dict[str, Any] = {
        "b_id": item.id,
        "code": code,
        "error": None,
        "message_id": message_id,
        "subject": subject,
        "sent_at": None,
        "due": None,
        "reason": None,
    }
    attempts_used = item.attempts
    if outcome == "sent":
        values.update(status=MessageStatus.SENT, sent_at=now)
    elif outcome in ("deferred", "throttled") and attempts_used < MAX_ATTEMPTS:
        wait = (
            THROTTLE_BACKOFF
            if outcome == "throttled"
            else BACKOFF[min(attempts_used - 1, len(BACKOFF) - 1)]
        )
        values.update(
            status=MessageStatus.DEFERRED,
            due=now + wait,
            reason=f"smtp {code}" if code else "smtp temporary failure",
            error=detail[:1000],
        )
    elif outcome in ("deferred", "throttled"):
        values.update(
            status=MessageStatus.FAILED,
            error=f"gave up after {attempts_used} attempts: {detail}"[:1000],
        )
    elif outcome == "bounced":
        values.update(status=MessageStatus.BOUNCED, error=detail[:1000])
    elif outcome == "failed":
        values.update(status=MessageStatus.FAILED, error=detail[:1000])
    else:
        values.update(status=MessageStatus.UNKNOWN, error=detail[:1000])
    return values


class _Recorder:
    """One batch of results: collected row by row, written in a few bulk statements."""

    def __init__(self, rt: Runtime, now: datetime) -> None:
        self.rt = rt
        self.now = now
        self.out = RecordOutcome()
        self.updates: list[dict[str, Any]] = []
        self.next_rows: list[dict[str, Any]] = []
        self.completions: list[dict[str, Any]] = []
        self.bounces: list[Claimed] = []
        # next steps' due times worked out in this batch: they depend only on the step and zone
        self.due_at: dict[tuple[str, str, ZoneInfo], datetime] = {}

    def add(self, item: Claimed, result: SmtpResult) -> None:
        values = _new_state(item, result, now=self.now)
        outcome = result[0]
        if outcome == "sent" and item.kind == "cadence":
            self._after_cadence_send(item)
        elif outcome == "bounced":
            self.bounces.append(item)
        self.out.counts[str(values["status"])] += 1
        self.updates.append(values)

    def _after_cadence_send(self, item: Claimed) -> None:
        nxt = _schedule_next(self.rt, item, self.now, self.due_at)
        if isinstance(nxt, dict):
            self.next_rows.append(nxt)
            self.out.next_steps += 1
        elif nxt is not None:
            # Due for the stage engine no earlier than a moved lead would be: at ``now``
            # itself a repeated tick would act on the completion.
            next_check = max(nxt, self.now + REEVALUATE_AFTER)
            self.completions.append(
                {
                    "b_id": item.lead_id,
                    "b_done": nxt,
                    "b_next": next_check,
                    "b_cadence": item.cadence,
                }
            )
            self.out.completed += 1

    def write(self, conn: Connection) -> None:
        now = self.now
        if self.updates:
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.status == MessageStatus.SENDING)
                .values(
                    status=bindparam("status"),
                    smtp_code=bindparam("code"),
                    last_error=bindparam("error"),
                    message_id=bindparam("message_id"),
                    subject=bindparam("subject"),
                    sent_at=bindparam("sent_at"),
                    due_at=func.coalesce(
                        bindparam("due", type_=OUTBOX.c.due_at.type), OUTBOX.c.due_at
                    ),
                    defer_reason=bindparam("reason"),
                    updated_at=now,
                ),
                self.updates,
            )
        insert_ignore(conn, OUTBOX, self.next_rows)
        if self.completions:
            conn.execute(
                update(LEADS)
                .where(LEADS.c.id == bindparam("b_id"), LEADS.c.cadence == bindparam("b_cadence"))
                .values(
                    cadence_done_at=bindparam("b_done"),
                    next_action_at=bindparam("b_next"),
                    updated_at=now,
                ),
                self.completions,
            )
        if self.bounces:
            suppress_many(conn, [(b.to_email, "bounced") for b in self.bounces], now=now)
            record_events(
                conn,
                [
                    EventIn(b.lead_id, "bounced", now, message_id=b.id, source="smtp")
                    for b in self.bounces
                ],
                stop_on=self.rt.stop_on,
                now=now,
                due_at=now + REEVALUATE_AFTER,
            )


def _schedule_next(
    rt: Runtime, item: Claimed, now: datetime, due_at: dict[tuple[str, str, ZoneInfo], datetime]
) -> dict[str, Any] | datetime | None:
    """The next step's outbox row, or when the cadence counts as complete. ``due_at`` keeps
    the due times worked out in this batch: they depend only on the step and the zone."""
    cadence = rt.loaded.config.cadences.get(item.cadence)
    if cadence is None:
        return None
    nxt = following_step(cadence, item.step)
    if nxt is None:
        return now + timedelta(days=cadence.on_complete.after_days)
    tz = rt.send_zone(item.cadence, item.lead.get("timezone"), item.lead.get("pipeline"))
    key = (item.cadence, nxt.id, tz)
    due = due_at.get(key)
    if due is None:
        window = rt.send_windows[item.cadence]
        due = due_at[key] = step_due(now, nxt, window=window, tz=tz, holidays=rt.holidays)
    return outbox_row(
        lead_id=item.lead_id,
        to_email=item.to_email,
        cadence=item.cadence,
        step=nxt.id,
        round=item.round,
        kind="cadence",
        stage=item.lead.get("stage"),
        due_at=due,
        now=now,
    )
