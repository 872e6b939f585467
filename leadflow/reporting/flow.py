"""Movement between stages, from the append-only transition history.

Every transition row is one completed stay: ``from_stage`` entered at ``from_entered_at``
and left at ``at`` for ``to_stage`` (NULL: the callback list). Both metrics are therefore
plain aggregates over ``stage_transition``, with no pairing of each row with the lead's next
one. Transitions after ``until`` are ignored, so an entry whose next move is later than
``until`` counts as still in the stage.

- Conversion is a cohort: entries into a stage made within the period, grouped by where
  each went next. A lead that re-enters a stage (a revival) counts once per entry, so the
  outcomes of a stage add up to its entries.
- Time in stage covers completed stays that *ended* within the period (a weekly report
  then measures real stays, not just those shorter than a week). Leads still in a stage
  are excluded here; their current age is what the aging section shows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, func, select

from leadflow.reporting.sqlfn import Distribution, Scope, days_between, distributions_in_order
from models.tables import TRANSITIONS, stay_order


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


def flows(conn: Connection, scope: Scope) -> list[Flow]:
    """Entries in the period by outcome, in one pass over the transitions of the period.

    Every row in the period is an entry into its ``to_stage``; a row whose stay of
    ``from_stage`` began in the period is also the move that ended that entry (a move is
    never before its entry, so those rows are in the period too). The entries left over
    have not moved by ``until``.
    """
    t = TRANSITIONS
    began_here = and_(t.c.from_stage.is_not(None), scope.within(t.c.from_entered_at))
    rows = conn.execute(
        select(
            t.c.pipeline,
            t.c.from_stage,
            t.c.to_stage,
            func.count(),
            func.sum(case((began_here, 1), else_=0)),
        )
        .where(scope.within(t.c.at), *scope.in_pipeline(t.c.pipeline))
        .group_by(t.c.pipeline, t.c.from_stage, t.c.to_stage)
    ).all()
    result: list[Flow] = []
    waiting: dict[tuple[str | None, str], int] = defaultdict(int)
    for pipeline, from_stage, to_stage, entries, moved in rows:
        if to_stage is not None:
            waiting[(pipeline, str(to_stage))] += int(entries)
        if moved:
            result.append(Flow(pipeline, str(from_stage), to_stage, True, int(moved)))
            waiting[(pipeline, str(from_stage))] -= int(moved)
    result += [Flow(p, stage, None, False, n) for (p, stage), n in waiting.items() if n]
    return result


def time_in_stage(conn: Connection, scope: Scope) -> dict[tuple[str | None, str], Distribution]:
    """Days from entering a stage to the next move, for stays that ended in the period.

    On SQLite read in length order from ``ix_transition_stay_days`` (its key is the value
    itself); on PostgreSQL one GROUP BY with ``percentile_cont``.
    """
    t = TRANSITIONS
    days = days_between(scope.dialect, t.c.at, t.c.from_entered_at)
    key = stay_order(t.c.at, t.c.from_entered_at)
    found = distributions_in_order(
        conn,
        [t.c.pipeline, t.c.from_stage],
        days,
        [key] if scope.dialect == "sqlite" else [key, days],
        [
            t.c.from_stage.is_not(None),
            key.is_not(None),  # no stay start (NULL from_entered_at): not a stay
            scope.within(t.c.at),
            *scope.in_pipeline(t.c.pipeline),
        ],
    )
    return {(key[0], str(key[1])): dist for key, dist in found.items()}
