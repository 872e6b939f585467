"""A cadence runs at most once per round: moving back into a worked stage does not re-mail."""

from __future__ import annotations

from datetime import timedelta

from conftest import T0, LeadFactory, move_by_hand
from sqlalchemy import select

from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.runtime import Runtime
from models.tables import LEADS, OUTBOX

FIT = {"industry": "saas", "company_size": 120, "title": "CTO", "country": "US"}


def test_moving_back_into_a_worked_stage_does_not_enroll_again(
    rt: Runtime, add_lead: LeadFactory
) -> None:
    lead_id = add_lead(**FIT)
    memory = MemoryTransport()
    engine.tick(rt, now=T0, transport=lambda: memory)
    engine.tick(rt, now=T0 + timedelta(hours=1), transport=lambda: memory)  # -> prospect, intro
    assert [o.recipient for o in memory.sent] == ["lead1@example.com"]
    later = T0 + timedelta(hours=2)
    move_by_hand(rt, lead_id, "qualified", reason="call", now=later, actor="ops")
    outcome = move_by_hand(
        rt, lead_id, "prospect", reason="not ready", now=later + timedelta(minutes=1), actor="ops"
    )
    assert outcome.enrolled == 0
    engine.tick(rt, now=T0 + timedelta(days=1), transport=lambda: memory)
    with rt.engine.connect() as conn:
        lead = conn.execute(select(LEADS.c.stage, LEADS.c.cadence, LEADS.c.round)).one()
        steps = conn.execute(
            select(OUTBOX.c.step, OUTBOX.c.round, OUTBOX.c.status).order_by(OUTBOX.c.id)
        ).all()
    assert tuple(lead) == ("prospect", None, 0)
    assert [tuple(s) for s in steps] == [("intro", 0, "sent"), ("value", 0, "cancelled")]
    assert len(memory.sent) == 1
