"""Which lead (and which email of ours) an inbound message belongs to.

In order: ``In-Reply-To``/``References`` (or a bounce's attached original) against the
Message-IDs leadflow sends (``<lf{outbox id}....@domain>``, checked against the stored value)
gives the exact outbox row, step and variant; else the failed recipient of a bounce, or the
sender of anything else, normalized as intake normalizes addresses; else unmatched. Two
queries per batch, whatever its size.
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
    """Each message's lead and outbox row: by thread, then by address (two queries a batch)."""
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
    addresses = {a for item in items for a in _addresses(item)}
    leads = {}
    if addresses:
        leads = dict(
            conn.execute(
                select(LEADS.c.email, LEADS.c.id).where(LEADS.c.email.in_(sorted(addresses)))
            ).all()
        )
    matches = []
    for item in items:
        match = Match(None, None, None)
        for mid in item.answers:
            found = _OUR_ID.match(mid)
            row = rows.get(int(found.group(1))) if found else None
            if row is not None and row.message_id == mid:
                by = "dsn" if item.kind in (Kind.BOUNCED, Kind.SOFT_BOUNCED) else "thread"
                match = Match(row.lead_id, row.id, by)
                break
        if match.lead_id is None:
            for address in _addresses(item):
                if address in leads:
                    match = Match(leads[address], None, "address")
                    break
        matches.append(match)
    return matches


def _addresses(item: Classified) -> list[str]:
    bounced = item.kind in (Kind.BOUNCED, Kind.SOFT_BOUNCED)
    raw = list(item.failed) if bounced else ([item.from_email] if item.from_email else [])
    return [email_key(address) for address in raw]
