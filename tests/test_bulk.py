"""``models.bulk.execute_many`` stores exactly what ``conn.execute(statement, rows)`` stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, insert, literal, select, update
from sqlmodel import SQLModel

from models import bulk
from models.bulk import execute_many
from models.db import make_engine
from models.tables import LEADS, LeadStatus

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
EAST = timezone(timedelta(hours=5, minutes=30))


def _database(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine)
    return engine


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(300):
        rows.append(
            {
                "email": f"p{i}@example.com",
                "status": LeadStatus.ACTIVE if i % 2 else LeadStatus.CALLBACK,
                "stuck": i % 3 == 0,
                "round": i % 4,
                "score": i / 7,
                "company": None if i % 5 else f"Acme {i}\r\n'; DROP TABLE lead; --",
                # the same instant written in two zones, a microsecond, and none at all
                "stage_entered_at": (T0 + timedelta(minutes=i % 3)).astimezone(EAST)
                if i % 2
                else T0 + timedelta(minutes=i % 3),
                "won_at": None if i % 4 else T0 + timedelta(microseconds=i),
                # JSON: True and 1 are equal in Python but not in JSON
                "attributes": {"flag": True} if i % 2 else {"flag": 1, "list": [i]},
                "created_at": T0,
                "updated_at": T0,
            }
        )
    return rows


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT * FROM lead ORDER BY id").all())


def test_bulk_insert_and_update_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    plain, fast = _database(tmp_path / "plain.db"), _database(tmp_path / "fast.db")
    rows = _rows()
    changes = [
        {
            "b_id": i + 1,
            "stage": f"s{i % 3}",
            "next_action_at": T0 + timedelta(days=i % 2),
            "updated_at": T0 + timedelta(hours=1),
        }
        for i in range(0, 300, 2)
    ]
    statement = (
        update(LEADS)
        .where(LEADS.c.id == bindparam("b_id"))
        .values({k: bindparam(k) for k in ("stage", "next_action_at", "updated_at")})
    )
    with plain.begin() as conn:
        conn.execute(insert(LEADS), rows)
        updated_plain = conn.execute(statement, changes).rowcount
    with fast.begin() as conn:
        inserted = execute_many(conn, insert(LEADS), rows, key="test.insert")
        updated = execute_many(conn, statement, changes, key="test.update")
    assert (inserted, updated, updated_plain) == (300, 150, 150)
    prepared = bulk._CACHE[fast.dialect]  # the fast path was taken, not conn.execute
    assert prepared[("test.insert", tuple(rows[0]))] is not None
    assert prepared[("test.update", tuple(changes[0]))] is not None
    assert _stored(fast) == _stored(plain)
    # a second call with the same key reuses the prepared statement and stays exact
    with fast.begin() as conn:
        again = [{**r, "email": "again-" + r["email"]} for r in rows[:10]]
        assert execute_many(conn, insert(LEADS), again, key="test.insert") == 10
    with plain.begin() as conn:
        conn.execute(insert(LEADS), [{**r, "email": "again-" + r["email"]} for r in rows[:10]])
    assert _stored(fast) == _stored(plain)


def test_bulk_with_no_rows_does_nothing(tmp_path: Path) -> None:
    engine = _database(tmp_path / "empty.db")
    with engine.begin() as conn:
        assert execute_many(conn, insert(LEADS), [], key="test.empty") == 0
    assert _stored(engine) == []


def test_a_value_bound_into_the_statement_is_never_reused_by_a_later_call(tmp_path: Path) -> None:
    """``literal(now)`` differs per call under one key: each call stores its own value."""
    engine = _database(tmp_path / "literal.db")
    with engine.begin() as conn:
        conn.execute(insert(LEADS), _rows()[:4])
    for day in (1, 2):
        stamp = T0 + timedelta(days=day)
        statement = (
            update(LEADS)
            .where(LEADS.c.id == bindparam("b_id"))
            .values(stage=bindparam("stage"), updated_at=literal(stamp, LEADS.c.updated_at.type))
        )
        with engine.begin() as conn:
            rows = [{"b_id": 1, "stage": f"day{day}"}, {"b_id": 2, "stage": f"day{day}"}]
            assert execute_many(conn, statement, rows, key="test.literal") == 2
        with engine.connect() as conn:
            stored = conn.execute(select(LEADS.c.updated_at).where(LEADS.c.id <= 2)).scalars()
            assert set(stored) == {stamp}
