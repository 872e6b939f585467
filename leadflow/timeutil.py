"""Parsing ``--now`` and ``--at``: time is a parameter everywhere, never read implicitly."""

from __future__ import annotations

from datetime import UTC, datetime

# The instants a command may act at: business calendars, time zones and day arithmetic are
# defined over this range (year 1 or 9999 overflow as soon as a day is added or a zone applied).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 12, 31, tzinfo=UTC)


def parse_instant(value: str | None, *, default: datetime | None = None) -> datetime:
    """ISO 8601 -> aware UTC; a value without offset is taken as UTC. None -> default or now."""
    if value is None or value == "":
        return default if default is not None else datetime.now(UTC)
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"'{value}' is not an ISO 8601 date-time (e.g. 2026-11-23T09:30:00Z)"
        ) from None
    if not EARLIEST.year <= parsed.year <= LATEST.year:
        raise ValueError(
            f"'{value}' is outside the years {EARLIEST.year}-{LATEST.year} leadflow works in"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utcnow() -> datetime:
    """The real clock, read only at the edges (CLI, web, flows) and passed inward."""
    return datetime.now(UTC)
