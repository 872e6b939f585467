"""Running flows in this process (``leadflow run``, the demo, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows.context import use_settings
from flows.pipeline import FLOWS
from leadflow.settings import Settings


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
            results[name] = FLOWS[name](now=now.isoformat())
    return results
