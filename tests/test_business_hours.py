"""BusinessHours: overnight ranges, days that wrap round the week, holidays and DST (finding 5).

Every moment is a fixed UTC instant, so the expectations hold on any machine clock.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, date, datetime

import pytest

from ivrkit import BusinessHours, FlowDefinitionError

NEW_YORK = "America/New_York"


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


# 2026-03-06 is a Friday; New York is UTC-5 until 2026-03-08 02:00, then UTC-4.
@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (utc(2026, 3, 6, 13, 59, 59), False),  # Fri 08:59:59 EST
        (utc(2026, 3, 6, 14, 0), True),  # Fri 09:00 EST
        (utc(2026, 3, 7, 15, 0), True),  # Sat 10:00 EST
        (utc(2026, 3, 9, 21, 59, 59), True),  # Mon 17:59:59 EDT
        (utc(2026, 3, 9, 22, 0), False),  # Mon 18:00 EDT
        (utc(2026, 3, 10, 14, 0), False),  # Tue 10:00 EDT: not in fri-mon
        (utc(2026, 3, 12, 14, 0), False),  # Thu
    ],
)
def test_day_range_wraps_round_the_week(moment, expected):
    hours = BusinessHours(NEW_YORK, {"fri-mon": "09:00-18:00"})
    assert hours.is_open(moment) is expected


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (utc(2026, 3, 8, 2, 59, 59), False),  # Sat 21:59:59 EST
        (utc(2026, 3, 8, 3, 0), True),  # Sat 22:00 EST
        (utc(2026, 3, 8, 5, 0), True),  # Sun 00:00 EST: past midnight, still Saturday's shift
        (utc(2026, 3, 8, 6, 59, 59), True),  # Sun 01:59:59 EST, the last second before the jump
        (utc(2026, 3, 8, 7, 0), True),  # Sun 03:00 EDT: 02:00-03:00 does not exist that night
        (utc(2026, 3, 8, 7, 59, 59), True),  # Sun 03:59:59 EDT
        (utc(2026, 3, 8, 8, 0), False),  # Sun 04:00 EDT: closed
        (utc(2026, 3, 9, 3, 0), False),  # Sun 23:00 EDT: only Saturday nights
    ],
)
def test_overnight_range_across_the_spring_change(moment, expected):
    hours = BusinessHours(NEW_YORK, {"sat": "22:00-04:00"})
    assert hours.is_open(moment) is expected


# 2026-11-01 (Sunday): 02:00 EDT becomes 01:00 EST, so 01:00-02:00 happens twice.
@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (utc(2026, 11, 1, 1, 59, 59), False),  # Sat 21:59:59 EDT
        (utc(2026, 11, 1, 2, 0), True),  # Sat 22:00 EDT
        (utc(2026, 11, 1, 5, 30), True),  # Sun 01:30 EDT (first time)
        (utc(2026, 11, 1, 6, 30), True),  # Sun 01:30 EST (second time)
        (utc(2026, 11, 1, 6, 59, 59), True),  # Sun 01:59:59 EST
        (utc(2026, 11, 1, 7, 0), False),  # Sun 02:00 EST: closed, an hour later in UTC
    ],
)
def test_overnight_range_across_the_autumn_change(moment, expected):
    hours = BusinessHours(NEW_YORK, {"sat": "22:00-02:00"})
    assert hours.is_open(moment) is expected


def test_day_hours_follow_the_wall_clock_across_dst():
    hours = BusinessHours(NEW_YORK, {"mon-sun": "09:00-17:00"})
    assert hours.is_open(utc(2026, 3, 7, 14, 0))  # Sat 09:00 EST
    assert hours.is_open(utc(2026, 3, 8, 13, 0))  # Sun 09:00 EDT is 13:00Z, not 14:00Z
    assert not hours.is_open(utc(2026, 3, 8, 12, 59, 59))  # Sun 08:59:59 EDT
    assert not hours.is_open(utc(2026, 11, 1, 22, 0))  # Sun 17:00 EST
    assert hours.is_open(utc(2026, 11, 1, 21, 59, 59))  # Sun 16:59:59 EST


def test_holiday_closes_the_shift_that_opens_on_it_not_the_night_before():
    hours = BusinessHours(NEW_YORK, {"mon-sun": "22:00-02:00"}, holidays=[date(2026, 12, 25)])
    assert hours.is_open(utc(2026, 12, 25, 6, 0))  # Fri 01:00: Thursday's shift
    assert not hours.is_open(utc(2026, 12, 26, 3, 0))  # Fri 22:00: the holiday's own shift
    assert not hours.is_open(utc(2026, 12, 26, 6, 0))  # Sat 01:00: still the holiday's shift
    assert hours.is_open(utc(2026, 12, 27, 3, 0))  # Sat 22:00


def test_all_day_and_naive_moments_mean_utc():
    hours = BusinessHours("UTC", {"sun": "00:00-24:00", "mon, wed": "09:00-10:00"})
    assert hours.is_open(datetime(2026, 3, 8, 23, 59, 59))
    assert not hours.is_open(datetime(2026, 3, 9, 0, 0))
    assert hours.is_open(datetime(2026, 3, 11, 9, 30))


@pytest.mark.parametrize(
    ("timezone", "weekly", "holidays", "problem"),
    [
        (NEW_YORK, {"fri-mnday": "09:00-17:00"}, (),
         "weekly['fri-mnday']: \"mnday\" is not a day; use mon, tue, wed, thu, fri, sat or sun"),
        (NEW_YORK, {"mon": "9-17"}, (),
         "weekly['mon']: \"9\" is not a time; write it as 24-hour HH:MM, e.g. 09:30"),
        (NEW_YORK, {"mon": "09:00"}, (),
         "weekly['mon']: \"09:00\" is not a range of hours; write it as 09:00-17:00"),
        (NEW_YORK, {"mon": "09:00-25:00"}, (),
         "weekly['mon']: \"25:00\" is not a time of day; use 00:00 to 23:59 (or 24:00)"),
        (NEW_YORK, {"mon": "09:00-09:00"}, (),
         "weekly['mon']: \"09:00-09:00\" opens and closes at the same time; "
         "for all day write 00:00-24:00"),
        (NEW_YORK, {1: "09:00-17:00"}, (),
         "weekly[1]: days and hours are str, e.g. \"mon-fri\": \"09:00-17:00\""),
        ("America/Nowhere", {"mon": "09:00-17:00"}, (),
         "timezone: 'America/Nowhere' is not a time zone; use an IANA name, "
         "e.g. \"America/New_York\""),
        (NEW_YORK, {"mon": "09:00-17:00"}, [datetime(2026, 12, 25)],
         "holidays: datetime.datetime(2026, 12, 25, 0, 0) is not a date; e.g. date(2026, 12, 25)"),
    ],
)  # fmt: skip
def test_unreadable_hours_are_refused_with_the_place(timezone, weekly, holidays, problem):
    line = sys._getframe().f_lineno + 2
    with pytest.raises(FlowDefinitionError) as caught:
        BusinessHours(timezone, weekly, holidays=holidays)
    where = f"{os.path.relpath(__file__)}:{line}"  # relative, like the checker's findings
    assert caught.value.problems == [f"{where}: BusinessHours: {problem}"]
