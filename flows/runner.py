"""Running flows in this process (``leadflow run``, the demo, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Flow
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.context import use_settings
from flows.pipeline import FLOWS
from leadflow.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

# Read by Prefect when a flow module is imported (served runs import it in a subprocess).
SERIAL_TASKS_ENV = "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"


def uses_sqlite(settings: Settings) -> bool:
    """SQLite has one writer at a time, and a batch transaction that began by reading fails at
    once with "database is locked" (no busy wait) when another batch committed meanwhile, so
    mapped batches there must run one after another; PostgreSQL runs them side by side."""
    return settings.db_url.startswith("sqlite")


def for_database(flow: Flow[P, R], settings: Settings) -> Flow[P, R]:
    """The flow with its batches run one at a time when the database is SQLite."""
    if not uses_sqlite(settings):
        return flow
    # Prefect's TaskRunner is invariant in its future type, so its own runner needs a cast.
    serial = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=1))
    return flow.with_options(task_runner=serial)


@contextmanager
def quick_flows() -> Iterator[None]:
    """No heartbeat thread for in-process runs: it adds ~1 s to every flow call, and a
    crash here is seen by the caller anyway (served deployments keep their heartbeat)."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def run_flows(names: list[str], *, now: datetime, settings: Settings) -> dict[str, Any]:
    use_settings(settings)
    results: dict[str, Any] = {}
    with quick_flows():
        for name in names:
            results[name] = for_database(FLOWS[name], settings)(now=now.isoformat())
    return results
