"""Alerts and their deliveries in the database: raised once, claimed before sending, recorded.

``raise_alerts`` inserts ``(kind, subject, period)`` with ``ON CONFLICT DO NOTHING``: only
the transaction that inserted an alert makes its delivery rows (one per channel the YAML
routes the kind to), so two runs raising the same alert at once, or a retried run, deliver it
once. ``claim`` marks due deliveries ``sending`` with a token in one UPDATE (a row another run
claimed is no longer ``pending``); ``record`` writes what each request did.

=========  ==============================================================================
status     meaning
=========  ==============================================================================
pending    to be sent (``due_at``: now, or a retry's time)
sending    claimed; a crash here leaves it so, and it is never resent (it may have arrived)
sent       the channel accepted it (2xx, or the SMTP server took the email)
failed     refused or unreachable: retried after ``BACKOFF`` until ``MAX_ATTEMPTS``
=========  ==============================================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models.tables import ALERT_DELIVERIES, ALERTS

MAX_ATTEMPTS = 3
BACKOFF = (timedelta(minutes=5), timedelta(minutes=30))


@dataclass(frozen=True)
class AlertIn:
    kind: str
    subject: str
    period: str
    title: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    lead_id: int | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class Claimed:
    """One claimed delivery with what its message says."""

    id: int
    channel: str
    kind: str
    subject: str
    title: str
    detail: str
    data: dict[str, Any]
    raised_at: datetime
    attempts: int


def raise_alerts(
    conn: Connection,
    alerts: Sequence[AlertIn],
    routes: dict[str, list[str]],
    *,
    now: datetime,
) -> int:
    """Record the alerts not raised before, and a pending delivery per channel of their kind
    (``routes``: kind → channels); how many were new."""
    if not alerts:
        return 0
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        module.insert(ALERTS)
        .on_conflict_do_nothing(index_elements=["kind", "subject", "period"])
        .returning(ALERTS.c.id, ALERTS.c.kind)
    )
    rows = [
        {
            "kind": a.kind,
            "subject": a.subject[:200],
            "period": a.period[:100],
            "title": a.title[:500],
            "detail": a.detail[:2000],
            "data": a.data,
            "lead_id": a.lead_id,
            "since": a.since,
            "raised_at": now,
        }
        for a in alerts
    ]
    new = conn.execute(stmt, rows).all()
    deliveries = [
        {
            "alert_id": alert_id,
            "channel": channel,
            "status": "pending",
            "attempts": 0,
            "due_at": now,
        }
        for alert_id, kind in new
        for channel in routes.get(kind, [])
    ]
    if deliveries:
        conn.execute(ALERT_DELIVERIES.insert(), deliveries)
    return len(new)


def _due(now: datetime) -> Any:
    d = ALERT_DELIVERIES.c
    return and_(d.status.in_(("pending", "failed")), d.due_at <= now, d.attempts < MAX_ATTEMPTS)


def pending_count(conn: Connection, *, now: datetime) -> int:
    return len(conn.execute(select(ALERT_DELIVERIES.c.id).where(_due(now))).all())


def claim(conn: Connection, *, now: datetime) -> list[Claimed]:
    """Mark every due delivery ``sending`` under a new token (one UPDATE) and read them."""
    d, a = ALERT_DELIVERIES.c, ALERTS.c
    token = uuid.uuid4().hex
    conn.execute(
        update(ALERT_DELIVERIES)
        .where(_due(now))
        .values(status="sending", claim_token=token, claimed_at=now, attempts=d.attempts + 1)
    )
    rows = conn.execute(
        select(
            d.id, d.channel, a.kind, a.subject, a.title, a.detail, a.data, a.raised_at, d.attempts
        )
        .join_from(ALERT_DELIVERIES, ALERTS, a.id == d.alert_id)
        .where(d.claim_token == token)
        .order_by(d.id)
    ).all()
    return [Claimed(*row) for row in rows]


def record(conn: Connection, items: Sequence[Claimed], error: str | None, *, now: datetime) -> None:
    """What sending ``items`` (one message) did: sent, or failed and due again later."""
    if not items:
        return
    if error is None:
        values: list[dict[str, Any]] = [
            {"b_id": i.id, "b_status": "sent", "b_sent": now, "b_due": now, "b_error": None}
            for i in items
        ]
    else:
        values = [
            {
                "b_id": i.id,
                "b_status": "failed",
                "b_sent": None,
                "b_due": now + BACKOFF[min(i.attempts - 1, len(BACKOFF) - 1)],
                "b_error": error[:1000],
            }
            for i in items
        ]
    conn.execute(
        update(ALERT_DELIVERIES)
        .where(ALERT_DELIVERIES.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            sent_at=bindparam("b_sent"),
            due_at=bindparam("b_due"),
            last_error=bindparam("b_error"),
        ),
        values,
    )


def recent(conn: Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest alerts with each channel's delivery: what ``leadflow alerts`` lists."""
    d, a = ALERT_DELIVERIES.c, ALERTS.c
    rows = conn.execute(
        select(a.id, a.kind, a.title, a.raised_at, d.channel, d.status, d.attempts, d.last_error)
        .join_from(ALERTS, ALERT_DELIVERIES, d.alert_id == a.id, isouter=True)
        .order_by(a.id.desc(), d.channel)
        .limit(limit)
    ).all()
    return [dict(row._mapping) for row in rows]
