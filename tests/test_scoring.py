"""Scoring: fit and BANT points per rule, decayed engagement, history, and batch independence.

Every expected figure is worked out by hand from ``config/pipeline.yaml`` in the comments:
fit rules target_industry 20, adjacent_industry 8, mid_market 15, enterprise 10,
senior_title 15, manager_title 8, north_america 5, europe 4, free_mail -15,
enterprise_plan_interest 10; BANT 5 points each; grades A >= 60, B >= 40, C >= 20, D >= -100;
engagement half-life 14 days, horizon 12 half-lives (168 days), refresh after 1 day.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import fresh_engine
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select, update

from leadflow.config import LoadedConfig
from leadflow.pipeline import engine, scoring
from leadflow.pipeline.events import EventIn, record_events
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import session_scope
from models.tables import EVENTS, LEADS, SCORE_CHANGES

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"
NOW = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
HALF_LIFE = 14.0


@pytest.fixture
def rt(quick_rt: Runtime) -> Runtime:
    """A copied blank database and the config validated once per module (conftest)."""
    return quick_rt


def new_lead(rt: Runtime, *, due: datetime | None = NOW, **fields: Any) -> int:
    values: dict[str, Any] = {
        "email": f"lead{_counter()}@acme.example",
        "created_at": NOW - timedelta(days=200),
        "updated_at": NOW - timedelta(days=200),
        "rescore_at": due,
        "next_action_at": None,
        "attributes": {},
    }
    values.update(fields)
    with rt.engine.begin() as conn:
        return int(conn.execute(insert(LEADS).values(**values).returning(LEADS.c.id)).scalar_one())


_COUNT = [0]


def _counter() -> int:
    _COUNT[0] += 1
    return _COUNT[0]


def add_events(rt: Runtime, lead_id: int, *events: tuple[str, datetime], now: datetime) -> None:
    """Through the real intake path, which also makes the lead due for rescoring."""
    with session_scope(rt.engine) as session:
        record_events(
            session.connection(),
            [EventIn(lead_id, etype, at) for etype, at in events],
            stop_on=rt.stop_on,
            now=now,
        )


def score_all(rt: Runtime, *, now: datetime) -> tuple[int, int]:
    rescored = changed = 0
    for id_range in engine.score_ranges(rt, now=now):
        outcome = engine.score(rt, id_range, now=now)
        rescored += outcome.rescored
        changed += outcome.changed
    return rescored, changed


def lead_row(rt: Runtime, lead_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(select(LEADS).where(LEADS.c.id == lead_id)).one()


def history(rt: Runtime, lead_id: int) -> list[tuple[float, str | None]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(SCORE_CHANGES.c.score, SCORE_CHANGES.c.grade)
            .where(SCORE_CHANGES.c.lead_id == lead_id)
            .order_by(SCORE_CHANGES.c.id)
        ).all()
    return [(r.score, r.grade) for r in rows]


def matched_rules(rt: Runtime, lead_id: int, *, now: datetime = NOW) -> list[str]:
    with rt.engine.connect() as conn:
        return [
            c.name
            for c in scoring.explain(conn, rt.loaded, lead_id, now=now)
            if c.source != "event"
        ]


# --- fit and BANT ------------------------------------------------------------------------

FIT_CASES = [
    pytest.param(
        {
            "industry": "saas",  # target_industry +20
            "company_size": 200,  # mid_market +15
            "title": "VP Marketing",  # senior_title +15 ("vp")
            "country": "US",  # north_america +5
            "attributes": {"plan_interest": "enterprise"},  # enterprise_plan_interest +10
        },
        [
            "target_industry",
            "mid_market",
            "senior_title",
            "north_america",
            "enterprise_plan_interest",
        ],
        65.0,  # 20 + 15 + 15 + 5 + 10
        "A",
        id="strong-fit-with-custom-attribute",
    ),
    pytest.param(
        {
            "email": "buyer@gmail.com",  # free_mail -15
            "industry": "healthcare",  # adjacent_industry +8
            "company_size": 5000,  # enterprise +10
            "title": "Engineering Manager",  # manager_title +8
            "country": "DE",  # europe +4
            "budget": 10000.0,  # bant budget +5 (>= 10000)
            "authority": True,  # bant authority +5
            "need": "weekly reporting",  # bant need +5
            "timeline_days": 90,  # bant timeline +5 (<= 90)
        },
        [
            "adjacent_industry",
            "enterprise",
            "manager_title",
            "europe",
            "free_mail",
            "budget",
            "authority",
            "need",
            "timeline",
        ],
        35.0,  # 8 + 10 + 8 + 4 - 15 + 4 * 5
        "C",
        id="all-bant-points",
    ),
    pytest.param(
        {
            "email": "growth@yahoo.com",  # free_mail -15
            "industry": "fintech",  # target_industry +20
            "company_size": 50,  # mid_market +15 (lower bound included)
            "title": "Director, Head of Growth",  # senior_title +15 and manager_title +8
            "country": "CA",  # north_america +5
        },
        [
            "target_industry",
            "mid_market",
            "senior_title",
            "manager_title",
            "north_america",
            "free_mail",
        ],
        48.0,  # 20 + 15 + 15 + 8 + 5 - 15
        "B",
        id="two-title-rules",
    ),
    pytest.param(
        {
            "industry": "retail",  # no industry rule
            "company_size": 1000,  # enterprise +10, not mid_market (< 1000)
            "title": "CTO",  # senior_title +15 (lower(title) in [...])
            "country": "BR",  # no region rule
            "budget": 9999.0,  # no: below 10000
            "authority": False,  # no
            "need": "",  # no: is_set treats "" as missing
            "timeline_days": 91,  # no: above 90
            "attributes": {"plan_interest": "starter"},  # no
        },
        ["enterprise", "senior_title"],
        25.0,  # 10 + 15
        "C",
        id="boundaries-that-miss",
    ),
    pytest.param(
        {"company_size": 49, "title": "Supervisor"},  # below mid_market; no "vp" in the title
        [],
        0.0,
        "D",
        id="nothing-matches",
    ),
]


@pytest.mark.parametrize(("fields", "rules", "total", "grade"), FIT_CASES)
def test_fit_and_bant_points_per_rule(
    rt: Runtime, fields: dict[str, Any], rules: list[str], total: float, grade: str
) -> None:
    lead_id = new_lead(rt, **fields)

    assert score_all(rt, now=NOW) == (1, 1)

    row = lead_row(rt, lead_id)
    assert (row.fit_score, row.engagement_score, row.score, row.grade) == (total, 0.0, total, grade)
    assert matched_rules(rt, lead_id) == rules
    assert row.scored_at == NOW
    assert row.rescore_at is None  # no engagement to decay: rescored only on new data


def test_custom_attribute_in_a_rule_follows_the_attribute(rt: Runtime) -> None:
    with_interest = new_lead(rt, attributes={"plan_interest": "enterprise"})
    other_value = new_lead(rt, attributes={"plan_interest": "Enterprise"})  # case-sensitive
    without = new_lead(rt, attributes={"web_visits": 3})

    score_all(rt, now=NOW)

    assert [lead_row(rt, i).fit_score for i in (with_interest, other_value, without)] == [
        10.0,
        0.0,
        0.0,
    ]


# --- engagement ----------------------------------------------------------------------------


def test_engagement_decays_by_half_life_and_ignores_old_future_and_pointless_events(
    rt: Runtime,
) -> None:
    lead_id = new_lead(rt, due=None)
    counted = [("replied", 14.0), ("meeting_booked", 28.0), ("email_clicked", 7.0)]
    counted.append(("web_visit", 3.5))
    ignored = [("form_filled", 169.0), ("proposal_sent", 1.0), ("email_opened", -1.0)]
    add_events(
        rt, lead_id, *[(t, NOW - timedelta(days=age)) for t, age in counted + ignored], now=NOW
    )

    score_all(rt, now=NOW)

    points = {"replied": 15, "meeting_booked": 25, "email_clicked": 4, "web_visit": 2}
    # 15 * 0.5 + 25 * 0.25 + 4 * 0.5**0.5 + 2 * 0.5**0.25 = 7.5 + 6.25 + 2.8284 + 1.6818
    raw = sum(points[t] * 0.5 ** (age / HALF_LIFE) for t, age in counted)
    assert round(raw, 2) == 18.26
    row = lead_row(rt, lead_id)
    assert (row.fit_score, row.engagement_score, row.score, row.grade) == (0.0, 18.26, 18.3, "D")
    assert row.rescore_at == NOW + timedelta(days=1)  # engaged: rescored daily so decay shows


@pytest.mark.parametrize(
    ("age", "stored"),
    [
        (timedelta(days=168), 0.01),  # 25 * 0.5**12 = 0.0061: still inside the horizon
        (timedelta(days=168, minutes=1), 0.0),  # past the horizon: ignored
    ],
)
def test_engagement_horizon_is_twelve_half_lives(
    rt: Runtime, age: timedelta, stored: float
) -> None:
    lead_id = new_lead(rt)
    add_events(rt, lead_id, ("meeting_booked", NOW - age), now=NOW)

    score_all(rt, now=NOW)

    row = lead_row(rt, lead_id)
    assert (row.engagement_score, row.score) == (stored, 0.0)
    assert row.rescore_at is None  # below 0.05 points nothing is left to decay


def test_engagement_decays_between_rescores(rt: Runtime) -> None:
    lead_id = new_lead(rt)
    add_events(rt, lead_id, ("replied", NOW), now=NOW)
    score_all(rt, now=NOW)
    assert lead_row(rt, lead_id).engagement_score == 15.0

    later = NOW + timedelta(days=7)  # due again: rescore_at was NOW + 1 day
    assert score_all(rt, now=later)[0] == 1

    row = lead_row(rt, lead_id)
    assert row.engagement_score == round(15 * 0.5**0.5, 2) == 10.61
    assert (row.score, row.rescore_at) == (10.6, later + timedelta(days=1))


def test_explain_contributions_sum_to_the_stored_score(rt: Runtime) -> None:
    lead_id = new_lead(
        rt,
        industry="saas",
        company_size=200,
        title="VP Marketing",
        country="US",
        budget=50000.0,
        attributes={"plan_interest": "enterprise"},
    )
    add_events(
        rt,
        lead_id,
        ("replied", NOW - timedelta(days=14)),
        ("email_clicked", NOW - timedelta(days=7)),
        ("web_visit", NOW - timedelta(days=3, hours=12)),
        ("proposal_sent", NOW - timedelta(days=1)),
        now=NOW,
    )
    score_all(rt, now=NOW)

    with rt.engine.connect() as conn:
        contributions = scoring.explain(conn, rt.loaded, lead_id, now=NOW)

    row = lead_row(rt, lead_id)
    # fit 20 + 15 + 15 + 5 + 10 = 65, budget 5; events 7.5 + 2.8284 + 1.6818 = 12.01
    assert (row.fit_score, row.engagement_score, row.score) == (70.0, 12.01, 82.0)
    assert [(c.source, c.name) for c in contributions] == [
        ("fit", "target_industry"),
        ("fit", "mid_market"),
        ("fit", "senior_title"),
        ("fit", "north_america"),
        ("fit", "enterprise_plan_interest"),
        ("bant", "budget"),
        ("event", "replied"),
        ("event", "email_clicked"),
        ("event", "web_visit"),
    ]
    assert sum(c.points for c in contributions) == pytest.approx(row.score, abs=0.05)


# --- what gets rescored, and what gets recorded ---------------------------------------------


def test_only_due_leads_are_rescored(rt: Runtime) -> None:
    overdue = new_lead(rt, due=NOW - timedelta(minutes=1), industry="saas")
    due_now = new_lead(rt, due=NOW, industry="saas")
    later = new_lead(rt, due=NOW + timedelta(minutes=1), industry="saas")
    never = new_lead(rt, due=None, industry="saas")

    assert score_all(rt, now=NOW) == (2, 2)

    scored = {i: (lead_row(rt, i).scored_at, lead_row(rt, i).score) for i in (overdue, due_now)}
    assert scored == {overdue: (NOW, 20.0), due_now: (NOW, 20.0)}
    for lead_id in (later, never):
        row = lead_row(rt, lead_id)
        assert (row.scored_at, row.score, row.grade) == (None, 0.0, None)
    assert history(rt, later) == history(rt, never) == []


def dump(rt: Runtime) -> dict[str, list[Any]]:
    with rt.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(t.c.id)).all()]
            for t in (LEADS, SCORE_CHANGES, EVENTS)
        }


def test_second_score_at_the_same_instant_changes_nothing(rt: Runtime) -> None:
    profiles: list[dict[str, Any]] = [{"industry": "saas"}, {"country": "DE"}, {}]
    for fields in profiles:
        lead_id = new_lead(rt, **fields)
        add_events(rt, lead_id, ("email_clicked", NOW - timedelta(days=2)), now=NOW)
    score_all(rt, now=NOW)
    before = dump(rt)

    assert score_all(rt, now=NOW) == (0, 0)

    assert dump(rt) == before


def test_history_only_when_total_moves_a_point_or_grade_changes(rt: Runtime) -> None:
    # fit: mid_market 15 + europe 4 = 19 (grade D)
    lead_id = new_lead(rt, company_size=100, country="GB")
    fortnight = NOW - timedelta(days=14)  # every event below is worth half its points

    add_events(rt, lead_id, ("email_opened", fortnight), now=NOW)  # +0.5
    score_all(rt, now=NOW)
    add_events(rt, lead_id, ("email_opened", fortnight), now=NOW)  # +0.5: 20.0 is grade C
    score_all(rt, now=NOW)
    add_events(rt, lead_id, ("web_visit", fortnight), now=NOW)  # +1.0: moved a full point
    score_all(rt, now=NOW)
    add_events(rt, lead_id, ("email_opened", NOW - timedelta(days=7)), now=NOW)  # +0.71
    assert score_all(rt, now=NOW) == (1, 0)
    assert lead_row(rt, lead_id).score == 21.7  # stored, but no history row
    add_events(rt, lead_id, ("email_clicked", fortnight), now=NOW)  # +2.0 from 21.7
    score_all(rt, now=NOW)

    assert history(rt, lead_id) == [(19.5, "D"), (20.0, "C"), (21.0, "C"), (23.7, "C")]


def test_a_changed_score_makes_an_active_lead_due_for_the_stage_engine(rt: Runtime) -> None:
    waiting = new_lead(rt, industry="saas", next_action_at=NOW + timedelta(days=3))
    parked = new_lead(rt, industry="saas", status="callback", next_action_at=None)

    score_all(rt, now=NOW)

    assert lead_row(rt, waiting).next_action_at == NOW
    assert lead_row(rt, parked).next_action_at is None


# --- batch size does not matter -------------------------------------------------------------

ENGAGEMENT_TYPES = ["email_opened", "email_clicked", "web_visit", "form_filled", "replied"]
ENGAGEMENT_TYPES += ["meeting_booked", "proposal_sent"]
LEAD_PROFILES = st.fixed_dictionaries(
    {
        "industry": st.sampled_from([None, "saas", "healthcare", "retail"]),
        "company_size": st.sampled_from([None, 10, 50, 999, 1000]),
        "title": st.sampled_from([None, "VP Sales", "Sales Manager", "cto", "Intern"]),
        "country": st.sampled_from([None, "US", "DE", "BR"]),
        "budget": st.sampled_from([None, 5000.0, 10000.0]),
        "authority": st.sampled_from([None, True, False]),
        "attributes": st.sampled_from([{}, {"plan_interest": "enterprise"}]),
        "rescore_at": st.sampled_from([None, NOW - timedelta(hours=1), NOW + timedelta(hours=5)]),
        "status": st.sampled_from(["active", "callback"]),
    }
)
EVENT_LISTS = st.lists(
    st.tuples(st.sampled_from(ENGAGEMENT_TYPES), st.integers(min_value=0, max_value=200 * 24)),
    max_size=4,
)
LEAD_HISTORIES = st.lists(
    st.tuples(LEAD_PROFILES, EVENT_LISTS, EVENT_LISTS), min_size=1, max_size=6
)


def run_scoring(
    db: Engine, settings: Settings, loaded: LoadedConfig, leads: list[Any], batch_size: int
) -> dict[str, list[Any]]:
    """Two scoring passes (with new events in between) at one batch size; the outcome."""
    rt = Runtime(
        settings=settings.model_copy(update={"batch_size": batch_size}), loaded=loaded, engine=db
    )
    with db.begin() as conn:
        for number, (profile, events, _later) in enumerate(leads):
            lead_id = conn.execute(
                insert(LEADS)
                .values(email=f"p{number}@acme.example", created_at=NOW, updated_at=NOW, **profile)
                .returning(LEADS.c.id)
            ).scalar_one()
            for etype, hours in events:
                conn.execute(
                    insert(EVENTS).values(
                        lead_id=lead_id,
                        type=etype,
                        occurred_at=NOW - timedelta(hours=hours),
                        data={},
                    )
                )
    score_all(rt, now=NOW)
    second = NOW + timedelta(days=1, hours=1)
    with db.begin() as conn:
        ids = conn.execute(select(LEADS.c.id).order_by(LEADS.c.id)).scalars().all()
        for lead_id, (_profile, _events, later) in zip(ids, leads, strict=True):
            if later:
                record_events(
                    conn,
                    [EventIn(lead_id, t, second - timedelta(hours=h)) for t, h in later],
                    stop_on=rt.stop_on,
                    now=second,
                )
        conn.execute(
            update(LEADS).where(LEADS.c.id == ids[-1]).values(industry="saas", rescore_at=second)
        )
    score_all(rt, now=second)
    with db.connect() as conn:
        lead_cols = [LEADS.c[c] for c in ("id", "fit_score", "engagement_score", "score")]
        lead_cols += [LEADS.c[c] for c in ("grade", "scored_at", "rescore_at", "next_action_at")]
        history_cols = [SCORE_CHANGES.c[c] for c in ("lead_id", "at", "fit_score", "score")]
        history_cols += [SCORE_CHANGES.c.engagement_score, SCORE_CHANGES.c.grade]
        return {
            "leads": [tuple(r) for r in conn.execute(select(*lead_cols).order_by(LEADS.c.id))],
            "history": sorted(tuple(r) for r in conn.execute(select(*history_cols))),
        }


@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(leads=LEAD_HISTORIES)
def test_scores_do_not_depend_on_batch_size(
    blank_database: Path, loaded: LoadedConfig, leads: list[Any], settings: Settings
) -> None:
    outcomes = []
    for batch_size in (1, 3, 1000):
        with (
            tempfile.TemporaryDirectory() as folder,
            fresh_engine(blank_database, Path(folder), settings.db_url) as db,
        ):
            outcomes.append(run_scoring(db, settings, loaded, leads, batch_size))

    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0]["leads"][-1][5] == NOW + timedelta(days=1, hours=1)  # rescored twice
