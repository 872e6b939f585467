"""Cadence planning: when each step is due, which A/B variant a lead gets, what comes next.

Pure functions over the config. Leads in the middle of a cadence are matched to steps by
step *id*: after a config change the next step is whatever follows that id in the new
config, a removed step is cancelled, and a new template applies from the next send on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from leadflow.config.schema import Cadence, CadenceStep
from leadflow.config.schema import SendWindow as WindowSpec
from leadflow.pipeline.business_time import (
    HolidayCalendar,
    SendWindow,
    add_business_days,
    add_days,
    next_window_start,
)


@dataclass(frozen=True)
class PlannedStep:
    step: CadenceStep
    due_at: datetime


def window_of(spec: WindowSpec) -> SendWindow:
    return SendWindow(spec.weekday_numbers, spec.start_time, spec.end_time)


def step_index(cadence: Cadence, step_id: str) -> int | None:
    return next((i for i, s in enumerate(cadence.steps) if s.id == step_id), None)


def following_step(cadence: Cadence, step_id: str) -> CadenceStep | None:
    """The step after ``step_id`` in the current config; None at the end or if it vanished."""
    index = step_index(cadence, step_id)
    if index is None or index + 1 >= len(cadence.steps):
        return None
    return cadence.steps[index + 1]


def step_due(
    after: datetime,
    step: CadenceStep,
    *,
    window: SendWindow,
    tz: ZoneInfo,
    holidays: HolidayCalendar,
) -> datetime:
    """When ``step`` goes out if the previous one went (or the cadence started) at ``after``."""
    if step.delay_business_days is not None:
        base = add_business_days(after, step.delay_business_days, tz=tz, holidays=holidays)
    else:
        base = add_days(after, step.delay_days, tz=tz)
    return next_window_start(base, window, tz=tz, holidays=holidays)


def choose_variant(lead_id: int, cadence_id: str, step: CadenceStep) -> tuple[str | None, str]:
    """(variant id, template) — deterministic per lead, proportional to the weights."""
    if not step.variants:
        return None, step.template or ""
    total = sum(v.weight for v in step.variants)
    digest = hashlib.sha256(f"{lead_id}:{cadence_id}:{step.id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in step.variants:
        if point < variant.weight:
            return variant.id, variant.template
        point -= variant.weight
    last = step.variants[-1]
    return last.id, last.template
