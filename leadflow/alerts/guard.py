"""The sending guard: bounce and complaint rates over the last sends, and the pause they set.

Gmail's and Yahoo's bulk-sender rules refuse senders whose recipients complain (spam rate
above 0.3%) or whose lists bounce; a pause before the next batch is cheaper than a blocked
domain. What counts, over the window of the last ``last_sends`` sends (outbox rows ``sent``
or ``bounced``, latest claims first, claimed at or before ``now`` and after the last resume):

===========  ======================================================================
figure       counted
===========  ======================================================================
sends        the rows in the window
bounces      window rows that bounced at SMTP time (``bounced``) or that a ``bounced``
             event names (a delivery report read from the mailbox), plus ``bounced``
             events naming no message for a window lead after the window began
complaints   ``complained`` events naming a window row, or naming no message for a
             window lead after the window began (a feedback-loop report via the API)
===========  ======================================================================

A rate above its limit (strictly) with at least ``min_sends`` sends pauses sending: one
``sending_pause`` row, ``active`` while it holds (unique, so one pause at a time). Only a
person lifts it (``leadflow sending resume --reason``); the window then starts again after
the resume, so the sends that caused the pause do not pause it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from leadflow.config.alerts import SendingGuard
from models.tables import EVENTS, OUTBOX, SENDING_PAUSES, MessageStatus


@dataclass(frozen=True)
class Figures:
    sends: int
    bounces: int
    complaints: int

    @property
    def bounce_percent(self) -> float:
        return 100.0 * self.bounces / self.sends if self.sends else 0.0

    @property
    def complaint_percent(self) -> float:
        return 100.0 * self.complaints / self.sends if self.sends else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sends": self.sends,
            "bounces": self.bounces,
            "complaints": self.complaints,
            "bounce_percent": round(self.bounce_percent, 2),
            "complaint_percent": round(self.complaint_percent, 2),
        }


@dataclass(frozen=True)
class Pause:
    id: int
    paused_at: datetime
    paused_by: str
    reason: str
    figures: dict[str, Any]


def _pct(value: float) -> str:
    return (
        f"{value:.2f}".rstrip("0").rstrip(".")
        if value < 1
        else f"{value:.1f}".rstrip("0").rstrip(".")
    )


def figures(conn: Connection, guard: SendingGuard, *, now: datetime) -> Figures:
    """The window's sends, bounces and complaints: one statement."""
    o, e = OUTBOX.c, EVENTS.c
    resumed = conn.execute(select(func.max(SENDING_PAUSES.c.resumed_at))).scalar()
    claims = [o.claimed_at <= now] + ([o.claimed_at > resumed] if resumed is not None else [])
    window = (
        select(o.id, o.lead_id, o.status, o.claimed_at)
        .where(
            # ``status || ''``: not the status index (every sent row, then a sort), but the
            # claims index walked back from ``now``, stopping after ``last_sends`` rows
            o.status.concat("").in_((MessageStatus.SENT, MessageStatus.BOUNCED)),
            *claims,
        )
        .order_by(o.claimed_at.desc(), o.id.desc())
        .limit(guard.last_sends)
        .cte("window")
    )
    w = window.c
    start = select(func.min(w.claimed_at)).scalar_subquery()
    leads = select(w.lead_id)

    def named(kind: str) -> Any:
        return exists().where(e.type == kind, e.message_id == w.id)

    def loose(kind: str) -> Any:  # events naming no message, for window leads, since it began
        return (
            select(func.count())
            .select_from(EVENTS)
            .where(
                e.type == kind,
                e.message_id.is_(None),
                e.lead_id.in_(leads),
                e.occurred_at >= start,
                e.occurred_at <= now,
            )
            .scalar_subquery()
        )

    bounced = or_(w.status == MessageStatus.BOUNCED, named("bounced"))
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((bounced, 1), else_=0)), 0),
            func.coalesce(func.sum(case((named("complained"), 1), else_=0)), 0),
        ).select_from(window)
    ).one()
    sends, bounces, complaints = int(row[0]), int(row[1]), int(row[2])
    if sends:
        extra = conn.execute(select(loose("bounced"), loose("complained"))).one()
        bounces, complaints = bounces + int(extra[0]), complaints + int(extra[1])
    return Figures(sends, min(bounces, sends), min(complaints, sends))


def verdict(found: Figures, guard: SendingGuard) -> str | None:
    """Why sending must pause, or None: ``bounce rate 7.1% over the last 200 sends (limit
    5%)``."""
    if not guard.enabled or found.sends < guard.min_sends:
        return None
    reasons = []
    if found.bounce_percent > guard.max_bounce_percent:
        reasons.append(
            f"bounce rate {_pct(found.bounce_percent)}% over the last {found.sends} sends "
            f"(limit {_pct(guard.max_bounce_percent)}%)"
        )
    if found.complaint_percent > guard.max_complaint_percent:
        reasons.append(
            f"complaint rate {_pct(found.complaint_percent)}% over the last {found.sends} sends "
            f"(limit {_pct(guard.max_complaint_percent)}%)"
        )
    return "; ".join(reasons) or None


def active_pause(conn: Connection) -> Pause | None:
    p = SENDING_PAUSES.c
    row = conn.execute(
        select(p.id, p.paused_at, p.paused_by, p.reason, p.figures).where(p.active.is_(True))
    ).first()
    return Pause(*row) if row is not None else None


def pause(
    conn: Connection, *, reason: str, by: str, now: datetime, found: dict[str, Any] | None = None
) -> Pause | None:
    """Pause sending; None when a pause already holds (the one that does is kept)."""
    if active_pause(conn) is not None:
        return None
    try:
        with conn.begin_nested():
            conn.execute(
                insert(SENDING_PAUSES).values(
                    active=True,
                    paused_at=now,
                    paused_by=by[:100],
                    reason=reason[:500],
                    figures=found or {},
                )
            )
    except IntegrityError:  # another run paused first
        return None
    return active_pause(conn)


def resume(conn: Connection, *, reason: str, by: str, now: datetime) -> Pause | None:
    """Lift the pause that holds (None if none does); the window restarts from ``now``."""
    held = active_pause(conn)
    if held is None:
        return None
    conn.execute(
        update(SENDING_PAUSES)
        .where(and_(SENDING_PAUSES.c.id == held.id, SENDING_PAUSES.c.active.is_(True)))
        .values(active=None, resumed_at=now, resumed_by=by[:100], resume_reason=reason[:500])
    )
    return held


def history(conn: Connection, *, limit: int = 10) -> list[dict[str, Any]]:
    p = SENDING_PAUSES.c
    rows = conn.execute(select(SENDING_PAUSES).order_by(p.id.desc()).limit(limit)).all()
    return [dict(r._mapping) for r in rows]
