"""Turn one untrusted raw row into a clean lead, or a rejection that says exactly why.

Nothing is silently truncated or guessed: a value that does not fit its column rejects the row
(the row is reported, the file can be fixed and re-imported). Column resolution, in order:
do-not-email columns; ``intake.mapping`` (exact, then case-insensitive); a lead field name
(case-insensitive, or equal once written in lower_snake_case, so "First Name" is first_name);
``updated_at``/``last_modified`` (the row's own modification time, used only to merge);
anything else is a custom attribute keyed by the lower_snake_case column name.

Formula-like cells (``=HYPERLINK(...)``) are data: stored verbatim, escaped only on export.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from leadflow.config.schema import Intake
from leadflow.intake.readers import RawRow
from leadflow.intake.values import (
    LEAD_FIELDS,
    InvalidValue,
    clean,
    convert_field,
    convert_value,
    normalize_email,
    parse_bool,
    parse_datetime,
    quote,
    single_line,
    snake_case,
)
from leadflow.pipeline.business_time import is_valid_zone

TIMESTAMP_COLUMNS = frozenset({"updated_at", "last_modified"})
_TARGET_CACHE = 10_000
_CELL_CACHE = 4_096  # distinct cells remembered per column, then forgotten (flat memory)
_CACHED_CELL_CHARS = 256  # longer cells (notes, hostile 100 KiB fields) are worked out each time


# Every attribute (a declared one or a column kept as one) has the same limits, whatever the
# source: CSV, JSON Lines or the web API. A row over them is rejected with its reason.
MAX_ATTRIBUTE_CHARS = 2_000
MAX_ATTRIBUTE_KEY = 100


@dataclass(slots=True)
class NormalizedLead:
    """A row that passed: ``fields`` holds only non-None lead fields.

    ``defaults`` names fields filled from configuration (``source``, ``timezone``): they fill
    blanks but never overwrite a stored value. ``source_updated_at`` is the row's own
    modification time when the file has an ``updated_at``/``last_modified`` column.
    """

    email: str
    fields: dict[str, Any]
    attributes: dict[str, Any]
    do_not_email: bool
    warnings: list[str]
    row: int
    defaults: frozenset[str] = frozenset()
    source_updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row that was not imported. A valid do-not-email address is still suppressed."""

    row: int
    field: str
    message: str
    email: str | None = None
    do_not_email: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


Target = tuple[Literal["field", "attribute", "dne", "timestamp"], str]


# A cell's outcome in its column: (cleaned value, None for a blank; verdict; converted value or
# message). Verdicts:
_VALUE, _SKIP, _ERROR, _WARN = range(4)
_Outcome = tuple[str | None, int, Any]


class _Column:
    """A column's target and the outcomes of the distinct cells seen in it."""

    __slots__ = ("cells", "email", "plain", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.email = target == ("field", "email")  # every address differs: nothing to remember
        self.plain = target[0] == "field" and not self.email  # a lead field but the address
        self.cells: dict[str, _Outcome] = {}


@dataclass(slots=True)
class _Draft:
    fields: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    do_not_email: bool = False
    timestamp: datetime | None = None
    warnings: list[str] = field(default_factory=list)
    error: tuple[str, str] | None = None
    email_value: str | None = None


class Normalizer:
    """``normalize`` for one import: each column's target is resolved once, and what a cell
    comes to (cleaned, converted, or the reason it cannot be) is worked out once per distinct
    cell text of its column (``_Column``); a row then only assembles those outcomes."""

    def __init__(
        self, intake: Intake, *, default_timezone: str, default_source: str | None = None
    ) -> None:
        if not is_valid_zone(default_timezone):
            raise ValueError(f"default time zone {default_timezone!r} is not an IANA zone")
        self.intake = intake
        self.default_timezone = default_timezone.strip()
        self.default_source = default_source or intake.default_source
        self._mapping_folded = {key.strip().casefold(): v for key, v in intake.mapping.items()}
        self._dne = {name.strip().casefold() for name in intake.do_not_email_columns}
        self._columns: dict[tuple[str, int], _Column] = {}

    def normalize(self, raw: RawRow) -> NormalizedLead | Rejected:
        if raw.error is not None:
            return Rejected(raw.number, "row", raw.error)
        draft = _Draft(warnings=list(raw.warnings))
        structured = raw.structured
        columns, fields, origin = self._columns, draft.fields, draft.origin
        for position, (column, cell) in enumerate(raw.data.items(), start=1):
            if cell is None:
                continue
            plan = columns.get((column, position)) or self._column(column, position)
            if plan.email:
                value = clean(cell)
                if value is None:
                    continue
                outcome: _Outcome = (value, _VALUE, value)
            else:
                found = plan.cells.get(cell)
                if found is None:
                    found = self._outcome(plan.target, cell)
                    if isinstance(cell, str) and len(cell) <= _CACHED_CELL_CHARS:
                        if len(plan.cells) >= _CELL_CACHE:
                            plan.cells.clear()  # ever-new values must not grow memory
                        plan.cells[cell] = found
                outcome = found
                if outcome[0] is None:
                    continue  # blank
            kind, name = plan.target
            if structured and kind == "field" and column in structured:
                # {"first_name": {"x": 1}}: JSON text is fine in an attribute, never as a field
                what = structured[column]
                draft.error = draft.error or (name, f"expected one value, not a JSON {what}")
            elif plan.plain and outcome[1] == _VALUE and name not in fields:
                fields[name] = outcome[2]  # the common case of _take_field, inline
                origin[name] = column
            else:
                self._take(draft, plan.target, column, outcome)
        return self._finish(raw.number, draft)

    def target(self, column: str, position: int) -> Target:
        """Where a column's values go; see the module docstring for the order."""
        return self._column(column, position).target

    def _column(self, column: str, position: int) -> _Column:
        key = (column, position)
        found = self._columns.get(key)
        if found is None:
            if len(self._columns) >= _TARGET_CACHE:
                self._columns.clear()  # JSON Lines with ever-new keys must not grow memory
            found = self._columns[key] = _Column(self._resolve(column, position))
        return found

    def _resolve(self, column: str, position: int) -> Target:
        name = column.strip()
        if name.casefold() in self._dne:
            return ("dne", name)
        mapped = self.intake.mapping.get(name) or self._mapping_folded.get(name.casefold())
        if mapped is not None and mapped.strip().casefold() in self._dne:
            return ("dne", name)
        return _name_target(mapped or name, position)

    def _outcome(self, target: Target, cell: str) -> _Outcome:
        """What ``cell`` comes to in ``target``, whatever the row (pure, so it is remembered):
        (cleaned value or None for a blank, verdict, the value or message)."""
        value = clean(cell)
        if value is None:
            return (None, _SKIP, None)
        kind, name = target
        if kind == "dne":
            return (value, _VALUE, parse_bool(value, strict=False))
        if kind == "timestamp":
            try:
                return (value, _VALUE, parse_datetime(value))
            except InvalidValue as exc:
                return (value, _ERROR, str(exc))
        if kind == "field":
            return (value, *self._field_outcome(name, value))
        return (value, *self._attribute_outcome(name, value))

    def _field_outcome(self, name: str, value: str) -> tuple[int, Any]:
        if name == "timezone" and not is_valid_zone(single_line(value)):
            return (
                _WARN,
                f"time zone {quote(value)} is not an IANA zone; using {self.default_timezone}",
            )
        try:
            converted = convert_field(name, value)
        except InvalidValue as exc:
            return (_ERROR, (name, str(exc)))
        return (_SKIP, None) if converted == "" else (_VALUE, converted)  # "": only controls

    def _attribute_outcome(self, key: str, value: str) -> tuple[int, Any]:
        if len(value) > MAX_ATTRIBUTE_CHARS or len(key) > MAX_ATTRIBUTE_KEY:
            what = "name" if len(key) > MAX_ATTRIBUTE_KEY else "value"
            limit = MAX_ATTRIBUTE_KEY if what == "name" else MAX_ATTRIBUTE_CHARS
            return (
                _ERROR,
                (key[:MAX_ATTRIBUTE_KEY], f"attribute {what} too long (max {limit:,} characters)"),
            )
        try:
            converted = convert_value(self.intake.attributes.get(key, "str"), value)
        except InvalidValue as exc:
            return (_ERROR, (key, str(exc)))
        return (_SKIP, None) if converted == "" else (_VALUE, converted)

    def _take(self, draft: _Draft, target: Target, column: str, outcome: _Outcome) -> None:
        value, verdict, payload = outcome
        kind, name = target
        if value is None:
            return  # a blank (callers skip them already)
        if kind == "dne":
            if payload is None:
                draft.warnings.append(
                    f"column {column!r}: {quote(value)} is not yes/no; treated as do-not-email"
                )
            draft.do_not_email = draft.do_not_email or payload is not False
        elif kind == "timestamp":
            if verdict == _ERROR:
                draft.warnings.append(f"column {column!r} ignored: {payload}")
            else:
                draft.timestamp = payload
        elif kind == "field" and name == "email":
            if draft.email_value is None:
                draft.email_value = value
            elif value.casefold() != draft.email_value.casefold():
                self._take_attribute(draft, _spare_key(column, name), value)
        elif kind == "field":
            self._take_field(draft, name, column, value, verdict, payload)
        else:
            self._keep_attribute(draft, name, verdict, payload)

    def _take_field(
        self, draft: _Draft, name: str, column: str, value: str, verdict: int, converted: Any
    ) -> None:
        if verdict == _WARN:
            draft.warnings.append(converted)
        elif verdict == _ERROR:
            draft.error = draft.error or converted
        elif verdict == _SKIP:
            return
        elif name not in draft.fields:
            draft.fields[name] = converted
            draft.origin[name] = column
        elif draft.fields[name] != converted:
            # Two columns for one field disagree: keep the first, keep the other as an attribute.
            key = _spare_key(column, name)
            draft.warnings.append(
                f"column {column!r} repeats {name} (from {draft.origin[name]!r}); "
                f"kept as attribute {key}"
            )
            self._take_attribute(draft, key, value)

    def _take_attribute(self, draft: _Draft, key: str, value: str) -> None:
        self._keep_attribute(draft, key, *self._attribute_outcome(key, value))

    def _keep_attribute(self, draft: _Draft, key: str, verdict: int, converted: Any) -> None:
        if verdict == _ERROR:
            draft.error = draft.error or converted
        elif verdict == _SKIP:
            return
        elif key not in draft.attributes:
            draft.attributes[key] = converted
        elif draft.attributes[key] != converted:
            draft.warnings.append(f"attribute {key} given twice; kept the first value")

    def _finish(self, row: int, draft: _Draft) -> NormalizedLead | Rejected:
        if draft.error is not None and draft.error[0] == "email":
            return Rejected(row, *draft.error)
        try:
            email = normalize_email(draft.email_value)
        except InvalidValue as exc:
            # a file's bad addresses mostly share a few reasons: one copy of each is kept
            return Rejected(row, "email", sys.intern(str(exc)))
        if draft.error is not None:
            return Rejected(row, *draft.error, email=email, do_not_email=draft.do_not_email)
        defaults: set[str] = set()
        if "timezone" not in draft.fields:
            draft.fields["timezone"] = self.default_timezone
            defaults.add("timezone")
        if "source" not in draft.fields:
            draft.fields["source"] = self.default_source
            defaults.add("source")
        return NormalizedLead(
            email=email,
            fields=draft.fields,
            attributes=draft.attributes,
            do_not_email=draft.do_not_email,
            warnings=draft.warnings,
            row=row,
            defaults=frozenset(defaults),
            source_updated_at=draft.timestamp,
        )


def normalize(raw: RawRow, intake: Intake, *, default_timezone: str) -> NormalizedLead | Rejected:
    """One row; importers use ``Normalizer`` directly to resolve each column only once."""
    return Normalizer(intake, default_timezone=default_timezone).normalize(raw)


def _name_target(name: str, position: int) -> Target:
    folded = name.casefold()
    snake = snake_case(name)
    for candidate in (folded, snake):
        if candidate in LEAD_FIELDS:
            return ("field", candidate)
        if candidate in TIMESTAMP_COLUMNS:
            return ("timestamp", candidate)
    return ("attribute", snake or f"column_{position}")


def _spare_key(column: str, field_name: str) -> str:
    """Attribute key for a second, disagreeing value of a lead field."""
    key = snake_case(column)
    return key if key and key not in LEAD_FIELDS else f"{field_name}_2"
