"""Running flows in this process (``leadflow run``, the demo, tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

from prefect import Flow
from prefect.futures import PrefectFuture
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.context import use_settings
from flows.pipeline import FLOWS
from flows.server import Server
from leadflow.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

# Read by Prefect when a flow module is imported (served runs import it in a subprocess).
SERIAL_TASKS_ENV = "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"


def api_url() -> str | None:
    """PREFECT_API_URL (environment or Prefect profile) without credentials; None when runs
    go to a temporary server this process starts."""
    url = get_current_settings().api.url
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}"


def where_runs_go() -> tuple[str, str]:
    """What the demo says before its first flow run, and where to watch the runs after."""
    url = api_url()
    if url is None:
        return (
            "starting Prefect (a temporary local server; first start ~20 s)...",
            "Prefect UI: `make ui`, then open http://127.0.0.1:4200",
        )
    ui = get_current_settings().ui_url
    return (f"Prefect: runs go to the server at {url}", f"Prefect UI: {ui or url}")


@contextmanager
def sending_to(server: Server) -> Iterator[None]:
    """This process's flow runs go to ``server`` (``flows.server.chosen_server``): a configured
    one as Prefect reads it; the ``make ui`` server or the temporary one by its URL, once it
    answers. When Prefect's settings name a server that ``chosen_server`` could not see
    before Prefect was imported (a ``.env`` or ``prefect.toml``), that one wins and the
    temporary server is stopped unused."""
    configured = api_url()
    if server.kind == "configured" or configured is not None:
        server.stop()
        server.kind, server.api_url = "configured", configured
        yield
        return
    server.wait_until_ready()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        try:
            yield
        finally:  # what is still queued reaches the server before a temporary one stops
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5, at_exit=False)
            EventsWorker.drain_all(timeout=5, at_exit=False)


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


def run_flows(
    names: list[str],
    *,
    now: datetime,
    settings: Settings,
    settle: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Each flow once, in order; their results by name. A failed flow raises its error.

    ``on_step`` hears what is about to happen ("running tick (1/2)", ...), for a
    progress line on a terminal.

    With ``settle`` (``leadflow run``), return only once the server has recorded every task
    run of these flows (at most ``SETTLE_SECONDS``): it records them from events, and a
    temporary server stopped at exit with events still queued loses them and prints a
    traceback ("Error flushing 1 events")."""
    use_settings(settings)
    results: dict[str, Any] = {}
    run_ids: list[UUID] = []
    with quick_flows():
        for number, name in enumerate(names, start=1):
            if on_step is not None:
                on_step(f"running {name} ({number}/{len(names)})")
            state = for_database(FLOWS[name], settings)(now=now.isoformat(), return_state=True)
            results[name] = state.result()  # raises the flow's error when it failed
            if state.state_details.flow_run_id is not None:
                run_ids.append(state.state_details.flow_run_id)
    if settle and run_ids:
        if on_step is not None:
            on_step("the server is recording the runs")
        asyncio.run(_settle(run_ids))
    return results


SETTLE_SECONDS = 15.0
PAGE = 200  # task runs per request


async def _settle(run_ids: list[UUID]) -> None:
    """Until every task run of these flow runs is on record in a final state, and the count
    has stayed the same for two looks in a row (or ``SETTLE_SECONDS`` have passed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import TaskRun

    deadline = time.monotonic() + SETTLE_SECONDS
    seen = -1
    async with get_client() as client:
        while time.monotonic() < deadline:
            runs: list[TaskRun] = []
            page = PAGE
            while page == PAGE:  # the server answers at most 200 a time: read every page
                more = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
                    offset=len(runs),
                    limit=PAGE,
                )
                runs.extend(more)
                page = len(more)
            if len(runs) == seen and all(r.state is not None and r.state.is_final() for r in runs):
                return
            seen = len(runs)
            await asyncio.sleep(0.5)
