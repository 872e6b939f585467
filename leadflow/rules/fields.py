"""What a rule may talk about: lead columns, derived values, custom attributes, host functions.

``catalog()`` is what the config validator checks names against (with "did you mean");
``LeadSql`` turns those names into SQL for the dialect at hand and a given ``now``, so rules
run inside the database over whole batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from leadflow.rules.catalog import Catalog, FieldKind, FunctionSpec
from models.tables import EVENTS, LEADS

LEAD_COLUMNS: dict[str, FieldKind] = {
    "email": "str",
    "first_name": "str",
    "last_name": "str",
    "company": "str",
    "title": "str",
    "phone": "str",
    "industry": "str",
    "company_size": "int",
    "country": "str",
    "timezone": "str",
    "source": "str",
    "lawful_basis": "str",
    "deal_value": "float",
    "budget": "float",
    "authority": "bool",
    "need": "str",
    "timeline_days": "int",
    "pipeline": "str",
    "stage": "str",
    "round": "int",
    "recycle_count": "int",
    "stuck": "bool",
    "fit_score": "float",
    "engagement_score": "float",
    "score": "float",
    "grade": "str",
    "owner": "str",  # the id of the team member who owns the lead (docs/team.md)
}
DERIVED: dict[str, FieldKind] = {
    "days_in_stage": "float",
    "days_since_created": "float",
    "cadence_done": "bool",
}
TIME_DEPENDENT = frozenset({"days_in_stage", "days_since_created", "cadence_done"})
FUNCTIONS: dict[str, FunctionSpec] = {
    "events": FunctionSpec("events", ("str",), "int"),
    "events_ever": FunctionSpec("events_ever", ("str",), "int"),
}
_UNIX_EPOCH_JULIAN = 2440587.5


def catalog(attributes: Mapping[str, FieldKind]) -> Catalog:
    """Field names a rule may use: built-in ones plus the declared custom attributes."""
    fields: dict[str, FieldKind] = {**LEAD_COLUMNS, **DERIVED}
    for name, kind in attributes.items():
        fields.setdefault(name, kind)
    return Catalog(fields=fields, functions=FUNCTIONS)


def days_between(dialect: str, now: datetime, column: Any) -> ColumnElement[Any]:
    """Days from ``column`` to ``now`` as a float, portable across SQLite and PostgreSQL."""
    if dialect == "sqlite":
        now_julian = now.timestamp() / 86400.0 + _UNIX_EPOCH_JULIAN
        return literal(now_julian, Float) - func.julianday(column)
    return (literal(now.timestamp(), Float) - func.extract("epoch", column)) / 86400.0


class LeadSql:
    """Resolves rule names to SQL expressions over the ``lead`` table."""

    def __init__(self, *, dialect: str, now: datetime, attributes: Mapping[str, FieldKind]):
        self.dialect = dialect
        self.now = now
        self.attributes = attributes

    def field(self, name: str) -> ColumnElement[Any]:
        table = LEADS
        if name in LEAD_COLUMNS:
            return table.c[name]
        if name == "days_in_stage":
            return days_between(self.dialect, self.now, table.c.stage_entered_at)
        if name == "days_since_created":
            return days_between(self.dialect, self.now, table.c.created_at)
        if name == "cadence_done":
            done = table.c.cadence_done_at
            return case((and_(done.is_not(None), done <= self.now), True), else_=False)
        kind = self.attributes[name]
        value = table.c.attributes[name]
        if kind == "int":
            return cast(value.as_float(), Float)
        if kind == "float":
            return value.as_float()  # type: ignore[no-any-return]
        if kind == "bool":
            return value.as_boolean()  # type: ignore[no-any-return]
        return value.as_string()  # type: ignore[no-any-return]

    def function(self, name: str, args: Sequence[Any]) -> ColumnElement[Any]:
        lead = LEADS
        event = EVENTS
        conditions = [event.c.lead_id == lead.c.id, event.c.type == str(args[0])]
        if name == "events":
            conditions.append(event.c.occurred_at >= lead.c.stage_entered_at)
        elif name != "events_ever":
            raise KeyError(name)
        conditions.append(event.c.occurred_at <= self.now)
        return select(func.count()).select_from(event).where(*conditions).scalar_subquery()
