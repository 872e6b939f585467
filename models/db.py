"""Engines, sessions and schema migrations.

Timestamp columns use SQLModel's ``UTCDateTime``: the code works with aware UTC datetimes only,
and SQLite (naive storage) and PostgreSQL (timestamptz) behave the same.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlmodel import Session, create_engine

from models.bulk import execute_many

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    try:
        cursor.execute("SELECT exp(0)")
    except Exception:  # SQLite built without math functions: provide the ones we use
        dbapi_connection.create_function("exp", 1, math.exp, deterministic=True)
    cursor.close()


WRITE = {"leadflow_write": True}  # execution option: this transaction will write


def _begin(conn: Connection) -> None:
    """Writers start with BEGIN IMMEDIATE (take the write lock first); readers plain BEGIN."""
    immediate = conn.get_execution_options().get("leadflow_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class DatabaseUnavailable(Exception):
    """The database cannot be opened; the message is one line that says what to do."""


SUPPORTED = ("sqlite", "postgresql")


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite (with WAL and a busy timeout) or PostgreSQL.

    A SQLite file's folder must exist: a typo in a path must not quietly start an empty
    database somewhere else (the default location under LEADFLOW_HOME is created by the
    settings' owner, see ``Runtime.open``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(
            f"LEADFLOW_DATABASE_URL {url!r} is not a database URL "
            "(sqlite:///path/leadflow.db or postgresql+psycopg://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise DatabaseUnavailable(
            f"LEADFLOW_DATABASE_URL: '{backend}' is not supported; use SQLite or PostgreSQL"
        )
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _check_sqlite_file(Path(parsed.database))
        # The driver's own transaction handling is off so that write transactions can start
        # with BEGIN IMMEDIATE: a batch reads then writes, and a deferred transaction that must
        # upgrade its lock after another writer committed fails at once instead of waiting
        # for the busy timeout. Taking the write lock up front makes writers queue politely.
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _check_sqlite_file(path: Path) -> None:
    if not path.parent.is_dir():
        raise DatabaseUnavailable(
            f"{path}: the folder {path.parent} does not exist (check LEADFLOW_DATABASE_URL, "
            "or create the folder)"
        )
    if path.is_dir():
        raise DatabaseUnavailable(f"{path} is a folder, not a database file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseUnavailable(f"{path} is not readable and writable by this user")


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(engine: Engine) -> bool:
    """Bring the schema to the newest migration; returns True when something was applied."""
    if current_revision(engine) == head_revision():
        return False
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True


def open_database(url: str, *, migrate: bool = True) -> Engine:
    """The engine, with migrations applied automatically; ``DatabaseUnavailable`` with one
    line when the database cannot be reached or is not a database."""
    engine = make_engine(url)
    try:
        if migrate:
            upgrade(engine)
        else:
            with engine.connect():
                pass
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        raise DatabaseUnavailable(f"{_safe(engine)}: {_reason(exc)}") from None
    return engine


def _safe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _reason(exc: DBAPIError) -> str:
    """The driver's own first line ("file is not a database", "connection refused")."""
    text = str(exc.orig) if exc.orig is not None else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with Session(engine.execution_options(**WRITE), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """``INSERT ... ON CONFLICT DO NOTHING``: the idempotent insert, on SQLite and PostgreSQL.

    Returns how many rows were actually inserted.
    """
    if not rows:
        return 0
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = module.insert(table).on_conflict_do_nothing()
    return execute_many(conn, statement, rows, key=("insert_ignore", table.name))
