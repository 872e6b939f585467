"""Shared helpers for the engine benchmarks: big synthetic databases, fast, and measured phases.

The schema comes from ``open_database`` (the real migrations); the rows come from
``INSERT ... SELECT`` over a recursive CTE in raw ``sqlite3``, with the secondary indexes
dropped during the load and rebuilt after it, so a million leads take seconds, not minutes.
Timestamps are written in the exact text form SQLAlchemy's ``UTCDateTime`` stores on SQLite
(``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC), so the engine compares them correctly.

Each measured phase runs in a child process (``run_phase``): its peak memory
(``ru_maxrss``) is then its own, not the parent's or an earlier phase's.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from models.db import open_database

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"
STAGES = ("lead", "prospect", "qualified", "meeting", "proposal", "negotiation", "won")

# Synthetic lead ``i`` and event ``j`` in SQL that SQLite and PostgreSQL both run, shared by
# ``build_database`` and ``bench_scaling.seed_leads`` so both databases hold the same rows.
LEAD_COLUMNS = """
    id, email, first_name, last_name, company, title, industry, company_size, country,
    timezone, source, budget, authority, need, timeline_days, attributes, status, pipeline,
    stage, stage_entered_at, round, recycle_count, stuck, fit_score, engagement_score, score,
    grade, rescore_at, next_action_at, created_at, updated_at
"""
LEAD_PROFILE = """
    'lead' || i || '@d' || (i % 5000) || '.example', 'Lead' || i, 'Example',
    'Company ' || (i % 997),
    CASE i % 5 WHEN 0 THEN 'VP Sales' WHEN 1 THEN 'Engineering Manager'
        WHEN 2 THEN 'CTO' WHEN 3 THEN 'Analyst' ELSE 'Head of Data' END,
    CASE i % 6 WHEN 0 THEN 'saas' WHEN 1 THEN 'fintech' WHEN 2 THEN 'healthcare'
        WHEN 3 THEN 'retail' WHEN 4 THEN 'media' ELSE NULL END,
    (i * 37) % 3000,
    CASE i % 4 WHEN 0 THEN 'US' WHEN 1 THEN 'DE' WHEN 2 THEN 'BR' ELSE 'CA' END,
    'America/New_York', 'import',
    CASE WHEN i % 3 = 0 THEN 20000.0 END, i % 2 = 1,
    CASE WHEN i % 4 = 0 THEN 'reporting' END, i % 180
"""  # email .. timeline_days
LEAD_ATTRIBUTES = """CASE WHEN i % 10 = 0 THEN '{"plan_interest": "enterprise"}' ELSE '{}' END"""
EVENT_TYPE = """
    CASE j % 6 WHEN 0 THEN 'email_opened' WHEN 1 THEN 'email_clicked'
        WHEN 2 THEN 'web_visit' WHEN 3 THEN 'form_filled'
        WHEN 4 THEN 'email_opened' ELSE 'proposal_sent' END
"""


def sql_time(at: datetime) -> str:
    """``at`` (aware) as SQLAlchemy's UTCDateTime stores it on SQLite."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class Population:
    """What to put in the database. Lead ``i`` (1-based) is due when ``i % due_every == 0``."""

    leads: int
    now: datetime
    due_every: int = 1
    events_per_lead: int = 2
    idle_stage_mix: bool = False  # spread the leads that are not due over the pipeline


def _indexes(conn: sqlite3.Connection, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    marks = ", ".join("?" for _ in tables)
    rows = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks})",
        tables,
    ).fetchall()
    return [(str(name), str(sql)) for name, sql in rows]


def build_database(path: Path, population: Population) -> float:
    """Create ``path`` with the real schema and ``population``; returns the seconds it took."""
    started = time.perf_counter()
    if path.exists():
        path.unlink()
    open_database(sqlite_url(path)).dispose()  # migrations: the schema the engine expects
    now = population.now
    due_at = sql_time(now - timedelta(hours=1))
    created = sql_time(now - timedelta(days=30))
    later = now + timedelta(days=3)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-200000")
        conn.execute("PRAGMA foreign_keys=OFF")
        indexes = _indexes(conn, ("lead", "event"))
        conn.execute("BEGIN")
        for name, _sql in indexes:
            conn.execute(f"DROP INDEX {name}")
        stage_of = (
            "CASE WHEN i % :due = 0 THEN 'lead' ELSE "
            + "CASE (i / :due) % 7 "
            + " ".join(f"WHEN {n} THEN '{s}'" for n, s in enumerate(STAGES))
            + " END END"
            if population.idle_stage_mix
            else "'lead'"
        )
        conn.execute(
            f"""
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n)
            INSERT INTO lead ({LEAD_COLUMNS})
            SELECT
                i, {LEAD_PROFILE}, {LEAD_ATTRIBUTES},
                'active', 'b2b', {stage_of}, :created, 0, 0, 0,
                0.0, 0.0, 0.0, NULL,
                CASE WHEN i % :due = 0 THEN :due_at END,
                CASE WHEN i % :due = 0 THEN :due_at ELSE :later END,
                :created, :created
            FROM seq
            """,
            {
                "n": population.leads,
                "due": population.due_every,
                "due_at": due_at,
                "created": created,
                "later": sql_time(later),
            },
        )
        events = population.leads * population.events_per_lead
        if events:
            conn.execute(
                f"""
                WITH RECURSIVE seq(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM seq WHERE j < :m)
                INSERT INTO event (lead_id, type, occurred_at, data)
                SELECT
                    (j % :n) + 1,
                    {EVENT_TYPE},
                    strftime('%Y-%m-%d %H:%M:%S', :now, '-' || ((j * 7919) % 4800) || ' hours')
                        || '.000000',
                    '{{}}'
                FROM seq
                """,
                {"m": events - 1, "n": population.leads, "now": sql_time(now)[:19]},
            )
        for _name, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def copy_database(source: Path, target: Path) -> None:
    """A private copy for a phase that changes data (the WAL was checkpointed at build)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)


def rss_mib() -> float:
    """Resident set size of this process right now, in MiB (Linux)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS mark (VmHWM) from the current RSS (Linux >= 4.0).

    Without it a phase's peak would include whatever imports and config loading peaked at.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak RSS since the last ``reset_peak_rss`` (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], out: Any) -> None:
    result = fn(*args)
    result.setdefault("peak_rss_mib", round(peak_rss_mib(), 1))
    out.send(json.dumps(result))
    out.close()


def run_phase(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh child process; its result plus the child's peak RSS."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(fn, args, sender))
    process.start()
    sender.close()
    try:
        result: dict[str, Any] = json.loads(receiver.recv())
    except EOFError:
        process.join()
        raise RuntimeError(f"phase {fn.__name__} died (exit {process.exitcode})") from None
    process.join()
    return result


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: ...``; ``elapsed()`` is the seconds since entry."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 2) if baseline > 0 else float("inf")


@contextmanager
def temporary_prefect() -> Iterator[Path]:
    """A Prefect home of our own (its server started by the first flow run, on a temporary
    database) for benchmarks that run flows. Set before ``flows`` (and prefect) is imported."""
    import tempfile

    keys = (
        "PREFECT_API_URL",
        "PREFECT_HOME",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
        "PREFECT_LOGGING_LEVEL",
    )
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-prefect-") as home:
        os.environ.pop("PREFECT_API_URL", None)
        os.environ["PREFECT_HOME"] = home
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        try:
            yield Path(home)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
