"""The suppression list: addresses that are never mailed, whatever the config says."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, select

from models.db import insert_ignore
from models.tables import SUPPRESSIONS


def suppress_many(
    conn: Connection,
    entries: Iterable[tuple[str, str]],
    *,
    now: datetime,
    detail: str | None = None,
) -> int:
    """Add (email, reason) pairs; an address already suppressed keeps its first reason."""
    rows = [
        {"email": email.strip().lower(), "reason": reason, "detail": detail, "created_at": now}
        for email, reason in entries
    ]
    insert_ignore(conn, SUPPRESSIONS, rows)
    return len(rows)


def is_suppressed(conn: Connection, email: str) -> bool:
    table = SUPPRESSIONS
    found = conn.execute(select(table.c.email).where(table.c.email == email.strip().lower()))
    return found.first() is not None
