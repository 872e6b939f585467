"""The first ``leadflow run``: seconds from the command to its first task run and to COMPLETED.

    python -m benchmarks.bench_first_run [--leads 200] [--repeat 3] [--flow score]
                                         [--api-url-env]

Every figure comes from fresh subprocesses, as a user's command would run:

- **import**: ``python -c "import leadflow.app.cli"`` (the CLI before it does anything) and
  ``python -c "import flows.pipeline"`` (what each run of ``leadflow serve`` imports in its
  own process), next to ``python -c pass``.
- **cold**: ``leadflow run FLOW --now T0 --json`` with no Prefect server running and a new
  ``PREFECT_HOME``: a temporary server starts and creates and migrates Prefect's database.
- **warm home**: the same command again on the cold run's ``PREFECT_HOME`` (migrated).
- **served**: the same command while a ``prefect server start`` runs as ``make ui`` starts it
  (its start is not timed); ``leadflow run`` finds it at ``LEADFLOW_PREFECT_UI_URL``, or with
  ``--api-url-env`` is given ``PREFECT_API_URL`` (the only way before the server detection).

Each run works on its own copy of one small SQLite database of ``--leads`` new leads, all due
for scoring, and must rescore all of them. The trigger is the instant just before the
subprocess starts; the first task run's start and the flow run's end are read afterwards from
the server's own record (``prefect.db`` in the server's ``PREFECT_HOME``: ``task_run``,
``flow_run``), so they are the times Prefect shows in its UI; the process's exit is timed too.
CPU seconds (user + system) of the command and what it waited for (the temporary server) are
given next to the wall times: on a shared machine they show the work when the wall time shows
the queue. Each figure is the median of ``--repeat`` runs; the load average is printed.

Target (issue 21): at most 5 s from the trigger to the first task, in absolute seconds.

Output: one JSON line, then lines for people.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import CONFIG, ROOT, TEMPLATES, Population, build_database, copy_database

T0 = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)  # a Tuesday, 09:30 in New York
TARGET_S = 5.0  # trigger to the first task run (issue 21)
IMPORTS = {
    "python": "pass",
    "leadflow CLI": "import leadflow.app.cli",
    "flows (a served run's process)": "import flows.pipeline",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _env(**values: str) -> dict[str, str]:
    """This environment without Prefect's API URL or any LEADFLOW_ setting, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PREFECT_API_URL" and not k.startswith("LEADFLOW_")
    }
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    env.update(values)
    return env


def measure_import(statement: str) -> dict[str, float]:
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, env=_env(), check=True)
    return {"wall_s": time.perf_counter() - started, "cpu_s": _children_cpu() - cpu}


def _when(text: str) -> float:
    """A timestamp as Prefect stores it in SQLite (naive UTC) as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _record(prefect_home: Path) -> tuple[float, float]:
    """The newest flow run in this Prefect home: its first task run's start and its end."""
    conn = sqlite3.connect(f"file:{prefect_home / 'prefect.db'}?mode=ro", uri=True)
    try:
        run_id, state, ended = conn.execute(
            "SELECT id, state_type, end_time FROM flow_run ORDER BY created DESC LIMIT 1"
        ).fetchone()
        (first,) = conn.execute(
            "SELECT min(start_time) FROM task_run WHERE flow_run_id = ?", (run_id,)
        ).fetchone()
    finally:
        conn.close()
    if state != "COMPLETED" or first is None:
        raise RuntimeError(f"the flow run ended {state} with first task run {first}")
    return _when(first), _when(ended)


def measure_run(
    work: Path, base: Path, prefect_home: Path, flow: str, leads: int, **env: str
) -> dict[str, float]:
    """One ``leadflow run FLOW`` on a fresh copy of ``base``, timed from the trigger."""
    db = work / "run.db"
    copy_database(base, db)
    command = [sys.executable, "-m", "leadflow.app.cli", "run", flow, "--now", T0.isoformat()]
    environment = _env(
        LEADFLOW_HOME=str(work / "home"),
        LEADFLOW_DATABASE_URL=f"sqlite:///{db}",
        LEADFLOW_CONFIG=str(CONFIG),
        LEADFLOW_TEMPLATES=str(TEMPLATES),
        LEADFLOW_DEMO="true",
        PREFECT_HOME=str(prefect_home),
        **env,
    )
    cpu = _children_cpu()
    trigger = time.time()
    done = subprocess.run(
        [*command, "--json"], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    exited = time.time() - trigger
    if done.returncode != 0:
        raise RuntimeError(f"leadflow run failed ({done.returncode}): {done.stderr[-2000:]}")
    rescored = json.loads(done.stdout)[flow]["score"]["rescored"]
    if rescored != leads:
        raise RuntimeError(f"expected {leads} leads rescored, got {rescored}")
    first_task, completed = _record(prefect_home)
    return {
        "first_task_s": first_task - trigger,
        "completed_s": completed - trigger,
        "exit_s": exited,
        "cpu_s": _children_cpu() - cpu,
    }


@contextmanager
def running_server(home: Path) -> Iterator[str]:
    """``prefect server start`` as ``make ui`` starts it, on a free port; its API URL."""
    port = _free_port()
    env = _env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=(
            "prefect.server.concurrency.lease_storage.filesystem"
        ),
    )
    prefect = Path(sys.executable).parent / "prefect"
    command = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(api):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server start did not answer at {api}")
            time.sleep(0.5)
        yield api
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flow", default="score", help="A flow with a score step.")
    parser.add_argument(
        "--api-url-env",
        action="store_true",
        help="Served case: give PREFECT_API_URL instead of letting leadflow run find the server.",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    imports = {
        name: _median([measure_import(statement) for _ in range(args.repeat)])
        for name, statement in IMPORTS.items()
    }
    cases: dict[str, list[dict[str, float]]] = {"cold": [], "warm home": [], "served": []}
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-first-run-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        build_database(base, Population(leads=args.leads, now=T0))
        nothing_there = f"http://127.0.0.1:{_free_port()}/api"  # the probe finds no server
        for attempt in range(args.repeat):
            home = work / f"prefect-{attempt}"
            home.mkdir()
            for case in ("cold", "warm home"):
                cases[case].append(
                    measure_run(
                        work,
                        base,
                        home,
                        args.flow,
                        args.leads,
                        LEADFLOW_PREFECT_UI_URL=nothing_there,
                    )
                )
            shutil.rmtree(home)
        server_home = work / "prefect-server"
        server_home.mkdir()
        with running_server(server_home) as api:
            found = (
                {"PREFECT_API_URL": api} if args.api_url_env else {"LEADFLOW_PREFECT_UI_URL": api}
            )
            for _ in range(args.repeat):
                cases["served"].append(
                    measure_run(work, base, server_home, args.flow, args.leads, **found)
                )
    load_after = os.getloadavg()
    runs = {case: _median(results) for case, results in cases.items()}
    print(
        json.dumps(
            {
                "benchmark": "first_run",
                "flow": args.flow,
                "leads": args.leads,
                "repeat": args.repeat,
                "served_by": "PREFECT_API_URL" if args.api_url_env else "detected",
                "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
                "imports": imports,
                "runs": runs,
                "target_first_task_s": TARGET_S,
            }
        )
    )
    print(f"{'import':<32} {'wall s':>7} {'CPU s':>7}")
    for name, figures in imports.items():
        print(f"{name:<32} {figures['wall_s']:>7.2f} {figures['cpu_s']:>7.2f}")
    print(
        f"\n`leadflow run {args.flow}` ({args.leads} leads)"
        f"{'first task s':>15} {'COMPLETED s':>12} {'exit s':>7} {'CPU s':>6}  target"
    )
    for case, figures in runs.items():
        met = "met" if figures["first_task_s"] <= TARGET_S else "NOT met"
        print(
            f"{case:<32} {figures['first_task_s']:>15.2f} {figures['completed_s']:>12.2f}"
            f" {figures['exit_s']:>7.2f} {figures['cpu_s']:>6.2f}  <= {TARGET_S:g} s: {met}"
        )
    print(
        f"(median of {args.repeat}; seconds from the command; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
