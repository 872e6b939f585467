"""Which lead (and which email of ours) an inbound message belongs to.

In order: ``In-Reply-To``/``References`` (or a bounce's attached original) against the
Message-IDs leadflow sends (``<lf{outbox id}....@domain>``, checked against the stored value)
gives the exact outbox row, step and variant; else the failed recipient of a bounce, or the
sender of anything else, normalized as intake normalizes addresses; else unmatched. At most two
queries per batch, whatever its size (the second only for what no thread matched).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, select

from leadflow.intake.values import email_key
from leadflow.listening.classify import Classified, Kind
from models.tables import LEADS, OUTBOX

_OUR_ID = re.compile(r"^<lf(\d+)\.")


@dataclass(frozen=True)
class Match:
    lead_id: int | None
    outbox_id: int | None
    by: str | None


def match_batch(conn: Connection, items: Sequence[Classified], *, domain: str) -> list[Match]:
    """Each message's lead and outbox row: by thread, then by address (at most two queries)."""
    wanted: dict[int, str] = {}
    for item in items:
        for mid in item.answers:
            found = _OUR_ID.match(mid)
            if found and mid.lower().endswith(f"@{domain}>"):
                wanted[int(found.group(1))] = mid
    rows = {}
    if wanted:
        rows = {
            r.id: r
            for r in conn.execute(
                select(OUTBOX.c.id, OUTBOX.c.lead_id, OUTBOX.c.message_id).where(
                    OUTBOX.c.id.in_(sorted(wanted))
                )
            )
        }
    matches: list[Match | None] = []
    for item in items:
        match = None
        for mid in item.answers:
            found = _OUR_ID.match(mid)
            row = rows.get(int(found.group(1))) if found else None
            if row is not None and row.message_id == mid:
                by = "dsn" if item.kind in (Kind.BOUNCED, Kind.SOFT_BOUNCED) else "thread"
                match = Match(row.lead_id, row.id, by)
                break
        matches.append(match)
    # the addresses only of the messages their thread did not match (most replies it does)
    unmatched = {i: _addresses(item) for i, item in enumerate(items) if matches[i] is None}
    addresses = {a for keys in unmatched.values() for a in keys}
    leads = {}
    if addresses:
        leads = dict(
            conn.execute(
                select(LEADS.c.email, LEADS.c.id).where(LEADS.c.email.in_(sorted(addresses)))
            ).all()
        )
    for i, keys in unmatched.items():
        matches[i] = next(
            (Match(leads[a], None, "address") for a in keys if a in leads), Match(None, None, None)
        )
    return [m if m is not None else Match(None, None, None) for m in matches]


def _addresses(item: Classified) -> list[str]:
    bounced = item.kind in (Kind.BOUNCED, Kind.SOFT_BOUNCED)
    raw = list(item.failed) if bounced else ([item.from_email] if item.from_email else [])
    return [email_key(address) for address in raw]
