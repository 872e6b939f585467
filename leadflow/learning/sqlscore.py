"""Scores as production computes them: rules compiled by ``leadflow.rules`` to SQL, run by a
database over a table shaped like ``lead``.

A history's rows are loaded into an in-memory SQLite table with the lead table's columns
(without its constraints: a history may repeat an address) by a raw ``executemany``; the
score is one SELECT of ``scoring.points_sum``, the sum scoring itself uses, so a
learned rule is judged by the same semantics (missing values, text functions, JSON
attributes) as when it is deployed, never by a second evaluator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Column, MetaData, Table, create_engine, select

from leadflow.learning.values import to_bool, to_number
from leadflow.pipeline.scoring import points_sum
from leadflow.rules import Catalog, Rule
from leadflow.rules.fields import LEAD_COLUMNS, LeadSql
from models.tables import LEADS

# ``now`` only matters for clock-dependent fields, which a history does not carry.
_NOW = datetime(2000, 1, 1, tzinfo=UTC)
_SHAPE = Table("lead", MetaData(), *(Column(c.name, c.type) for c in LEADS.c))
_CHUNK = 50_000


def stored(kind: str, value: Any) -> Any:
    """A history value as the lead table would hold it: numbers and flags converted, text
    kept as written (a stored "Select" is not null, and the rules must say so)."""
    if value is None:
        return None
    if kind in ("int", "float"):
        return to_number(value)
    if kind == "bool":
        return to_bool(value)
    return value if isinstance(value, str) else str(value)


def _rows(
    columns: Mapping[str, Sequence[Any]],
    kinds: Mapping[str, str],
    rows: npt.NDArray[np.intp],
    first_id: int,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    plain = [name for name in kinds if name in LEAD_COLUMNS and name in columns]
    attributes = [name for name in kinds if name not in LEAD_COLUMNS and name in columns]
    names = ["id", *plain, "attributes"]
    records = []
    for position, row in enumerate(rows.tolist()):
        values = [stored(kinds[name], columns[name][row]) for name in plain]
        extra = {
            name: value
            for name in attributes
            if (value := stored(kinds[name], columns[name][row])) is not None
        }
        records.append((first_id + position, *values, json.dumps(extra)))
    return names, records


def score_rows(
    columns: Mapping[str, Sequence[Any]],
    catalog: Catalog,
    attribute_kinds: Mapping[str, Any],
    rule_sets: Sequence[Sequence[tuple[float, Rule]]],
    rows: npt.NDArray[np.intp],
) -> list[npt.NDArray[np.float64]]:
    """Each rule set's total points for ``rows`` (in that order), computed by SQLite."""
    kinds = {name: str(catalog.fields[name]) for name in columns if name in catalog.fields}
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            _SHAPE.create(conn)
            for start in range(0, len(rows), _CHUNK):
                names, records = _rows(columns, kinds, rows[start : start + _CHUNK], start)
                marks = ", ".join("?" for _ in names)
                conn.exec_driver_sql(
                    f"INSERT INTO lead ({', '.join(names)}) VALUES ({marks})", records
                )
            sql = LeadSql(dialect="sqlite", now=_NOW, attributes=attribute_kinds)
            totals = [points_sum(rules, sql) for rules in rule_sets]
            result = conn.execute(select(LEADS.c.id, *totals).order_by(LEADS.c.id)).all()
    finally:
        engine.dispose()
    out = np.array([row[1:] for row in result], dtype=np.float64).reshape(len(rows), -1)
    return [out[:, i].copy() for i in range(len(rule_sets))]
