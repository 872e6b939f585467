"""Benchmark ``build_report`` on a large database against one raw aggregate query.

    python -m benchmarks.bench_report [--leads N] [--transitions M] [--db PATH]
                                      [--postgres [--database-url URL]]

The database gets the application's schema (Alembic migrations), then is filled with
``INSERT ... SELECT`` from recursive CTEs (secondary indexes are dropped during the load and
rebuilt after, as a bulk import would). Each lead has ``M // N`` transitions through the
configured B2B pipeline, one outbox message and one event. The baseline, timed in the same
run, is ``SELECT to_stage, count(*) FROM stage_transition GROUP BY to_stage``. Output: one
JSON line, then one line for people. Wall times are what a user waits; CPU times (SQLite runs
in-process) are steadier on a shared machine; per-function times show which query dominates.

``--postgres`` then fills PostgreSQL with the same rows (``report_postgres``: the same
timestamps; ``VACUUM ANALYZE`` after the load, so index-only scans and plans are what a
settled database gets) and measures it the same way, CPU being this process's plus the
whole server's (backend and parallel workers, read from /proc, so the server must run on this
machine; its background processes count too). The server is
``--database-url``, else ``LEADFLOW_TEST_DATABASE_URL``, else a throwaway one started by
``scripts/with-postgres``. A last line prints both side by side.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Index

from benchmarks.bench_scaling import postgres_cpu_s
from leadflow.config import load_config
from leadflow.reporting import flow, messaging, outcomes, sales, snapshot
from leadflow.reporting.build import build_report
from models.db import make_engine, open_database
from models.tables import EVENTS, LEADS, OUTBOX, TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
UNTIL = datetime(2026, 4, 1, tzinfo=UTC)
BASE = "2025-01-01"
STAMP = "'%Y-%m-%d %H:%M:%S.000000'"  # SQLAlchemy's SQLite storage format for UTCDateTime
TABLES = {
    "leads": "lead",
    "transitions": "stage_transition",
    "messages": "outbound_message",
    "events": "event",
}
BASELINE = "SELECT to_stage, count(*) FROM stage_transition GROUP BY to_stage"
OPEN_STAGES = ("lead", "prospect", "qualified", "meeting", "proposal", "negotiation")

# Lead i: created within 450 days of BASE; outcome by i % 10: 0 won, 1 lost, 2 recycled at
# step 2 (and revived into the next stage), else still open. Step s happens s * (1 + i % 7)
# days after creation.
CREATED = f"julianday('{BASE}') + ((i * 37) % 450) + (i % 24) / 24.0"


def _stage(step: str, last: str) -> str:
    """SQL for the stage entered at ``step`` (the lead's id is ``i``)."""
    walk = " ".join(f"WHEN {n} THEN '{s}'" for n, s in enumerate(OPEN_STAGES))
    return (
        f"CASE WHEN {step} = {last} AND i % 10 = 0 THEN 'won' "
        f"WHEN {step} = {last} AND i % 10 = 1 THEN 'lost' "
        f"WHEN {step} = 2 AND i % 10 = 2 THEN NULL "
        f"ELSE CASE min({step}, {len(OPEN_STAGES) - 1}) {walk} END END"
    )


def _entered(step: str) -> str:
    """SQL for the julian day the lead (``i``) entered the stage of ``step``."""
    return f"{CREATED} + {step} * (1 + i % 7) + {step} / 24.0"


def _stamp(julian: str) -> str:
    return f"strftime({STAMP}, {julian})"


def fill(path: Path, leads: int, transitions: int) -> dict[str, int]:
    per = max(1, transitions // leads)
    total = min(transitions, leads * per)
    last = per - 1
    moved = f"{CREATED} + {last} * (1 + i % 7)"
    seq = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?) "
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(
        seq + "INSERT INTO lead (id, email, company, source, deal_value, attributes, status, "
        "pipeline, stage, stage_entered_at, round, recycle_count, stuck, fit_score, "
        "engagement_score, score, won_at, closed_at, created_at, updated_at) "
        "SELECT i, 'lead' || i || '@bench.test', 'Company ' || (i % 5000), "
        "CASE i % 4 WHEN 0 THEN 'web' WHEN 1 THEN 'referral' WHEN 2 THEN 'event' END, "
        "(i % 50) * 500.0, '{}', "
        f"CASE WHEN i % 10 = 1 THEN 'closed' WHEN i % 10 = 2 AND {last} = 2 THEN 'callback' "
        "ELSE 'active' END, 'b2b', "
        f"{_stage(str(last), str(last))}, {_stamp(moved)}, 0, 0, i % 13 = 0, 0, 0, 0, "
        f"CASE i % 10 WHEN 0 THEN {_stamp(moved)} END, "
        f"CASE i % 10 WHEN 1 THEN {_stamp(moved)} END, "
        f"{_stamp(CREATED)}, {_stamp(CREATED)} FROM seq",
        (leads,),
    )
    # Each row is a completed stay of the previous step's stage (none before the intake and
    # after the callback list), like the stage engine writes it.
    db.execute(
        "WITH RECURSIVE seq(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM seq WHERE j < ?) "
        "INSERT INTO stage_transition (lead_id, pipeline, from_stage, from_entered_at, to_stage, "
        "at, kind, reason, actor) "
        "SELECT i, 'b2b', from_stage, "
        f"CASE WHEN from_stage IS NOT NULL THEN {_stamp(_entered('(s - 1)'))} END, "
        f"{_stage('s', str(last))}, {_stamp(_entered('s'))}, "
        "CASE s WHEN 0 THEN 'intake' ELSE 'rule' END, '', 'bench' "
        f"FROM (SELECT i, s, CASE WHEN s > 0 THEN {_stage('s - 1', str(last))} END AS from_stage "
        "FROM (SELECT j / ? + 1 AS i, j % ? AS s FROM seq))",
        (total - 1, per, per),
    )
    sent = f"{CREATED} + 1 + 9 / 24.0"
    db.execute(
        seq + "INSERT INTO outbound_message (id, lead_id, cadence, step, round, kind, template, "
        "variant, to_email, status, due_at, sent_at, attempts, created_at, updated_at) "
        "SELECT i, i, 'outbound', 'intro', 0, 'cadence', "
        "CASE i % 3 WHEN 0 THEN 'welcome' ELSE 'followup_value' END, "
        "CASE i % 3 WHEN 1 THEN 'a' WHEN 2 THEN 'b' END, 'lead' || i || '@bench.test', "
        "CASE i % 20 WHEN 0 THEN 'bounced' WHEN 1 THEN 'pending' ELSE 'sent' END, "
        f"{_stamp(sent)}, CASE WHEN i % 20 > 1 THEN {_stamp(sent)} END, 1, "
        f"{_stamp(sent)}, {_stamp(sent)} FROM seq",
        (leads,),
    )
    db.execute(
        seq + "INSERT INTO event (lead_id, type, occurred_at, data, message_id) "
        "SELECT i, CASE i % 5 WHEN 0 THEN 'email_opened' WHEN 1 THEN 'email_clicked' "
        "WHEN 2 THEN 'replied' WHEN 3 THEN 'email_opened' ELSE 'unsubscribed' END, "
        f"{_stamp(f'{sent} + (i % 72) / 24.0')}, '{{}}', i FROM seq",
        (leads,),
    )
    db.commit()
    db.close()
    return {"leads": leads, "transitions": total, "messages": leads, "events": leads}


def build_database(path: Path, leads: int, transitions: int) -> dict[str, int]:
    engine = open_database(f"sqlite:///{path}")
    indexes: list[Index] = [i for t in (LEADS, TRANSITIONS, OUTBOX, EVENTS) for i in t.indexes]
    with engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
    engine.dispose()
    counts = fill(path, leads, transitions)
    engine = open_database(f"sqlite:///{path}")
    with engine.begin() as conn:
        for index in indexes:
            index.create(conn)
    engine.dispose()
    return counts


@contextmanager
def timed_queries(clock: Callable[[], float] = time.process_time) -> Iterator[dict[str, float]]:
    """Wrap every query function of the reporting modules (``build_report`` calls them through
    their modules, so it picks the wrappers up) and collect CPU seconds (``clock``) per
    function."""
    spent: dict[str, float] = defaultdict(float)
    originals: list[tuple[Any, str, Callable[..., Any]]] = []

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += clock() - t0

        return wrapper

    for module in (flow, messaging, outcomes, sales, snapshot):
        short = module.__name__.rsplit(".", 1)[1]
        for name, fn in list(vars(module).items()):
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and name[0] != "_":
                originals.append((module, name, fn))
                setattr(module, name, timed(f"{short}.{name}", fn))
    try:
        yield spent
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


def _postmaster(backend: int) -> int:
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def measure(url: str, counts: dict[str, int]) -> dict[str, Any]:
    """Time the baseline (best of three) and one ``build_report`` on the filled database."""
    loaded = load_config(ROOT / "config" / "pipeline.yaml")
    engine = make_engine(url)
    with engine.connect() as conn:
        if counts["leads"] < 0:  # a reused database: count what it holds
            for key, table in TABLES.items():
                counts[key] = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
        clock = time.process_time
        if conn.dialect.name == "postgresql":  # the work is the server's: backend, workers
            backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            server = _postmaster(backend)

            def clock() -> float:
                return time.process_time() + (postgres_cpu_s(server) or 0.0)

        version = conn.exec_driver_sql(
            "SELECT sqlite_version()" if conn.dialect.name == "sqlite" else "SHOW server_version"
        ).scalar_one()
        runs = []
        for _ in range(3):  # the baseline is cheap: keep its best of three
            t0, cpu0 = time.perf_counter(), clock()
            conn.exec_driver_sql(BASELINE).all()
            runs.append((time.perf_counter() - t0, clock() - cpu0))
        baseline_s, baseline_cpu_s = min(runs)
        with timed_queries(clock) as spent:
            t0, cpu0 = time.perf_counter(), clock()
            data = build_report(conn, loaded, since=None, until=UNTIL, pipeline=None)
            report_s, report_cpu_s = time.perf_counter() - t0, clock() - cpu0
    engine.dispose()
    queries = dict(sorted(((k, round(v, 3)) for k, v in spent.items()), key=lambda kv: -kv[1]))
    return {
        "benchmark": "report",
        "database": engine.dialect.name,
        **counts,
        "version": str(version),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "build_report_s": round(report_s, 3),
        "build_report_cpu_s": round(report_cpu_s, 3),
        "baseline_s": round(baseline_s, 3),
        "baseline_cpu_s": round(baseline_cpu_s, 3),
        "ratio": round(report_s / baseline_s, 1) if baseline_s else None,
        "cpu_ratio": round(report_cpu_s / baseline_cpu_s, 1) if baseline_cpu_s else None,
        "queries_cpu_s": queries,
        "open_leads": data["pipelines"][0]["leads"]["open"],
        # a few figures, to see both databases hold the same rows
        "funnel": [r["reached"] for r in data["pipelines"][0]["funnel"]["stages"]],
        "at_risk": data["pipelines"][0]["at_risk"]["count"],
    }


def _people(r: dict[str, Any]) -> str:
    slowest = next(iter(r["queries_cpu_s"].items()), ("none", 0.0))
    return (
        f"{r['database']}: build_report {r['build_report_s']:.2f} s "
        f"({r['build_report_cpu_s']:.2f} s CPU) vs baseline GROUP BY to_stage "
        f"{r['baseline_s']:.2f} s ({r['baseline_cpu_s']:.2f} s CPU): x{r['ratio']} wall, "
        f"x{r['cpu_ratio']} CPU over {r['leads']:,} leads and {r['transitions']:,} transitions "
        f"(load {r['load_average'][0]}); slowest query {slowest[0]} ({slowest[1]:.2f} s CPU)"
    )


def side_by_side(results: list[dict[str, Any]]) -> str:
    names = sorted({q for r in results for q in r["queries_cpu_s"]}, key=lambda q: q)
    head = f"{'CPU s':<32}" + "".join(f"{r['database']:>12}" for r in results)
    lines = [head]
    rows = [("build_report", "build_report_cpu_s"), ("baseline", "baseline_cpu_s")]
    for label, key in rows:
        lines.append(f"{label:<32}" + "".join(f"{r[key]:>12.3f}" for r in results))
    lines.append(f"{'ratio (CPU)':<32}" + "".join(f"{r['cpu_ratio']:>12}" for r in results))
    lines.append(f"{'ratio (wall)':<32}" + "".join(f"{r['ratio']:>12}" for r in results))
    for q in names:
        if any(r["queries_cpu_s"].get(q, 0) >= 0.01 for r in results):
            cells = "".join(f"{r['queries_cpu_s'].get(q, 0.0):>12.3f}" for r in results)
            lines.append(f"  {q:<30}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--transitions", type=int, default=5_000_000)
    parser.add_argument("--db", type=Path, help="Reuse or keep this SQLite database file.")
    parser.add_argument("--postgres", action="store_true", help="Also measure PostgreSQL.")
    parser.add_argument("--database-url", help="The PostgreSQL server for --postgres.")
    args = parser.parse_args(argv)
    server = args.database_url or os.environ.get("LEADFLOW_TEST_DATABASE_URL")
    if args.postgres and not server:  # start a throwaway server and run again under it
        command = [str(ROOT / "scripts" / "with-postgres"), sys.executable, "-m"]
        command += ["benchmarks.bench_report", *(sys.argv[1:] if argv is None else argv)]
        raise SystemExit(subprocess.run(command, cwd=ROOT, check=False).returncode)
    workdir = None
    if args.db is None:
        workdir = tempfile.TemporaryDirectory(prefix="bench-report-")
        path = Path(workdir.name) / "bench.db"
    else:
        path = args.db
    t0 = time.perf_counter()
    if path.exists():  # reuse it, brought to the newest schema (and its indexes) first
        open_database(f"sqlite:///{path}").dispose()
        counts = dict.fromkeys(TABLES, -1)
    else:
        counts = build_database(path, args.leads, args.transitions)
    load_s = time.perf_counter() - t0
    results = [{**measure(f"sqlite:///{path}", counts), "load_s": round(load_s, 2)}]
    if workdir is not None:
        workdir.cleanup()
    print(json.dumps(results[0]), flush=True)
    print(_people(results[0]), flush=True)
    if args.postgres and server:
        from benchmarks.report_postgres import build_postgres  # it imports this module

        t0 = time.perf_counter()
        counts = build_postgres(server, args.leads, args.transitions)
        load_s = time.perf_counter() - t0
        results.append({**measure(server, counts), "load_s": round(load_s, 2)})
        print(json.dumps(results[1]), flush=True)
        print(_people(results[1]))
        print(side_by_side(results))


if __name__ == "__main__":
    main()
