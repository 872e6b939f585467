"""Config versions: runs record their config hash, and a changed config reaches idle leads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conftest import DEFAULT_CONFIG, T0, TEMPLATES, LeadFactory
from sqlalchemy import select

from leadflow.config import load_config
from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.pipeline.config_change import apply_config_change
from leadflow.pipeline.planning import plan_tick
from leadflow.pipeline.run_record import record_run
from leadflow.runtime import Runtime
from models.tables import LEADS, TRANSITIONS

# industry saas (+20) would pass the prospect threshold; healthcare (+8) + CA (+5) = 13 does not
LUKEWARM = {"industry": "healthcare", "country": "CA", "title": "Analyst"}


def proposed(rt: Runtime, old: str, new: str) -> Runtime:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert old in text
    loaded = load_config(Path("proposed.yaml"), templates=TEMPLATES, text=text.replace(old, new))
    return Runtime(settings=rt.settings, loaded=loaded, engine=rt.engine)


def stage_of(rt: Runtime, lead_id: int) -> str | None:
    with rt.engine.connect() as conn:
        return conn.execute(select(LEADS.c.stage).where(LEADS.c.id == lead_id)).scalar()


def test_a_changed_config_reaches_leads_with_no_new_data(
    rt: Runtime, add_lead: LeadFactory
) -> None:
    lead_id = add_lead(**LUKEWARM)
    memory = MemoryTransport()
    engine.tick(rt, now=T0, transport=lambda: memory)
    record_run(rt, "tick", now=T0, summary={})
    later = T0 + timedelta(hours=2)
    engine.tick(rt, now=later, transport=lambda: memory)
    assert stage_of(rt, lead_id) == "lead"
    lower = proposed(
        rt, 'when: "score >= 20", reason: fit enough', 'when: "score >= 10", reason: fit enough'
    )

    plan = plan_tick(rt, now=later, proposed=lower)
    assert plan["current"]["advance"]["moves"] == []
    assert plan["diff"]["moves"] == {"lead → prospect": {"current": 0, "proposed": 1}}
    assert stage_of(rt, lead_id) == "lead"  # the plan changed nothing

    assert apply_config_change(lower, now=later).reevaluated == 1
    engine.tick(lower, now=later + timedelta(seconds=1), transport=lambda: memory)
    assert stage_of(rt, lead_id) == "prospect"
    with rt.engine.connect() as conn:
        hashes = conn.execute(
            select(TRANSITIONS.c.to_stage, TRANSITIONS.c.config_hash).order_by(TRANSITIONS.c.id)
        ).all()
    assert [tuple(h) for h in hashes] == [("lead", rt.config_hash), ("prospect", lower.config_hash)]


def test_same_config_does_not_make_leads_due(rt: Runtime, add_lead: LeadFactory) -> None:
    add_lead(**LUKEWARM)
    engine.tick(rt, now=T0, transport=MemoryTransport)
    record_run(rt, "tick", now=T0, summary={})
    assert apply_config_change(rt, now=T0 + timedelta(hours=1)).reevaluated == 0
