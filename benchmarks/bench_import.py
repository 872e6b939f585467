"""Benchmark ``leadflow import`` against a raw ``sqlite3`` executemany INSERT of the same rows.

    python -m benchmarks.bench_import [--rows 100000] [--repeat 3] [--memory-rows 1000000]
                                      [--batch-size 2000] [--workdir DIR]
                                      [--database-url postgresql+psycopg://...]

The file: a CRM export of ``--rows`` synthetic leads (``leadflow.app.sample_data``), nine
columns (E-mail, First Name, Last Name, Company, Job Title, Employees, Country, Time Zone,
plan_interest); about 3% of the addresses are invalid (a name whose letters are all accented
leaves a local part starting with a period), so rejects are part of the work.

Import: ``leadflow.app.cli.intake.run_import``, the call ``leadflow import FILE`` makes (read,
normalize, validate, merge, write; ``batch_size`` from the settings), into a freshly migrated
database, timed from the call to its return (the runtime is opened before).

Baseline: the leads that import stored, read back (untimed) and written again by raw
``sqlite3`` with ``executemany`` into a freshly migrated database of the same schema (same
indexes, WAL, synchronous=NORMAL), in transactions of ``--batch-size`` rows: the same rows,
with none of the reading, checking or merging. Target: import within 5x of it.

Each run is its own process, the import and its baseline interleaved ``--repeat`` times;
figures are medians (wall and CPU seconds; on a busy machine the CPU ratio is the steadier
one). Memory: the growth of the import process's peak RSS over its RSS once the runtime was
open, at ``--rows`` and at ``--memory-rows`` rows (0 skips it): it must not grow with the file.

PostgreSQL: with ``--database-url`` or ``LEADFLOW_TEST_DATABASE_URL`` (e.g. under
``scripts/with-postgres``) the import and a raw psycopg ``executemany`` baseline run there too,
a fresh database each, compared by wall time.

Output: one JSON line, then lines for people.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CONFIG,
    TEMPLATES,
    peak_rss_mib,
    ratio,
    reset_peak_rss,
    rss_mib,
    run_phase,
    sqlite_url,
)

NOW = "2026-11-03T14:30:00+00:00"
SERVER_ENV = "LEADFLOW_TEST_DATABASE_URL"
TARGET = 5.0
FLAT_MEMORY_SLACK_MIB = 16.0  # allowed difference in peak growth between the two sizes
COLUMNS = (
    "E-mail",
    "First Name",
    "Last Name",
    "Company",
    "Job Title",
    "Employees",
    "Country",
    "Time Zone",
    "plan_interest",
)


def write_export(path: Path, rows: int) -> None:
    from leadflow.app.sample_data import generate_leads

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for lead in generate_leads(rows):
            writer.writerow([lead[name] for name in COLUMNS])


def _fresh(path: Path) -> None:
    from models.db import open_database

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    open_database(sqlite_url(path)).dispose()


def import_phase(export: str, database: str, batch_size: int) -> dict[str, Any]:
    """``leadflow import`` of ``export`` into a fresh database: a SQLite file (made here) or
    a PostgreSQL URL (an empty database, migrated here)."""
    from datetime import datetime

    from leadflow.app.cli.intake import run_import
    from leadflow.runtime import Runtime
    from leadflow.settings import Settings

    if database.startswith("postgresql"):
        url = database
    else:
        _fresh(Path(database))
        url = sqlite_url(Path(database))
    settings = Settings(
        home=Path(export).parent,
        database_url=url,
        config=CONFIG,
        templates=TEMPLATES,
        demo=True,
        batch_size=batch_size,
    )
    rt = Runtime.open(settings)
    reset_peak_rss()
    start_rss = rss_mib()
    cpu, started = time.process_time(), time.perf_counter()
    summary = run_import(rt, Path(export), datetime.fromisoformat(NOW))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    rt.close()
    return {
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "rows": summary.rows,
        "created": summary.created,
        "rejected": summary.rejected,
        "start_rss_mib": round(start_rss, 1),
        "peak_growth_mib": round(max(peak_rss_mib() - start_rss, 0.0), 1),
    }


def baseline_phase(imported: str, database: str, batch_size: int) -> dict[str, Any]:
    """The rows ``imported`` holds, written again with raw ``executemany`` into a fresh file."""
    source = sqlite3.connect(imported)
    names = [row[1] for row in source.execute("PRAGMA table_info(lead)") if row[1] != "id"]
    listed = ", ".join(names)
    rows = source.execute(f"SELECT {listed} FROM lead ORDER BY id").fetchall()
    source.close()
    path = Path(database)
    _fresh(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    statement = f"INSERT INTO lead ({listed}) VALUES ({', '.join('?' for _ in names)})"
    cpu, started = time.process_time(), time.perf_counter()
    for first in range(0, len(rows), batch_size):
        conn.execute("BEGIN")
        conn.executemany(statement, rows[first : first + batch_size])
        conn.execute("COMMIT")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return {"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "rows": len(rows)}


def pg_baseline_phase(imported: str, database: str, batch_size: int) -> dict[str, Any]:
    """``baseline_phase`` on PostgreSQL: raw psycopg ``executemany`` (libpq pipeline) of the
    rows ``imported`` holds into the empty, migrated ``database``."""
    from sqlalchemy import create_engine

    from models.db import open_database

    source = create_engine(imported)
    with source.connect() as conn:
        columns = conn.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'lead' ORDER BY ordinal_position"
        ).scalars()
        names = [str(name) for name in columns if name != "id"]
        listed = ", ".join(names)
        selected = listed.replace("attributes", "attributes::text")
        rows = conn.exec_driver_sql(f"SELECT {selected} FROM lead ORDER BY id").fetchall()
    source.dispose()
    target = open_database(database)
    marks = ", ".join("%s::json" if name == "attributes" else "%s" for name in names)
    statement = f"INSERT INTO lead ({listed}) VALUES ({marks})"
    raw = target.raw_connection()
    cursor = raw.cursor()
    cpu, started = time.process_time(), time.perf_counter()
    for first in range(0, len(rows), batch_size):
        cursor.executemany(statement, [tuple(row) for row in rows[first : first + batch_size]])
        raw.commit()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    raw.close()
    target.dispose()
    return {"seconds": round(seconds, 3), "cpu_s": round(cpu, 3), "rows": len(rows)}


def measure_postgres(server: str, export: Path, repeat: int, batch_size: int) -> dict[str, Any]:
    """The import and its baseline on PostgreSQL (wall time: the server's work is not in this
    process's CPU time), a fresh database for every run."""
    from benchmarks.bench_scaling import Databases

    databases = Databases(server)
    imports: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    try:
        for _ in range(repeat):
            imported = databases.url(databases.create("import_import"))
            imports.append(run_phase(import_phase, str(export), imported, batch_size))
            fresh = databases.url(databases.create("import_baseline"))
            baselines.append(run_phase(pg_baseline_phase, imported, fresh, batch_size))
        version = databases.server_version()
    finally:
        databases.close()
    import_s, baseline_s = _median(imports, "seconds"), _median(baselines, "seconds")
    return {
        "server_version": version,
        "import_s": import_s,
        "baseline_s": baseline_s,
        "ratio": ratio(import_s, baseline_s),
        "runs": {"import": imports, "baseline": baselines},
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(run[key] for run in runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--memory-rows", type=int, default=1_000_000, help="second size for memory (0: skip)"
    )
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(SERVER_ENV),
        help=f"a PostgreSQL server to measure on as well (default: ${SERVER_ENV}; unset: skip)",
    )
    args = parser.parse_args()
    repeat = max(1, args.repeat)
    load = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=args.workdir) as folder:
        work = Path(folder)
        export = work / f"export-{args.rows}.csv"
        write_export(export, args.rows)
        imports: list[dict[str, Any]] = []
        baselines: list[dict[str, Any]] = []
        for _ in range(repeat):
            imports.append(
                run_phase(import_phase, str(export), str(work / "import.db"), args.batch_size)
            )
            baselines.append(
                run_phase(
                    baseline_phase,
                    str(work / "import.db"),
                    str(work / "baseline.db"),
                    args.batch_size,
                )
            )
        postgres = (
            measure_postgres(args.database_url, export, repeat, args.batch_size)
            if args.database_url
            else None
        )
        large: dict[str, Any] | None = None
        if args.memory_rows:
            big = work / f"export-{args.memory_rows}.csv"
            write_export(big, args.memory_rows)
            export.unlink()
            large = run_phase(import_phase, str(big), str(work / "large.db"), args.batch_size)

    import_s, baseline_s = _median(imports, "seconds"), _median(baselines, "seconds")
    import_cpu, baseline_cpu = _median(imports, "cpu_s"), _median(baselines, "cpu_s")
    growth = {str(args.rows): max(run["peak_growth_mib"] for run in imports)}
    if large is not None:
        growth[str(args.memory_rows)] = large["peak_growth_mib"]
    flat = max(growth.values()) - min(growth.values()) <= FLAT_MEMORY_SLACK_MIB
    result = {
        "benchmark": "import",
        "rows": args.rows,
        "repeat": repeat,
        "batch_size": args.batch_size,
        "load": [round(value, 2) for value in load],
        "load_after": [round(value, 2) for value in os.getloadavg()],
        "import_s": import_s,
        "baseline_s": baseline_s,
        "ratio": ratio(import_s, baseline_s),
        "import_cpu_s": import_cpu,
        "baseline_cpu_s": baseline_cpu,
        "cpu_ratio": ratio(import_cpu, baseline_cpu),
        "target_ratio": TARGET,
        "rows_per_s": round(args.rows / import_s) if import_s else None,
        "created": imports[0]["created"],
        "rejected": imports[0]["rejected"],
        "import_peak_growth_mib": growth,
        "memory_flat": flat if large is not None else None,
        "runs": {"import": imports, "baseline": baselines, "memory": large},
        "postgresql": postgres,
    }
    print(json.dumps(result))
    verdict = "within" if result["cpu_ratio"] <= TARGET else "MISSES"
    memory = ", ".join(f"{int(n):,} rows +{mib:.0f} MiB" for n, mib in growth.items())
    print(
        f"import {args.rows:,} CSV rows: {import_s:.2f} s ({result['rows_per_s']:,} rows/s, "
        f"{result['created']:,} created, {result['rejected']:,} rejected) vs raw sqlite3 "
        f"executemany of the same rows {baseline_s:.2f} s = {result['ratio']:.2f}x wall, "
        f"{result['cpu_ratio']:.2f}x CPU ({import_cpu:.2f} s vs {baseline_cpu:.2f} s; "
        f"{verdict} the {TARGET:g}x target), medians of {repeat}, load {load[0]:.2f}"
    )
    print(
        f"import peak memory growth: {memory}"
        + ("" if large is None else " (flat)" if flat else " (GROWS)")
    )
    if postgres is not None:
        print(
            f"PostgreSQL {postgres['server_version']}: import {postgres['import_s']:.2f} s vs raw "
            f"psycopg executemany of the same rows {postgres['baseline_s']:.2f} s = "
            f"{postgres['ratio']:.2f}x wall"
        )


if __name__ == "__main__":
    main()
