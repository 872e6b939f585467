"""Read-side queries shared by the CLI, the web app and reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, func, select

from leadflow.intake.values import email_key
from models.tables import (
    CALLBACKS,
    EVENTS,
    LEADS,
    OUTBOX,
    OWNER_CHANGES,
    SCORE_CHANGES,
    TRANSITIONS,
    LeadStatus,
)


def find_lead(conn: Connection, email: str) -> Any | None:
    """The lead with this address, written as intake would store it or not."""
    lead = LEADS
    return conn.execute(select(lead).where(lead.c.email == email_key(email))).first()


def leads_filtered(
    *columns: Any,
    stage: str | None = None,
    status: str | None = None,
    pipeline: str | None = None,
    owner: str | None = None,
) -> Select[Any]:
    """``columns`` of the leads of a filter (each given one must match), highest score first:
    the one definition of ``leadflow leads``' list and its CSV export."""
    lead = LEADS
    query = select(*columns).order_by(lead.c.score.desc(), lead.c.id)
    if stage:
        query = query.where(lead.c.stage == stage)
    if status:
        query = query.where(lead.c.status == status)
    if pipeline:
        query = query.where(lead.c.pipeline == pipeline)
    if owner:
        query = query.where(lead.c.owner == owner)
    return query


def list_leads(
    conn: Connection,
    *,
    stage: str | None = None,
    status: str | None = None,
    pipeline: str | None = None,
    owner: str | None = None,
    limit: int = 50,
) -> list[Any]:
    lead = LEADS
    query = leads_filtered(
        lead.c.id,
        lead.c.email,
        lead.c.company,
        lead.c.pipeline,
        lead.c.stage,
        lead.c.status,
        lead.c.score,
        lead.c.grade,
        lead.c.stage_entered_at,
        lead.c.stuck,
        lead.c.owner,
        stage=stage,
        status=status,
        pipeline=pipeline,
        owner=owner,
    ).limit(limit)
    return list(conn.execute(query).all())


def stage_counts(conn: Connection) -> list[tuple[str | None, str | None, str, int]]:
    lead = LEADS
    rows = conn.execute(
        select(lead.c.pipeline, lead.c.stage, lead.c.status, func.count()).group_by(
            lead.c.pipeline, lead.c.stage, lead.c.status
        )
    ).all()
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def transitions(conn: Connection, lead_id: int) -> list[Any]:
    t = TRANSITIONS
    return list(
        conn.execute(select(t).where(t.c.lead_id == lead_id).order_by(t.c.at, t.c.id)).all()
    )


def owner_changes(conn: Connection, lead_id: int) -> list[Any]:
    """Who owned the lead when, and why (``owner_change``), oldest first."""
    o = OWNER_CHANGES
    return list(
        conn.execute(select(o).where(o.c.lead_id == lead_id).order_by(o.c.at, o.c.id)).all()
    )


def has_owner(conn: Connection, owner: str) -> bool:
    return (
        conn.execute(select(LEADS.c.id).where(LEADS.c.owner == owner).limit(1)).first() is not None
    )


def events(conn: Connection, lead_id: int, limit: int = 50) -> list[Any]:
    e = EVENTS
    return list(
        conn.execute(
            select(e).where(e.c.lead_id == lead_id).order_by(e.c.occurred_at.desc()).limit(limit)
        ).all()
    )


def score_history(conn: Connection, lead_id: int) -> list[Any]:
    s = SCORE_CHANGES
    return list(
        conn.execute(select(s).where(s.c.lead_id == lead_id).order_by(s.c.at, s.c.id)).all()
    )


def messages(conn: Connection, lead_id: int) -> list[Any]:
    o = OUTBOX
    return list(
        conn.execute(select(o).where(o.c.lead_id == lead_id).order_by(o.c.due_at, o.c.id)).all()
    )


def open_callbacks(conn: Connection, limit: int = 100) -> list[Any]:
    cb = CALLBACKS
    lead = LEADS
    return list(
        conn.execute(
            select(
                cb.c.id,
                cb.c.due_at,
                cb.c.reason,
                cb.c.from_stage,
                cb.c.created_at,
                lead.c.email,
                lead.c.company,
                lead.c.recycle_count,
            )
            .join(lead, lead.c.id == cb.c.lead_id)
            .where(cb.c.revived_at.is_(None), lead.c.status == LeadStatus.CALLBACK)
            .order_by(cb.c.due_at, cb.c.id)
            .limit(limit)
        ).all()
    )


def row_dict(row: Any) -> dict[str, Any]:
    out = {}
    for key, value in row._mapping.items():
        out[str(key)] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
