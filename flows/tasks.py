"""Prefect tasks: thin wrappers that name each unit of work and add retries on I/O only.

Every task takes small values (an id range, an ISO instant) and returns a plain dict, so
Prefect never walks big inputs and results stay readable in the UI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.context import runtime
from leadflow import engine
from leadflow.batching import IdRange
from leadflow.delivery import smtp_transport_factory
from leadflow.timeutil import parse_instant

# Database work is retried (a locked SQLite file, a dropped PostgreSQL connection); every
# batch re-checks its "due" condition in its own transaction, so a retry is harmless.
DB_RETRIES = 2
DB_RETRY_DELAYS = [2.0, 10.0]


def _when(now: str) -> datetime:
    return parse_instant(now)


@task(
    name="score batch",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def score_batch(id_range: IdRange, now: str) -> dict[str, int]:
    result = engine.score(runtime(), id_range, now=_when(now))
    return {"rescored": result.rescored, "changed": result.changed}


@task(
    name="advance batch",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def advance_batch(id_range: IdRange, now: str) -> dict[str, Any]:
    return engine.advance(runtime(), id_range, now=_when(now)).as_dict()


@task(
    name="revive callbacks",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def revive_batch(id_range: IdRange, now: str) -> dict[str, Any]:
    return engine.revive(runtime(), id_range, now=_when(now)).as_dict()


@task(
    name="reconcile stale claims",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def reconcile(now: str) -> list[int]:
    return engine.reconcile(runtime(), now=_when(now))


# A retry is safe: rows claimed by the failed attempt stay claimed (and become `unknown` if
# the attempt died mid-send); the retry can only pick up rows nobody claimed.
@task(
    name="deliver batch",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=30,
)
def deliver_batch(id_range: IdRange, now: str, kind: str) -> dict[str, Any]:
    rt = runtime()
    outcome = engine.deliver(
        rt, id_range, now=_when(now), kind=kind, transport=smtp_transport_factory(rt)
    )
    return {**outcome.as_dict(), "summary": outcome.summary()}


# Reading the mailbox is network I/O: retried. A retry starts again from the checkpoint the
# last committed batch left, and messages already recorded are recognised by their key.
@task(
    name="sync mailbox",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[10.0, 60.0],
)
def sync_mailbox(now: str) -> dict[str, Any]:
    outcome = engine.listen(runtime(), now=_when(now))
    if outcome.errors and not outcome.fetched:
        raise RuntimeError(outcome.summary())
    return outcome.as_dict()


@task(
    name="apply config change",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def apply_config_change(now: str) -> engine.ConfigChange:
    return engine.apply_config_change(runtime(), now=_when(now))


@task(
    name="import inbox files",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def import_inbox(now: str) -> dict[str, Any]:
    from leadflow.inbox import import_inbox as run_import

    return run_import(runtime(), now=_when(now))


@task(
    name="compute report",
    cache_policy=NO_CACHE,
    retries=DB_RETRIES,
    retry_delay_seconds=DB_RETRY_DELAYS,
)
def compute_report(now: str) -> dict[str, Any]:
    from leadflow.report import build_report

    rt = runtime()
    with rt.engine.connect() as conn:
        return build_report(conn, rt.loaded, since=None, until=_when(now), pipeline=None)
