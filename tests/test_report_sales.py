"""The report's sales-manager sections checked against numbers worked out by hand: the real
funnel (how far the leads of a period got), the forecast by expected close month and the
deals at risk. Runs on SQLite, and on PostgreSQL when LEADFLOW_TEST_DATABASE_URL names one.

The history: twelve leads of one pipeline (lead -> prospect -> meeting -> won, or lost),
``until`` is 2026-06-15 00:00 UTC.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import database_url
from rich.console import Console
from sqlalchemy import Engine

from leadflow.config import LoadedConfig, load_config
from leadflow.reporting import sales
from leadflow.reporting.build import build_report
from leadflow.reporting.console import render_report
from leadflow.reporting.markdown import artifact_tables, table_rows
from leadflow.reporting.page import write_html
from leadflow.reporting.sqlfn import Scope
from leadflow.reporting.tables import at_risk, pipeline_tables
from models.db import open_database, session_scope
from models.tables import Event, Lead, OutboundMessage, StageTransition

CONFIG = """
version: 1
timezone: UTC
sender:
  from_name: Test Sender
  from_email: sales@example.com
  company: Example Inc.
  postal_address: 1 Main Street, Springfield
recycling: {reenter_stage: prospect, lost_stage: lost}
pipelines:
  - id: b2b
    stages:
      - {id: lead, probability: 0.1}
      - {id: prospect}  # no probability: the report uses the observed win rate
      - {id: meeting, probability: 0.5, sla: {max_days: 10, action: flag}}
      - {id: won, kind: won, probability: 1.0}
      - {id: lost, kind: lost}
"""
UNTIL = datetime(2026, 6, 15, tzinfo=UTC)


def when(text: str) -> datetime:
    """'3/1' is March 1 00:00 UTC, '6/14 12:00' is noon."""
    day, _, clock = text.partition(" ")
    month, dom = day.split("/")
    hour, _, minute = (clock or "0:0").partition(":")
    return datetime(2026, int(month), int(dom), int(hour), int(minute or 0), tzinfo=UTC)


# id: (deal value, moves as "stage date", the first being the intake; "callback" is a recycle)
# fmt: off
LEADS: dict[int, tuple[float | None, str]] = {
    1: (1000.0, "lead 3/1, prospect 3/3, meeting 3/13, won 3/23"),
    2: (2000.0, "lead 3/2, prospect 3/6, meeting 3/20, lost 4/3"),
    3: (500.0, "lead 3/5, prospect 3/7, lost 3/27"),
    4: (100.0, "lead 4/1, lost 4/2"),
    5: (3000.0, "lead 6/13"),
    6: (4000.0, "lead 5/1, prospect 5/3"),
    7: (10000.0, "lead 5/10, prospect 5/12, meeting 6/1"),
    8: (6000.0, "lead 5/20, prospect 5/25, meeting 6/10"),
    9: (700.0, "lead 4/10, prospect 4/12, callback 5/12"),
    10: (None, "lead 6/1, prospect 6/5"),
    11: (8000.0, "lead 5/28, prospect 5/30"),
    12: (900.0, "lead 4/20, meeting 4/22, lost 5/4"),  # skipped prospect
}
# fmt: on
NEXT_ACTION = {5: "6/16", 8: "6/12", 10: "6/14 12:00"}  # #8 3 days late; #10 within the grace
FLAGGED = {7}  # the engine flagged #7 when its meeting SLA ran out
OWNERS = {11: "Grace Hopper"}  # an owner a CRM export left in the attributes
# team members the assign step gave the leads (lead.owner)
TEAM_OWNERS = {1: "ana", 2: "ana", 8: "ana", 3: "ben", 7: "ben", 12: "ben"}
SENT = {7: "5/20", 11: "5/29"}  # an email sent to the lead
EVENTS = [(6, "email_opened", "6/10"), (11, "email_opened", "5/25"), (11, "replied", "6/20")]


def _moves(text: str) -> list[tuple[str | None, datetime]]:
    moves = []
    for part in (p.strip() for p in text.split(",")):
        stage, _, moment = part.partition(" ")
        moves.append((None if stage == "callback" else stage, when(moment)))
    return moves


def _fill(engine: Engine) -> None:
    leads, transitions = [], []
    for lead_id, (value, path) in LEADS.items():
        moves = _moves(path)
        stage, entered = moves[-1]
        status = "callback" if stage is None else "closed" if stage == "lost" else "active"
        leads.append(
            Lead(
                id=lead_id,
                email=f"{lead_id}@x.test",
                company=f"Co {lead_id}",
                pipeline="b2b",
                deal_value=value,
                stage=stage,
                status=status,
                stage_entered_at=entered,
                won_at=entered if stage == "won" else None,
                closed_at=entered if stage == "lost" else None,
                stuck=lead_id in FLAGGED,
                next_action_at=when(NEXT_ACTION[lead_id]) if lead_id in NEXT_ACTION else None,
                attributes={"owner": OWNERS[lead_id]} if lead_id in OWNERS else {},
                owner=TEAM_OWNERS.get(lead_id),
                created_at=moves[0][1],
                updated_at=entered,
            )
        )
        previous: tuple[str | None, datetime | None] = (None, None)
        for i, (to, moment) in enumerate(moves):
            transitions.append(
                StageTransition(
                    lead_id=lead_id,
                    pipeline="b2b",
                    from_stage=previous[0],
                    from_entered_at=previous[1] if previous[0] else None,
                    to_stage=to,
                    at=moment,
                    kind="intake" if i == 0 else "recycle" if to is None else "rule",
                )
            )
            previous = (to, moment)
    with session_scope(engine) as session:
        session.add_all(leads)
        session.flush()
        session.add_all(transitions)
        session.add_all(
            OutboundMessage(
                lead_id=lead_id,
                cadence="outbound",
                step="intro",
                to_email=f"{lead_id}@x.test",
                status="sent",
                sent_at=when(moment),
                due_at=when(moment),
                created_at=when(moment),
                updated_at=when(moment),
            )
            for lead_id, moment in SENT.items()
        )
        session.add_all(
            Event(lead_id=lead_id, type=kind, occurred_at=when(moment))
            for lead_id, kind, moment in EVENTS
        )


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    db = open_database(database_url(tmp_path_factory.mktemp("sales")))
    _fill(db)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    return load_config(Path("sales-test.yaml"), text=CONFIG)


def report(engine: Engine, loaded: LoadedConfig, **kw: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return build_report(
            conn, loaded, since=kw.pop("since", None), until=UNTIL, pipeline=None, **kw
        )


@pytest.fixture(scope="module")
def b2b(engine: Engine, loaded: LoadedConfig) -> dict[str, Any]:
    (section,) = report(engine, loaded)["pipelines"]
    found: dict[str, Any] = section
    return found


def shown(section: dict[str, Any], key: str) -> list[list[str]]:
    return next(t for t in pipeline_tables(section, "USD") if t.key == key).shown()


# --- the funnel --------------------------------------------------------------------------------


def test_funnel_counts_each_lead_at_the_furthest_stage_it_reached(b2b: dict[str, Any]) -> None:
    # Furthest stage on lead -> prospect -> meeting -> won (lost is not on the path):
    #   lead: #4 (lost from lead), #5                                   2
    #   prospect: #3 (lost), #6, #9 (callback), #10, #11                5
    #   meeting: #2 (lost), #7, #8, #12 (skipped prospect: passed it)   4
    #   won: #1                                                         1
    funnel = b2b["funnel"]
    assert funnel["cohort"] == 12
    assert [(r["stage"], r["reached"]) for r in funnel["stages"]] == [
        ("lead", 12),
        ("prospect", 10),  # 5 + 4 + 1
        ("meeting", 5),  # 4 + 1
        ("won", 1),
    ]
    assert [r["to_next_rate"] for r in funnel["stages"]] == [0.8333, 0.5, 0.2, None]  # 10/12...
    assert [r["of_cohort_rate"] for r in funnel["stages"]] == [1.0, 0.8333, 0.4167, 0.0833]
    assert shown(b2b, "funnel") == [
        ["Lead", "12", "83.3%", "100.0%"],
        ["Prospect", "10", "50.0%", "83.3%"],
        ["Meeting", "5", "20.0%", "41.7%"],
        ["Won", "1", "n/a", "8.3%"],
    ]


def test_funnel_of_a_period_follows_the_leads_created_in_it(
    engine: Engine, loaded: LoadedConfig
) -> None:
    # Created from 5/1: #5 (lead), #6 #10 #11 (prospect), #7 #8 (meeting).
    (b2b,) = report(engine, loaded, since=when("5/1"))["pipelines"]
    funnel = b2b["funnel"]
    assert funnel["cohort"] == 6
    assert [(r["reached"], r["to_next_rate"]) for r in funnel["stages"]] == [
        (6, 0.8333),  # 5/6
        (5, 0.4),  # 2/5
        (2, 0.0),  # 0/2
        (0, None),
    ]


def test_funnel_counts_a_lead_with_no_move_yet_at_the_first_stage(
    tmp_path: Path, loaded: LoadedConfig
) -> None:
    """A lead with no stage move by ``until`` (no history, or only a later move) is in the
    cohort at index 0, over all history (moves grouped first, then joined to their leads)
    and over a period (each lead looks up its moves) alike."""
    db = open_database(database_url(tmp_path))
    with session_scope(db) as session:
        for lead_id, moves in ((1, "lead 5/1, meeting 5/3"), (2, ""), (3, "prospect 7/1")):
            session.add(
                Lead(
                    id=lead_id,
                    email=f"{lead_id}@x.test",
                    pipeline="b2b",
                    stage="lead",
                    created_at=when("5/2"),
                    updated_at=when("5/2"),
                )
            )
            session.flush()
            session.add_all(
                StageTransition(lead_id=lead_id, pipeline="b2b", to_stage=to, at=at, kind="rule")
                for to, at in (_moves(moves) if moves else [])
            )
    b2b = loaded.config.pipelines
    try:
        with db.connect() as conn:
            for since in (None, when("5/1")):
                scope = Scope(conn.dialect.name, since, UNTIL, None)
                assert sales.furthest_reached(conn, scope, b2b) == {"b2b": {0: 2, 2: 1}}
    finally:
        db.dispose()


def test_leads_per_stage_now_keep_lost_and_the_callback_list(b2b: dict[str, Any]) -> None:
    assert shown(b2b, "stages") == [
        ["Lead", "open", "1", "$3,000"],  # #5
        ["Prospect", "open", "3", "$12,000"],  # #6 4000, #10 no value, #11 8000
        ["Meeting", "open", "2", "$16,000"],  # #7, #8
        ["Won", "won", "1", "$1,000"],
        ["Lost", "lost", "4", "$0"],  # #2 #3 #4 #12: closed leads carry no value
        ["Callback list", "-", "1", "-"],  # #9
    ]


# --- the forecast ------------------------------------------------------------------------------


def test_forecast_places_each_open_deal_in_its_expected_close_month(b2b: dict[str, Any]) -> None:
    # Completed stays (days): lead 1 2 2 2 2 2 2 2 4 4 5 -> median 2; prospect 10 14 16 20 20
    # 30 -> median 18; meeting 10 12 14 -> median 12. Days to close from entering a stage:
    # meeting 12, prospect 18 + 12 = 30, lead 2 + 30 = 32.
    # Prospect has no probability in the YAML: of the leads that entered it, #1 won and #2, #3
    # were lost (the others are open or on the callback list) -> 1/3.
    assert [
        (s["stage"], s["probability"], s["probability_source"], s["median_days"])
        for s in b2b["forecast"]["stages"]
    ] == [
        ("lead", 0.1, "config", 2.0),
        ("prospect", 0.3333, "history", 18.0),
        ("meeting", 0.5, "config", 12.0),
    ]
    assert [s["days_to_close"] for s in b2b["forecast"]["stages"]] == [32.0, 30.0, 12.0]
    # Open deals on 6/15 (days in stage; close = 6/15 + what is left of its stage + after it):
    #   #5 lead 2 d:       0 + 30 = 30 -> 7/15    3000 * 0.1 = 300
    #   #6 prospect 43 d:  0 + 12 = 12 -> 6/27    4000 / 3
    #   #11 prospect 16 d: 2 + 12 = 14 -> 6/29    8000 / 3
    #   #7 meeting 14 d:   0 + 0       -> 6/15   10000 * 0.5 = 5000
    #   #8 meeting 5 d:    7 + 0  =  7 -> 6/22    6000 * 0.5 = 3000
    #   #10 (prospect) has no deal value: not a deal.
    forecast = b2b["forecast"]
    assert forecast["months"] == [
        {
            "month": "2026-06",
            "deals": 4,
            "value": 28000.0,
            "weighted": 12000.0,
        },  # 4000 + 5000 + 3000
        {"month": "2026-07", "deals": 1, "value": 3000.0, "weighted": 300.0},
    ]
    assert (forecast["deals"], forecast["value"], forecast["weighted"]) == (5, 31000.0, 12300.0)
    assert shown(b2b, "forecast") == [
        ["2026-06", "4", "$28,000", "$12,000"],
        ["2026-07", "1", "$3,000", "$300"],
    ]
    assert shown(b2b, "forecast_basis") == [
        ["Lead", "10.0%", "pipeline.yaml", "2.00", "32.00"],
        ["Prospect", "33.3%", "won / closed in history", "18.00", "30.00"],
        ["Meeting", "50.0%", "pipeline.yaml", "12.00", "12.00"],
    ]


def test_weighted_pipeline_is_the_forecasts_total_for_the_same_deals(b2b: dict[str, Any]) -> None:
    # One stage probability for both: Prospect (no probability in the YAML) counts its
    # observed 1/3, not 0. Open deals: lead #5 3000 * 0.1 = 300; prospect #6 + #11
    # (4000 + 8000) / 3 = 4000; meeting #7 + #8 (10000 + 6000) * 0.5 = 8000 -> 12300 of 31000.
    assert b2b["open_value"] == b2b["forecast"]["value"] == 31000.0
    assert b2b["weighted_pipeline"] == b2b["forecast"]["weighted"] == 12300.0
    figures = dict((row[0], row[1]) for row in shown(b2b, "figures"))
    assert figures["Weighted pipeline"] == "$12,300"


def test_forecast_reads_all_history_whatever_the_period(
    engine: Engine, loaded: LoadedConfig, b2b: dict[str, Any]
) -> None:
    (recent,) = report(engine, loaded, since=when("6/1"))["pipelines"]
    assert recent["forecast"] == b2b["forecast"]


# --- deals at risk -----------------------------------------------------------------------------


def test_at_risk_lists_stuck_idle_and_overdue_deals_by_value_with_reasons(
    b2b: dict[str, Any],
) -> None:
    # Usual time = p90 of past stays: prospect 20 + 0.5 * 10 = 25, meeting 12 + 0.8 * 2 = 13.6.
    # Idle: nothing after 6/1 00:00 (14 days before until).
    #   #7  meeting 14 d: over the 10-day SLA (and flagged, and over 13.6); last activity the
    #       move on 6/1, 14 days ago (an email on 5/20)
    #   #11 prospect 16 d: last activity the move on 5/30 (open 5/25, email 5/29; the reply of
    #       6/20 is after until)
    #   #8  meeting 5 d: next step due 6/12, 3 days late
    #   #6  prospect 43 d: over 25 days (opened an email on 6/10: not idle)
    #   not at risk: #5 (new), #10 (next step 12 hours late: within the day's grace)
    risk = b2b["at_risk"]
    assert (risk["count"], risk["value"], risk["idle_days"]) == (4, 28000.0, 14)
    assert risk["by_reason"] == {
        "over_sla": 1,
        "over_usual": 2,
        "flagged": 1,
        "idle": 2,
        "overdue": 1,
    }
    assert [(d["email"], d["reasons"], d["idle_days"]) for d in risk["deals"]] == [
        ("7@x.test", ["over_sla", "over_usual", "flagged", "idle"], 14),
        ("11@x.test", ["idle"], 16),
        ("8@x.test", ["overdue"], 5),
        ("6@x.test", ["over_usual"], 5),
    ]
    assert shown(b2b, "at_risk") == [
        [
            "7@x.test",
            "Co 7",
            "ben",
            "Meeting",
            "$10,000",
            "14",
            "over the 10-day SLA; no activity for 14 days",
        ],
        [
            "11@x.test",
            "Co 11",
            "Grace Hopper",
            "Prospect",
            "$8,000",
            "16",
            "no activity for 16 days",
        ],
        ["8@x.test", "Co 8", "ana", "Meeting", "$6,000", "5", "next step 3 days overdue"],
        ["6@x.test", "Co 6", "-", "Prospect", "$4,000", "43", "longer than usual (25 days)"],
    ]


def test_at_risk_leaves_the_owner_column_out_when_no_deal_has_one(b2b: dict[str, Any]) -> None:
    table = next(t for t in pipeline_tables(b2b, "USD") if t.key == "at_risk")
    assert table.headers == ["Email", "Company", "Owner", "Stage", "Value", "Days in stage", "Why"]
    deals = [{**d, "owner": None} for d in b2b["at_risk"]["deals"]]
    ownerless = at_risk({**b2b, "at_risk": {**b2b["at_risk"], "deals": deals}}, "USD")
    assert ownerless.headers == ["Email", "Company", "Stage", "Value", "Days in stage", "Why"]
    assert ownerless.notes[0] == "4 open deals at risk, worth $28,000."


def test_at_risk_days_in_stage_read_to_one_decimal_as_the_reasons(b2b: dict[str, Any]) -> None:
    # A deal 12.94 days in a stage whose usual stay is 12.3: the column read "12" (truncated)
    # next to "longer than usual (12.3 days)"; now 12.9, as the reason writes days.
    deal = {**b2b["at_risk"]["deals"][-1], "days_in_stage": 12.94, "usual_days": 12.3}
    table = at_risk({**b2b, "at_risk": {**b2b["at_risk"], "deals": [deal]}}, "USD")
    assert table.shown()[0][-2:] == ["12.9", "longer than usual (12.3 days)"]
    unknown = [{**deal, "days_in_stage": None}]  # no entry time: no figure, not 0
    blank = at_risk({**b2b, "at_risk": {**b2b["at_risk"], "deals": unknown}}, "USD")
    assert blank.shown()[0][-2] == "-"


def test_idle_days_is_a_report_option(engine: Engine, loaded: LoadedConfig) -> None:
    # 20 days: #11 (16 days) and #7 (14 days) are no longer idle; #7 is still over its SLA.
    (b2b,) = report(engine, loaded, idle_days=20)["pipelines"]
    risk = b2b["at_risk"]
    assert [d["email"] for d in risk["deals"]] == ["7@x.test", "8@x.test", "6@x.test"]
    assert risk["by_reason"]["idle"] == 0
    with pytest.raises(ValueError, match="idle_days"):
        report(engine, loaded, idle_days=0)


# --- where they are shown ----------------------------------------------------------------------


def test_forecast_and_at_risk_come_first_in_every_form(b2b: dict[str, Any], tmp_path: Path) -> None:
    keys = [t.key for t in pipeline_tables(b2b, "USD")]
    assert keys[:5] == ["figures", "forecast", "forecast_basis", "at_risk", "leaderboard"]
    assert keys[5:7] == ["funnel", "stages"]
    data: dict[str, Any] = {"period": {"since": None, "until": UNTIL.isoformat()}}
    data |= {"currency": "USD", "pipelines": [b2b], "unassigned_leads": 0}
    console = Console(record=True, width=200, file=io.StringIO())
    render_report(data, console)
    text = console.export_text()
    assert text.index("Forecast by expected close month") < text.index("Deals at risk")
    assert text.index("Deals at risk") < text.index("Funnel (") < text.index("Conversion (")
    path = tmp_path / "report.html"
    write_html(data, path)
    page = path.read_text(encoding="utf-8")
    assert page.index("<title>Forecast by expected close month</title>") < page.index(
        "Deals at risk"
    )
    assert "Expected close month</text>" in page and "Amount (USD)</text>" in page
    assert ">$10,000</text>" in page  # an axis tick in the config's currency
    assert ">forecast</text>" in page and ">open value</text>" in page  # the legend
    assert "  (50% of previous)</text>" in page  # the funnel: prospect -> meeting
    artifacts = dict(artifact_tables(data))
    assert [row["Forecast"] for row in table_rows(artifacts["report-forecast"])] == [
        "$12,000",
        "$300",
    ]
    assert len(table_rows(artifacts["report-at-risk"])) == 4


def test_at_risk_shows_the_largest_and_counts_them_all(
    engine: Engine, loaded: LoadedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadflow.reporting import sales

    monkeypatch.setattr(sales, "AT_RISK_SHOWN", 2)
    (b2b,) = report(engine, loaded)["pipelines"]
    assert [d["email"] for d in b2b["at_risk"]["deals"]] == ["7@x.test", "11@x.test"]
    table = next(t for t in pipeline_tables(b2b, "USD") if t.key == "at_risk")
    assert table.notes[0] == "4 open deals at risk, worth $28,000; the 2 largest shown."


def test_at_risk_order_is_the_same_on_every_database(
    tmp_path_factory: pytest.TempPathFactory, loaded: LoadedConfig
) -> None:
    # Three flagged meeting deals of the same value: #1 with no entry time (age NULL), #2
    # 5 days in, #3 9 days in. Longest in stage first, the unknown age last (PostgreSQL puts
    # NULLs first in a descending order unless told), then a deal without a value.
    db = open_database(database_url(tmp_path_factory.mktemp("nulls")))
    try:
        entered = {1: None, 2: when("6/10"), 3: when("6/6"), 4: when("6/1")}
        values = {1: 5000.0, 2: 5000.0, 3: 5000.0, 4: None}
        with session_scope(db) as session:
            session.add_all(
                Lead(
                    id=i,
                    email=f"{i}@x.test",
                    pipeline="b2b",
                    stage="meeting",
                    status="active",
                    deal_value=values[i],
                    stage_entered_at=entered[i],
                    stuck=True,
                    created_at=when("5/1"),
                    updated_at=when("5/1"),
                )
                for i in entered
            )
        (b2b,) = report(db, loaded)["pipelines"]
    finally:
        db.dispose()
    deals = b2b["at_risk"]["deals"]
    assert [(d["email"], d["days_in_stage"]) for d in deals] == [
        ("3@x.test", 9.0),
        ("2@x.test", 5.0),
        ("1@x.test", None),
        ("4@x.test", 14.0),  # no value: last, however long in stage
    ]


def test_leaderboard_counts_each_owners_leads_by_hand(b2b: dict[str, Any]) -> None:
    # ana: #1 won 3/23 (created 3/1, $1,000), #2 lost 4/3, #8 open in meeting.
    # ben: #3 lost 3/27, #12 lost 5/4, #7 open in meeting and flagged stuck.
    # #11's owner is only an attribute from a CRM export: not a team member, not listed.
    assert b2b["leaderboard"] == [
        {
            "owner": "ana",
            "open": 1,
            "new": 3,
            "won": 1,
            "won_value": 1000.0,
            "lost": 1,
            "win_rate": 0.5,
            "days_to_win": 22.0,
            "stuck": 0,
        },
        {
            "owner": "ben",
            "open": 1,
            "new": 3,
            "won": 0,
            "won_value": 0.0,
            "lost": 2,
            "win_rate": 0.0,
            "days_to_win": None,
            "stuck": 1,
        },
    ]
    assert shown(b2b, "leaderboard") == [
        ["ana", "1", "3", "1", "$1,000", "1", "50.0%", "22", "0"],
        ["ben", "1", "3", "0", "$0", "2", "0.0%", "-", "1"],
    ]


def test_a_report_without_owners_has_no_leaderboard(b2b: dict[str, Any]) -> None:
    keys = [t.key for t in pipeline_tables({**b2b, "leaderboard": []}, "USD")]
    assert "leaderboard" not in keys and "at_risk" in keys
