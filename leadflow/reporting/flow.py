"""Movement between stages, from the append-only transition history.

``LEAD()`` over each lead's transitions (ordered by ``at``, then ``id``) pairs every entry
into a stage with the move that ended it. Transitions after ``until`` are ignored, so an
entry whose next move is later than ``until`` counts as still in the stage.

- Conversion is a cohort: entries into a stage made within the period, grouped by where
  each went next. A lead that re-enters a stage (a revival) counts once per entry, so the
  outcomes of a stage add up to its entries.
- Time in stage covers completed stays that *ended* within the period (a weekly report
  then measures real stays, not just those shorter than a week). Leads still in a stage
  are excluded here; their current age is what the aging section shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.reporting.sqlfn import Distribution, Scope, days_between, distributions
from models.tables import TRANSITIONS


@dataclass(frozen=True)
class Flow:
    """``count`` entries into ``stage`` whose next move went to ``next_stage``.

    ``moved`` is False for entries with no later move by ``until``; ``next_stage`` is None
    both then and for moves to the callback list.
    """

    pipeline: str | None
    stage: str
    next_stage: str | None
    moved: bool
    count: int


def _paired(scope: Scope, *, entered_in_period: bool, with_next_stage: bool) -> Select[Any]:
    """Each transition with the time (and stage) of the lead's next one.

    Only the window functions a caller needs are computed: on SQLite each ``LEAD()`` costs
    about as much as reading the table.
    """
    t = TRANSITIONS
    order = (t.c.at, t.c.id)
    # An entry inside the period is followed by moves at or after it, so the lower bound can
    # be applied before the window; stays that merely *end* in the period need all history.
    bounds: ColumnElement[bool] = (
        scope.within(t.c.at) if entered_in_period else t.c.at <= scope.until
    )
    columns: list[Any] = [
        t.c.pipeline,
        t.c.to_stage,
        t.c.at,
        func.lead(t.c.at, type_=t.c.at.type)
        .over(partition_by=t.c.lead_id, order_by=order)
        .label("next_at"),
    ]
    if with_next_stage:
        columns.append(
            func.lead(t.c.to_stage).over(partition_by=t.c.lead_id, order_by=order).label("next_to")
        )
    return select(*columns).where(bounds, *scope.in_pipeline(t.c.pipeline))


def flows(conn: Connection, scope: Scope) -> list[Flow]:
    paired = _paired(scope, entered_in_period=True, with_next_stage=True).subquery()
    moved = paired.c.next_at.is_not(None)  # ``at`` is NOT NULL: no next time, no next move
    grouped = select(
        paired.c.pipeline,
        paired.c.to_stage,
        paired.c.next_to,
        moved.label("moved"),
        func.count().label("n"),
    ).where(paired.c.to_stage.is_not(None))
    rows = conn.execute(
        grouped.group_by(paired.c.pipeline, paired.c.to_stage, paired.c.next_to, moved)
    ).all()
    return [Flow(r[0], str(r[1]), r[2], bool(r[3]), int(r[4])) for r in rows]


def time_in_stage(conn: Connection, scope: Scope) -> dict[tuple[str | None, str], Distribution]:
    """Days from entering a stage to the next move, for stays that ended in the period."""
    paired = _paired(scope, entered_in_period=False, with_next_stage=False).subquery()
    stays = select(
        paired.c.pipeline,
        paired.c.to_stage.label("stage"),
        days_between(scope.dialect, paired.c.next_at, paired.c.at).label("v"),
    ).where(
        paired.c.to_stage.is_not(None),
        scope.within(paired.c.next_at),
    )
    found = distributions(conn, stays, ["pipeline", "stage"])
    return {(key[0], str(key[1])): dist for key, dist in found.items()}
