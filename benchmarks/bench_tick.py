"""Benchmark a tick: its cost must follow the work that is due, not the number of leads.

    python -m benchmarks.bench_tick [--leads 1000000] [--due-percent 1]
                                    [--foundation-leads 100000] [--repeat 5]

Due tick: ``engine.tick`` (score, callbacks, advance, reconcile, deliver with a
``MemoryTransport``) over ``--leads`` leads spread over the pipeline, of which
``--due-percent`` are due: new leads with a score and the stage engine to run (they are
scored, moved to ``prospect`` or ``lost``, and enrolled in the outbound cadence). The instant
is a Monday, outside the outbound send window, so delivery plans and finds nothing due
(sending is measured by ``bench_send``). Compared with an idle tick at the same instant
right after (nothing due any more) and with the raw indexed queries that find the due leads;
then a tick with a tenth as many due leads (in every stage) shows how the cost scales.

Own SQL: every statement the due tick sent SQLite (SQL and parameters as sent, commits
included) is recorded and replayed with raw ``sqlite3`` on a copy of the database as it was
before the tick. That is what the database alone spends on the work the tick asks of it (most
of it writing rows and their index entries); the tick over it is the cost of what is ours.

Foundation: an idle tick over ``--foundation-leads`` leads (nothing due) against the same
"what is due" questions asked with raw ``sqlite3`` on the same indexes: the score, stage,
callback, stale-claim and two outbox queries a tick asks.

Each measured part runs in its own process on its own database. Output: one JSON line, then
one line for people.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from benchmarks.common import (
    CONFIG,
    TEMPLATES,
    Population,
    build_database,
    ratio,
    run_phase,
    sql_time,
    sqlite_url,
)

NOW = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York
EARLIEST = sql_time(datetime(1900, 1, 1, tzinfo=UTC))


def raw_due_queries(now: datetime) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """The "what is due" questions of a tick, as plain SQL on the engine's indexes."""
    at = sql_time(now)
    stale = sql_time(now - timedelta(minutes=15))
    outbox = (
        "SELECT id FROM outbound_message WHERE status IN ('pending', 'deferred') "
        "AND due_at <= ? AND kind = ? ORDER BY id"
    )
    return {
        "score": (
            "SELECT id FROM lead WHERE rescore_at BETWEEN ? AND ? ORDER BY id",
            (EARLIEST, at),
        ),
        "advance": (
            "SELECT id FROM lead WHERE status = 'active' AND next_action_at BETWEEN ? AND ? "
            "ORDER BY id",
            (EARLIEST, at),
        ),
        "callbacks": (
            "SELECT id FROM callback WHERE revived_at IS NULL AND due_at <= ? ORDER BY id",
            (at,),
        ),
        "stale_claims": (
            "SELECT id FROM outbound_message WHERE status = 'sending' AND claimed_at < ?",
            (stale,),
        ),
        "outbox_cadence": (outbox, (at, "cadence")),
        "outbox_checkin": (outbox, (at, "checkin")),
    }


def _runtime(path: str) -> Any:
    from leadflow.config import load_config
    from leadflow.runtime import Runtime
    from leadflow.settings import Settings
    from models.db import open_database

    url = sqlite_url(Path(path))
    settings = Settings(
        home=Path(path).parent, database_url=url, config=CONFIG, templates=TEMPLATES, demo=True
    )
    return Runtime(
        settings=settings,
        loaded=load_config(CONFIG, templates=TEMPLATES),
        engine=open_database(url, migrate=False),
    )


class _TimedRunner:
    """The tick's own ``InlineRunner``, adding each step's time (planning included) to
    ``spent``: the benchmark walks exactly what ``engine.tick`` walks."""

    def __init__(self, inner: Any, spent: dict[str, float]) -> None:
        self.inner, self.spent = inner, spent

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - started

    def once(self, step: Any, now: datetime) -> Any:
        return self._timed(step.name, lambda: self.inner.once(step, now))

    def plan(self, step: Any, now: datetime) -> list[Any]:
        return self._timed(step.name, lambda: self.inner.plan(step, now))  # type: ignore[no-any-return]

    def each(self, step: Any, ranges: Any, now: datetime) -> list[Any]:
        return self._timed(step.name, lambda: self.inner.each(step, ranges, now))  # type: ignore[no-any-return]


def _idle_ticks(rt: Any, repeat: int) -> list[float]:
    from leadflow.mail.transport import MemoryTransport
    from leadflow.pipeline import engine

    memory = MemoryTransport()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        out = engine.tick(rt, now=NOW, transport=lambda: memory)
        times.append(time.perf_counter() - started)
        if out.batches:
            raise AssertionError(f"an idle tick did work: {out.as_dict()}")
    return times


def _record_sql(db: Any, into: list[tuple[str, Any, bool]]) -> Callable[[], None]:
    """Append every statement the engine sends SQLite (as sent: SQL text and processed
    parameters) and every COMMIT/ROLLBACK to ``into``; returns the function that stops it."""

    def on_execute(
        _c: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, executemany: bool
    ) -> None:
        into.append((sql, params, executemany))

    def on_commit(_conn: Any) -> None:
        into.append(("COMMIT", None, False))

    def on_rollback(_conn: Any) -> None:
        into.append(("ROLLBACK", None, False))

    hooks = (
        ("before_cursor_execute", on_execute),
        ("commit", on_commit),
        ("rollback", on_rollback),
    )
    for name, fn in hooks:
        event.listen(db, name, fn)

    def stop() -> None:
        for name, fn in hooks:
            event.remove(db, name, fn)

    return stop


def _measured_tick(rt: Any, now: datetime, record: Path | None = None) -> dict[str, Any]:
    from leadflow.mail.transport import MemoryTransport
    from leadflow.pipeline import engine

    memory = MemoryTransport()
    spent: dict[str, float] = {}
    runner = _TimedRunner(engine.InlineRunner(rt, lambda: memory), spent)
    statements: list[tuple[str, Any, bool]] = []
    stop = _record_sql(rt.engine, statements) if record else lambda: None
    started = time.perf_counter()
    out = engine.run(rt, "tick", now=now, runner=runner)
    seconds = time.perf_counter() - started
    stop()
    if record:
        record.write_bytes(pickle.dumps(statements))
    return {
        "seconds": round(seconds, 3),
        "steps_s": {name: round(s, 3) for name, s in spent.items()},
        "scored": out.score.rescored,
        "examined": out.advance.examined,
        "moves": {f"{a}->{b}": n for (a, b), n in sorted(out.advance.moves.items())},
        "enrolled": out.advance.enrolled,
        "batches": out.batches,
        "sent": len(memory.sent),
    }


def due_tick_phase(path: str, repeat: int, due_every: int, record: str) -> dict[str, Any]:
    """A tick with due work (its SQL recorded into ``record``); idle ticks at the same instant
    (nothing left to do); then, still at that instant, a tick with a tenth as many other leads
    due, all over the pipeline."""
    rt = _runtime(path)
    first = _measured_tick(rt, NOW, Path(record))
    idle = _idle_ticks(rt, repeat)
    with rt.engine.begin() as conn:  # not timed: make leads that were not due so now
        conn.exec_driver_sql(
            "UPDATE lead SET rescore_at = ?, next_action_at = ? WHERE id % ? = ?",
            (sql_time(NOW), sql_time(NOW), due_every * 10, due_every // 2),
        )
    tenth = _measured_tick(rt, NOW)  # those moved by the first tick are due only at NOW + 1 s
    rt.close()
    return {**first, "idle_after_s": round(statistics.median(idle), 4), "tenth": tenth}


def replay_phase(path: str, record: str) -> dict[str, Any]:
    """The due tick's own SQL, replayed with raw ``sqlite3`` on a copy of the database as it
    was before the tick (same pragmas, same transactions): what the database alone spends on
    the work the tick asks of it. The tick over this is the cost of everything that is ours."""
    from models.db import _sqlite_pragmas

    statements = pickle.loads(Path(record).read_bytes())
    conn = sqlite3.connect(path, isolation_level=None)
    _sqlite_pragmas(conn, None)
    writes = 0.0
    spent: dict[str, float] = {}
    started = time.perf_counter()
    for sql, params, many in statements:
        if sql in ("COMMIT", "ROLLBACK"):
            if conn.in_transaction:
                conn.execute(sql)
            continue
        began = time.perf_counter()
        if many:
            conn.executemany(sql, params)
        else:
            conn.execute(sql, params or ()).fetchall()
        took = time.perf_counter() - began
        head = " ".join(sql.split())[:60]
        spent[head] = spent.get(head, 0.0) + took
        if not sql.lstrip().upper().startswith(("SELECT", "WITH", "BEGIN", "PRAGMA")):
            writes += took
    seconds = time.perf_counter() - started
    conn.close()
    slowest = sorted(spent.items(), key=lambda kv: -kv[1])[:6]
    return {
        "seconds": seconds,
        "writes_s": writes,
        "statements": len(statements),
        "slowest": {head: round(s, 3) for head, s in slowest},
    }


def raw_phase(path: str, repeat: int, only: str | None = None) -> dict[str, Any]:
    """Each due query (or just ``only``) with raw sqlite3: median seconds and rows."""
    conn = sqlite3.connect(path)
    out: dict[str, Any] = {}
    for name, (sql, params) in raw_due_queries(NOW).items():
        if only and name != only:
            continue
        times, rows = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            rows = len(conn.execute(sql, params).fetchall())
            times.append(time.perf_counter() - started)
        out[name] = {"seconds": statistics.median(times), "rows": rows}
    conn.close()
    return out


def foundation_phase(path: str, repeat: int) -> dict[str, Any]:
    """Idle ticks over a database where nothing is due, and the raw queries they stand for."""
    rt = _runtime(path)
    _idle_ticks(rt, 1)  # warm-up: statement compilation, template-free
    idle = _idle_ticks(rt, repeat)
    rt.close()
    raw = raw_phase(path, repeat * 4)
    return {
        "idle_tick_s": statistics.median(idle),
        "raw_s": {name: r["seconds"] for name, r in raw.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--due-percent", type=float, default=1.0)
    parser.add_argument("--foundation-leads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    due_every = max(1, round(100 / args.due_percent)) if args.due_percent > 0 else args.leads + 1

    with tempfile.TemporaryDirectory(prefix="bench-tick-", dir=args.workdir) as folder:
        workdir = Path(folder)
        big = workdir / "tick.db"
        build_s = build_database(
            big,
            Population(
                leads=args.leads,
                now=NOW,
                due_every=due_every,
                events_per_lead=1,
                idle_stage_mix=True,
            ),
        )
        raw = run_phase(raw_phase, str(big), args.repeat)
        before = workdir / "before-tick.db"
        shutil.copyfile(big, before)
        record = workdir / "tick-sql.pickle"
        due = run_phase(due_tick_phase, str(big), args.repeat, due_every, str(record))
        big.unlink()
        replay = run_phase(replay_phase, str(before), str(record))
        before.unlink()
        small = workdir / "foundation.db"
        build_database(
            small,
            Population(
                leads=args.foundation_leads,
                now=NOW,
                due_every=args.foundation_leads + 1,
                events_per_lead=1,
                idle_stage_mix=True,
            ),
        )
        foundation = run_phase(foundation_phase, str(small), args.repeat * 4)

    due_leads = raw["advance"]["rows"]
    find_due_s = raw["score"]["seconds"] + raw["advance"]["seconds"]
    idle_raw_s = sum(foundation["raw_s"].values())
    result = {
        "benchmark": "tick",
        "leads": args.leads,
        "due_leads": due_leads,
        "build_s": round(build_s, 1),
        "due_tick_s": due["seconds"],
        "due_tick_ms_per_due_lead": round(1000 * due["seconds"] / max(due_leads, 1), 3),
        "due_tick_steps_s": due["steps_s"],
        "due_tick_outcome": {k: due[k] for k in ("scored", "examined", "moves", "enrolled")},
        "tenth_due_tick": due["tenth"],
        "tenth_vs_due": ratio(due["tenth"]["seconds"], due["seconds"]),
        "idle_tick_s": due["idle_after_s"],
        "raw_find_due_s": round(find_due_s, 4),
        "raw_find_due": raw,
        "due_vs_idle": ratio(due["seconds"], due["idle_after_s"]),
        "due_vs_raw_find": ratio(due["seconds"], find_due_s),
        "own_sql_replayed_s": round(replay["seconds"], 3),
        "own_sql_writes_s": round(replay["writes_s"], 3),
        "own_sql_statements": replay["statements"],
        "own_sql_slowest_s": replay["slowest"],
        "due_vs_own_sql": ratio(due["seconds"], replay["seconds"]),
        "overhead_ms_per_due_lead": round(
            1000 * (due["seconds"] - replay["seconds"]) / max(due_leads, 1), 3
        ),
        "foundation": {
            "leads": args.foundation_leads,
            "idle_tick_s": round(foundation["idle_tick_s"], 4),
            "raw_queries_s": round(idle_raw_s, 6),
            "raw_queries": {k: round(v, 6) for k, v in foundation["raw_s"].items()},
            "ratio": ratio(foundation["idle_tick_s"], idle_raw_s),
            "ratio_vs_one_query": ratio(foundation["idle_tick_s"], foundation["raw_s"]["advance"]),
        },
        "idle_1m_vs_idle_foundation": ratio(due["idle_after_s"], foundation["idle_tick_s"]),
    }
    print(json.dumps(result))
    tenth = due["tenth"]
    print(
        f"tick over {args.leads:,} leads with {due_leads:,} due: {due['seconds']:.2f} s "
        f"({result['due_tick_ms_per_due_lead']:.2f} ms per due lead; with "
        f"{tenth['examined']:,} due: {tenth['seconds']:.2f} s) vs idle tick "
        f"{due['idle_after_s'] * 1000:.1f} ms ({result['due_vs_idle']:.0f}x) vs raw indexed "
        f"queries finding the due leads {find_due_s * 1000:.1f} ms "
        f"({result['due_vs_raw_find']:.0f}x) vs the tick's own SQL replayed with raw sqlite3 "
        f"{replay['seconds']:.2f} s ({result['due_vs_own_sql']:.2f}x; ours "
        f"{result['overhead_ms_per_due_lead']:.3f} ms per due lead); foundation: idle tick over "
        f"{args.foundation_leads:,} leads {foundation['idle_tick_s'] * 1000:.1f} ms vs the "
        f"same six raw SQLite queries {idle_raw_s * 1000:.2f} ms = "
        f"{result['foundation']['ratio']:.0f}x; idle at {args.leads:,} / idle at "
        f"{args.foundation_leads:,} = {result['idle_1m_vs_idle_foundation']:.2f}x"
    )


if __name__ == "__main__":
    main()
