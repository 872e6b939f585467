"""Splitting due work into id ranges, so flows map one task over each batch of leads.

A range ``(first_id, last_id)`` is tiny to pass around (Prefect walks task inputs) and the
task re-checks the "due" condition inside its own transaction, so a range that went stale
between planning and acting does no harm.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.sql.elements import ColumnElement

IdRange = tuple[int, int]


def id_ranges(
    engine: Engine, id_column: Any, condition: ColumnElement[bool], batch_size: int
) -> list[IdRange]:
    """Consecutive id ranges holding at most ``batch_size`` rows that match ``condition``."""
    ranges: list[IdRange] = []
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=10_000).execute(
            select(id_column).where(condition).order_by(id_column)
        )
        first: int | None = None
        last = 0
        count = 0
        for (row_id,) in result:
            if first is None:
                first = row_id
            last = row_id
            count += 1
            if count == batch_size:
                ranges.append((first, last))
                first, count = None, 0
        if first is not None:
            ranges.append((first, last))
    return ranges


def one_range(conn: Connection, id_column: Any, condition: ColumnElement[bool]) -> list[IdRange]:
    """All rows matching ``condition`` as one range, read on ``conn`` (a dry run's own
    transaction sees its uncommitted changes; it commits nothing between batches anyway)."""
    low, high = conn.execute(
        select(func.min(id_column), func.max(id_column)).where(condition)
    ).one()
    return [] if low is None else [(int(low), int(high))]
