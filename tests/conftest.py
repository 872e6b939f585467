"""Shared fixtures. Prefect is pointed at a throwaway home before anything imports it."""

from __future__ import annotations

import os
import tempfile

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="leadflow-test-prefect-")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
for _key in [
    k for k in os.environ if k.startswith("LEADFLOW_") and not k.startswith("LEADFLOW_TEST_")
]:
    del os.environ[_key]

import shutil  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from seeding import intake_lead  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from leadflow.config import LoadedConfig, load_config  # noqa: E402
from leadflow.pipeline import stages  # noqa: E402
from leadflow.pipeline.moves import AdvanceOutcome  # noqa: E402
from leadflow.runtime import Runtime  # noqa: E402
from leadflow.settings import Settings  # noqa: E402
from models.db import make_engine, open_database, session_scope  # noqa: E402
from models.tables import Lead  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"
T0 = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)  # a Tuesday, 09:30 in New York


_PG_TEMPLATE = "leadflow_template"
_pg_template_ready = False


def database_url(tmp_path: Path) -> str:
    """A fresh database per test: SQLite in tmp_path, or — when LEADFLOW_TEST_DATABASE_URL
    names a PostgreSQL server — a new database cloned from a migrated template."""
    server = os.environ.get("LEADFLOW_TEST_DATABASE_URL")
    if not server:
        return f"sqlite:///{tmp_path / 'test.db'}"
    return _fresh_postgres_database(server, tmp_path)


def _fresh_postgres_database(server: str, tmp_path: Path) -> str:
    import hashlib

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from models.db import open_database

    global _pg_template_ready
    base = make_url(server)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not _pg_template_ready:
                conn.execute(text(f"DROP DATABASE IF EXISTS {_PG_TEMPLATE}"))
                conn.execute(text(f"CREATE DATABASE {_PG_TEMPLATE}"))
                template = open_database(base.set(database=_PG_TEMPLATE).render_as_string(False))
                template.dispose()
                _pg_template_ready = True
            name = "t_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {_PG_TEMPLATE}"))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=database_url(tmp_path),
        config=DEFAULT_CONFIG,
        templates=TEMPLATES,
        inbox=tmp_path / "inbox",
        demo=True,
        smtp_port=1,
    )


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


# --- a fast Runtime: the config validated once per module, a copied blank database ----------


@pytest.fixture(scope="module")
def loaded() -> LoadedConfig:
    """Validated once per module: validation (templates included) is the slow part of Runtime."""
    return load_config(DEFAULT_CONFIG, templates=TEMPLATES)


@pytest.fixture(scope="module")
def blank_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file: copying it is much cheaper than migrating per test."""
    path = tmp_path_factory.mktemp("blank") / "blank.db"
    open_database(f"sqlite:///{path}").dispose()
    return path


@contextmanager
def fresh_engine(blank: Path, folder: Path, url: str) -> Iterator[Engine]:
    """An empty, migrated database: a copy of ``blank`` on SQLite; on PostgreSQL the test's own
    database (``url``, cloned from a migrated template by ``database_url``), emptied."""
    if url.startswith("postgresql"):
        db = open_database(url)
        _empty(db)
    else:
        path = folder / "test.db"
        shutil.copyfile(blank, path)
        db = make_engine(f"sqlite:///{path}")
    try:
        yield db
    finally:
        db.dispose()


def _empty(db: Engine) -> None:
    names = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
    with db.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture
def quick_rt(
    settings: Settings, loaded: LoadedConfig, blank_database: Path, tmp_path: Path
) -> Iterator[Runtime]:
    """Like ``rt``, without validating the config and migrating a database for each test."""
    with fresh_engine(blank_database, tmp_path, settings.db_url) as db:
        yield Runtime(settings=settings, loaded=loaded, engine=db)


LeadFactory = Callable[..., int]
Cli = Callable[..., tuple[int, str, str]]


def run_leadflow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``leadflow ARGS...`` in this process, as the console script runs it: (exit code,
    stdout, stderr)."""
    from leadflow.app.cli import main

    monkeypatch.setattr(sys, "argv", ["leadflow", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """The settings every CLI test starts from: the shipped config and templates, demo mode."""
    monkeypatch.setenv("LEADFLOW_HOME", str(home))
    monkeypatch.setenv("LEADFLOW_CONFIG", str(DEFAULT_CONFIG))
    monkeypatch.setenv("LEADFLOW_TEMPLATES", str(TEMPLATES))
    monkeypatch.setenv("LEADFLOW_DEMO", "true")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The command line over a fresh database of this test's own."""
    cli_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", database_url(tmp_path))
    return lambda *args: run_leadflow(monkeypatch, capsys, *args)


@pytest.fixture
def add_lead(rt: Runtime) -> LeadFactory:
    """Insert one lead as intake would (due for scoring and the stage engine at ``now``)."""
    counter = {"n": 0}

    def make(now: datetime = T0, **fields: Any) -> int:
        counter["n"] += 1
        return insert_lead(
            rt.engine, intake_lead(f"lead{counter['n']}@example.com", now=now, **fields)
        )

    return make


def insert_lead(engine: Engine, values: dict[str, Any]) -> int:
    """One lead through the ORM, so the model's defaults fill what ``values`` leaves out; its id."""
    with session_scope(engine) as session:
        lead = Lead(**values)
        session.add(lead)
        session.flush()
        assert lead.id is not None
        return lead.id


def move_by_hand(
    rt: Runtime, lead_id: int, stage: str, *, reason: str, now: datetime, actor: str | None = None
) -> AdvanceOutcome:
    """``stages.manual_move`` in a transaction of its own, as a person's move through the CLI."""
    with session_scope(rt.engine) as session:
        return stages.manual_move(
            session.connection(), rt, lead_id, stage, reason=reason, now=now, actor=actor
        )


def run_in_threads(target: Callable[[], object], count: int) -> None:
    """``target`` in ``count`` threads started together, then joined: the races tests stage."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session (starting one costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


# --- the real IMAP server (scripts/with-dovecot): a fresh folder per test -------------------

from imap_server import imap_folder_fixture  # noqa: E402

imap_folder = imap_folder_fixture()
