"""Intake's bulk paths give what the row-by-row paths gave.

* ``bulk.insert_columns`` (one prepared INSERT per batch, values converted a column at a time)
  stores exactly what SQLAlchemy's own ``insert()`` stores, on SQLite and PostgreSQL;
* a ``Normalizer`` that remembers what each distinct cell of a column came to normalizes
  every row exactly as a fresh one would, whatever rows came before;
* ``fold_rows``'s shortcuts for an address with one row (new, or holding nothing new) fold
  exactly as the merge rules do.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import database_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select

from leadflow.config.schema import Intake
from leadflow.intake import NormalizedLead, Normalizer, RawRow, normalize
from leadflow.intake.merge import DATA_FIELDS, LeadState, fold_by_rules, fold_rows
from models.bulk import Same, insert_columns
from models.db import open_database
from models.tables import LEADS

NOW = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
NEW_YORK = "America/New_York"
INTAKE = Intake(
    mapping={"E-mail": "email", "Employees": "company_size", "Time Zone": "timezone"},
    attributes={"web_visits": "int", "trial": "bool", "contract_end": "datetime"},
    do_not_email_columns=["do_not_email"],
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = open_database(database_url(tmp_path))
    yield db
    db.dispose()


def lead_values(email: str) -> dict[str, Any]:
    """A lead with a value of every kind: text, accents, int, float, bool, JSON, instants."""
    return {
        "email": email,
        "first_name": "Zoë",
        "last_name": None,
        "company": 'Analytical Engines; "Ltd"',
        "company_size": 1200,
        "deal_value": 12500.5,
        "authority": True,
        "need": "line one\nline two",
        "timezone": NEW_YORK,
        "attributes": {"plan_interest": "enterprise", "web_visits": 12, "tags": ["a", "ü"]},
        "status": "active",
        "round": 0,
        "recycle_count": 0,
        "stuck": False,
        "fit_score": 0.0,
        "engagement_score": 0.0,
        "score": 0.0,
        "created_at": NOW,
        "updated_at": NOW,
        "rescore_at": NOW.astimezone(timezone(timedelta(hours=-5))),  # stored in UTC
        "next_action_at": NOW,
    }


def stored(engine: Engine, email: str) -> dict[str, Any]:
    """The lead's columns as the driver returns them (text, numbers), id and email aside."""
    names = [column.name for column in LEADS.c if column.name not in ("id", "email")]
    quoted = ", ".join(f'"{name}"' for name in names)
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            f"SELECT {quoted} FROM lead WHERE email = %(email)s"
            if engine.dialect.name == "postgresql"
            else f"SELECT {quoted} FROM lead WHERE email = :email",
            {"email": email},
        ).one()
    return dict(zip(names, row, strict=True))


def test_bulk_insert_stores_exactly_what_sqlalchemys_insert_stores(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(LEADS), [lead_values("core@example.com")])
        bulk = lead_values("bulk@example.com")
        columns: dict[str, Any] = {name: [value] for name, value in bulk.items()}
        columns["created_at"] = Same(bulk["created_at"])  # one value for all rows
        written = insert_columns(conn, LEADS, columns)
    assert written == 1
    assert stored(engine, "bulk@example.com") == stored(engine, "core@example.com")


def test_bulk_insert_writes_every_row_of_the_columns(engine: Engine) -> None:
    emails = [f"lead{n}@example.com" for n in range(2500)]
    columns: dict[str, Any] = {name: Same(value) for name, value in lead_values("x").items()}
    columns["email"] = emails
    columns["company_size"] = list(range(2500))
    with engine.begin() as conn:
        assert insert_columns(conn, LEADS, columns) == 2500
    with engine.connect() as conn:
        rows = conn.execute(select(LEADS.c.email, LEADS.c.company_size).order_by(LEADS.c.id))
        assert [tuple(row) for row in rows] == list(zip(emails, range(2500), strict=True))


def test_columns_sqlalchemy_would_add_defaults_to_go_through_its_own_insert(
    engine: Engine,
) -> None:
    """Without status, round... SQLAlchemy adds the columns' defaults: the statement is not
    the columns given, so it runs as ``conn.execute`` (correct, if slower)."""
    with engine.begin() as conn:
        insert_columns(
            conn,
            LEADS,
            {
                "email": ["a@example.com", "b@example.com"],
                "attributes": Same({}),
                "created_at": Same(NOW),
                "updated_at": Same(NOW),
            },
        )
    with engine.connect() as conn:
        rows = conn.execute(select(LEADS.c.email, LEADS.c.status, LEADS.c.round, LEADS.c.stuck))
        assert sorted(tuple(row) for row in rows) == [
            ("a@example.com", "active", 0, False),
            ("b@example.com", "active", 0, False),
        ]


def test_columns_of_different_lengths_are_refused(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="all of one length"):
        insert_columns(conn, LEADS, {"email": ["a@example.com"], "first_name": ["A", "B"]})


# cells chosen so that one column's outcomes differ: values, blanks, errors, warnings
CELLS = {
    "E-mail": ["Ada@Example.COM", "ada@example.com", "bad@", "", ".x@example.com", "b@b.local"],
    "First Name": ["Ada", "  Ada ", "N/A", "=1+1", "Zoe\u0308", ""],
    "Employees": ["1,200", "12", "1,5", "-", "abc", "99999999999999"],
    "Time Zone": [NEW_YORK, "Mars/Olympus", "", "Europe/Berlin"],
    "web_visits": ["3", "three", ""],
    "trial": ["yes", "maybe", "0", ""],
    "contract_end": ["2027-01-31", "31/01/2027", ""],
    "do_not_email": ["yes", "no", "perhaps", ""],
    "updated_at": ["2026-01-01T00:00:00+02:00", "yesterday", ""],
    "first_name": ["Ada", "Grace", ""],
}


@st.composite
def records(draw: st.DrawFn) -> dict[str, str | None]:
    names = draw(st.lists(st.sampled_from(sorted(CELLS)), min_size=1, max_size=6, unique=True))
    return {name: draw(st.sampled_from([*CELLS[name], None])) for name in names}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(records(), min_size=1, max_size=25))
def test_a_normalizer_normalizes_each_row_as_a_fresh_one_would(
    rows: list[dict[str, str | None]],
) -> None:
    shared = Normalizer(INTAKE, default_timezone=NEW_YORK)
    for number, record in enumerate(rows, start=1):
        raw = RawRow(number, record)
        assert shared.normalize(raw) == normalize(raw, INTAKE, default_timezone=NEW_YORK)


# few values per field, so that stored and incoming values often coincide
FIELD_VALUES: dict[str, list[Any]] = {
    "first_name": ["Ada", "Grace", " ", None],
    "company_size": [12, 1200, None],
    "deal_value": [12.0, 12, None],  # 12.0 is not 12: another type is another value
    "authority": [True, False, 1, None],
    "timezone": [NEW_YORK, "Europe/Berlin", None],
    "source": ["import", "web", None],
}
ATTRIBUTE_VALUES: list[Any] = ["team", "enterprise", 3, "3", True]


@st.composite
def stored_leads(draw: st.DrawFn) -> LeadState | None:
    if draw(st.booleans()):
        return None
    values = dict.fromkeys(DATA_FIELDS)
    values.update({name: draw(st.sampled_from(pool)) for name, pool in FIELD_VALUES.items()})
    attributes = draw(
        st.dictionaries(st.sampled_from(["plan", "visits"]), st.sampled_from(ATTRIBUTE_VALUES))
    )
    return LeadState(1, values, attributes, "active", NOW, NOW, NOW)


@st.composite
def incoming_rows(draw: st.DrawFn) -> NormalizedLead:
    fields = draw(
        st.fixed_dictionaries(
            {},
            optional={
                name: st.sampled_from([v for v in pool if v is not None])
                for name, pool in FIELD_VALUES.items()
            },
        )
    )
    defaults = frozenset(draw(st.sets(st.sampled_from(sorted(fields) or ["source"]))))
    attributes = draw(
        st.dictionaries(st.sampled_from(["plan", "visits"]), st.sampled_from(ATTRIBUTE_VALUES))
    )
    stamped = draw(st.sampled_from([None, NOW - timedelta(days=1), NOW, NOW + timedelta(days=1)]))
    return NormalizedLead(
        "a@example.com", fields, attributes, False, [], 1, defaults & set(fields), stamped
    )


@settings(max_examples=400, deadline=None)
@given(stored_leads(), incoming_rows())
def test_one_rows_fold_is_the_merge_rules_fold(
    state: LeadState | None, lead: NormalizedLead
) -> None:
    assert fold_rows(state, [lead]) == fold_by_rules(state, [lead])
