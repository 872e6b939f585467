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

import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email

from leadflow.business_time import is_valid_zone
from leadflow.config.schema import FieldKind, Intake
from leadflow.intake.readers import RawRow
from models.tables import LEADS, LeadBase

BLANKS = frozenset({"", "-", "n/a", "null", "none", "#n/a"})
MULTI_LINE_FIELDS = frozenset({"need"})
TIMESTAMP_COLUMNS = frozenset({"updated_at", "last_modified"})
TRUE_WORDS = frozenset({"yes", "true", "1", "y", "x", "t", "on"})
FALSE_WORDS = frozenset({"no", "false", "0", "n", "f", "off"})
_TARGET_CACHE = 10_000
INT_RANGE = 2**31 - 1  # PostgreSQL INTEGER; SQLite would take more, but both must agree

_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f-\x9f\u2028\u2029]+\s*")
_MULTI_LINE_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_GROUPED = re.compile(r"[+-]?\d{1,3}([,_ \u00a0\u202f])\d{3}(?:\1\d{3})*(?:\.\d+)?")
_PLAIN_INT = re.compile(r"[+-]?\d+(?:\.0*)?")
# An ASCII address that email-validator would only lower-case (see ``email_key``).
_PLAIN_ADDRESS = re.compile(r"[a-z0-9][a-z0-9._+-]*@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}")
_PLAIN_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[\W_]+")


def _field_kind(python_type: type) -> FieldKind:
    kinds: dict[type, FieldKind] = {int: "int", float: "float", bool: "bool"}
    return kinds.get(python_type, "str")


_COLUMNS = LEADS.c
LEAD_FIELDS: dict[str, FieldKind] = {
    name: _field_kind(_COLUMNS[name].type.python_type)
    for name in LeadBase.model_fields
    if name != "attributes"
}
MAX_LENGTH: dict[str, int] = {
    name: length
    for name in LEAD_FIELDS
    if (length := getattr(_COLUMNS[name].type, "length", None)) is not None
}


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


class InvalidValue(ValueError):
    """A cell that cannot become its field's type; the message goes into the reject."""


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
                    f"column {column!r}: {_quote(value)} is not yes/no; treated as do-not-email"
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
                f"time zone {_quote(value)} is not an IANA zone; using {self.default_timezone}"
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


def snake_case(name: str) -> str:
    """``"Web Visits (30d)"`` -> ``web_visits_30d``; ``webVisits`` -> ``web_visits``."""
    return _NON_WORD.sub("_", _CAMEL.sub("_", name.strip()).lower()).strip("_")


def clean(cell: str | None) -> str | None:
    """Trimmed NFC text, or None for blanks and placeholders like ``N/A`` or ``#N/A``."""
    if cell is None:
        return None
    value = unicodedata.normalize("NFC", cell).strip().strip("\ufeff\u200b").strip()
    return None if value.casefold() in BLANKS else value


def single_line(value: str) -> str:
    """Line breaks and control characters (with the spaces around them) become one space."""
    return _CONTROL_RUN.sub(" ", value).strip()


def multi_line(value: str) -> str:
    """Line breaks kept (as LF); other control characters, NUL included, removed."""
    return _MULTI_LINE_JUNK.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_email(value: str | None) -> str:
    """The address intake stores for a cell; raises InvalidValue when it is no address."""
    if value is None:
        raise InvalidValue("missing email")
    value = single_line(value)
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValue(_short(str(exc))) from None
    return result.normalized.lower()


def email_key(address: str) -> str:
    """The form to look a stored lead up by: what ``normalize_email`` stores for ``address``.

    Never raises: an address intake would reject is only trimmed and lower-cased (it then
    matches no lead). A plain ASCII address skips email-validator, which would only lower-case
    it, because matching runs on every inbound message."""
    plain = address.strip().lower()
    if _PLAIN_ADDRESS.fullmatch(plain):
        return plain
    try:
        return normalize_email(address)
    except InvalidValue:
        return plain


def convert_field(name: str, value: str) -> Any:
    kind = LEAD_FIELDS[name]
    if kind == "str":
        text = multi_line(value) if name in MULTI_LINE_FIELDS else single_line(value)
        limit = MAX_LENGTH.get(name)
        if limit is not None and len(text) > limit:
            raise InvalidValue(f"field too long ({len(text)} characters, max {limit})")
        return text
    return convert_value(kind, value)


def convert_value(kind: FieldKind, value: str) -> Any:
    """A cleaned, non-blank cell as ``kind``; JSON-ready (datetimes as ISO text in UTC)."""
    if kind == "int":
        return parse_int(value)
    if kind == "float":
        return parse_float(value)
    if kind == "bool":
        return parse_bool(value, strict=True)
    if kind == "datetime":
        return parse_datetime(value).isoformat()
    return multi_line(value)


def _ungroup(value: str) -> str:
    """Drop thousands separators only where they group digits by three ("1,200", "1 200").

    "1,5" is *not* 1.5 nor 15: ambiguous between locales, so it is rejected, not guessed.
    """
    return re.sub(r"[,_ \u00a0\u202f]", "", value) if _GROUPED.fullmatch(value) else value


def parse_int(value: str) -> int:
    text = _ungroup(value)
    if not _PLAIN_INT.fullmatch(text):
        raise InvalidValue(f"not a whole number: {_quote(value)}")
    digits = text.split(".")[0]
    if len(digits) > 12 or abs(number := int(digits)) > INT_RANGE:
        raise InvalidValue(f"number out of range: {_quote(value)}")
    return number


def parse_float(value: str) -> float:
    text = _ungroup(value)
    if not _PLAIN_FLOAT.fullmatch(text):
        raise InvalidValue(f"not a number: {_quote(value)}")
    number = float(text)
    if math.isinf(number):
        raise InvalidValue(f"number out of range: {_quote(value)}")
    return number


def parse_bool(value: str, *, strict: bool) -> bool | None:
    word = value.strip().casefold()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    if strict:
        raise InvalidValue(f"not a yes/no value: {_quote(value)}")
    return None


def parse_datetime(value: str) -> datetime:
    """ISO 8601 date or date-time; a value without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidValue(f"not an ISO date: {_quote(value)}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise InvalidValue(f"date out of range: {_quote(value)}") from None


def _quote(value: str, limit: int = 40) -> str:
    return repr(_short(value, limit))


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
