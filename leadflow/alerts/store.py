"""Alerts and their deliveries in the database: raised once, claimed before sending, recorded.

``raise_alerts`` inserts ``(kind, subject, period)`` with ``ON CONFLICT DO NOTHING``: only
the transaction that inserted an alert makes its delivery rows (one per channel the YAML
routes the kind to), so two runs raising the same alert at once, or a retried run, deliver it
once. ``claim`` marks due deliveries ``sending`` with a token in one UPDATE (a row another run
claimed is no longer ``pending``); ``record`` writes what each request did. A period longer
than its column (``PERIOD_LENGTH``) is stored as its start and a digest of the whole
(``stored_period``): two periods that differ only at their end stay two alerts.

=========  ==============================================================================
status     meaning
=========  ==============================================================================
pending    to be sent (``due_at``: now, or a retry's time)
sending    claimed; a crash here leaves it so, and it is never resent (it may have arrived)
sent       the channel accepted it (2xx, or the SMTP server took the email for at least one
           address: the ones that refused it are in ``last_error``, never retried)
failed     refused or unreachable: retried after ``BACKOFF`` until ``MAX_ATTEMPTS``
=========  ==============================================================================
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models.tables import ALERT_DELIVERIES, ALERTS

MAX_ATTEMPTS = 3
BACKOFF = (timedelta(minutes=5), timedelta(minutes=30))
PERIOD_LENGTH = 100  # alert.period's column
_DIGEST = 32  # hex characters of sha256 kept when a period is too long for its column


def stored_period(period: str) -> str:
    """``period`` as stored: itself when it fits, else its start, ``#`` and a digest of the
    whole (always ``PERIOD_LENGTH`` characters, and as unique as the whole)."""
    if len(period) <= PERIOD_LENGTH:
        return period
    digest = hashlib.sha256(period.encode("utf-8")).hexdigest()[:_DIGEST]
    return f"{period[: PERIOD_LENGTH - _DIGEST - 1]}#{digest}"


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
    routes: Callable[[str], Sequence[str]],
    *,
    now: datetime,
) -> int:
    """Record the alerts not raised before, and a pending delivery per channel of their kind
    (``routes``: kind → channels, ``Alerts.routes``); how many were new."""
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
            "period": stored_period(a.period),
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
        for channel in routes(kind)
    ]
    if deliveries:
        conn.execute(ALERT_DELIVERIES.insert(), deliveries)
    return len(new)


def _due(now: datetime) -> Any:
    d = ALERT_DELIVERIES.c
    return and_(d.status.in_(("pending", "failed")), d.due_at <= now, d.attempts < MAX_ATTEMPTS)


def pending_count(conn: Connection, *, now: datetime) -> int:
    found = conn.execute(select(func.count()).select_from(ALERT_DELIVERIES).where(_due(now)))
    return int(found.scalar_one())


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


def record(
    conn: Connection,
    items: Sequence[Claimed],
    error: str | None,
    *,
    now: datetime,
    note: str | None = None,
) -> None:
    """What sending ``items`` (one message) did: sent (``note``: what part of it was refused,
    kept in ``last_error``), or failed and due again later."""
    if not items:
        return
    if error is None:
        kept = note[:1000] if note else None
        values: list[dict[str, Any]] = [
            {"b_id": i.id, "b_status": "sent", "b_sent": now, "b_due": now, "b_error": kept}
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
    """The latest ``limit`` alerts with each channel's delivery (a row per alert and channel):
    what ``leadflow alerts`` lists."""
    d, a = ALERT_DELIVERIES.c, ALERTS.c
    latest = select(ALERTS).order_by(a.id.desc()).limit(limit).subquery("latest")
    t = latest.c
    rows = conn.execute(
        select(t.id, t.kind, t.title, t.raised_at, d.channel, d.status, d.attempts, d.last_error)
        .join_from(latest, ALERT_DELIVERIES, d.alert_id == t.id, isouter=True)
        .order_by(t.id.desc(), d.channel)
    ).all()
    return [dict(row._mapping) for row in rows]
