"""Many rows through one prepared statement, without SQLAlchemy's per-row work.

Two ways in, one idea: ``execute_many`` runs any statement over row dicts (stage moves, outbox
rows), ``insert_columns`` inserts rows given a column at a time (an import's new leads).

``conn.execute(statement, rows)`` re-runs SQLAlchemy's generic parameter machinery for every
row (bind names, type processors, dict building): for a batch of stage moves that was more
time than SQLite's own ``executemany`` of the same rows. On SQLite ``execute_many`` compiles
the statement once per shape, takes each column's bind processor from its type (so values are
stored exactly as SQLAlchemy stores them: ``UTCDateTime``, JSON, enums) and hands the driver
plain tuples. Processed values are remembered: a batch's timestamps are mostly the same few
instants. Fixed column defaults are filled in once. Anything else (a default made per row by
a callable, PostgreSQL, whose driver path is already set-based) goes through
``conn.execute`` unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

_Getter = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class _Prepared:
    sql: str
    getters: tuple[_Getter, ...]


# per dialect object (its paramstyle and JSON serializer are its own), then key and row keys
_CACHE: WeakKeyDictionary[Dialect, dict[tuple[Hashable, tuple[str, ...]], _Prepared | None]] = (
    WeakKeyDictionary()
)
_CACHE_LOCK = threading.Lock()
_CACHE_KEPT = 64


def execute_many(
    conn: Connection,
    statement: Executable,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Hashable,
) -> int:
    """Run ``statement`` once per row (all rows have the same keys); the rows affected.

    ``key`` names the statement's shape (same SQL for the same key and row keys), so it is
    compiled once per process, not per call. Every value must come from the rows: a statement
    with a value bound into it is run by ``conn.execute``.
    """
    if not rows:
        return 0
    names = tuple(rows[0])
    prepared = _prepared(conn.dialect, statement, key, names) if _fast(conn) else None
    if prepared is None:
        return max(conn.execute(statement, list(rows)).rowcount, 0)
    getters = prepared.getters
    params = [tuple([get(row) for get in getters]) for row in rows]
    result = conn.exec_driver_sql(prepared.sql, params)
    return max(result.rowcount, 0)


def _fast(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite" and conn.dialect.paramstyle == "qmark"


def _prepared(
    dialect: Dialect, statement: Executable, key: Hashable, names: tuple[str, ...]
) -> _Prepared | None:
    cache_key = (key, names)
    with _CACHE_LOCK:
        cache = _CACHE.setdefault(dialect, {})
        if cache_key in cache:
            return cache[cache_key]
    prepared = _prepare(dialect, statement, names)
    with _CACHE_LOCK:
        while len(cache) >= _CACHE_KEPT:
            cache.pop(next(iter(cache)))
        cache[cache_key] = prepared
    return prepared


def _prepare(dialect: Dialect, statement: Executable, names: tuple[str, ...]) -> _Prepared | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(names))  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    if compiled.positiontup is None:
        return None
    defaults = _scalar_defaults(compiled)
    if defaults is None:
        return None  # a Python-side default made per row (a callable): SQLAlchemy's job
    wanted = set(names)
    getters: list[_Getter] = []
    for bind_name in compiled.positiontup:
        bind = compiled.binds[bind_name]
        processor = _processor(bind.type, dialect)
        if bind.key in wanted:
            getters.append(_from_row(bind.key, processor))
        elif bind.key in defaults:
            value = defaults[bind.key]
            getters.append(_constant(processor(value) if processor else value))
        else:
            # a value bound into the statement (``literal(now)``) differs from call to call
            # under the same key: never cached, so such a statement takes the normal path
            return None
    if any(b.expanding for b in compiled.binds.values()):
        return None
    return _Prepared(compiled.string, tuple(getters))


def _processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this type before the driver sees it."""
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _scalar_defaults(compiled: SQLCompiler) -> dict[str, Any] | None:
    """The fixed Python-side defaults of the columns a row leaves out (None: one is not)."""
    out: dict[str, Any] = {}
    for column in compiled.insert_prefetch:
        if column.default is None or not column.default.is_scalar:
            return None
        out[column.key] = column.default.arg  # type: ignore[attr-defined]
    for column in compiled.update_prefetch:
        if column.onupdate is None or not column.onupdate.is_scalar:
            return None
        out[column.key] = column.onupdate.arg  # type: ignore[attr-defined]
    return out


def _constant(value: Any) -> _Getter:
    return lambda _row: value


def _from_row(name: str, processor: Callable[[Any], Any] | None) -> _Getter:
    if processor is None:
        return lambda row: row[name]
    seen: dict[tuple[type, Any], Any] = {}  # by type too: True == 1, but not in JSON

    def get(row: Mapping[str, Any]) -> Any:
        value = row[name]
        memo = (type(value), value)
        try:
            return seen[memo]
        except KeyError:
            pass
        except TypeError:  # unhashable (a JSON dict): processed every time
            return processor(value)
        out = seen[memo] = processor(value)
        if len(seen) > 4096:
            seen.clear()
        return out

    return get


# --- a column at a time: ``insert_columns`` -------------------------------------------------
#
# ``insert()`` is compiled once per (dialect, table, columns); each column's values go through
# that column's own bind processor, a value the same for every row (``Same``) only once; the
# driver gets one ``executemany`` (also on PostgreSQL). A statement whose compiled parameters
# are not exactly the columns given (a default SQLAlchemy would add) is run through
# ``conn.execute`` instead, which is correct if slower.

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Same:
    """One value for every row of a column."""

    value: Any


Values = Sequence[Any] | Same


@dataclass(frozen=True, slots=True)
class _PreparedInsert:
    sql: str
    order: tuple[str, ...]  # the columns in the statement's parameter order
    positional: bool
    processors: Mapping[str, _Processor]


# per dialect object (its paramstyle and JSON serializer are its own), then table and columns
_INSERTS: WeakKeyDictionary[
    Dialect, dict[tuple[Table, tuple[str, ...]], _PreparedInsert | None]
] = WeakKeyDictionary()


def insert_columns(conn: Connection, table: Table, columns: Mapping[str, Values]) -> int:
    """INSERT one row per position of the ``columns`` lists (all the same length); returns
    how many rows were written."""
    lengths = {len(values) for values in columns.values() if not isinstance(values, Same)}
    if len(lengths) != 1:
        raise ValueError("insert_columns needs at least one list, all of one length")
    count = lengths.pop()
    if count == 0:
        return 0
    prepared = _prepare_insert(table, tuple(columns), conn.dialect)
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


def _prepare_insert(
    table: Table, names: tuple[str, ...], dialect: Dialect
) -> _PreparedInsert | None:
    prepared = _INSERTS.setdefault(dialect, {})
    key = (table, names)
    if key not in prepared:
        prepared[key] = _compile(table, names, dialect)
    return prepared[key]


def _compile(table: Table, names: tuple[str, ...], dialect: Dialect) -> _PreparedInsert | None:
    # inline: no RETURNING of the new ids (PostgreSQL), which nothing here reads
    statement = insert(table).inline().values({name: bindparam(name) for name in names})
    compiled = statement.compile(dialect=dialect)
    order = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.params)
    if sorted(order) != sorted(names) or compiled.effective_returning:
        return None  # SQLAlchemy would add something of its own: let it
    processors = {name: _processor(table.c[name].type, dialect) for name in names}
    return _PreparedInsert(compiled.string, order, compiled.positional, processors)


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
