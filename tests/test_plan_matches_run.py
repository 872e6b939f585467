"""``plan`` then ``run`` at the same instant agree on every count: for random databases and
random config edits (made in place, as ops do: same path, new text), including the
re-evaluation of every open lead that a changed config triggers."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import DEFAULT_CONFIG, T0, TEMPLATES, fresh_engine
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from leadflow.config import LoadedConfig, load_config
from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.pipeline.events import EventIn, record_events
from leadflow.pipeline.planning import plan_tick
from leadflow.pipeline.run_record import record_run
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import session_scope
from models.tables import Lead

# Edits ops make to pipeline.yaml: each (old, new) is applied to the default config's text.
EDITS: list[tuple[str, str]] = [
    ('when: "score >= 20", reason: fit enough', 'when: "score >= 10", reason: fit enough'),
    ('when: "score >= 20", reason: fit enough', 'when: "score >= 35", reason: fit enough'),
    ("score < 10 and days_in_stage >= 3", "score < 25 and days_in_stage >= 1"),
    ("points: 20}", "points: 30}"),
    ("daily_cap: 400", "daily_cap: 3"),
    ("per_domain_daily_cap: 40", "per_domain_daily_cap: 1"),
    ("delay_business_days: 4}", "delay_business_days: 1}"),
]
INDUSTRIES = ["saas", "fintech", "healthcare", "media", "retail", None]
TITLES = ["VP Sales", "Head of Ops", "Manager", "Analyst", "CTO", None]
COUNTRIES = ["US", "CA", "DE", "BR", None]
EVENTS = [
    "email_opened",
    "email_clicked",
    "replied",
    "meeting_booked",
    "proposal_sent",
    "won",
    "lost",
]

lead_strategy = st.fixed_dictionaries(
    {
        "industry": st.sampled_from(INDUSTRIES),
        "title": st.sampled_from(TITLES),
        "country": st.sampled_from(COUNTRIES),
        "company_size": st.one_of(st.none(), st.integers(1, 5000)),
        "domain": st.sampled_from(["a.example", "b.example", "gmail.com"]),
        "arrives_day": st.integers(0, 12),
        "events": st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 14)), max_size=3),
    }
)


def _runtime(settings: Settings, db: Any, loaded: LoadedConfig) -> Runtime:
    return Runtime(settings=settings, loaded=loaded, engine=db)


def _edited(edits: list[int]) -> LoadedConfig:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    for i in edits:
        old, new = EDITS[i]
        text = text.replace(old, new, 1)  # two edits of one rule: the first one wins
    # the same path as the running config: a file edited in place
    return load_config(DEFAULT_CONFIG, templates=TEMPLATES, text=text)


def _populate(rt: Runtime, leads: list[dict[str, Any]], days: int) -> None:
    """Leads arrive over ``days`` days, events happen, and a tick runs each day."""
    memory = MemoryTransport()
    for day in range(days):
        now = T0 + timedelta(days=day)
        with session_scope(rt.engine) as session:
            for n, spec in enumerate(leads):
                if spec["arrives_day"] == day:
                    session.add(
                        Lead(
                            email=f"lead{n}@{spec['domain']}",
                            first_name="Ada",
                            timezone="America/New_York",
                            industry=spec["industry"],
                            title=spec["title"],
                            country=spec["country"],
                            company_size=spec["company_size"],
                            created_at=now,
                            updated_at=now,
                            rescore_at=now,
                            next_action_at=now,
                        )
                    )
            session.flush()
            conn = session.connection()
            ids = dict(conn.exec_driver_sql("SELECT email, id FROM lead").all())
            events = [
                EventIn(lead_id=ids[f"lead{n}@{spec['domain']}"], type=kind, occurred_at=now)
                for n, spec in enumerate(leads)
                for kind, at_day in spec["events"]
                if at_day == day and spec["arrives_day"] <= day
            ]
            record_events(conn, events, stop_on=rt.stop_on, now=now)
        engine.tick(rt, now=now, transport=lambda: memory)
        record_run(rt, "tick", now=now, summary={})


def _moves(section: dict[str, Any]) -> Counter[str]:
    return Counter({f"{m['from']} → {m['to']}": m["count"] for m in section["moves"]})


@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # explaining: minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    leads=st.lists(lead_strategy, min_size=1, max_size=25),
    days=st.integers(1, 10),
    edits=st.lists(st.integers(0, len(EDITS) - 1), unique=True, max_size=3),
    hours_later=st.integers(1, 80),
)
def test_plan_then_run_at_the_same_now_agree_on_every_count(
    settings: Settings,
    loaded: LoadedConfig,
    blank_database: Path,
    tmp_path: Path,
    leads: list[dict[str, Any]],
    days: int,
    edits: list[int],
    hours_later: int,
) -> None:
    with fresh_engine(blank_database, tmp_path, settings.db_url) as db:
        _populate(_runtime(settings, db, loaded), leads, days)
        now: datetime = T0 + timedelta(days=days - 1, hours=hours_later)
        rt = _runtime(settings, db, _edited(edits) if edits else loaded)

        sim = plan_tick(rt, now=now)["current"]
        ran = engine.tick(rt, now=now, transport=MemoryTransport)

        assert sim["config_change"] == ran.config.as_dict()
        assert (sim["rescored"], sim["score_changed"]) == (ran.score.rescored, ran.score.changed)
        assert _moves(sim["advance"]) == Counter(
            {f"{a} → {b}": n for (a, b), n in ran.advance.moves.items()}
        )
        assert _moves(sim["revived"]) == Counter(
            {f"{a} → {b}": n for (a, b), n in ran.callbacks.moves.items()}
        )
        for key in ("recycled", "flagged", "enrolled", "checkins_scheduled"):
            assert sim["advance"][key] == getattr(ran.advance, key), key
        assert Counter(sim["emails"]) == ran.nurture.templates + ran.checkins.templates
        assert Counter(sim["deferred"]) == ran.nurture.deferred + ran.checkins.deferred
        assert Counter(sim["cancelled"]) == ran.nurture.cancelled + ran.checkins.cancelled


def test_plan_after_an_in_place_edit_shows_the_moves_the_run_will_make(
    settings: Settings, loaded: LoadedConfig, blank_database: Path, tmp_path: Path
) -> None:
    """The reported case: an edited file at the same path planned 0 moves, then the run moved
    leads ("config changed: N re-evaluated")."""
    lukewarm = {
        "industry": "healthcare",
        "title": "Analyst",
        "country": "CA",
        "company_size": None,
        "domain": "a.example",
        "arrives_day": 0,
        "events": [],
    }
    with fresh_engine(blank_database, tmp_path, settings.db_url) as db:
        _populate(_runtime(settings, db, loaded), [lukewarm] * 3, 2)
        rt = _runtime(settings, db, _edited([0]))  # prospect at score >= 10: 13 qualifies
        now = T0 + timedelta(days=1, hours=3)

        sim = plan_tick(rt, now=now)["current"]
        ran = engine.tick(rt, now=now, transport=MemoryTransport)

    assert sim["config_change"]["reevaluated"] == ran.config.reevaluated == 3
    assert _moves(sim["advance"]) == Counter({"lead → prospect": 3})
    assert dict(ran.advance.moves) == {("lead", "prospect"): 3}
