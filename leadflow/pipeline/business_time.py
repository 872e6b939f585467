"""Business-day arithmetic and send windows in a lead's local time zone.

Every instant crossing this module's boundary is a timezone-aware datetime; results are always
UTC. Calendar reasoning (weekday, holiday, wall clock) happens in the lead's IANA zone, never in
UTC, so a 01:00 UTC instant is still "yesterday evening" for a lead in Los Angeles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as pyholidays

__all__ = [
    "NO_HOLIDAYS",
    "WEEKDAYS",
    "HolidayCalendar",
    "SendWindow",
    "add_business_days",
    "add_days",
    "in_window",
    "is_business_day",
    "is_valid_zone",
    "next_window_start",
    "resolve_zone",
]

WEEKDAYS: frozenset[int] = frozenset(range(5))

_ONE_DAY = timedelta(days=1)
_ONE_SECOND = timedelta(seconds=1)
# Larger than any UTC offset tzdata has ever used (LMT included), so an instant whose local wall
# clock lies on a given day is always within this margin of that day's naive wall clock.
_MARGIN = timedelta(hours=16)
# next_window_start gives up after this many local days: a window that never opens (e.g. only
# holidays) must fail loudly instead of looping forever.
_SEARCH_DAYS = 2 * 366 + 7
# Zone names that exist on disk but depend on the machine or mean "no zone".
_REJECTED_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True)
class SendWindow:
    """Local wall-clock slot in which emails may go out, e.g. Tue-Thu 09:00-11:30.

    `start` is inclusive and `end` exclusive; windows over midnight are not supported (v1).
    """

    weekdays: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        # Accept any iterable of ints from config code, but store a frozenset (hashable, fast).
        weekdays = frozenset(self.weekdays)
        object.__setattr__(self, "weekdays", weekdays)
        if any(not 0 <= d <= 6 for d in weekdays):
            raise ValueError(
                f"weekdays must be within 0 (Monday)..6 (Sunday), got {sorted(weekdays)}"
            )
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("send window times are local wall-clock times: tzinfo must be None")
        if not self.start < self.end:
            raise ValueError(
                f"send window start {self.start.isoformat()} must be before end "
                f"{self.end.isoformat()} (windows over midnight are not supported)"
            )


class HolidayCalendar:
    """Public holidays of one country/subdivision plus company-specific days off.

    Holiday years are computed on first use and cached, because the `holidays` package is slow to
    populate a year while planners ask about single days hundreds of thousands of times.
    """

    NONE: ClassVar[HolidayCalendar]

    def __init__(
        self,
        country: str | None = None,
        subdivision: str | None = None,
        extra: Iterable[date] = (),
    ) -> None:
        self._extra: frozenset[date] = frozenset(extra)
        self._years: dict[int, frozenset[date]] = {}
        self._country = country.strip().upper() if country is not None else None
        self._subdivision = subdivision.strip() if subdivision is not None else None
        if self._country is None:
            if self._subdivision:
                raise ValueError("a holiday subdivision needs a country")
            self._subdivision = None
            return
        if not self._subdivision:
            self._subdivision = None
        supported: dict[str, list[str]] = pyholidays.list_supported_countries()
        if self._country not in supported:
            raise ValueError(
                f"unknown holiday country {country!r}: use an ISO 3166-1 alpha-2 code supported "
                f"by the holidays package (e.g. US, DE, GB)"
            )
        try:
            pyholidays.country_holidays(self._country, subdiv=self._subdivision)
        except NotImplementedError:
            choices = ", ".join(supported[self._country]) or "none"
            raise ValueError(
                f"unknown holiday subdivision {subdivision!r} for country {self._country}; "
                f"supported subdivisions: {choices}"
            ) from None

    @property
    def country(self) -> str | None:
        return self._country

    @property
    def subdivision(self) -> str | None:
        return self._subdivision

    @property
    def extra(self) -> frozenset[date]:
        return self._extra

    def is_holiday(self, day: date) -> bool:
        if day in self._extra:
            return True
        if self._country is None:
            return False
        days = self._years.get(day.year)
        if days is None:
            days = self._load_year(day.year)
        return day in days

    def _load_year(self, year: int) -> frozenset[date]:
        assert self._country is not None
        source = pyholidays.country_holidays(self._country, subdiv=self._subdivision, years=year)
        days = frozenset(d for d in source if d.year == year)
        self._years[year] = days
        return days

    def __repr__(self) -> str:
        return (
            f"HolidayCalendar(country={self._country!r}, subdivision={self._subdivision!r}, "
            f"extra={len(self._extra)} days)"
        )


HolidayCalendar.NONE = HolidayCalendar()
NO_HOLIDAYS = HolidayCalendar.NONE


def is_business_day(day: date, *, workdays: frozenset[int], holidays: HolidayCalendar) -> bool:
    return day.weekday() in workdays and not holidays.is_holiday(day)


def add_business_days(
    start: datetime,
    days: int,
    *,
    tz: ZoneInfo,
    workdays: frozenset[int] = WEEKDAYS,
    holidays: HolidayCalendar = NO_HOLIDAYS,
) -> datetime:
    """Move `days` business days forward in the lead's calendar, keeping the local wall clock.

    Counting starts from the local date of `start` even if that is not a business day, so day 1 is
    the next business day after it. A wall time that does not exist on the target day (DST gap)
    becomes the first valid instant after it; an ambiguous one (DST fold) its first occurrence.
    """
    _require_aware(start, "start")
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    if days == 0:
        return start.astimezone(UTC)
    if not workdays:
        raise ValueError("workdays is empty: no business day can ever be reached")
    local = start.astimezone(tz)
    day = local.date()
    remaining = days
    idle = 0
    while remaining:
        day += _ONE_DAY
        if is_business_day(day, workdays=workdays, holidays=holidays):
            remaining -= 1
            idle = 0
        else:
            idle += 1
            if idle > _SEARCH_DAYS:
                raise ValueError("no business day within two years: check workdays and holidays")
    return _resolve_wall(datetime.combine(day, local.time()), tz).replace(tzinfo=UTC)


def add_days(start: datetime, days: int, *, tz: ZoneInfo) -> datetime:
    """Move `days` calendar days in local time at the same wall clock (not 24h multiples).

    DST gaps and folds resolve as in `add_business_days`; `days=0` returns the same instant.
    """
    _require_aware(start, "start")
    if days == 0:
        return start.astimezone(UTC)
    local = start.astimezone(tz)
    target = datetime.combine(local.date() + timedelta(days=days), local.time())
    return _resolve_wall(target, tz).replace(tzinfo=UTC)


def in_window(
    moment: datetime,
    window: SendWindow,
    *,
    tz: ZoneInfo,
    holidays: HolidayCalendar = NO_HOLIDAYS,
) -> bool:
    _require_aware(moment, "moment")
    local = moment.astimezone(tz)
    return (
        local.weekday() in window.weekdays
        and window.start <= local.time() < window.end
        and not holidays.is_holiday(local.date())
    )


def next_window_start(
    moment: datetime,
    window: SendWindow,
    *,
    tz: ZoneInfo,
    holidays: HolidayCalendar = NO_HOLIDAYS,
) -> datetime:
    """Earliest instant >= `moment` inside the window on a non-holiday window weekday (UTC).

    Works on exact UTC intervals per local day so that DST gaps (window opening at the first valid
    instant) and folds (a repeated hour that re-enters the window) come out right.
    """
    _require_aware(moment, "moment")
    if not window.weekdays:
        raise ValueError("send window has no weekdays: it never opens")
    floor = moment.astimezone(UTC).replace(tzinfo=None)
    # Start one local day early: a fall-back across local midnight would bring later instants
    # back onto the previous local date.
    day = moment.astimezone(tz).date() - _ONE_DAY
    best: datetime | None = None
    for _ in range(_SEARCH_DAYS):
        if best is not None and best <= datetime.combine(day, window.start) - _MARGIN:
            break  # every in-window instant of this and later days is after `best`
        if day.weekday() in window.weekdays and not holidays.is_holiday(day):
            for lo, hi in _window_intervals(day, window, tz):
                if hi > floor:
                    candidate = max(lo, floor)
                    if best is None or candidate < best:
                        best = candidate
                    break
        day += _ONE_DAY
    if best is None:
        raise ValueError(
            f"send window never opens within two years after {moment.isoformat()}: "
            "check its weekdays and the holiday calendar"
        )
    return best.replace(tzinfo=UTC)


@lru_cache(maxsize=4096)
def _load_zone(name: str) -> ZoneInfo | None:
    if name in _REJECTED_ZONES:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def is_valid_zone(name: str) -> bool:
    """True if `name` (surrounding whitespace ignored) is an IANA zone that `resolve_zone` keeps."""
    return bool(name.strip()) and _load_zone(name.strip()) is not None


def resolve_zone(name: str | None, default: str) -> ZoneInfo:
    """The lead's zone, or `default` when the CRM value is blank or not a known IANA name."""
    if name is not None and name.strip():
        zone = _load_zone(name.strip())
        if zone is not None:
            return zone
    fallback = _load_zone(default.strip()) if default.strip() else None
    if fallback is None:
        raise ValueError(f"default time zone {default!r} is not a valid IANA zone name")
    return fallback


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value.isoformat()}")


def _offset_at(utc_naive: datetime, tz: ZoneInfo) -> timedelta:
    """UTC offset of `tz` at an instant given as naive UTC."""
    offset = tz.fromutc(utc_naive.replace(tzinfo=tz)).utcoffset()
    assert offset is not None  # ZoneInfo always knows its offset
    return offset


def _transition(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """First instant (naive UTC) carrying the offset of `after`; `before` must predate it.

    Bisects whole seconds (tzdata transitions are whole seconds); assumes a single transition
    between the two instants, which holds for spans of a few days.
    """
    target = _offset_at(after, tz)
    lo = before.replace(microsecond=0)
    hi = after.replace(microsecond=0) + (_ONE_SECOND if after.microsecond else timedelta(0))
    while hi - lo > _ONE_SECOND:
        mid = lo + (hi - lo) // 2
        mid = mid.replace(microsecond=0)
        if _offset_at(mid, tz) == target:
            hi = mid
        else:
            lo = mid
    return hi


def _resolve_wall(wall: datetime, tz: ZoneInfo) -> datetime:
    """Naive local wall time -> naive UTC: first occurrence in a fold, gap end in a gap."""
    offset = wall.replace(tzinfo=tz).utcoffset()
    assert offset is not None
    utc = wall - offset
    if _offset_at(utc, tz) == offset:
        return utc
    # In a gap fold=0 uses the offset before the transition (landing after it) and fold=1 the
    # one after it (landing before): the transition lies between, and is the answer.
    other = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert other is not None
    return _transition(min(utc, wall - other), max(utc, wall - other), tz)


def _window_intervals(
    day: date, window: SendWindow, tz: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """Ordered half-open naive-UTC intervals in which the local clock shows `day` in window."""
    wall_start = datetime.combine(day, window.start)
    wall_end = datetime.combine(day, window.end)
    probe_lo = wall_start - _MARGIN
    probe_hi = wall_end + _MARGIN
    offset_lo = _offset_at(probe_lo, tz)
    offset_hi = _offset_at(probe_hi, tz)
    if offset_lo == offset_hi:
        return [(wall_start - offset_lo, wall_end - offset_lo)]
    switch = _transition(probe_lo, probe_hi, tz)
    intervals: list[tuple[datetime, datetime]] = []
    lo, hi = wall_start - offset_lo, min(wall_end - offset_lo, switch)
    if lo < hi:
        intervals.append((lo, hi))
    lo, hi = max(wall_start - offset_hi, switch), wall_end - offset_hi
    if lo < hi:
        intervals.append((lo, hi))
    return intervals
