"""The demo's simulated world: how synthetic leads react to emails and sales calls.

Deterministic (seeded per lead and day), so two demo runs tell the same story. It only
produces events; everything else is the real engine reacting to them.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, select

from leadflow.events import EventIn
from models.tables import LEADS, OUTBOX, LeadStatus, MessageStatus

SEED = 20261102


def _rng(lead_id: int, day: datetime, salt: str) -> random.Random:
    return random.Random(f"{SEED}:{lead_id}:{day.date().isoformat()}:{salt}")


def world_events(conn: Connection, *, now: datetime) -> list[EventIn]:
    """Reactions that happened during the day before ``now``."""
    lead = LEADS
    outbox = OUTBOX
    since = now - timedelta(days=1)
    at = now - timedelta(minutes=30)
    events: list[EventIn] = []
    sent = conn.execute(
        select(outbox.c.id, outbox.c.lead_id, lead.c.fit_score, outbox.c.kind)
        .join(lead, lead.c.id == outbox.c.lead_id)
        .where(
            outbox.c.status == MessageStatus.SENT, outbox.c.sent_at >= since, outbox.c.sent_at < now
        )
    ).all()
    for message_id, lead_id, fit, kind in sent:
        rng = _rng(lead_id, now, f"mail{message_id}")
        keen = min(max((fit or 0) / 60.0, 0.0), 1.0)
        if rng.random() < 0.35 + 0.3 * keen:
            events.append(EventIn(lead_id, "email_opened", at, message_id=message_id))
            if rng.random() < 0.25 + 0.2 * keen:
                events.append(EventIn(lead_id, "email_clicked", at, message_id=message_id))
            if kind == "cadence" and rng.random() < 0.05 + 0.12 * keen:
                events.append(EventIn(lead_id, "replied", at, message_id=message_id))
            elif rng.random() < 0.01:
                events.append(EventIn(lead_id, "unsubscribed", at, message_id=message_id))
    active = conn.execute(
        select(lead.c.id, lead.c.stage, lead.c.stage_entered_at).where(
            and_(lead.c.status == LeadStatus.ACTIVE, lead.c.stage.is_not(None))
        )
    ).all()
    for lead_id, stage, entered in active:
        rng = _rng(lead_id, now, "sales")
        days_in = (now - entered).total_seconds() / 86400 if entered else 0
        roll = rng.random()
        if (stage == "qualified" and roll < 0.2) or (stage == "prospect" and roll < 0.02):
            events.append(EventIn(lead_id, "meeting_booked", at))
        elif stage == "meeting" and days_in >= 2:
            if roll < 0.45:
                events.append(EventIn(lead_id, "proposal_sent", at))
            elif roll < 0.5:
                events.append(EventIn(lead_id, "lost", at, data={"reason": "no budget"}))
        elif stage == "proposal" and days_in >= 1:
            if roll < 0.05:
                events.append(EventIn(lead_id, "won", at))
            elif roll < 0.1:
                events.append(EventIn(lead_id, "lost", at, data={"reason": "competitor"}))
            elif roll < 0.25:
                events.append(EventIn(lead_id, "replied", at))
        elif stage == "negotiation" and days_in >= 1:
            if roll < 0.12:
                events.append(EventIn(lead_id, "won", at))
            elif roll < 0.18:
                events.append(EventIn(lead_id, "lost", at, data={"reason": "price"}))
        elif stage == "lead" and roll < 0.04:
            events.append(EventIn(lead_id, "web_visit", at))
        elif stage == "lead" and roll < 0.05:
            events.append(EventIn(lead_id, "form_filled", at))
    return events
