"""What a recorded inbound message does to its lead (through ``record_events``, like any event).

| class | event | effect |
|---|---|---|
| bounced | ``bounced`` | suppressed; cadences with ``bounced`` in ``stop_on`` end |
| soft_bounced | ``soft_bounced`` | after ``mailbox.soft_bounce_limit`` in a row: as bounced |
| out_of_office | ``out_of_office`` | open emails wait for the return date; not a reply |
| unsubscribed | ``unsubscribed`` | suppressed; cadences stop |
| replied | ``replied`` | cadences with ``replied`` in ``stop_on`` end; rules see it |

An out-of-office with no readable return date pauses ``mailbox.out_of_office_business_days``.
Every statement here covers a whole batch (no statement per lead).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update

from leadflow.listening.classify import Kind
from leadflow.pipeline.business_time import add_business_days, resolve_zone
from leadflow.pipeline.events import EventIn, record_events
from leadflow.pipeline.suppression import suppress_many
from leadflow.runtime import Runtime
from models.tables import EVENTS, LEADS, OUTBOX, MessageStatus

EVENT_OF = {
    Kind.BOUNCED: "bounced",
    Kind.SOFT_BOUNCED: "soft_bounced",
    Kind.OUT_OF_OFFICE: "out_of_office",
    Kind.UNSUBSCRIBED: "unsubscribed",
    Kind.REPLIED: "replied",
}
# events after which soft bounces no longer count "in a row": the address works
_ALIVE = ("replied", "email_opened", "email_clicked", "out_of_office")


def apply_effects(
    rt: Runtime, conn: Connection, rows: list[dict[str, Any]], *, now: datetime
) -> tuple[int, int]:
    """Events for the recorded rows that have a lead, and what they cause; returns how many
    addresses were suppressed and how many leads' cadences were paused."""
    events = []
    for row in rows:
        kind = row["kind"]
        if row["lead_id"] is None or kind not in EVENT_OF:
            continue
        data = {"inbound": row["key"], "rule": row["evidence"].get("rule")}
        for name in ("status", "return_date"):
            if row["evidence"].get(name):
                data[name] = row["evidence"][name]
        if row["snippet"]:
            data["snippet"] = row["snippet"][:300]
        events.append(
            EventIn(
                row["lead_id"],
                EVENT_OF[Kind(kind)],
                _occurred(row["received_at"], now),
                data,
                source="mailbox",
                message_id=row["outbox_id"],
            )
        )
    if not events:
        return 0, 0
    record_events(conn, events, stop_on=rt.stop_on, now=now)
    suppressed = sum(1 for e in events if e.type in ("bounced", "unsubscribed"))
    paused = _pause_for_out_of_office(rt, conn, rows, now=now)
    suppressed += _suppress_repeated_soft_bounces(rt, conn, rows, now=now)
    return suppressed, paused


def _occurred(received: datetime, now: datetime) -> datetime:
    """When it happened: the message's Date, unless that is in the future or far past."""
    if now - timedelta(days=30) <= received <= now:
        return received
    return now


def _pause_for_out_of_office(
    rt: Runtime, conn: Connection, rows: list[dict[str, Any]], *, now: datetime
) -> int:
    cfg = rt.loaded.config.mailbox
    resume: dict[int, datetime] = {}
    away = [r for r in rows if r["kind"] == Kind.OUT_OF_OFFICE and r["lead_id"] is not None]
    if not away:
        return 0
    zones = dict(
        conn.execute(
            select(LEADS.c.id, LEADS.c.timezone).where(
                LEADS.c.id.in_(sorted({r["lead_id"] for r in away}))
            )
        ).all()
    )
    for row in away:
        tz = resolve_zone(zones.get(row["lead_id"]), rt.loaded.config.timezone)
        stated = row["evidence"].get("return_date")
        if stated:
            back = datetime.combine(datetime.fromisoformat(stated).date(), time(9), tzinfo=tz)
            until = min(back.astimezone(UTC), now + timedelta(days=cfg.max_pause_days))
        else:
            until = add_business_days(
                now, cfg.out_of_office_business_days, tz=tz, holidays=rt.holidays
            )
        if until > now:
            resume[row["lead_id"]] = max(until, resume.get(row["lead_id"], until))
    if resume:  # the rows by lead (its index), then one UPDATE by primary key for them all
        waiting = conn.execute(
            select(OUTBOX.c.id, OUTBOX.c.lead_id, OUTBOX.c.due_at).where(
                OUTBOX.c.lead_id.in_(sorted(resume)),
                OUTBOX.c.status.in_([MessageStatus.PENDING, MessageStatus.DEFERRED]),
                OUTBOX.c.kind == "cadence",
            )
        ).all()
        later = [
            {"paused_id": row_id, "until": resume[lead_id]}
            for row_id, lead_id, due_at in waiting
            if due_at < resume[lead_id]  # never earlier than it was
        ]
        if later:
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == bindparam("paused_id"))
                .values(due_at=bindparam("until"), defer_reason="out of office", updated_at=now),
                later,
            )
    return len(resume)


def _suppress_repeated_soft_bounces(
    rt: Runtime, conn: Connection, rows: list[dict[str, Any]], *, now: datetime
) -> int:
    limit = rt.loaded.config.mailbox.soft_bounce_limit
    leads = sorted({r["lead_id"] for r in rows if r["kind"] == Kind.SOFT_BOUNCED and r["lead_id"]})
    if not leads:
        return 0
    alive = (
        select(EVENTS.c.lead_id, func.max(EVENTS.c.occurred_at).label("at"))
        .where(EVENTS.c.lead_id.in_(leads), EVENTS.c.type.in_(_ALIVE))
        .group_by(EVENTS.c.lead_id)
        .subquery()
    )
    soft = conn.execute(
        select(EVENTS.c.lead_id, func.count())
        .select_from(EVENTS.outerjoin(alive, alive.c.lead_id == EVENTS.c.lead_id))
        .where(
            EVENTS.c.lead_id.in_(leads),
            EVENTS.c.type == "soft_bounced",
            or_(alive.c.at.is_(None), EVENTS.c.occurred_at > alive.c.at),
        )
        .group_by(EVENTS.c.lead_id)
    ).all()
    over = [lead_id for lead_id, n in soft if n >= limit]
    if not over:
        return 0
    emails = dict(conn.execute(select(LEADS.c.id, LEADS.c.email).where(LEADS.c.id.in_(over))).all())
    suppress_many(
        conn,
        [(emails[i], "bounced") for i in over],
        now=now,
        detail=f"{limit} soft bounces in a row",
    )
    record_events(
        conn,
        [EventIn(i, "bounced", now, {"after_soft_bounces": limit}, source="mailbox") for i in over],
        stop_on=rt.stop_on,
        now=now,
    )
    return len(over)
