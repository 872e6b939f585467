"""The stage engine over the default pipeline: moves, guards, SLAs, cadence outcomes, callbacks.

Times are UTC; New York is UTC-5 from 2026-11-01 to 2027-03-14. T0 is Tuesday 2026-11-03
09:30 in New York. Fit profiles (see tests/test_scoring.py for the arithmetic): STRONG 65
(grade A: moves on from prospect by score alone), MEDIUM 25 (works the outbound cadence),
WEAK 9 and POOR 0 (grade D).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import fresh_engine, move_by_hand
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import event, func, insert, select
from sqlmodel import SQLModel

from leadflow.config import LoadedConfig, load_config
from leadflow.mail.transport import MemoryTransport, Outcome
from leadflow.pipeline import engine
from leadflow.pipeline.events import EventIn, record_events
from leadflow.pipeline.run_outcome import RunOutcome
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import insert_ignore, make_engine, session_scope
from models.tables import CALLBACKS, EVENTS, LEADS, OUTBOX, SCORE_CHANGES, TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"
T0 = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ACTOR = "ada"

STRONG = {  # 20 + 15 + 15 + 5 + 10 = 65
    "industry": "saas",
    "company_size": 200,
    "title": "VP Sales",
    "country": "US",
    "attributes": {"plan_interest": "enterprise"},
}
MEDIUM = {"industry": "saas", "country": "US"}  # 20 + 5 = 25
WEAK = {"industry": "saas", "country": "DE", "email": "weak@gmail.com"}  # 20 + 4 - 15 = 9
POOR: dict[str, Any] = {}  # 0


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def rt(quick_rt: Runtime) -> Runtime:
    """A copied blank database and the config validated once per module (conftest)."""
    return quick_rt


@pytest.fixture
def memory() -> MemoryTransport:
    return MemoryTransport()


_EMAILS = [0]


def new_lead(rt: Runtime, profile: dict[str, Any], *, now: datetime = T0, **extra: Any) -> int:
    """A lead as intake leaves it: due for scoring and for the stage engine at ``now``."""
    _EMAILS[0] += 1
    values: dict[str, Any] = {
        "email": f"lead{_EMAILS[0]}@acme{_EMAILS[0]}.example",
        "timezone": "America/New_York",
        "created_at": now,
        "updated_at": now,
        "rescore_at": now,
        "next_action_at": now,
        "attributes": {},
    }
    values.update(profile)
    values.update(extra)
    with rt.engine.begin() as conn:
        return int(conn.execute(insert(LEADS).values(**values).returning(LEADS.c.id)).scalar_one())


def tick(rt: Runtime, now: datetime, memory: MemoryTransport | None = None) -> RunOutcome:
    transport = memory or MemoryTransport()
    return engine.tick(rt, now=now, transport=lambda: transport)


def add_event(rt: Runtime, lead_id: int, etype: str, at: datetime) -> None:
    with session_scope(rt.engine) as session:
        record_events(
            session.connection(), [EventIn(lead_id, etype, at)], stop_on=rt.stop_on, now=at
        )


def move(rt: Runtime, lead_id: int, stage: str, at: datetime, reason: str = "sales call") -> None:
    move_by_hand(rt, lead_id, stage, reason=reason, now=at, actor=ACTOR)


def lead_row(rt: Runtime, lead_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(LEADS).where(LEADS.c.id == lead_id)).one()


def transitions(rt: Runtime, lead_id: int) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(
            conn.execute(
                select(TRANSITIONS)
                .where(TRANSITIONS.c.lead_id == lead_id)
                .order_by(TRANSITIONS.c.id)
            ).all()
        )


def moves(rt: Runtime, lead_id: int) -> list[tuple[str | None, str | None, str, datetime]]:
    return [(t.from_stage, t.to_stage, t.kind, t.at) for t in transitions(rt, lead_id)]


def callbacks(rt: Runtime, lead_id: int) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(
            conn.execute(
                select(CALLBACKS).where(CALLBACKS.c.lead_id == lead_id).order_by(CALLBACKS.c.id)
            ).all()
        )


def outbox(rt: Runtime, lead_id: int, kind: str | None = None) -> list[Any]:
    query = select(OUTBOX).where(OUTBOX.c.lead_id == lead_id).order_by(OUTBOX.c.id)
    if kind:
        query = query.where(OUTBOX.c.kind == kind)
    with rt.engine.connect() as conn:
        return list(conn.execute(query).all())


def sent(rt: Runtime, lead_id: int) -> list[tuple[str | None, int, datetime | None]]:
    return [(m.template, m.round, m.sent_at) for m in outbox(rt, lead_id) if m.status == "sent"]


def dump(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in id order."""
    out = {}
    with rt.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return out


def next_instant(rt: Runtime) -> datetime | None:
    """The earliest instant at which anything becomes due (what a cron would hit eventually)."""
    with rt.engine.connect() as conn:
        found = [
            conn.execute(
                select(func.min(LEADS.c.next_action_at)).where(LEADS.c.status == "active")
            ).scalar(),
            conn.execute(select(func.min(LEADS.c.rescore_at))).scalar(),
            conn.execute(
                select(func.min(CALLBACKS.c.due_at)).where(CALLBACKS.c.revived_at.is_(None))
            ).scalar(),
            conn.execute(
                select(func.min(OUTBOX.c.due_at)).where(
                    OUTBOX.c.status.in_(["pending", "deferred"])
                )
            ).scalar(),
        ]
    due = [f for f in found if f is not None]
    return min(due) if due else None


def run_until(
    rt: Runtime,
    end: datetime,
    memory: MemoryTransport,
    *,
    after: datetime,
    script: list[tuple[datetime, int, str]] | None = None,
    check_repeat: bool = False,
) -> list[datetime]:
    """Tick at every instant something falls due up to ``end``, recording ``script``'s events
    (at, lead id, type) when their time comes, as a live system would."""
    pending = sorted(script or [])
    ticks: list[datetime] = []
    while len(ticks) < 1000:
        found = [i for i in (next_instant(rt), pending[0][0] if pending else None) if i]
        if not found or min(found) > end:
            return ticks
        at = max(min(found), after + SECOND)
        while pending and pending[0][0] <= at:
            when, lead_id, etype = pending.pop(0)
            add_event(rt, lead_id, etype, when)
        tick(rt, at, memory)
        if check_repeat:
            before = dump(rt)
            again = tick(rt, at, memory)
            assert dump(rt) == before, f"second tick at {at} changed something"
            assert (again.score.rescored, again.advance.examined, again.callbacks.examined) == (
                0,
                0,
                0,
            )
        ticks.append(at)
        after = at
    raise AssertionError(f"still busy after {len(ticks)} ticks: something is due forever")


def variant_config(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> LoadedConfig:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    change(data)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, templates=TEMPLATES)


# --- intake and exits --------------------------------------------------------------------------


def test_intake_puts_a_new_lead_in_the_first_stage_of_the_default_pipeline(rt: Runtime) -> None:
    lead_id = new_lead(rt, POOR)

    outcome = tick(rt, T0)

    row = lead_row(rt, lead_id)
    assert (row.pipeline, row.stage, row.status, row.stage_entered_at) == (
        "b2b",
        "lead",
        "active",
        T0,
    )
    assert row.next_action_at == T0 + timedelta(seconds=1)  # looked at again by the next tick
    [t] = transitions(rt, lead_id)
    assert (t.pipeline, t.from_stage, t.to_stage, t.kind, t.reason, t.actor, t.at) == (
        "b2b",
        None,
        "lead",
        "intake",
        "new lead",
        "engine",
        T0,
    )
    assert t.config_hash == rt.config_hash
    assert dict(outcome.advance.moves) == {("(new)", "lead"): 1}


def test_pipeline_match_rule_assigns_its_pipeline(rt: Runtime, tmp_path: Path) -> None:
    def add_partner_pipeline(data: dict[str, Any]) -> None:
        data["pipelines"].append(
            {
                "id": "partners",
                "match": 'source == "partner"',
                "stages": [{"id": "intro"}, {"id": "prospect"}, {"id": "lost", "kind": "lost"}],
            }
        )

    rt.loaded = variant_config(tmp_path, add_partner_pipeline)
    partner = new_lead(rt, POOR, source="partner")
    other = new_lead(rt, POOR, source="webinar")

    tick(rt, T0)

    assert [(lead_row(rt, i).pipeline, lead_row(rt, i).stage) for i in (partner, other)] == [
        ("partners", "intro"),
        ("b2b", "lead"),
    ]


def test_exit_rules_first_match_wins(rt: Runtime) -> None:
    both = new_lead(rt, STRONG)
    score_only = new_lead(rt, STRONG)
    tick(rt, T0)
    tick(rt, T0 + HOUR)  # lead -> prospect (score 65 >= 20)
    add_event(rt, both, "replied", T0 + 90 * timedelta(minutes=1))
    add_event(rt, both, "meeting_booked", T0 + 90 * timedelta(minutes=1))

    tick(rt, T0 + 2 * HOUR)

    # prospect exits in order: meeting (a meeting was booked), qualified (replied or score >= 60)
    assert [(t.to_stage, t.reason) for t in transitions(rt, both)][-1] == (
        "meeting",
        "meeting booked",
    )
    assert [(t.to_stage, t.reason) for t in transitions(rt, score_only)][-1] == (
        "qualified",
        "engaged",
    )


def test_entry_guard_blocks_a_move_until_it_holds(rt: Runtime) -> None:
    lead_id = new_lead(rt, WEAK)
    tick(rt, T0)
    move(rt, lead_id, "prospect", T0 + HOUR)  # WEAK never scores into prospect by itself
    add_event(rt, lead_id, "replied", T0 + 2 * HOUR)

    tick(rt, T0 + 2 * HOUR)

    # 'replied' satisfies the exit to qualified, but qualified's entry needs score >= 30: 9 + 15
    assert lead_row(rt, lead_id).score == 24.0
    assert lead_row(rt, lead_id).stage == "prospect"
    assert [t.kind for t in transitions(rt, lead_id)] == ["intake", "manual"]

    add_event(rt, lead_id, "form_filled", T0 + 3 * HOUR)  # +10: 9 + 14.97 + 10 = 34.0
    tick(rt, T0 + 3 * HOUR)

    assert moves(rt, lead_id)[-1] == ("prospect", "qualified", "rule", T0 + 3 * HOUR)


# --- SLAs --------------------------------------------------------------------------------------


def to_qualified(rt: Runtime, lead_id: int) -> datetime:
    """STRONG lead: lead at T0, prospect at T0+1h, qualified at T0+2h (score 65 >= 60)."""
    for n in range(3):
        tick(rt, T0 + n * HOUR)
    assert lead_row(rt, lead_id).stage == "qualified"
    return T0 + 2 * HOUR


def test_sla_recycle_puts_the_lead_on_the_callback_list(rt: Runtime) -> None:
    lead_id = new_lead(rt, STRONG)
    entered = to_qualified(rt, lead_id)
    deadline = entered + 21 * DAY

    tick(rt, deadline - timedelta(seconds=1))
    assert lead_row(rt, lead_id).stage == "qualified"

    outcome = tick(rt, deadline)

    assert outcome.advance.recycled == 1
    row = lead_row(rt, lead_id)
    assert (row.status, row.pipeline, row.stage, row.recycle_count, row.round) == (
        "callback",
        "b2b",
        None,
        1,
        0,
    )
    assert (row.next_action_at, row.cadence) == (None, None)
    last = transitions(rt, lead_id)[-1]
    assert (last.from_stage, last.to_stage, last.kind, last.reason, last.at) == (
        "qualified",
        None,
        "recycle",
        "qualified but no meeting in 3 weeks",
        deadline,
    )
    [callback] = callbacks(rt, lead_id)
    assert (callback.from_stage, callback.pipeline, callback.reason) == (
        "qualified",
        "b2b",
        "qualified but no meeting in 3 weeks",
    )
    assert (callback.due_at, callback.revived_at) == (deadline + 45 * DAY, None)
    assert [m.status for m in outbox(rt, lead_id)] == ["sent", "cancelled"]  # intro, value


def test_sla_flag_marks_the_lead_stuck_once(rt: Runtime) -> None:
    lead_id = new_lead(rt, STRONG)
    tick(rt, T0)
    tick(rt, T0 + HOUR)
    add_event(rt, lead_id, "meeting_booked", T0 + 2 * HOUR)
    tick(rt, T0 + 2 * HOUR)  # -> meeting; the follow-up email goes out and completes
    tick(rt, T0 + 2 * HOUR + timedelta(seconds=1))
    entered = lead_row(rt, lead_id).stage_entered_at
    assert (lead_row(rt, lead_id).stage, entered) == ("meeting", T0 + 2 * HOUR)
    assert lead_row(rt, lead_id).next_action_at == entered + 30 * DAY  # the SLA deadline

    flagged = [tick(rt, entered + days * DAY).advance.flagged for days in (30, 31, 45)]

    assert flagged == [1, 0, 0]
    row = lead_row(rt, lead_id)
    assert (row.stage, row.stuck, row.next_action_at) == ("meeting", True, None)
    assert [t.to_stage for t in transitions(rt, lead_id)][-1] == "meeting"

    add_event(rt, lead_id, "proposal_sent", entered + 46 * DAY)
    tick(rt, entered + 46 * DAY)
    assert (lead_row(rt, lead_id).stage, lead_row(rt, lead_id).stuck) == ("proposal", False)


# --- cadence outcome, callbacks, revival, recycle limit ------------------------------------------

END_OF_LIFE = utc(2027, 3, 31)


@pytest.fixture
def recycled_life(rt: Runtime, memory: MemoryTransport) -> int:
    """A MEDIUM lead that never answers, run from T0 until nothing is due any more."""
    lead_id = new_lead(rt, MEDIUM)
    tick(rt, T0, memory)
    run_until(rt, END_OF_LIFE, memory, after=T0)
    return lead_id


def test_finished_outbound_cadence_recycles_the_lead(rt: Runtime, recycled_life: int) -> None:
    lead_id = recycled_life
    # prospect one second after intake; intro at once (Tue 09:30 in New York is inside the
    # Tue-Thu 09:00-11:30 window); then +3 business days = Fri Nov 6 -> next window
    # Tue Nov 10 09:00; +4 (Nov 11 is a holiday)
    # = Tue Nov 17 09:00; +5 = Tue Nov 24 09:00. Lead id 1 gets variant 'b' of the value step.
    assert sent(rt, lead_id)[:4] == [
        ("welcome", 0, T0 + SECOND),
        ("followup_value_b", 0, utc(2026, 11, 10, 14)),
        ("case_study", 0, utc(2026, 11, 17, 14)),
        ("breakup", 0, utc(2026, 11, 24, 14)),
    ]
    # on_complete: recycle 3 days after the last step
    recycle = transitions(rt, lead_id)[2]
    assert (recycle.from_stage, recycle.to_stage, recycle.kind, recycle.reason, recycle.at) == (
        "prospect",
        None,
        "recycle",
        "no response to outbound cadence",
        utc(2026, 11, 27, 14),
    )
    assert callbacks(rt, lead_id)[0].due_at == utc(2027, 1, 11, 14)  # + 45 days


def test_due_callback_revives_into_prospect_with_the_revival_cadence(
    rt: Runtime, recycled_life: int
) -> None:
    lead_id = recycled_life
    revive = transitions(rt, lead_id)[3]
    assert (revive.from_stage, revive.to_stage, revive.kind, revive.reason, revive.at) == (
        None,
        "prospect",
        "revive",
        "callback due (no response to outbound cadence)",
        utc(2027, 1, 11, 14),
    )
    first = callbacks(rt, lead_id)[0]
    assert first.revived_at == utc(2027, 1, 11, 14)
    # Mon Jan 11 09:00 -> revival window Tue-Thu 10:00-12:00: Tue Jan 12 10:00 (15:00 UTC)
    revival = [m for m in outbox(rt, lead_id) if m.cadence == "revival"]
    assert [(m.step, m.round, m.due_at, m.status) for m in revival] == [
        ("revived", 1, utc(2027, 1, 12, 15), "sent"),
        ("revived", 2, utc(2027, 3, 9, 15), "sent"),
    ]


def test_after_max_recycles_the_lead_is_lost(rt: Runtime, recycled_life: int) -> None:
    lead_id = recycled_life
    assert moves(rt, lead_id) == [
        (None, "lead", "intake", T0),
        ("lead", "prospect", "rule", T0 + SECOND),
        ("prospect", None, "recycle", utc(2026, 11, 27, 14)),
        (None, "prospect", "revive", utc(2027, 1, 11, 14)),
        ("prospect", None, "recycle", utc(2027, 1, 22, 15)),  # revival sent + 10 days
        (None, "prospect", "revive", utc(2027, 3, 8, 15)),  # + 45 days
        ("prospect", "lost", "recycle_limit", utc(2027, 3, 19, 15)),
    ]
    assert transitions(rt, lead_id)[-1].reason == (
        "no response after revival; recycled 2 times already"
    )
    row = lead_row(rt, lead_id)
    assert (row.status, row.stage, row.round, row.recycle_count) == ("closed", "lost", 2, 2)
    assert (row.closed_at, row.next_action_at) == (utc(2027, 3, 19, 15), None)
    assert [c.revived_at is not None for c in callbacks(rt, lead_id)] == [True, True]


# --- manual moves ------------------------------------------------------------------------------


def test_manual_move_is_audited(rt: Runtime) -> None:
    lead_id = new_lead(rt, POOR)
    tick(rt, T0)

    outcome = move_by_hand(
        rt, lead_id, "negotiation", reason="CFO called back", now=T0 + HOUR, actor=ACTOR
    )

    assert dict(outcome.moves) == {("lead", "negotiation"): 1}
    last = transitions(rt, lead_id)[-1]
    assert (last.from_stage, last.to_stage, last.kind, last.actor, last.reason, last.at) == (
        "lead",
        "negotiation",
        "manual",
        ACTOR,
        "CFO called back",
        T0 + HOUR,
    )
    assert (lead_row(rt, lead_id).stage, lead_row(rt, lead_id).round) == ("negotiation", 0)

    before = dump(rt)
    with pytest.raises(ValueError, match="unknown stage 'nowhere'"):
        move(rt, lead_id, "nowhere", T0 + 2 * HOUR)
    assert dump(rt) == before


def test_manual_move_from_the_callback_list_revives_the_lead(rt: Runtime) -> None:
    lead_id = new_lead(rt, STRONG)
    recycled_at = to_qualified(rt, lead_id) + 21 * DAY
    tick(rt, recycled_at)
    assert lead_row(rt, lead_id).status == "callback"

    move(rt, lead_id, "meeting", recycled_at + DAY, reason="replied to an old thread")

    row = lead_row(rt, lead_id)
    assert (row.status, row.stage, row.round, row.cadence) == (
        "active",
        "meeting",
        1,
        "meeting_follow_up",
    )
    assert moves(rt, lead_id)[-1] == (None, "meeting", "manual", recycled_at + DAY)
    assert [c.revived_at for c in callbacks(rt, lead_id)] == [recycled_at + DAY]
    tick(rt, recycled_at + 45 * DAY)  # the callback's old due date: nothing left to revive
    assert [t.kind for t in transitions(rt, lead_id)].count("revive") == 0


def test_manual_move_of_a_new_lead_is_not_a_revival(rt: Runtime) -> None:
    lead_id = new_lead(rt, POOR)

    move(rt, lead_id, "meeting", T0)

    row = lead_row(rt, lead_id)
    assert (row.pipeline, row.stage, row.round) == ("b2b", "meeting", 0)


# --- won: check-ins and renewal ----------------------------------------------------------------


def test_won_schedules_check_ins_and_the_renewal_reminder(rt: Runtime) -> None:
    lead_id = new_lead(rt, STRONG, attributes={"contract_end": "2027-06-30"})
    no_contract = new_lead(rt, STRONG, attributes={"contract_end": "soon"})
    tick(rt, T0)
    for i in (lead_id, no_contract):
        move(rt, i, "negotiation", T0 + HOUR)
        add_event(rt, i, "won", utc(2026, 11, 19, 15))
    won_at = utc(2026, 11, 19, 15, 30)  # Thursday 10:30 in New York

    assert tick(rt, won_at).advance.checkins_scheduled == 7

    row = lead_row(rt, lead_id)
    assert (row.stage, row.won_at, row.status) == ("won", won_at, "active")
    assert [(m.step, m.due_at, m.status) for m in outbox(rt, lead_id, "checkin")] == [
        ("onboarding", utc(2026, 11, 27, 14), "pending"),  # +7d is Thanksgiving: Fri 09:00
        ("month_one", utc(2026, 12, 21, 14), "pending"),  # +30d is Sat Dec 19: Mon 09:00
        ("quarter_one", utc(2027, 2, 17, 15, 30), "pending"),  # +90d, Wed 10:30: in the window
        ("renewal_60", utc(2027, 5, 3, 13), "pending"),  # 2027-06-30 - 60d = Sat May 1 10:00
    ]
    assert [m.step for m in outbox(rt, no_contract, "checkin")] == [
        "onboarding",
        "month_one",
        "quarter_one",
    ]

    tick(rt, won_at + 13 * DAY)  # time-dependent exit: rechecked a day later
    assert lead_row(rt, lead_id).stage == "won"
    tick(rt, won_at + 14 * DAY)  # days_in_stage >= 14
    assert moves(rt, lead_id)[-1] == ("won", "customer", "rule", won_at + 14 * DAY)
    assert lead_row(rt, lead_id).won_at == won_at  # moving within won stages keeps the date
    assert [m.status for m in outbox(rt, lead_id, "checkin")] == ["sent"] + ["pending"] * 3


# --- idempotence ---------------------------------------------------------------------------------


def test_a_tick_repeated_at_the_same_instant_changes_nothing(
    rt: Runtime, memory: MemoryTransport
) -> None:
    ids = [new_lead(rt, MEDIUM)]  # cadence, recycle, revival, recycle limit
    ids.append(new_lead(rt, STRONG, attributes={"contract_end": "2027-01-31"}))  # won
    ids.append(new_lead(rt, POOR))  # lost after 3 days in 'lead'
    ids.append(new_lead(rt, STRONG))  # qualified, recycled by the SLA twice
    ids.append(new_lead(rt, MEDIUM))  # qualified by hand, then its address bounces
    tick(rt, T0, memory)
    move(rt, ids[1], "meeting", T0 + HOUR)  # its one-step cadence completes as it is sent
    move(rt, ids[4], "qualified", T0 + 2 * DAY)
    script = [(T0 + 2 * DAY, ids[1], "proposal_sent"), (T0 + 3 * DAY, ids[1], "won")]
    script += [(T0 + 5 * DAY, ids[4], "bounced")]

    ticks = run_until(rt, END_OF_LIFE, memory, after=T0, script=script, check_repeat=True)

    assert len(ticks) > 20
    # the SLA lead: qualified Nov 3, recycled Nov 24, back Jan 8, recycled Jan 29, back Mar 15;
    # the bounced one: qualified Nov 5, recycled Nov 26, back Jan 10 into prospect, where its
    # revival email is suppressed, so that cadence never completes (no engagement anywhere:
    # engaged leads are rescored daily, which would only make this test slow)
    assert [lead_row(rt, i).stage for i in ids] == [
        "lost",
        "customer",
        "lost",
        "qualified",
        "prospect",
    ]
    assert [m.status for m in outbox(rt, ids[4]) if m.cadence == "revival"] == ["suppressed"]
    assert [t.kind for t in transitions(rt, ids[3])].count("revive") == 2


def test_a_tick_repeated_after_a_cadence_completed_in_it_changes_nothing(rt: Runtime) -> None:
    lead_id = new_lead(rt, STRONG)
    tick(rt, T0)
    tick(rt, T0 + HOUR)
    add_event(rt, lead_id, "meeting_booked", T0 + 2 * HOUR)
    tick(rt, T0 + 2 * HOUR)  # -> meeting; its one-step cadence is sent and completes at once
    assert [m.status for m in outbox(rt, lead_id, "cadence")][-1] == "sent"
    before = dump(rt)

    tick(rt, T0 + 2 * HOUR)

    assert dump(rt) == before


def test_a_tick_repeated_after_a_bounce_in_it_changes_nothing(rt: Runtime) -> None:
    lead_id = new_lead(rt, MEDIUM)
    bouncing = MemoryTransport(decide=lambda item: Outcome.BOUNCED)
    tick(rt, T0, bouncing)
    tick(rt, T0 + HOUR, bouncing)  # -> prospect; the intro bounces
    assert [m.status for m in outbox(rt, lead_id)] == ["bounced"]
    before = dump(rt)

    tick(rt, T0 + HOUR, bouncing)

    assert dump(rt) == before


# --- all or nothing per batch ------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def fail_on_call(number: int, real: Callable[..., Any]) -> Callable[..., Any]:
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == number:
            raise Boom(f"failure in call {number}")
        return real(*args, **kwargs)

    return wrapper


def test_a_failing_advance_batch_writes_nothing_and_earlier_batches_stay(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt.settings = rt.settings.model_copy(update={"batch_size": 2})
    ids = [new_lead(rt, STRONG) for _ in range(5)]
    tick(rt, T0)
    tick(rt, T0 + HOUR)  # all five in prospect, intro emails sent
    for lead_id in ids:
        add_event(rt, lead_id, "meeting_booked", T0 + 2 * HOUR)
    for id_range in engine.score_ranges(rt, now=T0 + 2 * HOUR):  # scoring is its own step
        engine.score(rt, id_range, now=T0 + 2 * HOUR)
    before = dump(rt)
    # the outbox insert is the last write of a batch: everything else already ran when it fails
    monkeypatch.setattr("leadflow.pipeline.moves.insert_ignore", fail_on_call(2, insert_ignore))

    with pytest.raises(Boom):
        tick(rt, T0 + 2 * HOUR)

    after = dump(rt)
    assert [lead_row(rt, i).stage for i in ids] == ["meeting"] * 2 + ["prospect"] * 3
    untouched = set(ids[2:])
    for table, lead_column in (("lead", 0), ("stage_transition", 1), ("outbound_message", 1)):
        assert [r for r in after[table] if r[lead_column] in untouched] == [
            r for r in before[table] if r[lead_column] in untouched
        ], table


def test_a_failing_score_batch_writes_nothing(rt: Runtime) -> None:
    rt.settings = rt.settings.model_copy(update={"batch_size": 2})
    ids = [new_lead(rt, STRONG) for _ in range(5)]
    lead_updates = [0]

    def fail_second_lead_update(*args: Any) -> None:
        """Scoring writes the lead rows last, after the batch's history rows went in."""
        statement = str(args[2])
        if statement.startswith("UPDATE lead"):
            lead_updates[0] += 1
            if lead_updates[0] == 2:
                raise Boom("the database went away")

    event.listen(rt.engine, "before_cursor_execute", fail_second_lead_update)
    try:
        with pytest.raises(Boom):
            tick(rt, T0)
    finally:
        event.remove(rt.engine, "before_cursor_execute", fail_second_lead_update)

    rows = [lead_row(rt, i) for i in ids]
    assert [(r.fit_score, r.score, r.grade, r.scored_at) for r in rows] == [
        (65.0, 65.0, "A", T0)
    ] * 2 + [(0.0, 0.0, None, None)] * 3
    assert [r.stage for r in rows] == [None] * 5  # the tick stopped before the stage engine
    with rt.engine.connect() as conn:
        history = conn.execute(select(SCORE_CHANGES.c.lead_id).order_by(SCORE_CHANGES.c.id))
        assert history.scalars().all() == ids[:2]


def test_a_failing_revive_batch_writes_nothing(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt.settings = rt.settings.model_copy(update={"batch_size": 1})
    ids = [new_lead(rt, STRONG) for _ in range(3)]
    recycled_at = to_qualified(rt, ids[0]) + 21 * DAY
    tick(rt, recycled_at)
    assert [lead_row(rt, i).status for i in ids] == ["callback"] * 3
    monkeypatch.setattr("leadflow.pipeline.moves.insert_ignore", fail_on_call(2, insert_ignore))

    with pytest.raises(Boom):
        tick(rt, recycled_at + 45 * DAY)

    assert [lead_row(rt, i).status for i in ids] == ["active", "callback", "callback"]
    assert [c.revived_at is None for i in ids for c in callbacks(rt, i)] == [False, True, True]
    assert [t.kind for t in transitions(rt, ids[1])][-1] == "recycle"


# --- property: random lead histories ------------------------------------------------------------

EVENT_TYPES = ["replied", "meeting_booked", "proposal_sent", "won", "lost"]
STAGE_IDS = ["lead", "prospect", "qualified", "meeting", "proposal", "negotiation"]
STAGE_IDS += ["won", "customer", "lost"]
# default-config exits whose rule is only "events(X) > 0" (any of the types): the evidence
EVENT_EXITS = {
    ("prospect", "meeting"): {"meeting_booked"},
    ("qualified", "meeting"): {"meeting_booked"},
    ("meeting", "proposal"): {"proposal_sent"},
    ("meeting", "lost"): {"lost"},
    ("proposal", "negotiation"): {"replied", "meeting_booked"},
    ("proposal", "won"): {"won"},
    ("proposal", "lost"): {"lost"},
    ("negotiation", "won"): {"won"},
    ("negotiation", "lost"): {"lost"},
}
TIME_EXITS = {("lead", "lost"): 3, ("won", "customer"): 14}  # days_in_stage >= N
GAPS_HOURS = [1, 5, 24, 72, 7 * 24, 15 * 24, 22 * 24, 46 * 24]
STEPS = st.lists(
    st.tuples(
        st.sampled_from(GAPS_HOURS),
        st.one_of(
            st.tuples(st.just("tick"), st.just(0), st.just("")),
            st.tuples(st.just("event"), st.integers(0, 2), st.sampled_from(EVENT_TYPES)),
            st.tuples(st.just("manual"), st.integers(0, 2), st.sampled_from(STAGE_IDS)),
        ),
    ),
    min_size=1,
    max_size=14,
)


@pytest.fixture(scope="module")
def shared_rt(
    tmp_path_factory: pytest.TempPathFactory, loaded: LoadedConfig, blank_database: Path
) -> Iterator[Runtime]:
    """One runtime (templates compiled once) whose engine each example replaces."""
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, config=DEFAULT_CONFIG, templates=TEMPLATES, demo=True)
    runtime = Runtime(settings=settings, loaded=loaded, engine=make_engine("sqlite://"))
    yield runtime
    runtime.close()


def check_lead(rt: Runtime, lead_id: int) -> None:
    """The invariants: one place, a legitimate history, and the history replays to the state."""
    config = rt.loaded.config
    row = lead_row(rt, lead_id)
    history = transitions(rt, lead_id)
    with rt.engine.connect() as conn:
        events = conn.execute(
            select(EVENTS.c.type, EVENTS.c.occurred_at).where(EVENTS.c.lead_id == lead_id)
        ).all()
    open_callbacks = [c for c in callbacks(rt, lead_id) if c.revived_at is None]
    kinds = {s.id: s.kind for s in config.pipelines[0].stages}

    if not history:
        assert (row.pipeline, row.stage, row.status) == (None, None, "active")
    elif row.stage is None:
        assert row.status == "callback" and len(open_callbacks) == 1
    else:
        assert row.stage in kinds and not open_callbacks
        assert (row.status == "closed") == (kinds[row.stage] == "lost")
        assert row.status in ("active", "closed")

    state: str | None = None
    entered: datetime | None = None
    recycles = rounds = 0
    parked_at: datetime | None = None
    engine_moves: set[datetime] = set()
    for t in history:
        assert t.from_stage == state, "history does not replay"
        if t.kind != "manual":
            assert t.at not in engine_moves, "more than one move in one tick"
            engine_moves.add(t.at)
        if t.kind == "intake":
            assert (state, entered, t.to_stage) == (None, None, "lead")
        elif t.kind == "rule":
            assert state is not None and entered is not None
            exits = rt.loaded.exits[("b2b", state)]
            targets = [e.to for e in exits]
            assert t.to_stage in targets
            for earlier in targets[: targets.index(t.to_stage)]:  # first match wins
                types = EVENT_EXITS.get((state, earlier))
                assert not types or not any(
                    e.type in types and entered <= e.occurred_at <= t.at for e in events
                )
            types = EVENT_EXITS.get((state, t.to_stage))
            if types:
                assert any(e.type in types and entered <= e.occurred_at <= t.at for e in events)
            days = TIME_EXITS.get((state, t.to_stage))
            if days:
                assert t.at - entered >= days * DAY
        elif t.kind == "recycle":
            assert state is not None and entered is not None and t.to_stage is None
            stage = rt.loaded.stage("b2b", state)
            assert stage is not None
            by_sla = (
                stage.sla is not None
                and stage.sla.action == "recycle"
                and t.reason == stage.sla.reason
                and t.at - entered >= stage.sla.max_days * DAY
            )
            by_cadence = any(
                t.reason == c.on_complete.reason
                and c.on_complete.action == "recycle"
                and any(
                    m.cadence == cid
                    and m.step == c.steps[-1].id
                    and m.round == rounds
                    and m.status == "sent"
                    and m.sent_at + c.on_complete.after_days * DAY <= t.at
                    for m in outbox(rt, lead_id)
                )
                for cid, c in config.cadences.items()
            )
            assert by_sla or by_cadence, t
            assert recycles < config.recycling.max_recycles
            recycles += 1
            parked_at = t.at
        elif t.kind == "recycle_limit":
            assert t.to_stage == config.recycling.lost_stage
            assert recycles == config.recycling.max_recycles
        elif t.kind == "revive":
            assert state is None and parked_at is not None
            assert t.to_stage == config.recycling.reenter_stage
            assert t.at >= parked_at + config.recycling.callback_days * DAY
            rounds += 1
            parked_at = None
        else:
            assert t.kind == "manual" and t.actor == ACTOR and t.to_stage in kinds
            if parked_at is not None:  # taken off the callback list by hand
                rounds += 1
                parked_at = None
        state, entered = t.to_stage, t.at
    assert state == row.stage
    assert (row.round, row.recycle_count) == (rounds, recycles)
    if history:
        assert row.stage_entered_at == history[-1].at


@hypothesis_settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    profiles=st.lists(st.sampled_from([STRONG, MEDIUM, POOR]), min_size=1, max_size=3),
    steps=STEPS,
)
def test_random_histories_keep_the_stage_invariants(
    shared_rt: Runtime,
    blank_database: Path,
    settings: Settings,
    profiles: list[dict[str, Any]],
    steps: list[tuple[int, tuple[str, int, str]]],
) -> None:
    rt = shared_rt
    memory = MemoryTransport()
    with (
        tempfile.TemporaryDirectory() as folder,
        fresh_engine(blank_database, Path(folder), settings.db_url) as db,
    ):
        rt.engine = db
        ids = [new_lead(rt, profile) for profile in profiles]
        now = T0
        for gap, (action, who, what) in steps:
            now += gap * HOUR
            lead_id = ids[who % len(ids)]
            if action == "tick":
                tick(rt, now, memory)
            elif action == "event":
                add_event(rt, lead_id, what, now)
            else:
                move(rt, lead_id, what, now)
            for i in ids:
                check_lead(rt, i)
