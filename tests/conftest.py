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
    k for k in os.environ if k.startswith("LEADFLOW_") and k != "LEADFLOW_TEST_DATABASE_URL"
]:
    del os.environ[_key]

from collections.abc import Callable, Iterator  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from leadflow.runtime import Runtime  # noqa: E402
from leadflow.settings import Settings  # noqa: E402
from models.db import session_scope  # noqa: E402
from models.tables import Lead  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"
T0 = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)  # a Tuesday, 09:30 in New York


def database_url(tmp_path: Path) -> str:
    """SQLite in tmp_path, or the PostgreSQL server named by LEADFLOW_TEST_DATABASE_URL."""
    return os.environ.get("LEADFLOW_TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'test.db'}"


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
    _truncate_if_shared(runtime)
    yield runtime
    runtime.close()


def _truncate_if_shared(runtime: Runtime) -> None:
    """On a shared PostgreSQL test database every test starts from empty tables."""
    if runtime.engine.dialect.name != "postgresql":
        return
    from sqlmodel import SQLModel

    with runtime.engine.begin() as conn:
        names = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


LeadFactory = Callable[..., int]


@pytest.fixture
def add_lead(rt: Runtime) -> LeadFactory:
    """Insert one lead as intake would (due for scoring and the stage engine at ``now``)."""
    counter = {"n": 0}

    def make(now: datetime = T0, **fields: Any) -> int:
        counter["n"] += 1
        values: dict[str, Any] = {
            "email": f"lead{counter['n']}@example.com",
            "first_name": "Ada",
            "timezone": "America/New_York",
            "created_at": now,
            "updated_at": now,
            "rescore_at": now,
            "next_action_at": now,
        }
        values.update(fields)
        with session_scope(rt.engine) as session:
            lead = Lead(**values)
            session.add(lead)
            session.flush()
            assert lead.id is not None
            return lead.id

    return make


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session (starting one costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
