"""``leadflow mailbox status``: how far each folder has been read, and what was found."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from models.tables import INBOUND, MAILBOX_CHECKPOINTS, RUNS


def mailbox_status(conn: Connection) -> dict[str, Any]:
    """Checkpoints, messages per class (matched to a lead or not), and the last sync's result."""
    checkpoints = [
        {
            "mailbox": r.mailbox,
            "folder": r.folder,
            "uidvalidity": r.uidvalidity,
            "last_uid": r.last_uid,
            "messages": r.messages,
            "synced_at": r.synced_at.isoformat(),
        }
        for r in conn.execute(
            select(MAILBOX_CHECKPOINTS).order_by(
                MAILBOX_CHECKPOINTS.c.mailbox,
                MAILBOX_CHECKPOINTS.c.folder,
                MAILBOX_CHECKPOINTS.c.synced_at,
            )
        )
    ]
    counts: dict[str, dict[str, int]] = {}
    for kind, matched, n in conn.execute(
        select(INBOUND.c.kind, INBOUND.c.lead_id.is_not(None), func.count()).group_by(
            INBOUND.c.kind, INBOUND.c.lead_id.is_not(None)
        )
    ):
        entry = counts.setdefault(kind, {"matched": 0, "unmatched": 0})
        entry["matched" if matched else "unmatched"] += n
    last = conn.execute(
        select(RUNS.c.kind, RUNS.c.now, RUNS.c.summary)
        .where(RUNS.c.kind.in_(["mailbox", "tick"]))
        .order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc())
        .limit(20)
    ).all()
    last_sync = next(
        (
            {"kind": k, "now": now.isoformat(), **summary["mailbox"]}
            for k, now, summary in last
            if isinstance(summary.get("mailbox"), dict) and "fetched" in summary["mailbox"]
        ),
        None,
    )
    return {
        "checkpoints": checkpoints,
        "classes": dict(sorted(counts.items())),
        "last_sync": last_sync,
        "last_error": "; ".join(last_sync["errors"]) if last_sync and last_sync["errors"] else None,
    }
