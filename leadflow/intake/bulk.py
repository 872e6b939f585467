"""New rows into one table: one prepared statement per batch, its values converted a column
at a time.

``conn.execute(insert(table), rows)`` runs SQLAlchemy's generic parameter machinery for every
row (a dict per row, each value through its type's processor): for an import's batch of new
leads that took longer than SQLite's own ``executemany`` of the same rows. Here the
``insert()`` is compiled once per (dialect, columns); each column's values go through that
column's own bind processor (``TypeEngine.bind_processor``, so values are stored exactly as
SQLAlchemy stores them: ``UTCDateTime``, JSON, booleans), a value the same for every row
(``Same``) only once; the driver gets one ``executemany``. A statement whose compiled
parameters are not exactly the columns given (a default SQLAlchemy would add) is run through
``conn.execute`` instead, which is correct if slower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine import Dialect

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Same:
    """One value for every row of a column."""

    value: Any


Values = Sequence[Any] | Same


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    order: tuple[str, ...]  # the columns in the statement's parameter order
    positional: bool
    processors: Mapping[str, _Processor]


# per dialect object (its paramstyle and JSON serializer are its own), then table and columns
_PREPARED: WeakKeyDictionary[Dialect, dict[tuple[Table, tuple[str, ...]], _Prepared | None]] = (
    WeakKeyDictionary()
)


def insert_columns(conn: Connection, table: Table, columns: Mapping[str, Values]) -> int:
    """INSERT one row per position of the ``columns`` lists (all the same length); returns
    how many rows were written."""
    lengths = {len(values) for values in columns.values() if not isinstance(values, Same)}
    if len(lengths) != 1:
        raise ValueError("insert_columns needs at least one list, all of one length")
    count = lengths.pop()
    if count == 0:
        return 0
    prepared = _prepare(table, tuple(columns), conn.dialect)
    if prepared is None:
        conn.execute(insert(table), _as_dicts(columns, count))
        return count
    processors = prepared.processors
    converted = [_convert(columns[name], processors[name], count) for name in prepared.order]
    rows = list(zip(*converted, strict=True))
    if prepared.positional:
        conn.exec_driver_sql(prepared.sql, rows)
    else:
        order = prepared.order
        conn.exec_driver_sql(prepared.sql, [dict(zip(order, row, strict=True)) for row in rows])
    return count


def _prepare(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Prepared | None:
    prepared = _PREPARED.setdefault(dialect, {})
    key = (table, names)
    if key not in prepared:
        prepared[key] = _compile(table, names, dialect)
    return prepared[key]


def _compile(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Prepared | None:
    # inline: no RETURNING of the new ids (PostgreSQL), which nothing here reads
    statement = insert(table).inline().values({name: bindparam(name) for name in names})
    compiled = statement.compile(dialect=dialect)
    order = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.params)
    if sorted(order) != sorted(names) or compiled.effective_returning:
        return None  # SQLAlchemy would add something of its own: let it
    processors = {
        name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    }
    return _Prepared(compiled.string, order, compiled.positional, processors)


def _convert(values: Values, processor: _Processor, count: int) -> Sequence[Any]:
    if isinstance(values, Same):
        value = values.value if processor is None else processor(values.value)
        return [value] * count
    if processor is None:
        return values
    return [processor(value) for value in values]


def _as_dicts(columns: Mapping[str, Values], count: int) -> list[dict[str, Any]]:
    return [
        {
            name: values.value if isinstance(values, Same) else values[index]
            for name, values in columns.items()
        }
        for index in range(count)
    ]
