"""Pipeline metrics: every figure of ``build_report`` checked against hand-computed values.

The fixture is a small company's first quarter of 2026: ten B2B leads and two SMB leads with
known stage histories, a dozen emails and their events. ``until`` is 2026-04-01 00:00 UTC.
Runs on SQLite, and on PostgreSQL when LEADFLOW_TEST_DATABASE_URL names one.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import database_url
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import Connection, Engine, String, event, literal, select, union_all
from sqlmodel import Session

from leadflow.config import LoadedConfig, load_config
from leadflow.reporting import flow, sales
from leadflow.reporting.build import build_report
from leadflow.reporting.console import BARS, render_report
from leadflow.reporting.csvexport import export_csv
from leadflow.reporting.page import CARDS, write_html
from leadflow.reporting.sqlfn import Scope, distributions, distributions_in_order
from leadflow.reporting.table import Column, Format, Table, show
from leadflow.reporting.tables import headline, pipeline_tables
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
    name: B2B
    target: 10000
    stages:
      - {id: lead, probability: 0.1, sla: {max_days: 14, action: recycle}}
      - {id: prospect, probability: 0.2}
      - {id: qualified, probability: 0.4, sla: {max_days: 21, action: flag}}
      - {id: proposal, name: Proposal sent, probability: 0.6, sla: {max_days: 30, action: flag}}
      - {id: won, kind: won, probability: 1.0}
      - {id: lost, kind: lost}
  - id: smb
    name: Small business
    stages:
      - {id: prospect, probability: 0.1}
      - {id: demo, probability: 0.5, sla: {max_days: 7, action: flag}}
      - {id: won, kind: won, probability: 1.0}
      - {id: lost, kind: lost}
"""
UNTIL = datetime(2026, 4, 1, tzinfo=UTC)


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def when(text: str) -> datetime:
    """'1/5' is Jan 5 00:00 UTC, '1/5 12:00' is noon."""
    day, _, clock = text.partition(" ")
    month, dom = day.split("/")
    hour, _, minute = (clock or "0:0").partition(":")
    return at(int(month), int(dom), int(hour), int(minute or 0))


# id: (email, company, pipeline, source, deal value, moves). A move is "stage date"; the
# first one is the intake (creation), "callback" is a recycle to the callback list. The
# current stage, status, stage_entered_at, won_at and closed_at follow from the last move.
# fmt: off
LEADS: dict[int, tuple[str, str, str | None, str | None, float | None, str]] = {
    1: ("a@x.test", "Alpha", "b2b", "web", 5000.0,
        "lead 1/5, prospect 1/7, qualified 1/12, proposal 1/19, won 2/2"),
    2: ("b@x.test", "Beta", "b2b", "web", 3000.0,
        "lead 1/5 12:00, prospect 1/9 12:00, qualified 1/16 12:00, proposal 1/30 12:00, "
        "lost 2/20 12:00"),
    3: ("c@x.test", "Gamma", "b2b", "referral", 2000.0,
        "lead 1/12, prospect 1/13, callback 2/2, prospect 3/18, qualified 3/21"),
    4: ("d@x.test", "<b>Delta</b> & Co", "b2b", "referral", 8000.0,  # moved back once
        "lead 1/19, prospect 1/20, qualified 1/26, prospect 1/28, qualified 2/2, proposal 2/9"),
    5: ("e@x.test", "https://e.example/logo.png", "b2b", "web", 4000.0,
        "lead 2/2, prospect 2/4, qualified 2/11"),
    6: ("f@x.test", "Zeta", "b2b", "event", None, "lead 2/16, callback 3/2"),
    7: ("g@x.test", "[bold]Eta[/bold]", "b2b", "event", 1000.0, "lead 3/2"),
    8: ("h@x.test", "Theta", "b2b", None, 1500.0, "lead 3/16, prospect 3/18"),
    9: ("i@x.test", "Iota", "b2b", "web", 7000.0,
        "lead 1/6, prospect 1/8, qualified 1/15, proposal 1/22, won 3/5"),
    10: ("j@x.test", "Kappa", "b2b", "referral", 2500.0,  # skipped prospect
         "lead 2/9, qualified 2/10, lost 2/24"),
    11: ("k@y.test", "Lambda", "smb", "web", 900.0, "prospect 2/2, demo 2/5, won 2/12"),
    12: ("l@y.test", "Mu", "smb", "web", 600.0, "prospect 3/9, demo 3/10"),
    13: ("m@z.test", "Nu", None, "web", None, ""),  # created 3/30, not assigned yet
}
FLAGGED_STUCK = {5, 8}
# outbox id: (lead, template, variant, status, sent_at or for a bounce/pending the update)
MESSAGES: dict[int, tuple[int, str, str | None, str, str]] = {
    1: (1, "welcome", None, "sent", "1/7 10:00"),
    2: (2, "welcome", None, "sent", "1/9 13:00"),
    3: (3, "welcome", None, "sent", "1/13 9:00"),
    4: (4, "welcome", None, "bounced", "1/20 9:00"),  # refused by SMTP: no sent_at
    5: (5, "welcome", None, "sent", "2/4 9:00"),
    6: (1, "followup", "a", "sent", "1/9 9:00"),
    7: (2, "followup", "b", "sent", "1/12 9:00"),
    8: (3, "followup", "a", "sent", "1/16 9:00"),
    9: (5, "followup", "b", "pending", "2/6 9:00"),  # never sent: not counted
    10: (9, "welcome", None, "sent", "1/8 9:00"),
    11: (11, "welcome", None, "sent", "2/3 9:00"),
    12: (7, "welcome", None, "sent", "3/3 9:00"),
}
# (lead, type, occurred_at, outbox id or None)
EVENTS: list[tuple[int, str, str, int | None]] = [
    (1, "email_opened", "1/7 11:00", 1),
    (1, "email_opened", "1/7 15:00", 1),  # a second open of the same message counts once
    (1, "replied", "1/8 10:00", 1),
    (2, "email_opened", "1/9 14:00", 2),
    (2, "email_clicked", "1/9 14:05", 2),
    (5, "unsubscribed", "2/5 9:00", 5),
    (1, "email_opened", "1/9 10:00", 6),
    (1, "replied", "1/9 12:00", 6),
    (2, "replied", "1/12 21:00", 7),
    (3, "bounced", "1/16 9:05", 8),  # asynchronous bounce after SMTP accepted the message
    (9, "replied", "1/8 15:00", None),  # a reply matched to the lead, not to a message
    (7, "replied", "3/2 10:00", None),  # before the lead's first email: not a response
    (11, "replied", "2/3 11:00", 11),
    (10, "replied", "4/2 9:00", None),  # after until: ignored
    (1, "email_clicked", "4/2 9:00", 1),  # after until: ignored
]
# fmt: on


def _moves(text: str) -> list[tuple[str | None, datetime]]:
    moves = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        stage, _, moment = part.partition(" ")
        moves.append((None if stage == "callback" else stage, when(moment)))
    return moves


def _lead_row(lead_id: int) -> Lead:
    email, company, pipeline, source, deal, path = LEADS[lead_id]
    moves = _moves(path)
    stage, status, entered, won_at, closed_at = None, "active", None, None, None
    if moves:
        stage, entered = moves[-1]
        if stage is None:
            status = "callback"
        elif stage == "won":
            won_at = entered
        elif stage == "lost":
            status, closed_at = "closed", entered
    created = moves[0][1] if moves else at(3, 30)
    return Lead(
        id=lead_id,
        email=email,
        company=company,
        pipeline=pipeline,
        source=source,
        deal_value=deal,
        stuck=lead_id in FLAGGED_STUCK,
        stage=stage,
        status=status,
        stage_entered_at=entered,
        won_at=won_at,
        closed_at=closed_at,
        created_at=created,
        updated_at=created,
    )


def _transitions(lead_id: int) -> list[StageTransition]:
    """Rows as the stage engine writes them: each move also records when the stage it leaves
    was entered (none for the intake and for a revival from the callback list)."""
    pipeline, rows = LEADS[lead_id][2], []
    previous: str | None = None
    entered: datetime | None = None
    for i, (stage, moment) in enumerate(_moves(LEADS[lead_id][5])):
        kind = "intake" if i == 0 else "recycle" if stage is None else "rule"
        rows.append(
            StageTransition(
                lead_id=lead_id,
                pipeline=pipeline,
                from_stage=previous,
                from_entered_at=entered if previous is not None else None,
                to_stage=stage,
                at=moment,
                kind=kind,
            )
        )
        previous, entered = stage, moment
    return rows


def _fill(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all([_lead_row(lead_id) for lead_id in LEADS])
        session.flush()
        session.add_all([t for lead_id in LEADS for t in _transitions(lead_id)])
        session.add_all(
            [
                OutboundMessage(
                    id=mid,
                    lead_id=lead,
                    cadence="outbound",
                    step=f"s{mid}",
                    template=template,
                    variant=variant,
                    to_email=LEADS[lead][0],
                    status=status,
                    sent_at=when(moment) if status == "sent" else None,
                    due_at=when(moment),
                    created_at=when(moment),
                    updated_at=when(moment),
                )
                for mid, (lead, template, variant, status, moment) in MESSAGES.items()
            ]
        )
        session.flush()
        session.add_all(
            [
                Event(lead_id=lead, type=kind, occurred_at=when(moment), message_id=message)
                for lead, kind, moment, message in EVENTS
            ]
        )


def seeded_folder(folder: Path) -> tuple[str, Path]:
    """This module's history in a fresh database in ``folder``, and its config written beside
    it, for tests that run the report as a command would: the database URL and the config."""
    url = database_url(folder)
    db = open_database(url)
    try:
        _fill(db)
    finally:
        db.dispose()
    config = folder / "pipeline.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return url, config


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    db = open_database(database_url(tmp_path_factory.mktemp("report")))  # a fresh database
    _fill(db)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    return load_config(Path("report-test.yaml"), text=CONFIG)


def report(
    engine: Engine,
    loaded: LoadedConfig,
    since: datetime | None = None,
    until: datetime = UNTIL,
    pipeline: str | None = None,
) -> dict[str, Any]:
    with engine.connect() as conn:
        return build_report(conn, loaded, since=since, until=until, pipeline=pipeline)


@pytest.fixture(scope="module")
def full(engine: Engine, loaded: LoadedConfig) -> dict[str, Any]:
    return report(engine, loaded)


def section(data: dict[str, Any], pipeline: str) -> dict[str, Any]:
    return next(p for p in data["pipelines"] if p["id"] == pipeline)


def by_stage(rows: list[dict[str, Any]], *keys: str) -> dict[str, tuple[Any, ...]]:
    return {r["stage"]: tuple(r[k] for k in keys) for r in rows}


# --- the snapshot: leads per stage now, aging, stuck ----------------------------------------


def test_funnel_counts_leads_per_stage_now_with_callbacks_and_closed(full: dict[str, Any]) -> None:
    b2b = section(full, "b2b")
    # lead: #7; prospect: #8; qualified: #3, #5; proposal: #4; won: #1, #9; lost: #2, #10.
    assert by_stage(b2b["stages_now"], "leads", "value") == {
        "lead": (1, 1000.0),
        "prospect": (1, 1500.0),
        "qualified": (2, 6000.0),  # 2000 + 4000
        "proposal": (1, 8000.0),
        "won": (2, 12000.0),  # 5000 + 7000
        "lost": (2, 0.0),  # closed leads carry no pipeline value
    }
    # 10 leads; active #1 #3 #4 #5 #7 #8 #9; open = 7 active minus 2 won; #6 is on callback.
    assert b2b["leads"] == {
        "total": 10,
        "active": 7,
        "open": 5,
        "won": 2,
        "callback": 1,
        "closed": 2,
    }
    smb = section(full, "smb")
    assert by_stage(smb["stages_now"], "leads") == {
        "prospect": (0,),
        "demo": (1,),
        "won": (1,),
        "lost": (0,),
    }
    assert smb["leads"] == {
        "total": 2,
        "active": 2,
        "open": 1,
        "won": 1,
        "callback": 0,
        "closed": 0,
    }
    assert full["unassigned_leads"] == 1  # #13 has no pipeline yet
    assert full["period"] == {"since": None, "until": "2026-04-01T00:00:00+00:00"}


def test_weighted_pipeline_and_coverage_of_target(full: dict[str, Any]) -> None:
    b2b = section(full, "b2b")
    # 0.1*1000 + 0.2*1500 + 0.4*6000 + 0.6*8000 = 100 + 300 + 2400 + 4800 = 7600
    assert b2b["weighted_pipeline"] == 7600.0
    assert b2b["open_value"] == 16500.0  # 1000 + 1500 + 6000 + 8000
    assert b2b["target"] == 10000
    assert b2b["coverage"] == 0.76  # 7600 / 10000
    smb = section(full, "smb")
    assert smb["weighted_pipeline"] == 300.0  # 0.5 * 600
    assert smb["target"] is None
    assert smb["coverage"] is None


def test_stage_aging_counts_leads_over_sla_or_flagged(full: dict[str, Any]) -> None:
    b2b = section(full, "b2b")
    # Ages at Apr 1: #7 in lead since Mar 2 = 30 d (SLA 14: over); #8 in prospect since
    # Mar 18 = 14 d (no SLA, flagged); #3 in qualified since Mar 21 = 11 d, #5 since Feb 11
    # = 28 + 21 = 49 d (SLA 21: over, and flagged); #4 in proposal since Feb 9 = 51 d (SLA 30).
    keys = ("sla_days", "leads", "avg_days", "max_days", "over_sla", "flagged", "stuck")
    assert by_stage(b2b["aging"], *keys) == {
        "lead": (14, 1, 30.0, 30.0, 1, 0, 1),
        "prospect": (None, 1, 14.0, 14.0, 0, 1, 1),
        "qualified": (21, 2, 30.0, 49.0, 1, 1, 1),  # avg (11 + 49) / 2
        "proposal": (30, 1, 51.0, 51.0, 1, 0, 1),
    }
    # #12 in demo since Mar 10 = 22 d, SLA 7.
    assert by_stage(section(full, "smb")["aging"], *keys) == {
        "prospect": (None, 0, None, None, 0, 0, 0),
        "demo": (7, 1, 22.0, 22.0, 1, 0, 1),
    }


def test_stuck_leads_listed_per_stage_in_pipeline_order(full: dict[str, Any]) -> None:
    assert section(full, "b2b")["stuck"] == [
        {
            "stage": "lead",
            "email": "g@x.test",
            "company": "[bold]Eta[/bold]",
            "days_in_stage": 30.0,
            "over_sla": True,
            "flagged": False,
        },
        {
            "stage": "prospect",
            "email": "h@x.test",
            "company": "Theta",
            "days_in_stage": 14.0,
            "over_sla": False,
            "flagged": True,
        },
        {
            "stage": "qualified",
            "email": "e@x.test",
            "company": "https://e.example/logo.png",
            "days_in_stage": 49.0,
            "over_sla": True,
            "flagged": True,
        },
        {
            "stage": "proposal",
            "email": "d@x.test",
            "company": "<b>Delta</b> & Co",
            "days_in_stage": 51.0,
            "over_sla": True,
            "flagged": False,
        },
    ]


def test_stuck_list_keeps_the_ten_oldest_of_a_stage(engine: Engine, loaded: LoadedConfig) -> None:
    with engine.connect() as conn, conn.begin() as transaction:  # rolled back below
        session = Session(bind=conn)
        session.add_all(
            [  # 12 more leads in demo (SLA 7), entered Jan 1 .. Jan 12
                Lead(
                    id=100 + i,
                    email=f"d{i}@y.test",
                    pipeline="smb",
                    stage="demo",
                    stage_entered_at=at(1, i),
                    created_at=at(1, i),
                    updated_at=at(1, i),
                )
                for i in range(12, 0, -1)
            ]
        )
        session.flush()
        data = build_report(conn, loaded, since=None, until=UNTIL, pipeline="smb")
        transaction.rollback()
    smb = section(data, "smb")
    # the 10 that entered first, oldest first; #12 (22 days) and d11, d12 are left out
    assert [r["email"] for r in smb["stuck"]] == [f"d{i}@y.test" for i in range(1, 11)]
    assert smb["stuck"][0]["days_in_stage"] == 90.0  # Jan 1 -> Apr 1 = 31 + 28 + 31
    assert smb["aging"][1]["stuck"] == 13


# --- movement: conversion and time in stage ---------------------------------------------------


CONVERSION_KEYS = ("entered", "to_next", "advanced", "moved_back", "recycled", "lost", "in_stage")


def test_conversion_follows_each_entry_to_the_next_move(full: dict[str, Any]) -> None:
    b2b = section(full, "b2b")
    assert by_stage(b2b["conversion"], *CONVERSION_KEYS) == {
        # 10 entries: 7 to prospect (#1-5, #8, #9), #10 skipped to qualified, #6 recycled,
        # #7 still there.
        "lead": (10, 7, 8, 0, 1, 0, 1),
        # 9 entries (#3 and #4 twice): 7 to qualified, #3's first stay recycled, #8 there.
        "prospect": (9, 7, 7, 0, 1, 0, 1),
        # 8 entries (#4 twice): #1 #2 #4b #9 to proposal, #4a back to prospect, #10 lost,
        # #3 and #5 still there.
        "qualified": (8, 4, 4, 1, 0, 1, 2),
        # 4 entries: #1 #9 won, #2 lost, #4 still there.
        "proposal": (4, 2, 2, 0, 0, 1, 1),
        "won": (2, 0, 0, 0, 0, 0, 2),
    }
    rates = ("next_stage", "to_next_rate", "advance_rate", "drop_off_rate")
    assert by_stage(b2b["conversion"], *rates) == {
        "lead": ("prospect", 0.7, 0.8, 0.1),  # 7/10, 8/10, 1/10
        "prospect": ("qualified", 0.7778, 0.7778, 0.1111),  # 7/9, 7/9, 1/9
        "qualified": ("proposal", 0.5, 0.5, 0.125),  # 4/8, 4/8, 1/8
        "proposal": ("won", 0.5, 0.5, 0.25),  # 2/4, 2/4, 1/4
        "won": (None, 0.0, 0.0, 0.0),
    }
    smb = section(full, "smb")
    assert by_stage(smb["conversion"], *CONVERSION_KEYS, "to_next_rate") == {
        "prospect": (2, 2, 2, 0, 0, 0, 0, 1.0),
        "demo": (2, 1, 1, 0, 0, 0, 1, 0.5),  # #11 won, #12 still in demo
        "won": (1, 0, 0, 0, 0, 0, 1, 0.0),
    }


def test_time_in_stage_median_and_p90_of_completed_stays(full: dict[str, Any]) -> None:
    keys = ("stays", "median_days", "p90_days", "mean_days")
    # Percentiles interpolate between ranks: p at position (n - 1) * p of the sorted stays.
    assert by_stage(section(full, "b2b")["time_in_stage"], *keys) == {
        # 1 1 1 2 2 2 2 4 14 (#7 still in lead): median = 2; p90 at 7.2 = 4 + 0.2 * 10 = 6;
        # mean 29 / 9 = 3.22
        "lead": (9, 2.0, 6.0, 3.22),
        # 3 (#3 revived Mar 18 -> Mar 21) 5 5 6 7 7 7 20: median at 3.5 = 6.5;
        # p90 at 6.3 = 7 + 0.3 * 13 = 10.9; mean 60 / 8 = 7.5
        "prospect": (8, 6.5, 10.9, 7.5),
        # 2 7 7 7 14 14: median at 2.5 = 7; p90 at 4.5 = 14; mean 51 / 6 = 8.5
        "qualified": (6, 7.0, 14.0, 8.5),
        # 14 21 42: median 21; p90 at 1.8 = 21 + 0.8 * 21 = 37.8; mean 77 / 3 = 25.67
        "proposal": (3, 21.0, 37.8, 25.67),
        "won": (0, None, None, None),
    }
    assert by_stage(section(full, "smb")["time_in_stage"], *keys) == {
        "prospect": (2, 2.0, 2.8, 2.0),  # 1 3: p90 at 0.9 = 1 + 0.9 * 2
        "demo": (1, 7.0, 7.0, 7.0),
        "won": (0, None, None, None),
    }


# --- outcomes: win rate, cycle, velocity, sources, weekly trend -------------------------------


def test_win_rate_deal_size_and_sales_cycle(full: dict[str, Any]) -> None:
    # Won: #1 (Feb 2, 5000, created Jan 5: 28 d), #9 (Mar 5, 7000, created Jan 6: 58 d).
    # Lost: #2, #10.
    assert section(full, "b2b")["outcomes"] == {
        "won": 2,
        "lost": 2,
        "win_rate": 0.5,  # 2 / (2 + 2)
        "win_loss_ratio": 1.0,  # 2 / 2
        "won_value": 12000.0,
        "avg_deal_size": 6000.0,
        # median (28 + 58) / 2 = 43; p90 at 0.9 = 28 + 0.9 * 30 = 55
        "cycle_days": {"count": 2, "median": 43.0, "mean": 43.0, "p90": 55.0},
    }
    assert section(full, "smb")["outcomes"] == {
        "won": 1,
        "lost": 0,
        "win_rate": 1.0,
        "win_loss_ratio": None,  # nothing lost: no ratio rather than a division by zero
        "won_value": 900.0,
        "avg_deal_size": 900.0,
        "cycle_days": {"count": 1, "median": 10.0, "mean": 10.0, "p90": 10.0},  # Feb 2 -> 12
    }


def test_pipeline_velocity(full: dict[str, Any]) -> None:
    # 5 open opportunities * 0.5 win rate * 6000 average deal / 43 days = 15000 / 43
    assert section(full, "b2b")["velocity"] == {
        "open_opportunities": 5,
        "win_rate": 0.5,
        "avg_deal_size": 6000.0,
        "avg_cycle_days": 43.0,
        "per_day": 348.84,
    }
    assert section(full, "smb")["velocity"]["per_day"] == 90.0  # 1 * 1.0 * 900 / 10


def test_new_leads_and_wins_per_week(full: dict[str, Any]) -> None:
    weeks = [
        "01-05",
        "01-12",
        "01-19",
        "01-26",
        "02-02",
        "02-09",
        "02-16",
        "02-23",
        "03-02",
        "03-09",
        "03-16",
        "03-23",
        "03-30",
    ]  # Mondays, through the week of Apr 1
    assert section(full, "b2b")["weekly"] == [
        {"week": f"2026-{w}", "new_leads": n, "won": won}
        for w, n, won in zip(
            weeks,
            [3, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
            strict=True,
        )
    ]
    smb = section(full, "smb")["weekly"]  # from #11's week (Feb 2) on
    assert [(w["week"], w["new_leads"], w["won"]) for w in smb if w["new_leads"] or w["won"]] == [
        ("2026-02-02", 1, 0),
        ("2026-02-09", 0, 1),
        ("2026-03-09", 1, 0),
    ]
    assert (smb[0]["week"], smb[-1]["week"], len(smb)) == ("2026-02-02", "2026-03-30", 9)


def test_conversion_by_lead_source(full: dict[str, Any]) -> None:
    assert section(full, "b2b")["sources"] == [
        {"source": "web", "leads": 4, "won": 2, "conversion_rate": 0.5},  # #1 #2 #5 #9
        {"source": "referral", "leads": 3, "won": 0, "conversion_rate": 0.0},  # #3 #4 #10
        {"source": "event", "leads": 2, "won": 0, "conversion_rate": 0.0},  # #6 #7
        {"source": "(none)", "leads": 1, "won": 0, "conversion_rate": 0.0},  # #8
    ]
    assert section(full, "smb")["sources"] == [
        {"source": "web", "leads": 2, "won": 1, "conversion_rate": 0.5}
    ]


# --- email: templates, variants, first response ----------------------------------------------


def test_template_and_variant_results_through_message_events(full: dict[str, Any]) -> None:
    rows = {(r["template"], r["variant"]): r for r in section(full, "b2b")["variants"]}
    assert [(r["template"], r["variant"]) for r in section(full, "b2b")["variants"]] == [
        ("followup", "a"),
        ("followup", "b"),
        ("welcome", None),
    ]
    counts = ("sent", "delivered", "bounced", "opened", "clicked", "replied", "unsubscribed")
    ratios = ("bounce_rate", "open_rate", "click_rate", "reply_rate", "unsubscribe_rate")
    # welcome: messages 1 2 3 4 5 10 12; 4 refused by SMTP; opened 1 2; clicked 2; replied 1
    # (10's reply has no message id); unsubscribed 5.
    assert tuple(rows[("welcome", None)][k] for k in counts) == (7, 6, 1, 2, 1, 1, 1)
    # 1/7, then over the 6 delivered: 2/6, 1/6, 1/6, 1/6
    assert tuple(rows[("welcome", None)][k] for k in ratios) == (
        0.1429,
        0.3333,
        0.1667,
        0.1667,
        0.1667,
    )
    # followup a: 6 and 8; 8 bounced afterwards (bounce event), 6 opened and replied.
    assert tuple(rows[("followup", "a")][k] for k in counts) == (2, 1, 1, 1, 0, 1, 0)
    assert tuple(rows[("followup", "a")][k] for k in ratios) == (0.5, 1.0, 0.0, 1.0, 0.0)
    # followup b: 7 replied; 9 is still pending and not counted.
    assert tuple(rows[("followup", "b")][k] for k in counts) == (1, 1, 0, 0, 0, 1, 0)
    assert tuple(rows[("followup", "b")][k] for k in ratios) == (0.0, 0.0, 0.0, 1.0, 0.0)
    smb = section(full, "smb")["variants"]
    assert [(r["template"], r["sent"], r["replied"], r["reply_rate"]) for r in smb] == [
        ("welcome", 1, 1, 1.0)
    ]


def test_first_response_time(full: dict[str, Any]) -> None:
    # #9: Jan 8 09:00 -> 15:00 = 6 h; #1: Jan 7 10:00 -> Jan 8 10:00 = 24 h;
    # #2: Jan 9 13:00 -> Jan 12 21:00 = 80 h. #7 replied before its first email: not counted.
    # median 24; p90 at 1.8 = 24 + 0.8 * 56 = 68.8; mean 110 / 3 = 36.67
    assert section(full, "b2b")["first_response"] == {
        "leads": 3,
        "median_hours": 24.0,
        "p90_hours": 68.8,
        "mean_hours": 36.67,
    }
    assert section(full, "smb")["first_response"] == {  # Feb 3 09:00 -> 11:00
        "leads": 1,
        "median_hours": 2.0,
        "p90_hours": 2.0,
        "mean_hours": 2.0,
    }


# --- the period and the pipeline filter --------------------------------------------------------


def test_since_until_restrict_every_period_metric(engine: Engine, loaded: LoadedConfig) -> None:
    data = report(engine, loaded, since=at(2, 1), until=at(3, 1))
    assert data["period"] == {
        "since": "2026-02-01T00:00:00+00:00",
        "until": "2026-03-01T00:00:00+00:00",
    }
    b2b = section(data, "b2b")
    # Entries Feb 1 .. Mar 1; moves after Mar 1 are not seen (#6's recycle on Mar 2).
    assert by_stage(b2b["conversion"], *CONVERSION_KEYS, "advance_rate", "drop_off_rate") == {
        "lead": (3, 1, 2, 0, 0, 0, 1, 0.6667, 0.0),  # #5 -> prospect, #10 -> qualified, #6
        "prospect": (1, 1, 1, 0, 0, 0, 0, 1.0, 0.0),  # #5
        "qualified": (3, 1, 1, 0, 0, 1, 1, 0.3333, 0.3333),  # #4b -> proposal, #10 lost, #5
        "proposal": (1, 0, 0, 0, 0, 0, 1, 0.0, 0.0),  # #4
        "won": (1, 0, 0, 0, 0, 0, 1, 0.0, 0.0),  # #1
    }
    # Stays that ended Feb 1 .. Mar 1, whenever they began.
    assert by_stage(b2b["time_in_stage"], "stays", "median_days", "p90_days", "mean_days") == {
        "lead": (2, 1.5, 1.9, 1.5),  # #10 1, #5 2
        "prospect": (3, 7.0, 17.4, 10.67),  # #4b 5, #5 7, #3 20 (Jan 13 -> Feb 2)
        "qualified": (2, 10.5, 13.3, 10.5),  # #4b 7, #10 14
        "proposal": (2, 17.5, 20.3, 17.5),  # #1 14, #2 21
        "won": (0, None, None, None),
    }
    # Won #1 only (#9 on Mar 5 is later); lost #2 and #10.
    assert b2b["outcomes"] == {
        "won": 1,
        "lost": 2,
        "win_rate": 0.3333,
        "win_loss_ratio": 0.5,
        "won_value": 5000.0,
        "avg_deal_size": 5000.0,
        "cycle_days": {"count": 1, "median": 28.0, "mean": 28.0, "p90": 28.0},
    }
    assert b2b["velocity"]["per_day"] == 297.62  # 5 * (1/3) * 5000 / 28 = 25000 / 84
    assert [(w["week"], w["new_leads"], w["won"]) for w in b2b["weekly"]] == [
        ("2026-01-26", 0, 0),  # Sunday Feb 1 belongs to the week of Monday Jan 26
        ("2026-02-02", 1, 1),  # #5 created, #1 won
        ("2026-02-09", 1, 0),  # #10
        ("2026-02-16", 1, 0),  # #6
        ("2026-02-23", 0, 0),
    ]
    assert b2b["sources"] == [  # created in the period: #6, #10, #5
        {"source": "event", "leads": 1, "won": 0, "conversion_rate": 0.0},
        {"source": "referral", "leads": 1, "won": 0, "conversion_rate": 0.0},
        {"source": "web", "leads": 1, "won": 0, "conversion_rate": 0.0},
    ]
    assert [
        (r["template"], r["sent"], r["unsubscribed"], r["unsubscribe_rate"])
        for r in b2b["variants"]
    ] == [("welcome", 1, 1, 1.0)]  # only message 5 (Feb 4)
    assert b2b["first_response"] == {  # every b2b first reply came in January
        "leads": 0,
        "median_hours": None,
        "p90_hours": None,
        "mean_hours": None,
    }
    smb = section(data, "smb")
    assert smb["first_response"]["median_hours"] == 2.0
    assert smb["outcomes"]["won"] == 1
    assert smb["sources"] == [{"source": "web", "leads": 1, "won": 1, "conversion_rate": 1.0}]
    # The snapshot (leads per stage now) does not depend on the period.
    assert b2b["stages_now"] == section(report(engine, loaded), "b2b")["stages_now"]


def test_pipeline_filter_reports_one_pipeline_with_the_same_figures(
    engine: Engine, loaded: LoadedConfig, full: dict[str, Any]
) -> None:
    only = report(engine, loaded, pipeline="smb")
    assert [p["id"] for p in only["pipelines"]] == ["smb"]
    assert only["pipeline"] == "smb"
    assert only["pipelines"][0] == section(full, "smb")
    assert only["unassigned_leads"] == 0  # unassigned leads belong to no pipeline
    with pytest.raises(ValueError, match="unknown pipeline 'nope'"):
        report(engine, loaded, pipeline="nope")


def test_naive_or_inverted_period_is_refused(engine: Engine, loaded: LoadedConfig) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        report(engine, loaded, until=datetime(2026, 4, 1))
    with pytest.raises(ValueError, match="is after until"):
        report(engine, loaded, since=UNTIL + timedelta(days=1))


def test_report_is_json_ready(full: dict[str, Any]) -> None:
    assert json.loads(json.dumps(full)) == full


# --- presentation ------------------------------------------------------------------------------


def test_headline_is_one_line_per_report(full: dict[str, Any]) -> None:
    assert headline(full) == (
        "b2b: 10 leads: 1 in Lead, 1 in Prospect, 2 in Qualified, 1 in Proposal sent; won 2 "
        "(win rate 50%), 1 on the callback list | smb: 2 leads: 0 in Prospect, 1 in Demo; won 1 "
        "(win rate 100%), 0 on the callback list"
    )
    only = {"pipelines": [section(full, "b2b")]}
    assert headline(only).startswith("10 leads: 1 in Lead,")


def test_render_report_prints_tables_without_interpreting_data_as_markup(
    full: dict[str, Any],
) -> None:
    console = Console(record=True, width=160, file=io.StringIO())
    render_report(full, console)
    text = console.export_text()
    assert "10 leads: 1 in Lead, 1 in Prospect, 2 in Qualified, 1 in Proposal sent; won 2" in (
        " ".join(text.split())
    )
    assert "[bold]Eta[/bold]" in text  # a company name is printed as written
    for title in (
        "Key figures",
        "Funnel",
        "Conversion",
        "Time in stage",
        "Stage aging",
        "Stuck leads",
        "Win rate",
        "Conversion by lead source",
        "Weekly trend",
        "A/B variants",
    ):
        assert title in text
    assert "1 lead not yet assigned to a pipeline." in text


def test_html_report_is_self_contained_with_svg_charts(
    full: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "out" / "report.html"
    write_html(full, path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert '<svg role="img"' in page
    for chart in (
        "Forecast by expected close month",
        "Funnel: leads that reached each stage",
        "Leads per stage now",
        "Stage aging",
        "Weekly new leads and wins",
        "A/B variant comparison",
    ):
        assert f"<title>{chart}</title>" in page
    # Nothing is fetched: no script, stylesheet link, image, frame or CSS url(); the URL that
    # is a company name only appears as text.
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"""(src|href|xlink:href)\s*=\s*["']?\s*https?:""", page, re.I)
    assert "url(" not in page and "@import" not in page
    assert '<td class="t">https://e.example/logo.png</td>' in page
    assert "&lt;b&gt;Delta&lt;/b&gt; &amp; Co" in page and "<b>Delta</b>" not in page
    assert "default-src 'none'" in page


class PageTables(HTMLParser):
    """The HTML page read back: each table's title (the h3 above it), headers and cells, and
    the cards as (label, value) rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []
        self.cards: list[list[str]] = []
        self.title = ""
        self.text: list[str] | None = None
        self.row: list[str] | None = None
        self.in_card = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h3", "th", "td", "b", "span"):
            self.text = []
        elif tag == "table":
            self.tables.append((self.title, [], []))
        elif tag == "tr":
            self.row = []
        elif tag == "div" and ("class", "card") in attrs:
            self.in_card, card = True, ["", ""]
            self.cards.append(card)

    def handle_data(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self.text or [])
        if tag == "h3":
            self.title = text
        elif tag in ("th", "td") and self.row is not None:
            self.row.append(text)
        elif tag == "tr" and self.row is not None:
            _, headers, rows = self.tables[-1]
            if headers:
                rows.append(self.row)
            else:
                headers.extend(self.row)
            self.row = None
        elif tag in ("b", "span") and self.in_card:
            self.cards[-1][1 if tag == "b" else 0] = text
        elif tag == "div":
            self.in_card = False
        if tag in ("h3", "th", "td", "b", "span"):
            self.text = None


def console_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The terminal's tables read back from rich's box drawing: header row, then body rows."""
    found: list[tuple[list[str], list[list[str]]]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip())[1:-1]]
        if line.lstrip().startswith("┃"):
            found.append((cells, []))
        elif line.lstrip().startswith("│"):
            found[-1][1].append(cells)
    return found


def test_every_table_is_the_same_in_the_terminal_and_on_the_page(
    full: dict[str, Any], tmp_path: Path
) -> None:
    """Each table is defined once: both forms show its title, headers and cell text."""
    tables = [t for p in full["pipelines"] for t in pipeline_tables(p, full["currency"])]
    assert all(t.rows for t in tables)  # the fixture fills every table of both pipelines
    console = Console(record=True, width=250, file=io.StringIO())
    render_report(full, console)
    text = console.export_text()
    path = tmp_path / "report.html"
    write_html(full, path)
    page = PageTables()
    page.feed(path.read_text(encoding="utf-8"))

    drawn = iter(console_tables(text))
    on_page = iter(page.tables)
    cards = [c for t in tables if t.key == CARDS for c in t.shown()]
    assert page.cards == cards
    flat = " ".join(text.split())
    for table in tables:
        headers, rows = next(drawn)
        if table.key in BARS:  # the terminal's bar column is drawing, not data
            headers, rows = headers[:-1], [r[:-1] for r in rows]
        assert (headers, rows) == (table.headers, table.shown()), table.key
        assert " ".join(table.title.split()) in flat
        if table.key != CARDS:
            assert next(on_page) == (table.title, table.headers, table.shown()), table.key
    assert next(drawn, None) is None and next(on_page, None) is None


def test_tables_show_rates_to_one_decimal_and_missing_values_as_a_dash(
    full: dict[str, Any],
) -> None:
    b2b = {t.key: t for t in pipeline_tables(section(full, "b2b"))}
    sources = dict((r[0], r[1:]) for r in b2b["sources"].shown())
    assert sources["web"] == ["4", "2", "50.0%"]
    assert sources["(none)"] == ["1", "0", "0.0%"]  # a lead without a source
    now = b2b["stages"].shown()
    assert now[-1] == ["Callback list", "-", "1", "-"]
    stuck = {r[1]: r for r in b2b["stuck"].shown()}
    assert stuck["d@x.test"] == [
        "Proposal sent",
        "d@x.test",
        "<b>Delta</b> & Co",
        "51.00",
        "yes",
        "",
    ]


def test_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    path = tmp_path / "stuck.csv"
    hostile = ["=cmd|' /C calc'!A0", "+1", "-1", "@SUM(1)", "\t=1", "\r=1", "plain", "a=b"]
    columns = (
        Column("Company", Format.TEXT),
        Column("Days"),
        Column("N"),
        Column("Rate", Format.PERCENT),
    )
    rows = [(value, -1.5, 3, 0.375) for value in hostile] + [(None, None, None, None)]
    export_csv(Table("t", "Hostile", columns, tuple(rows)), path)
    with path.open(newline="", encoding="utf-8") as handle:
        read = list(csv.reader(handle))
    assert read[0] == ["Company", "Days", "N", "Rate"]
    assert [r[0] for r in read[1:-1]] == [
        "'=cmd|' /C calc'!A0",
        "'+1",
        "'-1",
        "'@SUM(1)",
        "'\t=1",
        "'\r=1",
        "plain",
        "a=b",
    ]
    assert read[1][1:] == ["-1.5", "3", "37.5"]  # numbers stay numbers, a rate in percent
    assert read[-1] == ["", "", "", ""]


def test_csv_export_of_a_report_table(full: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "stuck.csv"
    stuck = next(t for t in pipeline_tables(section(full, "b2b")) if t.key == "stuck")
    export_csv(stuck, path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == stuck.headers
    assert [(r["Email"], r["Days in stage"]) for r in rows] == [
        ("g@x.test", "30.0"),
        ("h@x.test", "14.0"),
        ("e@x.test", "49.0"),
        ("d@x.test", "51.0"),
    ]


# --- the percentile query itself ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=30))
def test_percentiles_from_ranked_rows_match_the_statistics_module(
    engine: Engine, values: list[int]
) -> None:
    """The database returns only the rows at the percentile offsets; the interpolated result
    equals the standard library's inclusive quantiles."""
    rows = union_all(*[select(literal("g").label("g"), literal(v).label("v")) for v in values])
    with engine.connect() as conn:
        found = distributions(conn, select(rows.subquery()), ["g"])[("g",)]
    assert found.count == len(values)
    assert found.median == pytest.approx(statistics.median(values))
    assert found.p90 == pytest.approx(statistics.quantiles(values, n=10, method="inclusive")[8])
    assert found.mean == pytest.approx(statistics.fmean(values))


@settings(max_examples=40, deadline=None)
@given(
    groups=st.dictionaries(
        st.sampled_from(["a", "b", None]),
        st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=30),
        min_size=1,
    )
)
def test_percentiles_ranked_per_group_match_the_statistics_module(
    engine: Engine, groups: dict[str | None, list[int]]
) -> None:
    """The per-group variant (one GROUP BY, then LIMIT/OFFSET walks from either end of each
    group, a NULL key included) gives the same figures as the standard library."""
    rows = union_all(
        *[
            select(literal(g, String).label("g"), literal(v).label("v"))
            for g, values in groups.items()
            for v in values
        ]
    )
    sub = rows.subquery()
    with engine.connect() as conn:
        found = distributions_in_order(conn, [sub.c.g], sub.c.v, [sub.c.v], [])
    assert set(found) == {(g,) for g in groups}
    for g, values in groups.items():
        got = found[(g,)]
        one = len(values) == 1  # ``quantiles`` wants two values; one value is every quantile
        p90 = values[0] if one else statistics.quantiles(values, n=10, method="inclusive")[8]
        assert got.count == len(values)
        assert got.mean == pytest.approx(statistics.fmean(values))
        assert got.median == pytest.approx(statistics.median(values))
        assert got.p90 == pytest.approx(p90)


# --- query plans: the large-database paths read indexes, they do not sort ---------------------


def _plans(engine: Engine, run: Callable[[Connection, Scope], object]) -> list[str]:
    """EXPLAIN QUERY PLAN of every statement ``run`` executes, on SQLite (one string each)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("query plans are checked on SQLite")
    statements: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            run(conn, Scope("sqlite", None, UNTIL, None))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as conn:
        return [
            " | ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + s, p))
            for s, p in statements
        ]


def test_time_in_stage_walks_the_stay_length_index(engine: Engine) -> None:
    """Count, mean and every percentile come from ``ix_transition_stay_days`` in its order:
    the ORDER BY must match the index expression exactly, or SQLite sorts every stay."""
    plans = _plans(engine, flow.time_in_stage)
    assert len(plans) > 1
    for plan in plans:
        assert "COVERING INDEX ix_transition_stay_days" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_deals_at_risk_read_open_deals_and_recent_activity_from_indexes_alone(
    engine: Engine, loaded: LoadedConfig
) -> None:
    """The pass over the open deals reads ``ix_lead_report_stage`` alone (it covers
    ``next_action_at``), and the leads active in the idle window come from the window's rows
    of ``ix_event_occurred`` and ``ix_outbox_sent``, not from one seek per open deal."""
    b2b = loaded.config.pipeline("b2b")
    assert b2b is not None
    plans = _plans(engine, lambda conn, scope: sales.at_risk(conn, scope, b2b, {}, 14))
    totals, shown = plans  # the shown deals' last activity: two seeks for each of the 20
    for plan in (totals, shown):
        assert "SEARCH lead USING COVERING INDEX ix_lead_report_stage" in plan, plan
        assert "SEARCH event USING COVERING INDEX ix_event_occurred" in plan, plan
        assert "SEARCH outbound_message USING COVERING INDEX ix_outbox_sent" in plan, plan
    assert "CORRELATED" not in totals, totals


def test_funnel_over_all_history_reads_moves_from_the_lead_history_index_alone(
    engine: Engine, loaded: LoadedConfig
) -> None:
    """Each lead's furthest stage is taken from ``ix_transition_lead_at`` in its order (it
    covers pipeline and stage), never from the transition rows, and then seeks its lead by
    id (no temporary index over the grouped moves)."""
    pipelines = list(loaded.config.pipelines)
    plans = _plans(engine, lambda conn, scope: sales.furthest_reached(conn, scope, pipelines))
    (plan,) = [p for p in plans if "stage_transition" in p]
    assert "SCAN stage_transition USING COVERING INDEX ix_transition_lead_at" in plan, plan
    assert "SEARCH lead USING INTEGER PRIMARY KEY" in plan, plan
    assert "AUTOMATIC" not in plan, plan


# --- money (issue 20): the config's currency, formatted where people read amounts -------------


@pytest.mark.parametrize(
    ("value", "currency", "shown"),
    [
        (20192.68, "USD", "$20,193"),
        (537835.0, "USD", "$537,835"),
        (0.5, "EUR", "€1"),  # half up, not to even
        (2.5, "GBP", "£3"),
        (-1200.0, "USD", "-$1,200"),
        (20192.68, "CHF", "CHF 20,193"),
        (4100.0, "CAD", "CAD 4,100"),  # no bare "$" for a dollar that is not the US one
        (15000.0, "JPY", "¥15,000"),
        (20192.68, None, "20,192.68"),  # no currency: a plain figure
        (None, "USD", None),
    ],
)
def test_format_money(value: float | None, currency: str | None, shown: str | None) -> None:
    from leadflow.reporting.money import format_money

    assert format_money(value, currency) == shown


def test_amounts_carry_the_currency_in_the_terminal_and_on_the_page(
    full: dict[str, Any], tmp_path: Path
) -> None:
    assert full["currency"] == "USD"  # the default of the fixture's config
    console = Console(record=True, width=200, file=io.StringIO())
    render_report(full, console)
    text = console.export_text()
    for line in ("Won value", "Average deal size", "Open value", "Weighted pipeline"):
        assert re.search(rf"│ {line} +│ +\$[\d,]+ │", text), line
    assert re.search(r"│ Pipeline target +│ +\$10,000 │", text)
    assert re.search(r"│ Proposal sent +│ open +│ +1 │ +\$[\d,]+ │", text)
    path = tmp_path / "report.html"
    write_html(full, path)
    page = path.read_text(encoding="utf-8")
    assert '<div class="card"><b>$10,000</b><span>Pipeline target</span></div>' in page
    assert not re.search(r"\d,\d{3}\.\d\d", text + page)  # no bare two-decimal amounts left


def test_other_currencies_and_json_keeps_numbers(engine: Engine) -> None:
    text = CONFIG.replace("timezone: UTC\n", "timezone: UTC\ncurrency: EUR\n")
    data = report(engine, load_config(Path("pipeline.yaml"), text=text))
    assert data["currency"] == "EUR"
    b2b = section(data, "b2b")
    assert b2b["target"] == 10000 and isinstance(b2b["weighted_pipeline"], float)
    assert json.dumps(data).count('"currency"') == 1  # once, at the top
    figures = dict(pipeline_tables(b2b, data["currency"])[0].shown())
    assert figures["Pipeline target"] == "€10,000"
    assert figures["Coverage of the €10,000 target"] == show(b2b["coverage"], Format.PERCENT)


def test_csv_money_column_is_numbers_under_a_header_naming_the_currency(
    full: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "stages.csv"
    now = next(t for t in pipeline_tables(section(full, "b2b"), "USD") if t.key == "stages")
    export_csv(now, path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Stage", "Kind", "Leads", "Value (USD)"]
    assert all(re.fullmatch(r"\d+(\.\d+)?", r[3]) for r in rows[1:-1])


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "usd",
            "unknown currency 'usd' (did you mean 'USD'?): use an ISO 4217 code such as "
            "USD, EUR or GBP",
        ),
        ("EUX", "unknown currency 'EUX': use an ISO 4217 code such as USD, EUR or GBP"),
        ("$", "unknown currency '$': use an ISO 4217 code such as USD, EUR or GBP"),
    ],
)
def test_an_unknown_currency_is_a_config_error(code: str, message: str) -> None:
    from leadflow.config import ConfigError

    text = CONFIG.replace("timezone: UTC\n", f"timezone: UTC\ncurrency: '{code}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("pipeline.yaml"), text=text)
    assert [(i.line, i.message) for i in caught.value.issues] == [(4, message)]


# --- the report's words and charts (issue 20) ---------------------------------------------------


def test_title_shows_the_period_to_the_minute_in_utc(engine: Engine, loaded: LoadedConfig) -> None:
    from leadflow.reporting.tables import report_title

    data = report(engine, loaded, since=at(2, 1, 9, 30), until=at(3, 1, 12, 5))
    assert report_title(data) == "Pipeline report: 2026-02-01 09:30 UTC to 2026-03-01 12:05 UTC"
    assert report_title({"period": {"since": None, "until": UNTIL.isoformat()}}) == (
        "Pipeline report: all history to 2026-04-01 00:00 UTC"
    )


def test_the_html_page_shows_each_headline_once(full: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    only = {**full, "pipelines": [section(full, "b2b")]}
    write_html(only, path)
    page = path.read_text(encoding="utf-8")
    assert page.count('class="headline"') == 1
    assert page.count("10 leads: 1 in Lead,") == 1
    assert "<h1>Pipeline report: all history to 2026-04-01 00:00 UTC</h1>" in page


def test_counts_in_words_are_pluralised() -> None:
    from leadflow.reporting.tables import unassigned_note

    assert unassigned_note({"unassigned_leads": 1}) == "1 lead not yet assigned to a pipeline."
    assert unassigned_note({"unassigned_leads": 1200}) == (
        "1,200 leads not yet assigned to a pipeline."
    )
    assert unassigned_note({"unassigned_leads": 0}) is None


def test_coverage_names_its_target(full: dict[str, Any]) -> None:
    b2b = dict(pipeline_tables(section(full, "b2b"), "USD")[0].shown())
    smb = dict(pipeline_tables(section(full, "smb"), "USD")[0].shown())
    assert b2b["Pipeline target"] == "$10,000"
    assert "Coverage of the $10,000 target" in b2b
    assert (smb["Pipeline target"], smb["Coverage of target (no target set)"]) == ("-", "n/a")
    figures = pipeline_tables(section(full, "b2b"))[0]
    assert figures.notes == (
        "Coverage: the weighted pipeline (open deal values times their stage's probability) "
        "over the pipeline's target (pipelines[].target in pipeline.yaml).",
    )


def test_aging_chart_has_a_legend(full: dict[str, Any]) -> None:
    from leadflow.reporting import charts

    svg = charts.aging(section(full, "b2b")["aging"])
    legend = re.findall(r'<text[^>]*class="axis"[^>]*>([^<]*)</text>', svg)
    assert legend == [
        "average days in stage",
        "average, stage with stuck leads",
        "oldest lead",
        "SLA (max days)",
    ]
    height = int(re.search(r'height="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    assert all(float(y) < height for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)"', svg))


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [
        (1, [0, 1]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (37, [0, 10, 20, 30, 40]),
        (143, [0, 50, 100, 150]),
        (0, [0, 1]),
    ],
)
def test_weekly_axis_ticks(peak: int, ticks: list[int]) -> None:
    from leadflow.reporting.charts import axis_ticks

    assert axis_ticks(peak) == ticks


def test_weekly_chart_labels_every_tick(full: dict[str, Any]) -> None:
    from leadflow.reporting import charts

    rows = [{"week": f"2026-01-{d:02d}", "new_leads": n, "won": 1} for d, n in [(5, 7), (12, 3)]]
    svg = charts.weekly(rows)
    tick = r'<text x="38\.0" y="[\d.]+" text-anchor="end" class="num">(\d+)</text>'
    labels = re.findall(tick, svg)
    assert labels == ["0", "2", "4", "6", "8"]


def test_the_prefect_summary_and_table_artifacts_show_money_in_the_currency(
    full: dict[str, Any],
) -> None:
    from leadflow.reporting.markdown import artifact_tables, report_markdown, table_rows

    markdown = report_markdown(full)
    assert "| Pipeline target | $10,000 |" in markdown
    assert "| Coverage of the $10,000 target |" in markdown
    now = dict(artifact_tables(full))["report-stages-b2b"]
    assert all(row["Value"].startswith(("$", "-")) for row in table_rows(now))
    forecast = dict(artifact_tables(full))["report-forecast-b2b"]
    assert all(row["Forecast"].startswith("$") for row in table_rows(forecast))


def test_lead_csv_export_lists_the_leads_of_leadflow_leads(engine: Engine, tmp_path: Path) -> None:
    # One filter definition (queries.leads_filtered): the export and the list agree on which
    # leads and in what order, for every filter.
    from leadflow import queries
    from leadflow.reporting.csvexport import EXPORTED_LEAD_COLUMNS, export_leads

    filters: list[dict[str, str]] = [{}, {"pipeline": "b2b"}, {"status": "active"}]
    for kw in [*filters, {"stage": "qualified"}]:
        path = tmp_path / "leads.csv"
        with engine.connect() as conn:
            written = export_leads(conn, path, **kw)
            listed = [r.email for r in queries.list_leads(conn, limit=10_000, **kw)]
        with path.open(encoding="utf-8", newline="") as handle:
            header, *rows = list(csv.reader(handle))
        assert header == list(EXPORTED_LEAD_COLUMNS) and written == len(rows) == len(listed)
        assert [r[0] for r in rows] == listed and listed
