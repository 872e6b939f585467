"""Business days and send windows in the lead's local time (DST, holidays, zones)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from leadflow.pipeline.business_time import (
    NO_HOLIDAYS,
    HolidayCalendar,
    SendWindow,
    add_business_days,
    add_days,
    in_window,
    is_business_day,
    is_valid_zone,
    next_window_start,
    resolve_zone,
)

NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SANTIAGO = ZoneInfo("America/Santiago")

US = HolidayCalendar("US")
DE = HolidayCalendar("DE")
WEEKDAYS = frozenset(range(5))
TUE_THU_MORNING = SendWindow(frozenset({1, 2, 3}), time(9), time(11, 30))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0
) -> datetime:
    """A local wall-clock time, converted to the UTC instant the API works with."""
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).astimezone(UTC)


# --- add_business_days -------------------------------------------------------------------------


def test_friday_afternoon_plus_one_business_day_is_monday_same_wall_clock() -> None:
    friday = local(NEW_YORK, 2026, 6, 5, 16)
    assert friday == utc(2026, 6, 5, 20)
    result = add_business_days(friday, 1, tz=NEW_YORK)
    assert result == utc(2026, 6, 8, 20)
    assert result.tzinfo is UTC


def test_zero_business_days_returns_the_same_instant_even_on_a_weekend() -> None:
    saturday = utc(2026, 6, 6, 3, 17, 5, 123)
    assert add_business_days(saturday, 0, tz=NEW_YORK) == saturday
    assert add_business_days(saturday.astimezone(TOKYO), 0, tz=NEW_YORK).tzinfo is UTC


def test_counting_from_a_weekend_makes_monday_day_one() -> None:
    saturday = local(NEW_YORK, 2026, 6, 6, 10)
    assert add_business_days(saturday, 1, tz=NEW_YORK) == local(NEW_YORK, 2026, 6, 8, 10)
    assert add_business_days(saturday, 3, tz=NEW_YORK) == local(NEW_YORK, 2026, 6, 10, 10)


def test_business_days_skip_thanksgiving_and_christmas_with_us_calendar() -> None:
    wednesday = local(NEW_YORK, 2026, 11, 25, 10)  # Thanksgiving is Thursday 2026-11-26
    assert add_business_days(wednesday, 1, tz=NEW_YORK, holidays=US) == utc(2026, 11, 27, 15)
    assert add_business_days(wednesday, 1, tz=NEW_YORK) == utc(2026, 11, 26, 15)
    christmas_eve = local(NEW_YORK, 2026, 12, 24, 10)  # Christmas is Friday 2026-12-25
    assert add_business_days(christmas_eve, 1, tz=NEW_YORK, holidays=US) == utc(2026, 12, 28, 15)
    assert add_business_days(christmas_eve, 1, tz=NEW_YORK) == utc(2026, 12, 25, 15)


def test_business_days_skip_german_easter_holidays_with_de_calendar() -> None:
    thursday = local(BERLIN, 2026, 4, 2, 10)  # Good Friday 04-03, Easter Monday 04-06
    assert thursday == utc(2026, 4, 2, 8)
    assert add_business_days(thursday, 1, tz=BERLIN, holidays=DE) == utc(2026, 4, 7, 8)
    assert add_business_days(thursday, 1, tz=BERLIN, holidays=US) == utc(2026, 4, 3, 8)


def test_us_observed_holidays_count_as_days_off() -> None:
    assert US.is_holiday(date(2026, 7, 3))  # July 4th is a Saturday
    assert US.is_holiday(date(2027, 12, 31))  # New Year's Day 2028 is a Saturday
    assert not US.is_holiday(date(2026, 12, 24))


def test_company_extra_holidays_are_skipped_alone_and_on_top_of_a_country() -> None:
    company = HolidayCalendar(extra=[date(2026, 8, 14)])
    thursday = local(NEW_YORK, 2026, 8, 13, 10)
    assert add_business_days(thursday, 1, tz=NEW_YORK, holidays=company) == utc(2026, 8, 17, 14)
    us_and_bridge_day = HolidayCalendar("US", extra=[date(2026, 11, 27)])
    wednesday = local(NEW_YORK, 2026, 11, 25, 10)
    result = add_business_days(wednesday, 1, tz=NEW_YORK, holidays=us_and_bridge_day)
    assert result == utc(2026, 11, 30, 15)


def test_same_utc_instant_counts_from_different_local_dates_in_tokyo_and_los_angeles() -> None:
    instant = utc(2026, 6, 19, 23)  # Saturday 08:00 in Tokyo, Friday 16:00 in Los Angeles
    assert add_business_days(instant, 1, tz=TOKYO) == utc(2026, 6, 21, 23)  # Mon 08:00 JST
    assert add_business_days(instant, 1, tz=LOS_ANGELES) == utc(2026, 6, 22, 23)  # Mon 16:00 PDT


def test_business_days_across_new_york_spring_forward_keep_wall_clock() -> None:
    friday_9am_est = utc(2026, 3, 6, 14)
    assert add_business_days(friday_9am_est, 1, tz=NEW_YORK) == utc(2026, 3, 9, 13)  # 09:00 EDT


def test_business_day_landing_in_new_york_dst_gap_uses_first_valid_instant() -> None:
    sunday_0230_est = local(NEW_YORK, 2026, 3, 1, 2, 30)
    assert sunday_0230_est == utc(2026, 3, 1, 7, 30)
    sundays = frozenset({6})
    # 2026-03-08 02:30 does not exist: clocks jump from 02:00 EST to 03:00 EDT (07:00 UTC).
    assert add_business_days(sunday_0230_est, 1, tz=NEW_YORK, workdays=sundays) == utc(
        2026, 3, 8, 7
    )


def test_business_day_landing_in_new_york_fold_uses_first_occurrence() -> None:
    second_0130 = local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    assert second_0130 == utc(2026, 11, 1, 6, 30)  # 01:30 EST
    assert add_business_days(second_0130, 1, tz=NEW_YORK) == utc(2026, 11, 2, 6, 30)
    sundays = frozenset({6})
    previous_sunday_0130 = local(NEW_YORK, 2026, 10, 25, 1, 30)
    result = add_business_days(previous_sunday_0130, 1, tz=NEW_YORK, workdays=sundays)
    assert result == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first of the two


def test_add_days_over_new_york_dst_changes() -> None:
    saturday_0230 = local(NEW_YORK, 2026, 3, 7, 2, 30)
    assert add_days(saturday_0230, 1, tz=NEW_YORK) == utc(2026, 3, 8, 7)  # gap -> 03:00 EDT
    assert add_days(saturday_0230, 2, tz=NEW_YORK) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT
    saturday_0130 = local(NEW_YORK, 2026, 10, 31, 1, 30)
    assert add_days(saturday_0130, 1, tz=NEW_YORK) == utc(2026, 11, 1, 5, 30)  # first 01:30
    assert add_days(saturday_0130, 2, tz=NEW_YORK) == utc(2026, 11, 2, 6, 30)  # 01:30 EST
    assert add_days(utc(2026, 11, 2, 6, 30), -2, tz=NEW_YORK) == saturday_0130


def test_add_days_zero_keeps_second_occurrence_of_a_fold() -> None:
    second_0130 = utc(2026, 11, 1, 6, 30)
    assert add_days(second_0130, 0, tz=NEW_YORK) == second_0130


def test_add_days_over_berlin_dst_changes() -> None:
    saturday_0230 = local(BERLIN, 2026, 3, 28, 2, 30)
    assert saturday_0230 == utc(2026, 3, 28, 1, 30)
    assert add_days(saturday_0230, 1, tz=BERLIN) == utc(2026, 3, 29, 1)  # gap -> 03:00 CEST
    autumn_saturday_0230 = local(BERLIN, 2026, 10, 24, 2, 30)
    assert autumn_saturday_0230 == utc(2026, 10, 24, 0, 30)
    assert add_days(autumn_saturday_0230, 1, tz=BERLIN) == utc(2026, 10, 25, 0, 30)  # CEST


def test_add_days_over_lord_howe_half_hour_dst() -> None:
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 and 02:00 -> 01:30.
    saturday_0215 = local(LORD_HOWE, 2026, 10, 3, 2, 15)
    assert saturday_0215 == utc(2026, 10, 2, 15, 45)
    assert add_days(saturday_0215, 1, tz=LORD_HOWE) == utc(2026, 10, 3, 15, 30)  # 02:30 +11
    saturday_0145 = local(LORD_HOWE, 2026, 4, 4, 1, 45)
    assert saturday_0145 == utc(2026, 4, 3, 14, 45)
    assert add_days(saturday_0145, 1, tz=LORD_HOWE) == utc(2026, 4, 4, 14, 45)  # first 01:45
    assert add_days(utc(2026, 4, 4, 15, 15), 1, tz=LORD_HOWE) == utc(2026, 4, 5, 15, 15)


def test_add_days_into_santiago_midnight_gap() -> None:
    # Chile springs forward at midnight: Sunday 2026-09-06 00:00-00:59 does not exist.
    saturday_0030 = local(SANTIAGO, 2026, 9, 5, 0, 30)
    assert add_days(saturday_0030, 1, tz=SANTIAGO) == utc(2026, 9, 6, 4)  # 01:00 -03


def test_add_business_days_rejects_negative_days_and_empty_workdays() -> None:
    with pytest.raises(ValueError, match="days must be >= 0"):
        add_business_days(utc(2026, 6, 5), -1, tz=NEW_YORK)
    with pytest.raises(ValueError, match="workdays is empty"):
        add_business_days(utc(2026, 6, 5), 1, tz=NEW_YORK, workdays=frozenset())


def test_add_business_days_fails_when_every_day_is_a_holiday() -> None:
    all_mondays = [date(2026, 6, 8) + timedelta(weeks=n) for n in range(160)]
    calendar = HolidayCalendar(extra=all_mondays)
    with pytest.raises(ValueError, match="no business day within two years"):
        add_business_days(
            utc(2026, 6, 5), 1, tz=NEW_YORK, workdays=frozenset({0}), holidays=calendar
        )


def test_is_business_day_checks_weekday_and_holiday() -> None:
    assert is_business_day(date(2026, 11, 25), workdays=WEEKDAYS, holidays=US)
    assert not is_business_day(date(2026, 11, 26), workdays=WEEKDAYS, holidays=US)
    assert not is_business_day(date(2026, 11, 28), workdays=WEEKDAYS, holidays=NO_HOLIDAYS)
    assert is_business_day(date(2026, 11, 28), workdays=frozenset({5}), holidays=US)


# --- send windows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(utc(2026, 11, 17, 12), utc(2026, 11, 17, 14), id="tuesday-before-window"),
        pytest.param(utc(2026, 11, 17, 14), utc(2026, 11, 17, 14), id="tuesday-at-window-start"),
        pytest.param(
            utc(2026, 11, 17, 15, 15, 7), utc(2026, 11, 17, 15, 15, 7), id="tuesday-inside"
        ),
        pytest.param(utc(2026, 11, 17, 16, 30), utc(2026, 11, 18, 14), id="tuesday-at-window-end"),
        pytest.param(utc(2026, 11, 19, 17), utc(2026, 11, 24, 14), id="thursday-after-window"),
        pytest.param(utc(2026, 11, 21, 15), utc(2026, 11, 24, 14), id="saturday"),
        pytest.param(utc(2026, 11, 16, 15), utc(2026, 11, 17, 14), id="monday-not-a-window-day"),
        pytest.param(utc(2026, 11, 26, 13), utc(2026, 12, 1, 14), id="thanksgiving-before"),
        pytest.param(utc(2026, 11, 26, 15), utc(2026, 12, 1, 14), id="thanksgiving-inside"),
    ],
)
def test_next_window_start_in_new_york_with_us_holidays(
    moment: datetime, expected: datetime
) -> None:
    result = next_window_start(moment, TUE_THU_MORNING, tz=NEW_YORK, holidays=US)
    assert result == expected
    assert result.tzinfo is UTC


def test_next_window_start_skips_christmas_weekend() -> None:
    weekday_window = SendWindow(WEEKDAYS, time(9), time(17))
    christmas_eve_evening = local(NEW_YORK, 2026, 12, 24, 18)
    result = next_window_start(christmas_eve_evening, weekday_window, tz=NEW_YORK, holidays=US)
    assert result == utc(2026, 12, 28, 14)
    assert next_window_start(christmas_eve_evening, weekday_window, tz=NEW_YORK) == utc(
        2026, 12, 25, 14
    )


def test_next_window_start_accepts_non_utc_aware_input() -> None:
    moment = datetime(2026, 11, 17, 7, tzinfo=NEW_YORK)
    assert next_window_start(moment, TUE_THU_MORNING, tz=NEW_YORK) == utc(2026, 11, 17, 14)


def test_same_utc_instant_gets_different_windows_in_tokyo_and_los_angeles() -> None:
    tuesday_morning_tokyo = utc(2026, 6, 16, 1)  # Tue 10:00 JST, Mon 18:00 PDT
    assert next_window_start(tuesday_morning_tokyo, TUE_THU_MORNING, tz=TOKYO) == utc(
        2026, 6, 16, 1
    )
    assert next_window_start(tuesday_morning_tokyo, TUE_THU_MORNING, tz=LOS_ANGELES) == utc(
        2026, 6, 16, 16
    )
    thursday_night_utc = utc(2026, 6, 18, 23, 30)  # Fri 08:30 JST, Thu 16:30 PDT
    assert next_window_start(thursday_night_utc, TUE_THU_MORNING, tz=TOKYO) == utc(2026, 6, 23)
    assert next_window_start(thursday_night_utc, TUE_THU_MORNING, tz=LOS_ANGELES) == utc(
        2026, 6, 23, 16
    )
    assert in_window(tuesday_morning_tokyo, TUE_THU_MORNING, tz=TOKYO)
    assert not in_window(tuesday_morning_tokyo, TUE_THU_MORNING, tz=LOS_ANGELES)


def test_window_opening_at_0200_on_spring_forward_day_opens_at_0300_edt() -> None:
    sunday_early = SendWindow(frozenset({6}), time(2), time(4))
    assert next_window_start(utc(2026, 3, 7, 12), sunday_early, tz=NEW_YORK) == utc(2026, 3, 8, 7)
    assert not in_window(utc(2026, 3, 8, 6, 59, 59), sunday_early, tz=NEW_YORK)
    assert in_window(utc(2026, 3, 8, 7), sunday_early, tz=NEW_YORK)


def test_window_entirely_inside_dst_gap_moves_to_next_week() -> None:
    sunday_two_oclock = SendWindow(frozenset({6}), time(2), time(3))
    result = next_window_start(utc(2026, 3, 7, 12), sunday_two_oclock, tz=NEW_YORK)
    assert result == utc(2026, 3, 15, 6)  # 02:00 EDT a week later


def test_window_reopens_in_the_repeated_hour_of_new_york_fall_back() -> None:
    sunday_0130 = SendWindow(frozenset({6}), time(1, 30), time(1, 45))
    first_pass_inside = utc(2026, 11, 1, 5, 35)  # 01:35 EDT
    assert next_window_start(first_pass_inside, sunday_0130, tz=NEW_YORK) == first_pass_inside
    first_pass_after = utc(2026, 11, 1, 5, 50)  # 01:50 EDT; 01:30 EST is still ahead
    assert next_window_start(first_pass_after, sunday_0130, tz=NEW_YORK) == utc(2026, 11, 1, 6, 30)
    assert next_window_start(utc(2026, 11, 1, 6, 45), sunday_0130, tz=NEW_YORK) == utc(
        2026, 11, 8, 6, 30
    )


def test_window_reentered_by_the_fall_back_jump_itself() -> None:
    # 00:30-01:15: after 01:59:59 EDT the clock shows 01:00 EST, back inside the window.
    sunday_night = SendWindow(frozenset({6}), time(0, 30), time(1, 15))
    assert next_window_start(utc(2026, 11, 1, 5, 20), sunday_night, tz=NEW_YORK) == utc(
        2026, 11, 1, 6
    )


def test_next_window_start_over_berlin_dst_changes() -> None:
    office_hours = SendWindow(WEEKDAYS, time(9), time(17))
    friday_evening = local(BERLIN, 2026, 3, 27, 17)
    assert friday_evening == utc(2026, 3, 27, 16)
    assert next_window_start(friday_evening, office_hours, tz=BERLIN) == utc(2026, 3, 30, 7)
    autumn_friday_evening = local(BERLIN, 2026, 10, 23, 17)
    result = next_window_start(autumn_friday_evening, office_hours, tz=BERLIN, holidays=DE)
    assert result == utc(2026, 10, 26, 8)  # 09:00 CET
    sunday_0230 = SendWindow(frozenset({6}), time(2, 30), time(2, 45))
    # 02:30-02:45 lies wholly in the gap (02:00 -> 03:00) so it only opens a week later,
    # while 02:30-03:30 opens when the clocks jump to 03:00 CEST.
    assert next_window_start(utc(2026, 3, 28), sunday_0230, tz=BERLIN) == utc(2026, 4, 5, 0, 30)
    sunday_0230_to_0330 = SendWindow(frozenset({6}), time(2, 30), time(3, 30))
    assert next_window_start(utc(2026, 3, 28), sunday_0230_to_0330, tz=BERLIN) == utc(
        2026, 3, 29, 1
    )
    assert next_window_start(utc(2026, 10, 25, 0, 40), sunday_0230, tz=BERLIN) == utc(
        2026, 10, 25, 0, 40
    )
    assert next_window_start(utc(2026, 10, 25, 0, 50), sunday_0230, tz=BERLIN) == utc(
        2026, 10, 25, 1, 30
    )


def test_next_window_start_on_lord_howe_half_hour_gap() -> None:
    sunday_0215 = SendWindow(frozenset({6}), time(2, 15), time(2, 45))
    assert next_window_start(utc(2026, 10, 3), sunday_0215, tz=LORD_HOWE) == utc(
        2026, 10, 3, 15, 30
    )


def test_in_window_boundaries_are_start_inclusive_end_exclusive() -> None:
    assert in_window(utc(2026, 11, 17, 14), TUE_THU_MORNING, tz=NEW_YORK)
    assert in_window(utc(2026, 11, 17, 16, 29, 59, 999999), TUE_THU_MORNING, tz=NEW_YORK)
    assert not in_window(utc(2026, 11, 17, 16, 30), TUE_THU_MORNING, tz=NEW_YORK)
    assert not in_window(utc(2026, 11, 26, 15), TUE_THU_MORNING, tz=NEW_YORK, holidays=US)
    assert in_window(utc(2026, 11, 26, 15), TUE_THU_MORNING, tz=NEW_YORK)


def test_next_window_start_rejects_window_without_weekdays() -> None:
    never = SendWindow(frozenset(), time(9), time(17))
    with pytest.raises(ValueError, match="no weekdays"):
        next_window_start(utc(2026, 6, 1), never, tz=NEW_YORK)


def test_next_window_start_gives_up_after_two_years_of_holidays() -> None:
    all_mondays = [date(2026, 6, 8) + timedelta(weeks=n) for n in range(160)]
    mondays_only = SendWindow(frozenset({0}), time(9), time(17))
    calendar = HolidayCalendar(extra=all_mondays)
    with pytest.raises(ValueError, match="never opens within two years"):
        next_window_start(utc(2026, 6, 5), mondays_only, tz=NEW_YORK, holidays=calendar)


@pytest.mark.parametrize(
    ("weekdays", "start", "end", "message"),
    [
        ({1}, time(11), time(9), "must be before end"),
        ({1}, time(9), time(9), "must be before end"),
        ({7}, time(9), time(10), "weekdays must be within"),
        ({1}, time(9, tzinfo=UTC), time(10), "tzinfo must be None"),
    ],
)
def test_send_window_rejects_invalid_definitions(
    weekdays: set[int], start: time, end: time, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SendWindow(frozenset(weekdays), start, end)


def test_send_window_stores_weekdays_as_frozenset() -> None:
    window = SendWindow({1, 2}, time(9), time(10))  # type: ignore[arg-type]
    assert window.weekdays == frozenset({1, 2})
    assert isinstance(window.weekdays, frozenset)


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 6, 5, 12)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_days(naive, 1, tz=NEW_YORK)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_days(naive, 1, tz=NEW_YORK)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_window_start(naive, TUE_THU_MORNING, tz=NEW_YORK)
    with pytest.raises(ValueError, match="timezone-aware"):
        in_window(naive, TUE_THU_MORNING, tz=NEW_YORK)


# --- holiday calendars and zones ---------------------------------------------------------------


def test_unknown_holiday_country_has_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown holiday country 'XX': use an ISO 3166-1"):
        HolidayCalendar("XX")


def test_unknown_holiday_subdivision_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown holiday subdivision 'ZZ' for country DE") as err:
        HolidayCalendar("DE", "ZZ")
    assert "BY" in str(err.value)


def test_holiday_subdivision_without_country_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs a country"):
        HolidayCalendar(None, "CA")


def test_holiday_country_code_is_case_insensitive_and_subdivision_applies() -> None:
    bavaria = HolidayCalendar(" de ", "BY")
    assert bavaria.country == "DE"
    assert bavaria.is_holiday(date(2026, 1, 6))  # Epiphany in Bavaria only
    assert not DE.is_holiday(date(2026, 1, 6))


def test_no_holidays_calendar_has_no_days_off() -> None:
    assert HolidayCalendar.NONE is NO_HOLIDAYS
    assert not NO_HOLIDAYS.is_holiday(date(2026, 12, 25))


def test_holiday_years_are_loaded_once_and_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calendar = HolidayCalendar("US")
    real = holidays_lib.country_holidays
    loaded: list[object] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        loaded.append(kwargs.get("years"))
        return real(*args, **kwargs)

    monkeypatch.setattr(holidays_lib, "country_holidays", counting)
    day = date(2026, 1, 1)
    holidays_2026 = [d for d in (day + timedelta(n) for n in range(365)) if calendar.is_holiday(d)]
    for _ in range(100):
        calendar.is_holiday(date(2026, 11, 26))
    assert loaded == [2026]
    assert date(2026, 11, 26) in holidays_2026
    assert len(holidays_2026) == 12  # 11 federal holidays + Friday 07-03 for Saturday 07-04


def test_resolve_zone_falls_back_for_blank_or_unknown_names() -> None:
    assert resolve_zone("Asia/Tokyo", "UTC") is TOKYO
    assert resolve_zone(" Europe/Berlin ", "UTC") is BERLIN
    assert resolve_zone(None, "America/New_York") is NEW_YORK
    assert resolve_zone("", "America/New_York") is NEW_YORK
    assert resolve_zone("   ", "America/New_York") is NEW_YORK
    assert resolve_zone("Mars/Olympus_Mons", "America/New_York") is NEW_YORK
    assert resolve_zone("../../etc/passwd", "America/New_York") is NEW_YORK
    assert resolve_zone("America", "America/New_York") is NEW_YORK
    with pytest.raises(ValueError, match="default time zone 'Nowhere'"):
        resolve_zone("Mars/Olympus_Mons", "Nowhere")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("Europe/Berlin", True),
        ("UTC", True),
        ("Australia/Lord_Howe", True),
        ("utc", False),
        ("Europe/Atlantis", False),
        ("America", False),
        ("America/", False),
        ("/etc/localtime", False),
        ("localtime", False),
        ("", False),
        ("a\x00b", False),
    ],
)
def test_is_valid_zone(name: str, valid: bool) -> None:
    assert is_valid_zone(name) is valid


# --- properties --------------------------------------------------------------------------------

PROPERTY_ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
]
CALENDARS = [NO_HOLIDAYS, US, DE]
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _transitions(tz: ZoneInfo) -> list[datetime]:
    """UTC instants where `tz` changes offset in 2020-2035 (DST edges to aim tests at)."""
    found = []
    instant = datetime(2020, 1, 1)
    offset = instant.replace(tzinfo=UTC).astimezone(tz).utcoffset()
    while instant < datetime(2036, 1, 1):
        nxt = instant + timedelta(days=1)
        nxt_offset = nxt.replace(tzinfo=UTC).astimezone(tz).utcoffset()
        if nxt_offset != offset:
            lo, hi = instant, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.replace(tzinfo=UTC).astimezone(tz).utcoffset() == nxt_offset:
                    hi = mid
                else:
                    lo = mid
            found.append(hi.replace(tzinfo=UTC))
        instant, offset = nxt, nxt_offset
    return found


TRANSITIONS = {name: _transitions(ZoneInfo(name)) for name in PROPERTY_ZONES}


@st.composite
def zone_and_moment(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    """A zone and an instant: anywhere, or within days of a DST change, often at its wall time."""
    name = draw(st.sampled_from(PROPERTY_ZONES))
    mode = draw(st.sampled_from(["anywhere", "near-edge", "edge-wall-time"]))
    if TRANSITIONS[name] and mode != "anywhere":
        edge = draw(st.sampled_from(TRANSITIONS[name]))
        if mode == "near-edge":
            return ZoneInfo(name), edge + timedelta(
                seconds=draw(st.integers(-3 * 86400, 3 * 86400))
            )
        # Same time of day as the change on a nearby day: day arithmetic then lands in the gap/fold.
        shift = timedelta(days=draw(st.integers(-8, 8)), minutes=draw(st.integers(-90, 90)))
        return ZoneInfo(name), edge + shift
    naive = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)))
    return ZoneInfo(name), naive.replace(tzinfo=UTC)


@st.composite
def landing_on_dst_change(draw: st.DrawFn) -> tuple[ZoneInfo, datetime, int]:
    """A start `days` days before a DST change at about its time of day: day arithmetic from it
    lands in the gap or fold."""
    name = draw(st.sampled_from([name for name in PROPERTY_ZONES if TRANSITIONS[name]]))
    edge = draw(st.sampled_from(TRANSITIONS[name]))
    days = draw(st.integers(1, 8))
    shift = timedelta(days=-days, minutes=draw(st.integers(-90, 90)))
    return ZoneInfo(name), edge + shift, days


def zone_moment_days(
    days: st.SearchStrategy[int],
) -> st.SearchStrategy[tuple[ZoneInfo, datetime, int]]:
    anywhere = st.tuples(zone_and_moment(), days).map(lambda p: (p[0][0], p[0][1], p[1]))
    return st.one_of(anywhere, landing_on_dst_change())


@st.composite
def send_windows(draw: st.DrawFn) -> SendWindow:
    """Minute-resolution windows, often in the small hours where DST changes happen."""
    weekdays = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(st.one_of(st.integers(0, 5 * 60), st.integers(0, 1438)))
    end = draw(st.integers(start + 1, min(1439, start + draw(st.sampled_from([30, 120, 1439])))))
    return SendWindow(weekdays, time(*divmod(start, 60)), time(*divmod(end, 60)))


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def _wall_exists(wall: datetime, tz: ZoneInfo) -> bool:
    return _wall(wall.replace(tzinfo=tz).astimezone(UTC), tz) == wall


@PROPERTY_SETTINGS
@given(zone_and_moment(), send_windows(), st.sampled_from(CALENDARS))
def test_property_next_window_start_is_the_earliest_in_window_instant(
    zone_moment: tuple[ZoneInfo, datetime], window: SendWindow, calendar: HolidayCalendar
) -> None:
    tz, moment = zone_moment
    result = next_window_start(moment, window, tz=tz, holidays=calendar)
    assert result.tzinfo is UTC
    assert result >= moment
    assert in_window(result, window, tz=tz, holidays=calendar)
    if result > moment:
        assert not in_window(moment, window, tz=tz, holidays=calendar)
        just_before = max(moment, result - timedelta(microseconds=1))
        assert not in_window(just_before, window, tz=tz, holidays=calendar)
    if result - moment < timedelta(days=3):
        probe = moment
        while probe < result:
            assert not in_window(probe, window, tz=tz, holidays=calendar), probe
            probe += timedelta(minutes=1)


@PROPERTY_SETTINGS
@given(zone_and_moment(), send_windows(), st.sampled_from(CALENDARS))
def test_property_moment_inside_window_is_returned_unchanged(
    zone_moment: tuple[ZoneInfo, datetime], window: SendWindow, calendar: HolidayCalendar
) -> None:
    tz, moment = zone_moment
    if in_window(moment, window, tz=tz, holidays=calendar):
        assert next_window_start(moment, window, tz=tz, holidays=calendar) == moment
    inside = next_window_start(moment, window, tz=tz, holidays=calendar)
    assert next_window_start(inside, window, tz=tz, holidays=calendar) == inside


@PROPERTY_SETTINGS
@given(
    zone_moment_days(st.integers(1, 15)),
    st.one_of(st.just(frozenset(range(7))), st.frozensets(st.integers(0, 6), min_size=1)),
    st.sampled_from(CALENDARS),
)
def test_property_add_business_days_lands_on_a_business_day_at_the_same_wall_clock(
    case: tuple[ZoneInfo, datetime, int], workdays: frozenset[int], calendar: HolidayCalendar
) -> None:
    tz, start, days = case
    result = add_business_days(start, days, tz=tz, workdays=workdays, holidays=calendar)
    assert result.tzinfo is UTC
    assert result > start
    start_wall, result_wall = _wall(start, tz), _wall(result, tz)
    assert is_business_day(result_wall.date(), workdays=workdays, holidays=calendar)
    counted = range(1, (result_wall.date() - start_wall.date()).days + 1)
    business = [start_wall.date() + timedelta(n) for n in counted]
    assert sum(is_business_day(d, workdays=workdays, holidays=calendar) for d in business) == days
    if result_wall.time() != start_wall.time():
        # Only a DST gap may move the wall clock, and then to the first instant after the gap.
        wanted = datetime.combine(result_wall.date(), start_wall.time())
        assert not _wall_exists(wanted, tz)
        assert result_wall > wanted
        assert _wall(result - timedelta(microseconds=1), tz) < wanted


@PROPERTY_SETTINGS
@given(
    zone_and_moment(),
    st.integers(0, 8),
    st.integers(0, 8),
    st.frozensets(st.integers(0, 6), min_size=1),
    st.sampled_from(CALENDARS),
)
def test_property_add_business_days_composes(
    zone_moment: tuple[ZoneInfo, datetime],
    first: int,
    second: int,
    workdays: frozenset[int],
    calendar: HolidayCalendar,
) -> None:
    tz, start = zone_moment
    assume(is_business_day(_wall(start, tz).date(), workdays=workdays, holidays=calendar))

    def add(moment: datetime, days: int) -> datetime:
        return add_business_days(moment, days, tz=tz, workdays=workdays, holidays=calendar)

    middle, both = add(start, first), add(start, first + second)
    wall_time = _wall(start, tz).time()
    assume(_wall(middle, tz).time() == wall_time and _wall(both, tz).time() == wall_time)
    assert add(middle, second) == both


@PROPERTY_SETTINGS
@given(zone_moment_days(st.integers(-40, 40)))
def test_property_add_days_moves_the_local_date_and_keeps_the_wall_clock(
    case: tuple[ZoneInfo, datetime, int],
) -> None:
    tz, start, days = case
    result = add_days(start, days, tz=tz)
    start_wall, result_wall = _wall(start, tz), _wall(result, tz)
    wanted = start_wall + timedelta(days=days)
    if days == 0:
        assert result == start
    elif _wall_exists(wanted, tz):
        assert result == wanted.replace(tzinfo=tz).astimezone(UTC)  # first occurrence in a fold
        assert result_wall == wanted
    else:
        assert result_wall > wanted
        assert _wall(result - timedelta(microseconds=1), tz) < wanted
