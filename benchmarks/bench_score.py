"""Benchmark set-based scoring against a raw ``executemany`` UPDATE of the same rows.

    python -m benchmarks.bench_score [--leads 1000000] [--small 250000] [--events-per-lead 2]
                                     [--batch-size 2000] [--workdir DIR]

Full path: ``engine.score_ranges`` plans the batches, then ``engine.score`` per batch runs the
three statements of ``scoring.score_batch`` (fit + BANT + decayed engagement, score history,
totals/grades/next times) in one transaction, with the default config's ten fit rules and
four BANT rules, over leads that are all due and carry ``--events-per-lead`` events each.

Baseline: raw ``sqlite3`` writing the same score columns (fit, engagement, total, grade,
scored_at, rescore_at) of the same rows with ``executemany`` in transactions of
``--batch-size`` rows, values computed in Python. Same file, same pragmas (WAL,
synchronous=NORMAL). Target: scoring within 3x of the baseline.

Memory: each phase runs in its own process; the figure is the growth of its peak RSS over the
RSS it had once imports and config were loaded. It is measured at ``--small`` and ``--leads``
leads and must not grow with the number of leads.

Production path: the same run (config check, then every batch) through the ``score`` Prefect
flow, one task run per batch, on a copy of the same database (``--no-flow`` skips it); it
must stay within 10% of the direct run.

Output: one JSON line, then lines for people.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CONFIG,
    TEMPLATES,
    Population,
    build_database,
    copy_database,
    peak_rss_mib,
    ratio,
    reset_peak_rss,
    rss_mib,
    run_phase,
    sql_time,
    sqlite_url,
    temporary_prefect,
    timed,
)

NOW = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
TARGET = 3.0
FLAT_MEMORY_SLACK_MIB = 16.0  # allowed difference in peak growth between the two sizes


def score_phase(path: str, batch_size: int, way: str = "direct") -> dict[str, Any]:
    """Score every due lead of ``path``: the ``score`` run (config check, then every batch)
    walked here (``way="direct"``: ``engine.run`` with ``InlineRunner``), or as production
    runs it (``way="flow"``: the ``score`` Prefect flow, one task run per batch)."""
    from leadflow.delivery.smtp import smtp_transport_factory
    from leadflow.pipeline import engine
    from leadflow.pipeline.run_record import record_run
    from leadflow.runtime import Runtime
    from leadflow.settings import Settings

    def settings_for(db: Path) -> Settings:
        return Settings(
            home=db.parent,
            database_url=sqlite_url(db),
            config=CONFIG,
            templates=TEMPLATES,
            demo=True,
            batch_size=batch_size,
        )

    settings = settings_for(Path(path))
    if way == "flow":
        from flows.runner import run_flows

        empty = Path(path).with_suffix(".warm-up.db")
        run_flows(["score"], now=NOW, settings=settings_for(empty))  # untimed: server, imports
    rt = Runtime.open(settings)
    # the config is the one the last run used: the config step only checks it (a changed
    # config would first make every lead due again, which is not scoring)
    record_run(rt, "score", now=NOW, summary={})
    result: dict[str, Any]
    reset_peak_rss()
    start_rss = rss_mib()
    with timed() as elapsed:
        if way == "flow":
            result = run_flows(["score"], now=NOW, settings=settings)["score"]["score"]
        else:
            transport = smtp_transport_factory(rt)
            walked = engine.run(rt, "score", now=NOW, runner=engine.InlineRunner(rt, transport))
            result = walked.as_dict()["score"]
        seconds = elapsed()
    rt.close()
    return {
        "way": way,
        "seconds": round(seconds, 3),
        "rescored": result["rescored"],
        "history_rows": result["changed"],
        "batches": result["batches"],
        "start_rss_mib": round(start_rss, 1),
        "peak_growth_mib": round(max(peak_rss_mib() - start_rss, 0.0), 1),
    }


def _values(first: int, last: int) -> Iterator[tuple[float, float, float, str, str, str, int]]:
    scored = sql_time(NOW)
    refresh = sql_time(NOW + timedelta(days=1))
    for i in range(first, last + 1):
        fit = float(i % 70)
        engagement = round((i % 13) / 3.0, 2)
        total = round(fit + engagement, 1)
        grade = "A" if total >= 60 else "B" if total >= 40 else "C" if total >= 20 else "D"
        yield fit, engagement, total, grade, scored, refresh, i


def baseline_phase(path: str, leads: int, batch_size: int) -> dict[str, Any]:
    """The same columns of the same rows, written by hand with ``executemany``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    reset_peak_rss()
    start_rss = rss_mib()
    with timed() as elapsed:
        for first in range(1, leads + 1, batch_size):
            last = min(first + batch_size - 1, leads)
            conn.execute("BEGIN")
            conn.executemany(
                "UPDATE lead SET fit_score = ?, engagement_score = ?, score = ?, grade = ?, "
                "scored_at = ?, rescore_at = ? WHERE id = ?",
                _values(first, last),
            )
            conn.execute("COMMIT")
        seconds = elapsed()
    conn.close()
    return {
        "seconds": round(seconds, 3),
        "start_rss_mib": round(start_rss, 1),
        "peak_growth_mib": round(max(peak_rss_mib() - start_rss, 0.0), 1),
    }


def measure(
    workdir: Path, leads: int, events: int, batch_size: int, *, flow: bool
) -> dict[str, Any]:
    path = workdir / f"score-{leads}.db"
    built = build_database(path, Population(leads=leads, now=NOW, events_per_lead=events))
    copy = workdir / f"score-{leads}-flow.db"
    if flow:
        copy_database(path, copy)
    scored = run_phase(score_phase, str(path), batch_size)
    if scored["rescored"] != leads:
        raise AssertionError(f"scored {scored['rescored']} of {leads} leads")
    baseline = run_phase(baseline_phase, str(path), leads, batch_size)
    path.unlink()
    out: dict[str, Any] = {
        "leads": leads,
        "build_s": round(built, 1),
        "score": scored,
        "baseline": baseline,
    }
    if flow:
        out["score_flow"] = run_phase(score_phase, str(copy), batch_size, "flow")
        if out["score_flow"]["rescored"] != leads:
            raise AssertionError(f"the flow scored {out['score_flow']['rescored']} of {leads}")
        copy.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument(
        "--small", type=int, default=250_000, help="second size for the memory check (0: skip)"
    )
    parser.add_argument("--events-per-lead", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument(
        "--no-flow", action="store_true", help="skip scoring through the score Prefect flow"
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bench-score-", dir=args.workdir) as folder,
        temporary_prefect(),
    ):
        workdir = Path(folder)
        flow = not args.no_flow
        large = measure(workdir, args.leads, args.events_per_lead, args.batch_size, flow=flow)
        small = (
            measure(workdir, args.small, args.events_per_lead, args.batch_size, flow=False)
            if args.small
            else None
        )

    score_s = large["score"]["seconds"]
    baseline_s = large["baseline"]["seconds"]
    growth = {str(large["leads"]): large["score"]["peak_growth_mib"]}
    if small:
        growth[str(small["leads"])] = small["score"]["peak_growth_mib"]
    flat = max(growth.values()) - min(growth.values()) <= FLAT_MEMORY_SLACK_MIB
    result = {
        "benchmark": "score",
        "leads": args.leads,
        "events_per_lead": args.events_per_lead,
        "batch_size": args.batch_size,
        "score_s": score_s,
        "baseline_s": baseline_s,
        "ratio": ratio(score_s, baseline_s),
        "flow_s": large["score_flow"]["seconds"] if "score_flow" in large else None,
        "flow_ratio": (
            ratio(large["score_flow"]["seconds"], baseline_s) if "score_flow" in large else None
        ),
        "target_ratio": TARGET,
        "leads_per_s": round(args.leads / score_s) if score_s else None,
        "score_peak_growth_mib": growth,
        "memory_flat": flat if small else None,
        "runs": [r for r in (large, small) if r],
    }
    print(json.dumps(result))
    memory = ", ".join(f"{int(n):,} leads +{mib:.0f} MiB" for n, mib in growth.items())
    verdict = "within" if result["ratio"] <= TARGET else "MISSES"
    print(
        f"score {args.leads:,} leads ({args.events_per_lead} events each): {score_s:.1f} s vs "
        f"raw executemany UPDATE {baseline_s:.1f} s = {result['ratio']:.2f}x "
        f"({verdict} the {TARGET:g}x target); peak memory growth {memory}"
        + ("" if not small else " (flat)" if flat else " (GROWS)")
    )
    if result["flow_s"] is not None:
        flow_s = float(result["flow_s"])
        within = flow_s <= 1.1 * score_s
        print(
            f"score through the score Prefect flow: {flow_s:.1f} s = {result['flow_ratio']:.2f}x "
            f"the raw baseline, {flow_s / score_s:.2f}x the direct run "
            f"({'within' if within else 'NOT within'} 10%)"
        )


if __name__ == "__main__":
    main()
