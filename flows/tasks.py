"""Prefect tasks: one per step of ``leadflow.pipeline.engine.STEPS``, named by what it does, with
retries where the work is I/O, and the runner that walks a run's steps as task runs.

Every task takes small values (a step's name, an id range, an ISO instant) so Prefect never
walks big inputs; the engine's outcome objects come back and are merged by the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prefect import Task, task, unmapped
from prefect.cache_policies import NO_CACHE

from flows.context import runtime
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.pipeline.batching import IdRange
from leadflow.pipeline.engine import STEPS, Step
from leadflow.timeutil import parse_instant

# What a retry is for, by the kind of I/O a step does:
# - database: a locked SQLite file, a dropped PostgreSQL connection; every batch re-checks
#   its "due" condition in its own transaction, so a retry is harmless;
# - mailbox: network; a retry starts again from the checkpoint the last committed batch left,
#   and messages already recorded are recognised by their key;
# - smtp: rows claimed by the failed attempt stay claimed (and become ``unknown`` if it died
#   mid-send); the retry can only pick up rows nobody claimed.
RETRIES: dict[str, tuple[int, list[float]]] = {
    "database": (2, [2.0, 10.0]),
    "files": (2, [2.0, 10.0]),
    "mailbox": (2, [10.0, 60.0]),
    "smtp": (1, [30.0]),
}


@task(cache_policy=NO_CACHE)
def _once(step: str, now: str) -> Any:
    done = STEPS[step].once
    assert done is not None
    rt = runtime()
    return done(rt, parse_instant(now), smtp_transport_factory(rt))


# Task runs per batched step, at most. A task run costs ~6-9 ms here and the server records
# only ~20 a second (it stalls other API calls while it catches up), so a million leads in
# 500 batches of 2,000 become 16 task runs of ~31 batches each (measured, 200,000 leads on
# SQLite: one task run per batch made the score flow 1.38x the direct run). Sixteen still
# keeps a PostgreSQL flow's worker threads busy side by side.
MAX_TASK_RUNS = 16


def task_groups(ranges: Sequence[IdRange], limit: int = MAX_TASK_RUNS) -> list[list[IdRange]]:
    """``ranges`` in order, cut into at most ``limit`` runs of consecutive ranges, as even as
    can be."""
    count = min(len(ranges), limit)
    size, extra = divmod(len(ranges), count) if count else (0, 0)
    groups, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        groups.append(list(ranges[start:end]))
        start = end
    return groups


@task(cache_policy=NO_CACHE)
def _batch(step: str, id_ranges: list[IdRange], now: str) -> Any:
    """Each range in a transaction of its own, one after another; their outcome merged."""
    done, at = STEPS[step], parse_instant(now)
    outcome = done.empty()
    for id_range in id_ranges:
        outcome.merge(done.batch(runtime(), id_range, at))
    return outcome


def _task_for(step: Step) -> Task[..., Any]:
    retries, delays = RETRIES[step.io]
    base: Task[..., Any] = _batch if step.batched else _once
    return base.with_options(name=step.task, retries=retries, retry_delay_seconds=delays)


TASKS: dict[str, Task[..., Any]] = {name: _task_for(step) for name, step in STEPS.items()}


class PrefectRunner:
    """Each step a task run; the batches of a batched step spread over at most
    ``MAX_TASK_RUNS`` mapped task runs."""

    def once(self, step: Step, now: datetime) -> Any:
        return TASKS[step.name](step.name, now.isoformat())

    def plan(self, step: Step, now: datetime) -> list[IdRange]:
        """Planned in the flow itself: one indexed read, too small to be a task run."""
        return step.plan(runtime(), now)

    def each(self, step: Step, ranges: Sequence[IdRange], now: datetime) -> list[Any]:
        groups = task_groups(ranges)
        futures = TASKS[step.name].map(unmapped(step.name), groups, unmapped(now.isoformat()))
        return list(futures.result())
