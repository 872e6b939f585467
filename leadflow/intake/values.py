"""One cell's text as a clean value of its field's type, or an ``InvalidValue`` saying why.

Shared by the row normalizer (normalize.py) and by whatever looks a lead up by email
(``email_key``): nothing here knows about columns or rows.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from leadflow.config.schema import FieldKind
from models.tables import LEADS, LeadBase

BLANKS = frozenset({"", "-", "n/a", "null", "none", "#n/a"})
MULTI_LINE_FIELDS = frozenset({"need"})
TRUE_WORDS = frozenset({"yes", "true", "1", "y", "x", "t", "on"})
FALSE_WORDS = frozenset({"no", "false", "0", "n", "f", "off"})
INT_RANGE = 2**31 - 1  # PostgreSQL INTEGER; SQLite would take more, but both must agree

_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f-\x9f\u2028\u2029]+\s*")
_MULTI_LINE_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_GROUPED = re.compile(r"[+-]?\d{1,3}([,_ \u00a0\u202f])\d{3}(?:\1\d{3})*(?:\.\d+)?")
_PLAIN_INT = re.compile(r"[+-]?\d+(?:\.0*)?")
# An ASCII address that email-validator would only lower-case (see ``email_key``).
_PLAIN_ADDRESS = re.compile(r"[a-z0-9][a-z0-9._+-]*@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}")
# The addresses email-validator accepts and only lower-cases (see ``simple_address``): an ASCII
# dot-atom local part of letters, digits, ``_``, ``+`` and ``-``; host labels of letters and
# digits joined by single inner hyphens (so no "xn--" and no leading, trailing or doubled
# hyphen); an alphabetic top-level domain.
_SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z]+"
)
SIMPLE_ADDRESS_MAX = 64  # shorter than every length limit email-validator checks
# an address ending in one of these is in a special-use domain (or is one)
_SPECIAL_USE = tuple(f"{sep}{name}" for name in SPECIAL_USE_DOMAIN_NAMES for sep in ".@")
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


class InvalidValue(ValueError):
    """A cell that cannot become its field's type; the message goes into the reject."""


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
    """The address intake stores for a cell; raises InvalidValue when it is no address.

    A plainly simple address (``simple_address``) is only lower-cased, which is exactly what
    email-validator would do with it; anything else goes through email-validator."""
    if value is None:
        raise InvalidValue("missing email")
    simple = simple_address(value)
    return simple if simple is not None else validated_email(value)


def simple_address(value: str) -> str | None:
    """``value`` lower-cased when it is an address email-validator accepts unchanged but for
    case, else None (then only email-validator can say). tests/test_import_email.py checks,
    over generated addresses, that the two agree wherever this answers."""
    if len(value) > SIMPLE_ADDRESS_MAX or not _SIMPLE_ADDRESS.fullmatch(value):
        return None
    lowered = value.lower()
    return None if lowered.endswith(_SPECIAL_USE) else lowered  # email-validator says why


def validated_email(value: str) -> str:
    """``normalize_email`` through email-validator, always (no fast path)."""
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
        raise InvalidValue(f"not a whole number: {quote(value)}")
    digits = text.split(".")[0]
    if len(digits) > 12 or abs(number := int(digits)) > INT_RANGE:
        raise InvalidValue(f"number out of range: {quote(value)}")
    return number


def parse_float(value: str) -> float:
    text = _ungroup(value)
    if not _PLAIN_FLOAT.fullmatch(text):
        raise InvalidValue(f"not a number: {quote(value)}")
    number = float(text)
    if math.isinf(number):
        raise InvalidValue(f"number out of range: {quote(value)}")
    return number


def parse_bool(value: str, *, strict: bool) -> bool | None:
    word = value.strip().casefold()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    if strict:
        raise InvalidValue(f"not a yes/no value: {quote(value)}")
    return None


def parse_datetime(value: str) -> datetime:
    """ISO 8601 date or date-time; a value without offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidValue(f"not an ISO date: {quote(value)}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise InvalidValue(f"date out of range: {quote(value)}") from None


def quote(value: str, limit: int = 40) -> str:
    """A cell as it goes into a message: repr'd, cut to ``limit`` characters."""
    return repr(_short(value, limit))


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
