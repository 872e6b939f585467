"""Engagement and sales events: recording them, and what they stop or trigger.

An event makes its lead due for rescoring and for the stage engine at once, ends the lead's
cadence when the cadence lists the event type under ``stop_on``, and an unsubscribe or
bounce puts the address on the suppression list straight away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Update, and_, bindparam, case, insert, or_, select, update

from leadflow.pipeline.suppression import suppress_many
from models.tables import EVENTS, LEADS, OUTBOX, MessageStatus

KNOWN_EVENTS = frozenset(
    {
        "email_opened",
        "email_clicked",
        "web_visit",
        "form_filled",
        "replied",
        "out_of_office",
        "meeting_booked",
        "proposal_sent",
        "won",
        "lost",
        "unsubscribed",
        "bounced",
        "soft_bounced",
        # a spam complaint (a feedback-loop report, posted to /events): suppresses the address
        # and counts against the sending guard (leadflow/alerts/guard.py)
        "complained",
        # opens and clicks by link scanners and mail proxies: kept as evidence, never counted
        # as engagement (leadflow/listening/tracking.py says which rules decide)
        "machine_opened",
        "machine_clicked",
    }
)
SUPPRESSING_EVENTS = {
    "unsubscribed": "unsubscribed",
    "bounced": "bounced",
    "complained": "complained",
}


@dataclass(frozen=True)
class EventIn:
    lead_id: int
    type: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    message_id: int | None = None


def _make_due() -> Update:
    """The leads of new events become due at ``when`` (unless due sooner): built once, its
    values bound per call (building it per call was a third of a tracked click's time)."""
    lead = LEADS
    when = bindparam("when", type_=lead.c.rescore_at.type)
    return (
        update(lead)
        .where(lead.c.id.in_(bindparam("ids", expanding=True)))
        .values(
            rescore_at=case(
                (or_(lead.c.rescore_at.is_(None), lead.c.rescore_at > when), when),
                else_=lead.c.rescore_at,
            ),
            next_action_at=case(
                (
                    and_(
                        lead.c.status == "active",
                        or_(lead.c.next_action_at.is_(None), lead.c.next_action_at > when),
                    ),
                    when,
                ),
                else_=lead.c.next_action_at,
            ),
            updated_at=bindparam("now", type_=lead.c.updated_at.type),
        )
    )


_MAKE_DUE = _make_due()
_INSERT = insert(EVENTS)


def record_events(
    conn: Connection,
    events: Sequence[EventIn],
    *,
    stop_on: dict[str, frozenset[str]],
    now: datetime,
    due_at: datetime | None = None,
) -> int:
    """Insert events and apply their side effects in the caller's transaction.

    ``stop_on`` maps cadence id -> event types that end it (from the config). The leads
    become due for scoring and the stage engine at ``due_at`` (default: the earliest event,
    at the latest ``now``); events a tick records itself pass a later instant so that a
    tick repeated at the same ``now`` changes nothing.
    """
    if not events:
        return 0
    unknown = sorted({e.type for e in events} - KNOWN_EVENTS)
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
    rows = [
        {
            "lead_id": e.lead_id,
            "type": e.type,
            "occurred_at": e.occurred_at,
            "data": e.data,
            "source": e.source,
            "message_id": e.message_id,
        }
        for e in events
    ]
    conn.execute(_INSERT, rows[0] if len(rows) == 1 else rows)  # one: no executemany path
    lead = LEADS
    lead_ids = sorted({e.lead_id for e in events})
    when = due_at or min(now, min(e.occurred_at for e in events))
    conn.execute(_MAKE_DUE, {"ids": lead_ids, "when": when, "now": now})
    _stop_cadences(conn, events, stop_on=stop_on, now=now)
    suppress = [e for e in events if e.type in SUPPRESSING_EVENTS]
    if suppress:
        emails = dict(
            conn.execute(
                select(lead.c.id, lead.c.email).where(
                    lead.c.id.in_(sorted({e.lead_id for e in suppress}))
                )
            ).all()
        )
        suppress_many(
            conn,
            [(emails[e.lead_id], SUPPRESSING_EVENTS[e.type]) for e in suppress],
            now=now,
        )
    return len(events)


def _stop_cadences(
    conn: Connection,
    events: Sequence[EventIn],
    *,
    stop_on: dict[str, frozenset[str]],
    now: datetime,
) -> None:
    """End the cadences the events stop: two statements per stopping reason, not per lead."""
    stopping = frozenset().union(*stop_on.values()) if stop_on else frozenset()
    candidates = sorted({e.lead_id for e in events if e.type in stopping})
    if not candidates:
        return
    lead = LEADS
    outbox = OUTBOX
    current = dict(
        conn.execute(
            select(lead.c.id, lead.c.cadence).where(
                lead.c.id.in_(candidates), lead.c.cadence.is_not(None)
            )
        ).all()
    )
    stopped: dict[int, str] = {}
    for e in events:
        cadence = current.get(e.lead_id)
        if cadence and e.type in stop_on.get(cadence, frozenset()):
            stopped.setdefault(e.lead_id, e.type)
    by_reason: dict[str, list[int]] = {}
    for lead_id, reason in stopped.items():
        by_reason.setdefault(reason, []).append(lead_id)
    for reason, lead_ids in sorted(by_reason.items()):
        conn.execute(
            update(outbox)
            .where(
                outbox.c.lead_id.in_(lead_ids),
                outbox.c.kind == "cadence",
                outbox.c.status.in_([MessageStatus.PENDING, MessageStatus.DEFERRED]),
            )
            .values(status=MessageStatus.CANCELLED, last_error=f"stopped: {reason}", updated_at=now)
        )
    if stopped:
        conn.execute(
            update(lead)
            .where(lead.c.id.in_(sorted(stopped)))
            .values(cadence=None, cadence_done_at=None, updated_at=now)
        )
