"""The record each run leaves: which config version ran at which instant, and what it did
(``leadflow status`` and the "config changed since the last run" test read it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from leadflow.runtime import Runtime
from leadflow.timeutil import utcnow
from models.db import session_scope
from models.tables import RUNS, RunRecord


def record_run(rt: Runtime, kind: str, *, now: datetime, summary: dict[str, Any]) -> None:
    """Keep which config version ran at which instant, and what it did."""
    with session_scope(rt.engine) as session:
        session.add(
            RunRecord(
                kind=kind,
                now=now,
                started_at=utcnow(),
                finished_at=utcnow(),
                config_hash=rt.config_hash,
                summary=_jsonable(summary),
            )
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def last_config_hash(rt: Runtime) -> str | None:
    with rt.engine.connect() as conn:
        return conn.execute(
            select(RUNS.c.config_hash).order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc())
        ).scalar()
