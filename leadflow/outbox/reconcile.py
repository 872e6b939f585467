"""Claims that never reached an SMTP outcome: stale ones become ``unknown``, unsent ones go back.

A row stays ``sending`` only while its run is alive. One left behind by a crash is never resent
automatically (the message may have gone out): after ``CLAIM_TTL`` it becomes ``unknown`` and
is reported. A run that fails before handing a row to SMTP gives it back instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, select, update

from models.tables import OUTBOX, MessageStatus

CLAIM_TTL = timedelta(minutes=15)


def reconcile(conn: Connection, *, now: datetime) -> list[int]:
    """Rows stuck in ``sending`` past the claim TTL become ``unknown`` (never resent)."""
    outbox = OUTBOX
    stale = and_(outbox.c.status == MessageStatus.SENDING, outbox.c.claimed_at < now - CLAIM_TTL)
    ids = [r[0] for r in conn.execute(select(outbox.c.id).where(stale)).all()]
    if ids:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids), outbox.c.status == MessageStatus.SENDING)
            .values(
                status=MessageStatus.UNKNOWN,
                updated_at=now,
                last_error="claim expired: the sender stopped mid-send; delivery unknown",
            )
        )
    return ids


def release_claims(conn: Connection, ids: Sequence[int], *, now: datetime) -> int:
    """Give claimed rows back, due now, when no message was handed to SMTP for them (the run
    failed before): the claim's attempt is not counted and the caps no longer count them."""
    if not ids:
        return 0
    outbox = OUTBOX
    released = conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(list(ids)), outbox.c.status == MessageStatus.SENDING)
        .values(
            status=MessageStatus.DEFERRED,
            due_at=now,
            defer_reason="released: the run stopped before sending it",
            attempts=outbox.c.attempts - 1,
            claim_token=None,
            claimed_at=None,
            updated_at=now,
        )
    )
    return int(released.rowcount or 0)
