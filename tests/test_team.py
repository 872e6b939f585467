"""A sales team: owners by rules and weighted round robin, capacity, inactive members,
reassignment and assignment by hand, each audited; ``owner`` as a rule field; the checks of
``team:`` and ``assignment:``. Over the default pipeline with a three-person team (the team
is added to the default file's text here: the shipped config has none, see docs/team.md).

Runs on SQLite, and on PostgreSQL when LEADFLOW_TEST_DATABASE_URL names a server.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT_CONFIG, T0, TEMPLATES, Cli, fresh_engine, run_in_threads
from seeding import intake_lead
from sqlalchemy import insert, select, update

from leadflow.config import ConfigError, LoadedConfig, load_config
from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine
from leadflow.pipeline.assignment import Candidate, plan_assignments, roster, smooth_pick
from leadflow.pipeline.owners import assign_owners
from leadflow.pipeline.planning import plan_tick
from leadflow.runtime import Runtime
from leadflow.settings import Settings, load_settings
from models.tables import LEADS, OWNER_CHANGES, ROUND_ROBIN

BASE = DEFAULT_CONFIG.read_text(encoding="utf-8")
TEAM = """
team:
  members:
    - id: ana
      name: Ana Lima
      email: ana@acme-analytics.example
      timezone: America/New_York
      signature: "Ana Lima, Account Executive"
      daily_cap: 80
    - {id: ben, name: Ben Okafor, email: ben@acme-analytics.example, timezone: America/Chicago}
    - {id: carla, name: Carla Ruiz, email: carla@acme-analytics.example, timezone: Europe/Madrid}
  groups:
    ae: [{member: ana, weight: 3}, {member: ben, weight: 2}, carla]
    europe: [carla]
assignment:
  - {when: 'country in ["DE", "FR"]', group: europe, reason: European leads}
  - {group: ae}
"""
# smooth weighted round robin over ana 3, ben 2, carla 1: one period, then it repeats
PERIOD = ["ana", "ben", "ana", "carla", "ben", "ana"]
WEIGHTS = {"ana": 3, "ben": 2, "carla": 1}
F = "config/pipeline.yaml"


def team_config(text: str = BASE + TEAM) -> LoadedConfig:
    return load_config(Path(F), templates=TEMPLATES, text=text)


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    return team_config()


@pytest.fixture
def team_rt(
    settings: Settings, loaded: LoadedConfig, blank_database: Path, tmp_path: Path
) -> Iterator[Runtime]:
    """The default pipeline with the team, a fresh database, batches of four leads."""
    small = settings.model_copy(update={"batch_size": 4})
    with fresh_engine(blank_database, tmp_path, settings.db_url) as db:
        yield Runtime(settings=small, loaded=loaded, engine=db)


def add_leads(rt: Runtime, count: int, *, day: int = 0, start: int = 0, **fields: Any) -> None:
    now = T0 + timedelta(days=day)
    rows = [
        intake_lead(
            f"lead{n}@corp{n}.example", now=now, industry="saas", country="US", attributes={}
        )
        | fields
        for n in range(start, start + count)
    ]
    with rt.engine.begin() as conn:
        conn.execute(insert(LEADS), rows)


def tick(rt: Runtime, day: int) -> engine.RunOutcome:
    memory = MemoryTransport()
    return engine.tick(rt, now=T0 + timedelta(days=day), transport=lambda: memory)


def owners(rt: Runtime) -> dict[str, str | None]:
    with rt.engine.connect() as conn:
        return dict(conn.execute(select(LEADS.c.email, LEADS.c.owner).order_by(LEADS.c.id)).all())


def audit(rt: Runtime, **where: Any) -> list[Any]:
    with rt.engine.connect() as conn:
        query = select(OWNER_CHANGES).order_by(OWNER_CHANGES.c.id)
        for key, value in where.items():
            query = query.where(OWNER_CHANGES.c[key] == value)
        return list(conn.execute(query).all())


def within_one_lead(picks: list[str], weights: dict[str, int]) -> bool:
    """At every prefix, each member's picks are less than one lead from their share."""
    total = sum(weights.values())
    seen: Counter[str] = Counter()
    for n, member in enumerate(picks, start=1):
        seen[member] += 1
        if any(abs(seen[m] - n * w / total) >= 1 for m, w in weights.items()):
            return False
    return True


# --- the round robin itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [
        {"a": 1, "b": 1},
        {"a": 3, "b": 2, "c": 1},
        {"a": 5, "b": 1},
        {"a": 7, "b": 4, "c": 2, "d": 1},
    ],
)
def test_smooth_round_robin_keeps_every_member_within_one_lead_of_their_share(
    weights: dict[str, int],
) -> None:
    current: dict[str, int] = {}
    picks = [smooth_pick(list(weights.items()), set(weights), current) for _ in range(500)]
    assert within_one_lead(picks, weights)
    period = sum(weights.values())
    assert Counter(picks[:period]) == Counter(weights)


def test_the_planner_passes_over_a_rule_whose_member_is_full_or_inactive() -> None:
    text = (BASE + TEAM).replace(
        "      daily_cap: 80\n", "      daily_cap: 80\n      capacity: 1\n"
    )
    text = text.replace(
        "  - {group: ae}", '  - {when: "score >= 0", owner: ana}\n  - {owner: ben}\n  - {group: ae}'
    )
    team = roster(team_config(text).config)
    leads = [Candidate(i, f"l{i}@x.example", None, True, (False, True, True, True)) for i in (1, 2)]
    plan = plan_assignments(leads, team, state={}, open_counts={}, now=T0)
    # ana (capacity 1) takes the first lead; the second passes over her rule to ben's
    assert [(c.lead_id, c.to_owner, c.rule) for c in plan.changes] == [(1, "ana", 1), (2, "ben", 2)]


# --- over the default pipeline ----------------------------------------------------------------


def test_time_travel_spreads_leads_by_weight_within_one_lead_across_ticks(team_rt: Runtime) -> None:
    """Leads arrive every day for two weeks (five from the US, one from Germany) and a tick
    runs each day in batches of four: every run continues the same round robin."""
    for day in range(14):
        add_leads(team_rt, 5, day=day, start=day * 6)
        add_leads(team_rt, 1, day=day, start=day * 6 + 5, country="DE")
        outcome = tick(team_rt, day)
        assert outcome.step_batches["assign"] == 2  # six new leads, four a batch
        assert sum(outcome.outcome("assign").as_dict()["assigned"].values()) == 6
        picks = [row.to_owner for row in audit(team_rt, group_id="ae")]
        assert within_one_lead(picks, WEIGHTS)
    assert picks == PERIOD * 11 + PERIOD[:4]  # 70 US leads: one sequence over 14 runs
    europe = audit(team_rt, group_id="europe")
    assert [r.to_owner for r in europe] == ["carla"] * 14
    assert {r.reason for r in europe} == {"European leads"}
    assert {r.reason for r in audit(team_rt, group_id="ae")} == {
        "assignment[1]: every lead → group ae"
    }
    assert Counter(owners(team_rt).values()) == {"ana": 35, "ben": 23, "carla": 26}
    with team_rt.engine.connect() as conn:
        state = conn.execute(
            select(ROUND_ROBIN.c.member_id, ROUND_ROBIN.c.picks).where(
                ROUND_ROBIN.c.group_id == "ae"
            )
        ).all()
    assert dict(state) == {"ana": 35, "ben": 23, "carla": 12}


def test_owners_are_sticky_and_a_second_tick_assigns_nothing(team_rt: Runtime) -> None:
    add_leads(team_rt, 3)
    add_leads(team_rt, 1, start=3, country="DE")
    tick(team_rt, 0)
    first = owners(team_rt)
    assert first == {
        "lead0@corp0.example": "ana",
        "lead1@corp1.example": "ben",
        "lead2@corp2.example": "ana",
        "lead3@corp3.example": "carla",
    }
    with team_rt.engine.begin() as conn:  # the data a rule read change: the owner stays
        conn.execute(update(LEADS).values(country="FR"))
    again = tick(team_rt, 1)
    assert again.outcome("assign").as_dict()["assigned"] == {}
    assert owners(team_rt) == first
    assert len(audit(team_rt)) == 4


def test_a_full_member_is_skipped_until_one_of_their_leads_closes(
    team_rt: Runtime, loaded: LoadedConfig
) -> None:
    text = (BASE + TEAM).replace(
        "      daily_cap: 80\n", "      daily_cap: 80\n      capacity: 2\n"
    )
    team_rt.loaded = team_config(text)
    add_leads(team_rt, 8)
    tick(team_rt, 0)
    picks = [r.to_owner for r in audit(team_rt)]
    # ana is full after two and skipped from the fourth pick on: ben and carla go on by
    # their weights (2:1) from where the round robin stood
    assert picks == ["ana", "ben", "ana", "carla", "ben", "ben", "carla", "ben"]
    with team_rt.engine.begin() as conn:  # one of ana's leads is lost: room for one more
        conn.execute(
            update(LEADS)
            .where(LEADS.c.email == "lead0@corp0.example")
            .values(stage="lost", status="closed")
        )
    add_leads(team_rt, 4, day=1, start=8)
    tick(team_rt, 1)
    # ana is owed nothing for the time she was full (her running weight stayed where her last
    # pick left it): the round robin reaches her on the third lead, then she is full again
    assert [r.to_owner for r in audit(team_rt)][8:] == ["ben", "carla", "ana", "ben"]


def test_an_inactive_member_gets_no_leads_and_their_open_leads_are_reassigned_with_audit(
    team_rt: Runtime,
) -> None:
    add_leads(team_rt, 6)
    tick(team_rt, 0)
    bens = [email for email, owner in owners(team_rt).items() if owner == "ben"]
    assert bens == ["lead1@corp1.example", "lead4@corp4.example"]
    with team_rt.engine.begin() as conn:  # a closed lead keeps its owner (his win stays his)
        conn.execute(
            update(LEADS).where(LEADS.c.email == bens[1]).values(stage="lost", status="closed")
        )
    inactive = (BASE + TEAM).replace(
        "{id: ben, name: Ben Okafor,", "{id: ben, active: false, name: Ben Okafor,"
    )
    team_rt.loaded = team_config(inactive)
    add_leads(team_rt, 3, day=1, start=6)
    outcome = tick(team_rt, 1).outcome("assign").as_dict()
    # ben's open lead first (lowest id), then the new ones; ana 3 : carla 1 without ben
    assert (outcome["reassigned"], outcome["assigned"]) == (1, {"ana": 3, "carla": 1})
    moved = audit(team_rt, kind="reassign")
    assert [(r.from_owner, r.to_owner, r.reason, r.actor, r.at) for r in moved] == [
        (
            "ben",
            "ana",
            "ben is inactive; assignment[1]: every lead → group ae",
            "engine",
            T0 + timedelta(days=1),
        )
    ]
    assert owners(team_rt)[bens[1]] == "ben"
    assert "ben" not in [r.to_owner for r in audit(team_rt)][6:]


def test_new_weights_restart_the_group_rotation_from_zero(team_rt: Runtime) -> None:
    add_leads(team_rt, 4)
    tick(team_rt, 0)
    team_rt.loaded = team_config(
        (BASE + TEAM).replace("{member: ana, weight: 3}, {member: ben, weight: 2}", "ben, ana")
    )
    add_leads(team_rt, 3, day=1, start=4)
    tick(team_rt, 1)
    assert [r.to_owner for r in audit(team_rt)] == [*PERIOD[:4], "ben", "ana", "carla"]
    with team_rt.engine.connect() as conn:
        rows = conn.execute(
            select(ROUND_ROBIN.c.member_id, ROUND_ROBIN.c.weight, ROUND_ROBIN.c.picks)
            .where(ROUND_ROBIN.c.group_id == "ae")
            .order_by(ROUND_ROBIN.c.member_id)
        ).all()
    assert [tuple(r) for r in rows] == [("ana", 1, 1), ("ben", 1, 1), ("carla", 1, 1)]


def test_a_member_removed_from_the_team_loses_their_open_leads_too(team_rt: Runtime) -> None:
    add_leads(team_rt, 2)
    tick(team_rt, 0)
    with team_rt.engine.begin() as conn:
        conn.execute(update(LEADS).where(LEADS.c.id == 1).values(owner="zoe"))
    tick(team_rt, 1)
    last = audit(team_rt)[-1]
    assert (last.from_owner, last.to_owner, last.kind) == ("zoe", "ana", "reassign")
    assert last.reason.startswith("'zoe' is no longer in the team; ")


def test_owner_is_a_rule_field_a_stage_exit_can_use(team_rt: Runtime) -> None:
    """Carla works every new lead at once: her leads leave 'lead' for 'prospect' the tick
    after they are assigned, whatever their score; the others wait for theirs."""
    text = (BASE + TEAM).replace(
        '          - {to: prospect, when: "score >= 20", reason: fit enough to work}\n',
        "          - {to: prospect, when: 'owner == \"carla\"', reason: Carla works it}\n"
        '          - {to: prospect, when: "score >= 20", reason: fit enough to work}\n',
    )
    team_rt.loaded = team_config(text)
    add_leads(team_rt, 4, industry=None, country="CA")  # fit 5: not enough to be a prospect
    tick(team_rt, 0)
    tick(team_rt, 1)
    with team_rt.engine.connect() as conn:
        stages = dict(conn.execute(select(LEADS.c.owner, LEADS.c.stage)).all())
    assert stages == {"ana": "lead", "ben": "lead", "carla": "prospect"}


def test_plan_shows_who_would_be_assigned_and_the_tick_does_it(team_rt: Runtime) -> None:
    add_leads(team_rt, 5)
    planned = plan_tick(team_rt, now=T0)["current"]["assign"]
    assert planned["assigned"] == {"ana": 2, "ben": 2, "carla": 1}
    assert owners(team_rt) == dict.fromkeys(owners(team_rt))  # nothing written
    done = tick(team_rt, 0).outcome("assign").as_dict()
    assert done == planned


def test_overlapping_runs_assign_each_lead_once_and_keep_one_sequence(team_rt: Runtime) -> None:
    add_leads(team_rt, 36, stage="lead", pipeline="b2b")
    run_in_threads(lambda: assign_owners(team_rt, now=T0), 4)
    rows = audit(team_rt)
    assert sorted(r.lead_id for r in rows) == list(range(1, 37))
    assert [r.to_owner for r in rows] == PERIOD * 6


# --- by hand, through the command line ------------------------------------------------------


def test_assign_by_hand_is_audited_and_shown(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(BASE + TEAM, encoding="utf-8")
    code, _, _ = cli("team", "--config", str(config))  # opens (and migrates) the database
    assert code == 0
    rt = Runtime.open(load_settings(config=config))  # the CLI's own settings and database
    add_leads(rt, 2)
    tick(rt, 0)
    rt.close()
    args = ("--config", str(config), "--now", "2026-11-04T10:00:00Z")
    code, out, err = cli(
        "assign", "LEAD0@corp0.example", "carla", "--reason", "speaks Portuguese", *args
    )
    assert (code, out, err) == (0, "assigned lead0@corp0.example: ana -> carla\n", "")
    code, out, _ = cli(
        "assign", "lead1@corp1.example", "ana", "--reason", "cover", "--actor", "maria", *args
    )
    assert code == 0
    code, out, _ = cli("show", "lead0@corp0.example", "--json", "--config", str(config))
    shown = json.loads(out)
    assert shown["lead"]["owner"] == "carla"
    import getpass

    assert [
        (c["from_owner"], c["to_owner"], c["kind"], c["reason"], c["actor"], c["at"])
        for c in shown["owner_changes"]
    ] == [
        (None, "ana", "rule", "assignment[1]: every lead → group ae", "engine", T0.isoformat()),
        (
            "ana",
            "carla",
            "manual",
            "speaks Portuguese",
            getpass.getuser(),
            "2026-11-04T10:00:00+00:00",
        ),
    ]
    code, out, _ = cli("show", "lead0@corp0.example", "--config", str(config))
    assert "owner: carla (Carla Ruiz)" in out and "Owner history" in out
    code, out, _ = cli("leads", "--owner", "ana", "--json", "--config", str(config))
    assert [(r["email"], r["owner"]) for r in json.loads(out)] == [("lead1@corp1.example", "ana")]
    assert audit_actor(config, "lead1@corp1.example") == "maria"
    code, out, _ = cli("leads", "--config", str(config))
    assert "carla" in out
    code, out, _ = cli("team", "--json", "--config", str(config))
    assert [(m["id"], m["open_leads"], m["groups"]) for m in json.loads(out)] == [
        ("ana", 1, {"ae": 3}),
        ("ben", 0, {"ae": 2}),
        ("carla", 1, {"ae": 1, "europe": 1}),
    ]


def audit_actor(config: Path, email: str) -> str:
    rt = Runtime.open(load_settings(config=config))
    try:
        with rt.engine.connect() as conn:
            return str(
                conn.execute(
                    select(OWNER_CHANGES.c.actor)
                    .join(LEADS, LEADS.c.id == OWNER_CHANGES.c.lead_id)
                    .where(LEADS.c.email == email)
                    .order_by(OWNER_CHANGES.c.id.desc())
                ).first()[0]  # type: ignore[index]
            )
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("lead0@corp0.example", "anna", "--reason", "x"),
            "unknown team member 'anna' (did you mean 'ana'?); members: ana, ben, carla",
        ),
        (
            ("nobody@corp.example", "ana", "--reason", "x"),
            "no lead with email 'nobody@corp.example'",
        ),
        (
            ("lead0@corp0.example", "ana", "--reason", "  "),
            "--reason must say why (it is kept in the audit trail)",
        ),
    ],
)
def test_assign_by_hand_refuses_what_it_cannot_do(
    cli: Cli, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(BASE + TEAM, encoding="utf-8")
    code, _, err = cli("assign", *args, "--config", str(config))
    assert (code, err) == (1, f"error: {message}\n")


def test_assign_by_hand_refuses_an_inactive_member(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text((BASE + TEAM).replace("{id: ben,", "{id: ben, active: false,"), "utf-8")
    code, _, err = cli("assign", "x@corp.example", "ben", "--reason", "x", "--config", str(config))
    assert (code, err) == (1, "error: ben is inactive: give the lead to an active member\n")


def test_leads_owner_filter_suggests_a_member(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(BASE + TEAM, encoding="utf-8")
    code, _, err = cli("leads", "--owner", "carls", "--config", str(config))
    assert (code, err) == (1, "error: no team member or owner 'carls' (did you mean 'carla'?)\n")


# --- validation -------------------------------------------------------------------------------


def errors_for(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        team_config(text)
    return [str(issue) for issue in caught.value.issues]


def at(text: str, snippet: str, column: int) -> str:
    """``FILE:LINE:COLUMN`` of the line holding ``snippet``."""
    line = text[: text.index(snippet)].count("\n") + 1
    return f"{F}:{line}:{column}"


def test_team_mistakes_are_errors_with_positions_and_suggestions() -> None:
    text = (BASE + TEAM).replace(
        "    - {id: carla, name: Carla Ruiz, email: carla@acme-analytics.example, "
        "timezone: Europe/Madrid}",
        "    - {id: ben, name: Carla Ruiz, email: carla@acme-analytics.example, "
        "timezone: Europe/Madird}",
    )
    text = text.replace("    europe: [carla]", "    europe: [carla]\n    idle: [{member: anna}]")
    text = text.replace("group: europe, reason", "group: europa, reason")
    text = text.replace("  - {group: ae}", "  - {group: ae}\n  - {owner: bem}")
    text = text.replace(
        "{to: won, when: 'events(\"won\") > 0'}",
        '{to: won, when: \'events("won") > 0 and owner == "carl"\'}',
        1,
    )
    won = 'events("won") > 0 and owner'
    # 'carla' is no member here (her entry became a second 'ben'): no near name to suggest
    assert errors_for(text) == [
        f"{at(text, '- {id: ben, name: Carla', 12)}: team.members[2].id: duplicate member id "
        "'ben' (also members[1])",
        f"{at(text, 'Europe/Madird', 82)}: team.members[2].timezone: unknown time zone "
        "'Europe/Madird' (did you mean 'Europe/Madrid'?)",
        f"{at(text, 'ae: [{member: ana', 62)}: team.groups.ae[2].member: unknown team member "
        "'carla'",
        f"{at(text, 'europe: [carla]', 14)}: team.groups.europe[0].member: unknown team member "
        "'carla'",
        f"{at(text, 'europe: [carla]', 5)}: team.groups.europe: group 'europe' has no active "
        "member: a lead sent to it could never be assigned",
        f"{at(text, 'idle: [{member: anna}]', 21)}: team.groups.idle[0].member: unknown team "
        "member 'anna' (did you mean 'ana'?)",
        f"{at(text, 'idle: [{member: anna}]', 5)}: team.groups.idle: group 'idle' has no active "
        "member: a lead sent to it could never be assigned",
        f"{at(text, 'group: europa', 46)}: assignment[0].group: unknown group 'europa' (did you "
        "mean 'europe'?)",
        f"{at(text, 'owner: bem', 13)}: assignment[2].owner: unknown team member 'bem' (did you "
        "mean 'ben'?)",
        f"{at(text, won, 62)}: pipelines[0].stages[4].exits[1].when: rule: unknown team member "
        "'carl'",
    ]


def test_an_assignment_rule_is_checked_like_every_rule() -> None:
    text = (BASE + TEAM).replace('when: \'country in ["DE"', 'when: \'countyr in ["DE"')
    assert errors_for(text) == [
        f"{at(text, 'countyr', 13)}: assignment[0].when: rule: unknown field 'countyr' (did "
        "you mean 'country'?)"
    ]


def test_a_rule_needs_exactly_one_of_owner_or_group() -> None:
    text = (BASE + TEAM).replace("  - {group: ae}", "  - {group: ae, owner: ana}")
    assert errors_for(text) == [
        f"{at(text, '{group: ae, owner: ana}', 5)}: assignment[1]: an assignment rule needs "
        "exactly one of 'owner' or 'group'"
    ]


def test_rules_that_leave_leads_without_an_owner_are_warned_about() -> None:
    text = (BASE + TEAM).replace("  - {group: ae}", '  - {when: "score > 50", owner: ben}')
    text = text.replace("{id: ben, name: Ben", "{id: ben, active: false, name: Ben")
    text = text.replace(
        "ae: [{member: ana, weight: 3}, {member: ben, weight: 2}, carla]", "ae: [ana]"
    )
    warnings = [str(w) for w in team_config(text).warnings]
    assert warnings == [
        f"{at(text, 'owner: ben}', 33)}: assignment[1].owner: 'ben' is inactive: this rule "
        "assigns nobody (the next matching rule is tried)",
        f"{at(text, 'assignment:', 1)}: assignment: no rule without 'when': leads that match no "
        "rule stay without an owner (and are looked at again every tick)",
    ]
