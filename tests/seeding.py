"""Lead and outbox rows as the tests and the benchmarks seed their databases with them: new
leads as intake adds them, and leads enrolled in cadence ``outbound`` with their first step due.

Plain SQLAlchemy Core, no pytest: the benchmarks put ``tests/`` on ``sys.path`` to share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert

from leadflow.outbox.rows import outbox_row
from models.tables import LEADS, OUTBOX


def intake_lead(email: str, /, *, now: datetime, **fields: Any) -> dict[str, Any]:
    """A lead row as intake adds it: due for scoring and the stage engine at ``now``;
    ``fields`` add to it or replace."""
    return {
        "email": email,
        "first_name": "Ada",
        "timezone": "America/New_York",
        "created_at": now,
        "updated_at": now,
        "rescore_at": now,
        "next_action_at": now,
        **fields,
    }


def enrolled_lead(email: str, /, *, now: datetime, **fields: Any) -> dict[str, Any]:
    """A lead row in stage ``prospect`` working cadence ``outbound`` since ``now`` (not due
    for scoring or the stage engine); ``fields`` add to it or replace."""
    return {
        "email": email,
        "first_name": "Ada",
        "timezone": "America/New_York",
        "pipeline": "b2b",
        "stage": "prospect",
        "stage_entered_at": now,
        "cadence": "outbound",
        "attributes": {},
        "created_at": now,
        "updated_at": now,
        **fields,
    }


def step_row(
    lead_id: int, email: str, step: str, *, due: datetime, now: datetime
) -> dict[str, Any]:
    """The outbox row for ``step`` of cadence ``outbound`` (stage ``prospect``), due at ``due``."""
    return outbox_row(
        lead_id=lead_id,
        to_email=email,
        cadence="outbound",
        step=step,
        stage="prospect",
        due_at=due,
        now=now,
    )


def seed_due_intros(engine: Engine, leads: Iterable[dict[str, Any]], *, now: datetime) -> list[int]:
    """Insert ``leads`` (``enrolled_lead`` rows) with step ``intro`` due at ``now`` for each;
    returns the outbox ids in the order of ``leads``."""
    with engine.begin() as conn:
        inserted = conn.execute(
            insert(LEADS).returning(LEADS.c.id, LEADS.c.email, sort_by_parameter_order=True),
            list(leads),
        ).all()
        ids = conn.execute(
            insert(OUTBOX).returning(OUTBOX.c.id, sort_by_parameter_order=True),
            [step_row(lead_id, email, "intro", due=now, now=now) for lead_id, email in inserted],
        )
        return list(ids.scalars())
