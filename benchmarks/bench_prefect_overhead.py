"""What Prefect costs per tick: the tick flow against the same engine calls made directly.

    python -m benchmarks.bench_prefect_overhead [--leads 0,100,1000,10000] [--batch-size 2000]
                                                [--repeat 3]

For each lead count a SQLite database is filled once with leads that are all due (new, to be
scored and moved into the first stage at ``T0``); every measurement runs on its own copy of
that file, so the direct run and the flow run see exactly the same due work. The direct run is
``Runtime.open`` + ``engine.tick`` (the tick flow's steps, intake included) + ``record_run``,
which is what the tick flow does. The flow run is ``tick_flow`` called in this process the way
``leadflow run`` calls it (``flows.runner``: heartbeat off, batches one at a time on SQLite, as
in the direct run) against a temporary Prefect server, started once by an untimed warm-up run.
Both deliver through the same local SMTP sink. Each figure is the median of ``--repeat`` runs;
the two kinds of run alternate. Output: one JSON line, then a table for people. Task runs are
counted from what the Prefect server recorded for the flow run (one per batch, plus one each
for the config check, the inbox import and each delivery step).

A flow run has a fixed cost (its creation and state changes, one task run per step: ~0.3 s
here) that no amount of work amortizes at 0 due leads, so the target is on the work: the
cost of one more due lead through the flow, from the two largest counts, within 10% of the
direct run's. The fixed cost is printed next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import insert

from benchmarks.common import ROOT, temporary_prefect
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.mail.sink import SmtpSink
from leadflow.pipeline import engine
from leadflow.pipeline.run_record import record_run
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.tables import LEADS, Lead

sys.path.insert(0, str(ROOT / "tests"))
from seeding import intake_lead

T0 = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)  # a Tuesday, 09:30 in New York
CHUNK = 5_000
PROFILE = {"industry": "saas", "company_size": 120, "title": "CTO", "country": "US"}


TARGET = 0.10  # the flow's cost per due lead within 10% of the direct run's


def _settings(work: Path, db: Path, smtp_port: int, batch_size: int) -> Settings:
    return Settings(
        home=work,
        database_url=f"sqlite:///{db}",
        config=ROOT / "config" / "pipeline.yaml",
        templates=ROOT / "templates" / "email",
        inbox=work / "inbox",
        demo=True,
        smtp_port=smtp_port,
        batch_size=batch_size,
    )


def build_database(settings: Settings, leads: int) -> None:
    """Migrate, then insert ``leads`` new leads, all due for scoring and the stage engine."""
    rt = Runtime.open(settings)
    try:
        with rt.engine.begin() as conn:
            for start in range(0, leads, CHUNK):
                rows = [
                    Lead(**intake_lead(f"lead{i}@bench.example", now=T0, **PROFILE)).model_dump(
                        exclude={"id"}
                    )
                    for i in range(start, min(leads, start + CHUNK))
                ]
                conn.execute(insert(LEADS), rows)
    finally:
        rt.close()


def run_direct(settings: Settings) -> tuple[float, dict[str, Any]]:
    """The tick's work without Prefect, timed from opening the runtime to recording the run."""
    started = time.perf_counter()
    rt = Runtime.open(settings)
    try:
        outcome = engine.tick(rt, now=T0, transport=smtp_transport_factory(rt))
        record_run(rt, "tick", now=T0, summary=outcome.as_dict())
    finally:
        rt.close()
    elapsed = time.perf_counter() - started
    moved = sum(m["count"] for m in outcome.advance.as_dict()["moves"])
    return elapsed, {"scored": outcome.score.rescored, "moved": moved, "batches": outcome.batches}


def run_flow(settings: Settings) -> tuple[float, dict[str, Any]]:
    """The tick flow in this process (heartbeat off), timed around the flow call."""
    from flows.context import use_settings
    from flows.pipeline import tick_flow
    from flows.runner import for_database, quick_flows

    use_settings(settings)  # closes the previous runtime; the flow opens this one
    flow = for_database(tick_flow, settings)  # SQLite: batches one at a time, as in run_direct
    with quick_flows():
        started = time.perf_counter()
        state = flow(now=T0.isoformat(), return_state=True)
        elapsed = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"tick flow ended {state}")
    result: dict[str, Any] = state.result()
    steps = ("score", "callbacks", "advance", "nurture", "checkins")
    moved = sum(m["count"] for m in result["advance"]["moves"])
    return elapsed, {
        "scored": result["score"]["rescored"],
        "moved": moved,
        "batches": sum(result[step]["batches"] for step in steps),
        "task_runs": asyncio.run(_task_run_count(state.state_details.flow_run_id)),
    }


async def _task_run_count(flow_run_id: UUID | None) -> int:
    """Task runs the server recorded for the run (they arrive as events, so wait until the
    count holds still for a second)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    assert flow_run_id is not None
    flow_runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    seen, stable_since = -1, time.monotonic()
    async with get_client() as client:
        while time.monotonic() - stable_since < 1.0:
            count = len(await client.read_task_runs(flow_run_filter=flow_runs))
            if count != seen:
                seen, stable_since = count, time.monotonic()
            await asyncio.sleep(0.2)
    return seen


def measure(
    work: Path, leads: int, *, smtp_port: int, batch_size: int, repeat: int
) -> dict[str, Any]:
    base = work / f"base-{leads}.db"
    build_database(_settings(work, base, smtp_port, batch_size), leads)
    direct: list[float] = []
    flow: list[float] = []
    work_done: dict[str, Any] = {}
    for attempt in range(repeat):
        for kind, runner, times in (("direct", run_direct, direct), ("flow", run_flow, flow)):
            copy = work / f"{kind}-{leads}-{attempt}.db"
            shutil.copyfile(base, copy)
            elapsed, did = runner(_settings(work, copy, smtp_port, batch_size))
            times.append(elapsed)
            work_done[kind] = did
    same = {k: work_done["flow"][k] for k in ("scored", "moved", "batches")}
    if same != work_done["direct"]:
        raise RuntimeError(f"direct and flow runs did different work: {work_done}")
    if same["scored"] != leads or same["moved"] != leads:
        raise RuntimeError(f"expected {leads} leads scored and moved, got {same}")
    direct_s, flow_s = statistics.median(direct), statistics.median(flow)
    task_runs = int(work_done["flow"]["task_runs"])
    return {
        "leads": leads,
        "batches": same["batches"],
        "task_runs": task_runs,
        "direct_s": round(direct_s, 3),
        "flow_s": round(flow_s, 3),
        "overhead_s": round(flow_s - direct_s, 3),
        "overhead_per_task_run_s": round((flow_s - direct_s) / task_runs, 4),
        "flow_vs_direct": round(flow_s / direct_s, 3) if direct_s else None,
    }


def marginal(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What one more due lead costs through the flow against directly, from the two largest
    counts: the fixed cost of a flow run (its creation, a task run per step) cancels out, so
    this says whether the work itself runs as fast through Prefect."""
    sized = sorted((r for r in rows if r["leads"]), key=lambda r: r["leads"])
    if len(sized) < 2:
        return None
    small, large = sized[-2], sized[-1]
    leads = large["leads"] - small["leads"]
    direct = (large["direct_s"] - small["direct_s"]) / leads
    flow = (large["flow_s"] - small["flow_s"]) / leads
    return {
        "between": [small["leads"], large["leads"]],
        "direct_ms_per_lead": round(direct * 1000, 4),
        "flow_ms_per_lead": round(flow * 1000, 4),
        "flow_vs_direct": round(flow / direct, 3) if direct > 0 else None,
        "fixed_flow_cost_s": round(large["overhead_s"] - (flow - direct) * large["leads"], 3),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'due leads':>9} {'task runs':>9} {'direct s':>9} {'flow s':>8} {'overhead s':>10}"
    lines = [head + f" {'per task run s':>14} {'flow/direct':>11}"]
    for r in rows:
        ratio = "" if r["flow_vs_direct"] is None else f"{r['flow_vs_direct']:.2f}"
        lines.append(
            f"{r['leads']:>9,} {r['task_runs']:>9} {r['direct_s']:>9.3f} {r['flow_s']:>8.3f}"
            f" {r['overhead_s']:>10.3f} {r['overhead_per_task_run_s']:>14.4f} {ratio:>11}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", default="0,1000,10000,40000", help="Comma-separated counts.")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.leads.split(",")]

    with (
        tempfile.TemporaryDirectory(prefix="leadflow-bench-prefect-") as tmp,
        temporary_prefect(),
        SmtpSink() as sink,
    ):
        work = Path(tmp)
        started = time.perf_counter()
        warm = work / "warm-up.db"
        build_database(_settings(work, warm, sink.port, args.batch_size), 0)
        run_flow(_settings(work, warm, sink.port, args.batch_size))
        server_start_s = time.perf_counter() - started
        rows = [
            measure(work, n, smtp_port=sink.port, batch_size=args.batch_size, repeat=args.repeat)
            for n in counts
        ]
        _release_runtime(work, sink.port, args.batch_size)

    print(
        json.dumps(
            {
                "benchmark": "prefect_overhead",
                "batch_size": args.batch_size,
                "repeat": args.repeat,
                "first_flow_with_server_start_s": round(server_start_s, 2),
                "rows": rows,
                "marginal": marginal(rows),
            }
        )
    )
    print(_table(rows))
    per_lead = marginal(rows)
    if per_lead is not None:
        verdict = "within" if abs(per_lead["flow_vs_direct"] - 1) <= TARGET else "NOT within"
        print(
            f"per due lead ({per_lead['between'][0]:,} -> {per_lead['between'][1]:,}): direct "
            f"{per_lead['direct_ms_per_lead']:.3f} ms, flow {per_lead['flow_ms_per_lead']:.3f} "
            f"ms, flow/direct {per_lead['flow_vs_direct']:.2f} ({verdict} 10%); fixed cost of "
            f"a flow run {per_lead['fixed_flow_cost_s']:.2f} s"
        )
    print(
        f"(median of {args.repeat}; heartbeat off; first flow, which started the temporary "
        f"Prefect server: {server_start_s:.1f} s, not included)"
    )


def _release_runtime(work: Path, smtp_port: int, batch_size: int) -> None:
    """Close the flows' runtime before its database file is deleted."""
    from flows.context import use_settings

    use_settings(_settings(work, work / "closed.db", smtp_port, batch_size))


if __name__ == "__main__":
    main()
