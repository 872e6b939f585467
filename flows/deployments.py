"""``leadflow serve``: one deployment per flow, on the crons of pipeline.yaml.

Each deployment has a concurrency limit of one with the CANCEL_NEW strategy: a run that
fires while the previous run of the same flow is still busy is cancelled instead of running
beside it (the next tick picks up the work); the outbox claim in the database is the
guarantee behind it. Restarting ``serve`` after editing a cron replaces the
schedule (a removed cron removes it). See docs/orchestration.md.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from flows.context import use_settings
from flows.pipeline import FLOWS
from flows.runner import SERIAL_TASKS_ENV, uses_sqlite
from leadflow.config.schema import PipelineConfig
from leadflow.settings import Settings


def build_deployments(config: PipelineConfig) -> list[Any]:
    deployments = []
    crons = config.schedules.model_dump()
    for name, flow in FLOWS.items():
        cron = crons.get(name)
        # crons are read in the config's time zone: "0 7 * * 1" is Monday 07:00 for ops
        schedules = [Cron(cron, timezone=config.timezone)] if cron else []
        deployments.append(
            flow.to_deployment(
                name=f"leadflow-{name}",
                schedules=schedules,
                tags=["leadflow", name],
                description=flow.description,
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
                ),
            )
        )
    return deployments


# Prefect keeps deployment-concurrency leases in server memory by default: if the server stops
# while a run holds its deployment's slot and that run never reports an end (a crash, a
# reboot), the slot stays taken after the restart and every later run of that flow is
# cancelled. Leases kept on disk (under PREFECT_HOME) survive a restart and expire instead
# (at most ~5 min after the run's last renewal). Without PREFECT_API_URL the server is the
# temporary one this process starts, so the setting must be in the environment before then.
FILE_LEASES = "prefect.server.concurrency.lease_storage.filesystem"


def serve_all(settings: Settings, config: PipelineConfig) -> None:
    os.environ.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", FILE_LEASES)
    if uses_sqlite(settings):  # served runs import the flows afresh, in subprocesses
        os.environ.setdefault(SERIAL_TASKS_ENV, "1")
    use_settings(settings)
    serve(*build_deployments(config), print_starting_message=True)
