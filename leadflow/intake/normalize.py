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
    """``normalize`` with column resolution cached per column name (one per import)."""

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
        self._targets: dict[tuple[str, int], Target] = {}

    def normalize(self, raw: RawRow) -> NormalizedLead | Rejected:
        if raw.error is not None:
            return Rejected(raw.number, "row", raw.error)
        draft = _Draft(warnings=list(raw.warnings))
        for position, (column, cell) in enumerate(raw.data.items(), start=1):
            value = clean(cell)
            if value is None:
                continue
            target = self.target(column, position)
            kind = raw.structured.get(column)
            if kind is not None and target[0] == "field":
                # {"first_name": {"x": 1}}: JSON text is fine in an attribute, never as a field
                draft.error = draft.error or (target[1], f"expected one value, not a JSON {kind}")
                continue
            self._take(draft, target, column, value)
        return self._finish(raw.number, draft)

    def target(self, column: str, position: int) -> Target:
        """Where a column's values go; see the module docstring for the order."""
        key = (column, position)
        found = self._targets.get(key)
        if found is None:
            if len(self._targets) >= _TARGET_CACHE:
                self._targets.clear()  # JSON Lines with ever-new keys must not grow memory
            found = self._targets[key] = self._resolve(column, position)
        return found

    def _resolve(self, column: str, position: int) -> Target:
        name = column.strip()
        if name.casefold() in self._dne:
            return ("dne", name)
        mapped = self.intake.mapping.get(name) or self._mapping_folded.get(name.casefold())
        if mapped is not None and mapped.strip().casefold() in self._dne:
            return ("dne", name)
        return _name_target(mapped or name, position)

    def _take(self, draft: _Draft, target: Target, column: str, value: str) -> None:
        kind, name = target
        if kind == "dne":
            flag = parse_bool(value, strict=False)
            if flag is None:
                draft.warnings.append(
                    f"column {column!r}: {quote(value)} is not yes/no; treated as do-not-email"
                )
            draft.do_not_email = draft.do_not_email or flag is not False
        elif kind == "timestamp":
            try:
                draft.timestamp = parse_datetime(value)
            except InvalidValue as exc:
                draft.warnings.append(f"column {column!r} ignored: {exc}")
        elif kind == "field" and name == "email":
            if draft.email_value is None:
                draft.email_value = value
            elif value.casefold() != draft.email_value.casefold():
                self._take_attribute(draft, _spare_key(column, name), value)
        elif kind == "field":
            self._take_field(draft, name, column, value)
        else:
            self._take_attribute(draft, name, value)

    def _take_field(self, draft: _Draft, name: str, column: str, value: str) -> None:
        if name == "timezone" and not is_valid_zone(single_line(value)):
            draft.warnings.append(
                f"time zone {quote(value)} is not an IANA zone; using {self.default_timezone}"
            )
            return
        try:
            converted = convert_field(name, value)
        except InvalidValue as exc:
            draft.error = draft.error or (name, str(exc))
            return
        if converted == "":
            return  # nothing but control characters
        if name not in draft.fields:
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
        if len(value) > MAX_ATTRIBUTE_CHARS or len(key) > MAX_ATTRIBUTE_KEY:
            what = "name" if len(key) > MAX_ATTRIBUTE_KEY else "value"
            limit = MAX_ATTRIBUTE_KEY if what == "name" else MAX_ATTRIBUTE_CHARS
            draft.error = draft.error or (
                key[:MAX_ATTRIBUTE_KEY],
                f"attribute {what} too long (max {limit:,} characters)",
            )
            return
        try:
            converted = convert_value(self.intake.attributes.get(key, "str"), value)
        except InvalidValue as exc:
            draft.error = draft.error or (key, str(exc))
            return
        if converted == "":
            return
        if key not in draft.attributes:
            draft.attributes[key] = converted
        elif draft.attributes[key] != converted:
            draft.warnings.append(f"attribute {key} given twice; kept the first value")

    def _finish(self, row: int, draft: _Draft) -> NormalizedLead | Rejected:
        if draft.error is not None and draft.error[0] == "email":
            return Rejected(row, *draft.error)
        try:
            email = normalize_email(draft.email_value)
        except InvalidValue as exc:
            return Rejected(row, "email", str(exc))
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
