"""Ten weeks of the default pipeline, one tick a day, with exact outcomes for five leads.

Every day at 10:30 in New York (15:30 UTC; New York is UTC-5 for the whole run) the engine
ticks with a ``MemoryTransport``; scripted events arrive at 09:00 the same morning. The run
is 70 days rather than 60 because coming back from the callback list takes at least 66 days
in the default config: the earliest recycle is when the outbound cadence ends (day 24) or the
qualified SLA runs out (day 22), then ``callback_days`` is 45.

Dates in the expectations are New York dates. US holidays that matter: Veterans Day
(Wed Nov 11) and Thanksgiving (Thu Nov 26).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from seeding import intake_lead
from sqlalchemy import insert, select
from sqlmodel import SQLModel

from leadflow.config import LoadedConfig, load_config
from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.pipeline.events import EventIn, record_events
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import open_database, session_scope
from models.tables import CALLBACKS, LEADS, OUTBOX, SUPPRESSIONS, TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"
NEW_YORK = ZoneInfo("America/New_York")
START = datetime(2026, 11, 3, 15, 30, tzinfo=UTC)  # Tuesday 10:30 in New York
DAYS = 70  # the last tick is on Tuesday 2027-01-12

STRONG = {  # fit 20 + 15 + 15 + 5 + 10 = 65: prospect, then qualified by score alone
    "industry": "saas",
    "company_size": 200,
    "title": "VP Sales",
    "country": "US",
}
MEDIUM = {"industry": "saas", "country": "US"}  # 25: works the outbound cadence
POOR: dict[str, Any] = {}  # 0, grade D: lost after 3 days as a lead

# name -> (fit profile, attributes); inserted in this order, so ids are 1..5 (the id picks the
# A/B variant of the outbound 'value' step: ids 2 -> a, 4 -> b)
LEADS_IN: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "winner": (STRONG, {"plan_interest": "enterprise", "contract_end": "2027-02-01"}),
    "recycled": (MEDIUM, {}),
    "poor_fit": (POOR, {}),
    "unsubscriber": (MEDIUM, {}),
    "lost_deal": (MEDIUM, {}),
}
SCRIPT = [  # (New York date, lead, event type), each at 09:00 before that day's tick
    (date(2026, 11, 5), "lost_deal", "replied"),
    (date(2026, 11, 6), "lost_deal", "meeting_booked"),
    (date(2026, 11, 9), "winner", "meeting_booked"),
    (date(2026, 11, 12), "winner", "proposal_sent"),
    (date(2026, 11, 12), "unsubscriber", "unsubscribed"),
    (date(2026, 11, 13), "lost_deal", "lost"),
    (date(2026, 11, 18), "winner", "replied"),
    (date(2026, 11, 19), "winner", "won"),
]


def d(month: int, day: int, year: int = 2026) -> date:
    return date(year, month, day)


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    return load_config(DEFAULT_CONFIG, templates=TEMPLATES)


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory, loaded: LoadedConfig) -> Iterator[Runtime]:
    """One database for the module: the run happens once, the tests read its outcome."""
    home = tmp_path_factory.mktemp("time-travel")
    url = os.environ.get("LEADFLOW_TEST_DATABASE_URL") or f"sqlite:///{home / 'test.db'}"
    settings = Settings(
        home=home, database_url=url, config=DEFAULT_CONFIG, templates=TEMPLATES, demo=True
    )
    runtime = Runtime(settings=settings, loaded=loaded, engine=open_database(settings.db_url))
    if runtime.engine.dialect.name == "postgresql":
        names = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
        with runtime.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    yield runtime
    runtime.close()


def local_date(at: datetime) -> date:
    return at.astimezone(NEW_YORK).date()


@pytest.fixture(scope="module")
def world(rt: Runtime) -> tuple[Runtime, dict[str, int], MemoryTransport]:
    """The whole run: insert the leads, then a scripted morning and a tick every day."""
    ids: dict[str, int] = {}
    with rt.engine.begin() as conn:
        for name, (profile, attributes) in LEADS_IN.items():
            lead = intake_lead(
                f"{name}@{name}-corp.example",
                now=START,
                first_name=None,
                attributes=attributes,
                **profile,
            )
            ids[name] = conn.execute(
                insert(LEADS).values(**lead).returning(LEADS.c.id)
            ).scalar_one()
    assert list(ids.values()) == [1, 2, 3, 4, 5]
    memory = MemoryTransport()
    for day in range(DAYS + 1):
        now = START + timedelta(days=day)
        morning = now - timedelta(hours=1, minutes=30)
        todays = [
            EventIn(ids[who], etype, morning) for on, who, etype in SCRIPT if on == local_date(now)
        ]
        if todays:
            with session_scope(rt.engine) as session:
                record_events(session.connection(), todays, stop_on=rt.stop_on, now=morning)
        engine.tick(rt, now=now, transport=lambda: memory)
    return rt, ids, memory


def stage_path(rt: Runtime, lead_id: int) -> list[tuple[str | None, str | None, str, date]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(TRANSITIONS).where(TRANSITIONS.c.lead_id == lead_id).order_by(TRANSITIONS.c.id)
        ).all()
    return [(t.from_stage, t.to_stage, t.kind, local_date(t.at)) for t in rows]


def sent(rt: Runtime, lead_id: int) -> list[tuple[str | None, date]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(OUTBOX.c.template, OUTBOX.c.sent_at)
            .where(OUTBOX.c.lead_id == lead_id, OUTBOX.c.status == "sent")
            .order_by(OUTBOX.c.sent_at)
        ).all()
    return [(template, local_date(at)) for template, at in rows]


def lead(rt: Runtime, lead_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(LEADS).where(LEADS.c.id == lead_id)).one()


EXPECTED_PATHS = {
    "winner": [
        (None, "lead", "intake", d(11, 3)),
        ("lead", "prospect", "rule", d(11, 4)),  # score 65 >= 20
        ("prospect", "qualified", "rule", d(11, 5)),  # score >= 60 (and >= 30 to enter)
        ("qualified", "meeting", "rule", d(11, 9)),
        ("meeting", "proposal", "rule", d(11, 12)),
        ("proposal", "negotiation", "rule", d(11, 18)),  # replied
        ("negotiation", "won", "rule", d(11, 19)),
        ("won", "customer", "rule", d(12, 3)),  # 14 days in 'won'
    ],
    "recycled": [
        (None, "lead", "intake", d(11, 3)),
        ("lead", "prospect", "rule", d(11, 4)),
        ("prospect", None, "recycle", d(11, 27)),  # breakup Nov 24 + on_complete after 3 days
        (None, "prospect", "revive", d(1, 11, 2027)),  # + callback_days 45
    ],
    "poor_fit": [
        (None, "lead", "intake", d(11, 3)),
        ("lead", "lost", "rule", d(11, 6)),  # grade D and 3 days in stage
    ],
    "unsubscriber": [
        (None, "lead", "intake", d(11, 3)),
        ("lead", "prospect", "rule", d(11, 4)),
    ],
    "lost_deal": [
        (None, "lead", "intake", d(11, 3)),
        ("lead", "prospect", "rule", d(11, 4)),
        ("prospect", "qualified", "rule", d(11, 5)),  # replied: 25 + ~15 >= 30
        ("qualified", "meeting", "rule", d(11, 6)),
        ("meeting", "lost", "rule", d(11, 13)),
    ],
}

# The outbound window is Tue-Thu 09:00-11:30: the intro goes out with the Wed Nov 4 tick; the
# value step is 3 business days later (Mon Nov 9) -> Tue Nov 10; case study 4 business days
# on (Nov 11 is a holiday) -> Tue Nov 17; breakup 5 business days on -> Tue Nov 24.
# Check-ins are Mon-Fri 09:00-17:00: won Thu Nov 19 + 7 days is Thanksgiving -> Fri Nov 27;
# + 30 days is Sat Dec 19 -> Mon Dec 21; contract_end 2027-02-01 - 60 days is Thu Dec 3.
EXPECTED_SENT = {
    "winner": [
        ("welcome", d(11, 4)),
        ("meeting_followup", d(11, 9)),
        ("proposal_followup", d(11, 17)),  # proposal Thu Nov 12 + 3 business days
        ("checkin_onboarding", d(11, 27)),
        ("renewal_reminder", d(12, 3)),
        ("checkin_30d", d(12, 21)),
    ],
    "recycled": [
        ("welcome", d(11, 4)),
        ("followup_value", d(11, 10)),
        ("case_study", d(11, 17)),
        ("breakup", d(11, 24)),
        ("revival", d(1, 12, 2027)),  # revived Mon Jan 11; revival window is Tue-Thu 10-12
    ],
    "poor_fit": [],
    "unsubscriber": [
        ("welcome", d(11, 4)),
        ("followup_value_b", d(11, 10)),
    ],
    "lost_deal": [
        ("welcome", d(11, 4)),
        ("meeting_followup", d(11, 6)),
    ],
}


@pytest.mark.parametrize("name", list(LEADS_IN))
def test_stage_sequence(world: tuple[Runtime, dict[str, int], MemoryTransport], name: str) -> None:
    rt, ids, _memory = world
    assert stage_path(rt, ids[name]) == EXPECTED_PATHS[name]


@pytest.mark.parametrize("name", list(LEADS_IN))
def test_emails_sent(world: tuple[Runtime, dict[str, int], MemoryTransport], name: str) -> None:
    rt, ids, memory = world
    assert sent(rt, ids[name]) == EXPECTED_SENT[name]
    address = f"{name}@{name}-corp.example"
    assert [m.recipient for m in memory.sent].count(address) == len(EXPECTED_SENT[name])


def test_final_states(world: tuple[Runtime, dict[str, int], MemoryTransport]) -> None:
    rt, ids, memory = world
    won_at = datetime(2026, 11, 19, 15, 30, tzinfo=UTC)
    summary = {
        name: (row.status, row.stage, row.round, row.recycle_count, row.cadence)
        for name, row in ((n, lead(rt, i)) for n, i in ids.items())
    }
    assert summary == {
        "winner": ("active", "customer", 0, 0, None),
        "recycled": ("active", "prospect", 1, 1, "revival"),
        "poor_fit": ("closed", "lost", 0, 0, None),
        "unsubscriber": ("active", "prospect", 0, 0, None),
        "lost_deal": ("closed", "lost", 0, 0, None),
    }
    assert lead(rt, ids["winner"]).won_at == won_at
    assert lead(rt, ids["poor_fit"]).closed_at == START + timedelta(days=3)
    with rt.engine.connect() as conn:
        checkins = conn.execute(
            select(OUTBOX.c.step, OUTBOX.c.status, OUTBOX.c.due_at)
            .where(OUTBOX.c.lead_id == ids["winner"], OUTBOX.c.kind == "checkin")
            .order_by(OUTBOX.c.id)
        ).all()
        unsubscriber_mail = conn.execute(
            select(OUTBOX.c.step, OUTBOX.c.status, OUTBOX.c.last_error)
            .where(OUTBOX.c.lead_id == ids["unsubscriber"])
            .order_by(OUTBOX.c.id)
        ).all()
        suppressed = conn.execute(select(SUPPRESSIONS.c.email, SUPPRESSIONS.c.reason)).all()
        parked = conn.execute(
            select(CALLBACKS.c.lead_id, CALLBACKS.c.due_at, CALLBACKS.c.revived_at)
        ).all()
    quarter = datetime(2027, 2, 17, 15, 30, tzinfo=UTC)  # won + 90 days, a Wednesday
    assert [(c.step, c.status) for c in checkins] == [
        ("onboarding", "sent"),
        ("month_one", "sent"),
        ("quarter_one", "pending"),
        ("renewal_60", "sent"),
    ]
    assert checkins[2].due_at == quarter
    assert [tuple(m) for m in unsubscriber_mail] == [
        ("intro", "sent", None),
        ("value", "sent", None),
        ("proof", "cancelled", "stopped: unsubscribed"),
    ]
    assert [tuple(s) for s in suppressed] == [
        ("unsubscriber@unsubscriber-corp.example", "unsubscribed")
    ]
    callback_due = datetime(2027, 1, 11, 15, 30, tzinfo=UTC)
    assert [tuple(p) for p in parked] == [(ids["recycled"], callback_due, callback_due)]
    assert len(memory.sent) == sum(len(v) for v in EXPECTED_SENT.values()) == 15
