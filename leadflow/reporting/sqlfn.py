"""Portable SQL pieces: the report period, day arithmetic, ISO weeks and percentiles.

SQLite stores timestamps as naive UTC text and PostgreSQL as timestamptz, so every date
computation goes through these helpers. Percentiles are exact on both: PostgreSQL's
``percentile_cont``, and on SQLite (which has neither it nor ``median``) the values at the
two nearest ranks, read with ``ROW_NUMBER``/``COUNT`` windows or index walks, interpolated
linearly the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    Select,
    and_,
    cast,
    extract,
    func,
    literal,
    literal_column,
    or_,
)
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement

# Written into the SQL, not bound: SQLite matches an expression index only on literal text.
_UNIX_EPOCH_JULIAN = literal_column("2440587.5", Float)
EPOCH_MONDAY = date(1970, 1, 5)  # weeks are numbered from the first Monday after the epoch
_MONDAY_EPOCH_DAY = 4
MEDIAN = Fraction(1, 2)
P90 = Fraction(9, 10)


@dataclass(frozen=True)
class Scope:
    """What one report looks at: a dialect, the closed period [since, until], a pipeline."""

    dialect: str
    since: datetime | None
    until: datetime
    pipeline: str | None

    def within(self, column: Any) -> ColumnElement[bool]:
        """``column`` inside the period; since=None means all history up to ``until``."""
        if self.since is None:
            return column <= self.until  # type: ignore[no-any-return]
        return and_(column >= self.since, column <= self.until)

    def in_pipeline(self, column: Any) -> list[ColumnElement[bool]]:
        return [] if self.pipeline is None else [column == self.pipeline]


def epoch_days(dialect: str, column: Any) -> ColumnElement[float]:
    """Days since 1970-01-01 UTC as a float."""
    if dialect == "sqlite":
        return func.julianday(column) - _UNIX_EPOCH_JULIAN
    return cast(extract("epoch", column), Float) / 86400.0  # type: ignore[return-value]


def days_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[float]:
    return epoch_days(dialect, later) - epoch_days(dialect, earlier)


def days_until(dialect: str, moment: datetime, column: Any) -> ColumnElement[float]:
    """Days from ``column`` to the fixed instant ``moment`` (the report's ``until``)."""
    return literal(moment.timestamp() / 86400.0, Float) - epoch_days(dialect, column)


def week_index(dialect: str, column: Any) -> ColumnElement[int]:
    """Monday-based week number; ``week_start`` turns it back into the Monday's date."""
    weeks = (epoch_days(dialect, column) - _MONDAY_EPOCH_DAY) / 7.0
    if dialect == "sqlite":  # CAST truncates toward zero: equal to floor after 1970-01-05
        return cast(weeks, Integer)
    return cast(func.floor(weeks), Integer)


def week_start(index: int) -> date:
    return EPOCH_MONDAY + timedelta(weeks=index)


@dataclass(frozen=True)
class Distribution:
    count: int
    mean: float
    median: float
    p90: float


def distributions(
    conn: Connection, source: Select[Any], keys: Sequence[str]
) -> dict[tuple[Any, ...], Distribution]:
    """Count, mean, median and p90 of column ``v`` of ``source`` for each group of ``keys``.

    The database ranks the values per group and returns only the rows at the percentile
    offsets (at most four per group); percentiles interpolate linearly between the two
    nearest ranks, like ``statistics.quantiles(method="inclusive")``.
    """
    sub = source.subquery()
    part = [sub.c[k] for k in keys]
    if conn.dialect.name == "postgresql":
        return _percentile_cont(conn, part, sub.c.v, [])
    # One ordering for all three windows, so the database sorts the values only once.
    ranked = sa_select(
        *part,
        sub.c.v,
        (func.row_number().over(partition_by=part, order_by=sub.c.v) - 1).label("i"),
        func.count().over(partition_by=part, order_by=sub.c.v, rows=(None, None)).label("n"),
        cast(
            func.avg(sub.c.v).over(partition_by=part, order_by=sub.c.v, rows=(None, None)), Float
        ).label("mean"),
    ).subquery()
    i, n = ranked.c.i, ranked.c.n
    wanted: list[ColumnElement[bool]] = []
    for q in (MEDIAN, P90):
        scaled = (n - 1) * q.numerator
        wanted += [i == scaled // q.denominator, i == (scaled + q.denominator - 1) // q.denominator]
    rows = conn.execute(
        sa_select(*[ranked.c[k] for k in keys], i, n, ranked.c.mean, ranked.c.v).where(or_(*wanted))
    ).all()
    found: dict[tuple[Any, ...], tuple[int, float, dict[int, float]]] = {}
    width = len(keys)
    for row in rows:
        key = tuple(row[:width])
        rank, count, mean, value = row[width:]
        entry = found.setdefault(key, (int(count), float(mean), {}))
        entry[2][int(rank)] = float(value)
    return {
        key: Distribution(count, mean, _pick(values, count, MEDIAN), _pick(values, count, P90))
        for key, (count, mean, values) in found.items()
    }


def distributions_in_order(
    conn: Connection,
    keys: Sequence[ColumnElement[Any]],
    value: ColumnElement[float],
    order: Sequence[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], Distribution]:
    """``distributions`` of ``value`` per group of ``keys``, read from an index instead of sorted.

    ``keys`` then ``order`` should lead an index (``order`` sorts the rows like ``value``):
    count and mean come from one GROUP BY in index order, and each percentile from one
    ``ORDER BY order LIMIT 2 OFFSET k`` walk of the group's index range, taken from whichever
    end is nearer (the p90 from the top), so no row is sorted and about 0.6 of each group is
    read. Without such an index the figures are the same, only slower. On PostgreSQL, whose
    ``OFFSET`` walks are slower than its sort, one GROUP BY with ``percentile_cont``.
    """
    if conn.dialect.name == "postgresql":
        return _percentile_cont(conn, keys, value, where)
    width = len(keys)
    stats = conn.execute(
        sa_select(*keys, func.count(), func.avg(value)).where(*where).group_by(*keys)
    ).all()
    found: dict[tuple[Any, ...], Distribution] = {}
    for row in stats:
        key, count, mean = tuple(row[:width]), int(row[width]), float(row[width + 1])
        same = [c.is_(None) if k is None else c == k for c, k in zip(keys, key, strict=True)]
        values: dict[int, float] = {}
        for q in (MEDIAN, P90):
            low, high = _ranks(count, q)
            if low in values and high in values:
                continue
            ranks: Sequence[int] = range(low, high + 1)
            walk = sa_select(value).where(*where, *same).limit(high - low + 1)
            if low <= count - 1 - high:
                walk = walk.order_by(*order).offset(low)
            else:  # nearer the top: walk down from the largest value
                walk = walk.order_by(*[o.desc() for o in order]).offset(count - 1 - high)
                ranks = range(high, low - 1, -1)
            values.update(zip(ranks, (float(v) for v in conn.execute(walk).scalars()), strict=True))
        found[key] = Distribution(
            count, mean, _pick(values, count, MEDIAN), _pick(values, count, P90)
        )
    return found


def _percentile_cont(
    conn: Connection,
    keys: Sequence[ColumnElement[Any]],
    value: ColumnElement[Any],
    where: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], Distribution]:
    """PostgreSQL: count, mean and ``percentile_cont`` (the same linear interpolation between
    the two nearest ranks) per group, in one GROUP BY."""
    v = cast(value, Float)
    rows = conn.execute(
        sa_select(
            *keys,
            func.count(),
            func.avg(v),
            *[func.percentile_cont(float(q)).within_group(v) for q in (MEDIAN, P90)],
        )
        .where(*where)
        .group_by(*keys)
    ).all()
    width = len(keys)
    return {
        tuple(r[:width]): Distribution(
            int(r[width]), float(r[width + 1]), float(r[width + 2]), float(r[width + 3])
        )
        for r in rows
    }


def _ranks(count: int, q: Fraction) -> tuple[int, int]:
    """The two ranks (0-based) that the ``q`` quantile of ``count`` values lies between."""
    position = (count - 1) * q
    return math.floor(position), math.ceil(position)


def _pick(values: dict[int, float], count: int, q: Fraction) -> float:
    position = (count - 1) * q
    low, high = _ranks(count, q)
    return values[low] + (values[high] - values[low]) * float(position - low)
