"""Schema migrations: an existing database reaches the newest schema with its data carried over.

Runs on SQLite, and on PostgreSQL when LEADFLOW_TEST_DATABASE_URL names a server (each test
then gets an empty database of its own).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import T0, LeadFactory, move_by_hand
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime

from leadflow.mail.transport import MemoryTransport
from leadflow.pipeline import engine as ticks
from leadflow.runtime import Runtime
from models.db import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    head_revision,
    open_database,
)
from models.tables import TRANSITIONS

DAY = timedelta(days=1)
MIGRATION_0002 = MIGRATIONS_DIR / "versions" / "0002_transition_stay.py"


@pytest.fixture
def empty_url(tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: a SQLite file, or a new PostgreSQL database."""
    server = os.environ.get("LEADFLOW_TEST_DATABASE_URL")
    if not server:
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    base = make_url(server)
    name = "m_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# The 0001 shape of the two tables, so rows can be written before the upgrade.
LEAD_0001 = sa.table(
    "lead",
    *[sa.column(c) for c in ("id", "email", "status", "pipeline", "stage", "round")],
    *[sa.column(c) for c in ("recycle_count", "stuck", "fit_score", "engagement_score", "score")],
    sa.column("attributes", sa.JSON()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
TRANSITION_0001 = sa.table(
    "stage_transition",
    *[sa.column(c) for c in ("id", "lead_id", "pipeline", "from_stage", "to_stage", "kind")],
    *[sa.column(c) for c in ("reason", "actor")],
    sa.column("at", UTCDateTime()),
)


def _lead(lead_id: int) -> dict[str, Any]:
    return {
        "id": lead_id,
        "email": f"m{lead_id}@example.com",
        "status": "active",
        "pipeline": "b2b",
        "stage": "prospect",
        "round": 0,
        "recycle_count": 0,
        "stuck": False,
        "fit_score": 0.0,
        "engagement_score": 0.0,
        "score": 0.0,
        "attributes": {},
        "created_at": T0,
        "updated_at": T0,
    }


def _move(row_id: int, lead_id: int, from_stage: str | None, to: str | None, at: datetime) -> Any:
    return {
        "id": row_id,
        "lead_id": lead_id,
        "pipeline": "b2b",
        "from_stage": from_stage,
        "to_stage": to,
        "kind": "rule",
        "reason": "",
        "actor": "engine",
        "at": at,
    }


def _stay_starts(db: sa.Engine) -> list[tuple[int, datetime | None]]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(TRANSITIONS.c.id, TRANSITIONS.c.from_entered_at).order_by(TRANSITIONS.c.id)
        )
        return [(int(r[0]), r[1]) for r in rows]


def test_open_database_upgrades_a_0001_database_and_backfills_stay_starts(
    empty_url: str,
) -> None:
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0001")
    old = sa.create_engine(empty_url)
    with old.begin() as conn:
        conn.execute(sa.insert(LEAD_0001), [_lead(1), _lead(2)])
        conn.execute(
            sa.insert(TRANSITION_0001),
            [
                _move(1, 1, None, "lead", T0),  # intake: no stay before it
                _move(2, 2, None, "lead", T0 + DAY),  # another lead, in between
                _move(3, 1, "lead", "prospect", T0 + 3 * DAY),  # left 'lead', entered at T0
            ],
        )
    old.dispose()

    db = open_database(empty_url)
    try:
        assert current_revision(db) == head_revision() == "0008"
        assert _stay_starts(db) == [(1, None), (2, None), (3, T0)]
    finally:
        db.dispose()


def test_backfill_takes_the_previous_move_in_replay_order(empty_url: str) -> None:
    """Previous means by ``at`` then ``id``: rows written out of order and two moves at one
    instant; a revival from the callback list left no stage and keeps NULL."""
    command.upgrade(alembic_config(empty_url), "0001")
    old = sa.create_engine(empty_url)
    with old.begin() as conn:
        conn.execute(sa.insert(LEAD_0001), [_lead(1)])
        conn.execute(
            sa.insert(TRANSITION_0001),
            [
                _move(1, 1, "prospect", "qualified", T0 + 2 * DAY),  # written before its past
                _move(2, 1, None, "lead", T0),
                _move(3, 1, "lead", "prospect", T0 + DAY),
                _move(4, 1, "qualified", None, T0 + 5 * DAY),  # recycled
                _move(5, 1, None, "prospect", T0 + 50 * DAY),  # revived
                _move(6, 1, "prospect", "qualified", T0 + 50 * DAY),  # moved at the same instant
            ],
        )
    old.dispose()
    db = open_database(empty_url)
    try:
        assert _stay_starts(db) == [
            (1, T0 + DAY),
            (2, None),
            (3, T0),
            (4, T0 + 2 * DAY),
            (5, None),
            (6, T0 + 50 * DAY),
        ]
    finally:
        db.dispose()


# SQLite cannot reflect expression indexes, so the comparison skips ix_transition_stay_days
# there (with these two warnings); the next test compares it instead.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_fresh_database_reaches_head_and_matches_the_models(empty_url: str) -> None:
    db = open_database(empty_url)
    try:
        assert current_revision(db) == head_revision()
        with db.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
    finally:
        db.dispose()


def test_stay_order_index_is_the_one_the_models_declare(empty_url: str) -> None:
    """Migration 0004 writes the expression out per database; it must be the models' own
    (``stay_order``), or the report's time-in-stage queries no longer match the index."""
    db = open_database(empty_url)
    try:
        index = next(i for i in TRANSITIONS.indexes if i.name == "ix_transition_stay_days")
        declared = str(CreateIndex(index).compile(dialect=db.dialect))
        with db.connect() as conn:
            if db.dialect.name == "sqlite":
                stored = conn.execute(
                    sa.text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": index.name}
                ).scalar_one()
            else:
                stored = conn.execute(
                    sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                    {"n": index.name},
                ).scalar_one()
        assert _words(stored) == _words(declared)
    finally:
        db.dispose()


def _words(ddl: str) -> str:
    """DDL without the spelling that differs between what was sent and what is stored."""
    text = re.sub(r"\bpublic\.|\bUSING btree\b|[()\s]", "", ddl)
    return text.replace("::timestampwithtimezone", "").lower()


def test_stage_engine_writes_what_the_backfill_would(rt: Runtime, add_lead: LeadFactory) -> None:
    """Intake, manual moves, an SLA recycle and the revival: each row's ``from_entered_at`` is
    when the lead entered ``from_stage``, the same value the migration derives from history."""
    memory = MemoryTransport()
    lead_id = add_lead(company="Acme", title="VP Sales", company_size=200)
    ticks.tick(rt, now=T0, transport=lambda: memory)
    move_by_hand(rt, lead_id, "qualified", reason="call", now=T0 + DAY)
    ticks.tick(rt, now=T0 + 23 * DAY, transport=lambda: memory)  # qualified: SLA 21 days
    ticks.tick(rt, now=T0 + 70 * DAY, transport=lambda: memory)  # the callback is due
    move_by_hand(rt, lead_id, "meeting", reason="call", now=T0 + 71 * DAY)
    written = _history(rt.engine, lead_id)
    assert [row[:4] for row in written] == [
        ("intake", None, "lead", T0),
        ("manual", "lead", "qualified", T0 + DAY),
        ("recycle", "qualified", None, T0 + 23 * DAY),
        ("revive", None, "prospect", T0 + 70 * DAY),
        ("manual", "prospect", "meeting", T0 + 71 * DAY),
    ]
    entered = [None, T0, T0 + DAY, None, T0 + 70 * DAY]
    assert [row[4] for row in written] == entered
    upgrade = _backfill_sql()
    with rt.engine.begin() as conn:
        conn.execute(sa.update(TRANSITIONS).values(from_entered_at=None))
        conn.execute(sa.text(upgrade))
    assert [row[4] for row in _history(rt.engine, lead_id)] == entered


def _history(db: sa.Engine, lead_id: int) -> list[tuple[Any, ...]]:
    t = TRANSITIONS
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.kind, t.c.from_stage, t.c.to_stage, t.c.at, t.c.from_entered_at)
            .where(t.c.lead_id == lead_id)
            .order_by(t.c.at, t.c.id)
        )
        return [tuple(r) for r in rows]


def _backfill_sql() -> str:
    spec = importlib.util.spec_from_file_location("migration_0002", MIGRATION_0002)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.BACKFILL)
