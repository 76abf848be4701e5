"""Business hours and holidays as data, so "are we open?" is testable at any time.

Hours are local wall-clock times in the given zone, so a daylight-saving change moves them
with the clocks: "09:00-17:00" is 09:00 to 17:00 on the clock on the wall, whatever the UTC
offset that day. A range whose closing time is earlier than its opening time runs past
midnight ("22:00-02:00" is open from 22:00 to 02:00 the next morning); a day range may wrap
round the week ("fri-mon" is Friday, Saturday, Sunday and Monday). Anything else that cannot
be read is refused when the BusinessHours is created, with the file and line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivrkit.errors import FlowDefinitionError

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY = 24 * 3600
_PACKAGE_DIR = __file__.rsplit("/", 1)[0]
_UTC = ZoneInfo("UTC")

Shift = tuple[int, int]
"""Opening and closing second of a day (closing may be past midnight: smaller than opening)."""


class _Unreadable(ValueError):
    """One entry of ``weekly`` that cannot be read; the message says what would be."""


def _definition_site() -> str:
    """``file:line`` of the code that created the BusinessHours (not ivrkit's or a dataclass's)."""
    frame = sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR) or frame.f_code.co_filename == "<string>"
    ):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    path = frame.f_code.co_filename
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    shown = path if relative.startswith("..") else relative  # like the checker's findings
    return f"{shown}:{frame.f_lineno}"


def _day(text: str) -> int:
    word = text.strip().lower()
    if word in _DAYS:
        return _DAYS.index(word)
    if word in _FULL_DAYS:
        return _FULL_DAYS.index(word)
    raise _Unreadable(f'"{text.strip()}" is not a day; use mon, tue, wed, thu, fri, sat or sun')


def days_of(spec: str) -> list[int]:
    """``"mon-fri"``, ``"fri-mon"`` (wraps round the week), ``"sat"``, ``"mon, wed-thu"``."""
    found: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            first_text, _, last_text = part.partition("-")
            first, last = _day(first_text), _day(last_text)
            found += [(first + offset) % 7 for offset in range((last - first) % 7 + 1)]
        else:
            found.append(_day(part))
    return found


def _second_of_day(text: str, *, closing: bool) -> int:
    hours, colon, minutes = text.strip().partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise _Unreadable(f'"{text.strip()}" is not a time; write it as 24-hour HH:MM, e.g. 09:30')
    value = int(hours) * 3600 + int(minutes) * 60
    if int(minutes) > 59 or value > _DAY or (value == _DAY and not closing):
        raise _Unreadable(f'"{text.strip()}" is not a time of day; use 00:00 to 23:59 (or 24:00)')
    return value


def shift_of(spec: str) -> Shift:
    """``"09:00-17:00"``; ``"22:00-02:00"`` closes the next morning; ``"00:00-24:00"`` all day."""
    opens_text, dash, closes_text = spec.partition("-")
    if not dash:
        raise _Unreadable(f'"{spec}" is not a range of hours; write it as 09:00-17:00')
    opens = _second_of_day(opens_text, closing=False)
    closes = _second_of_day(closes_text, closing=True)
    if opens == closes:
        raise _Unreadable(
            f'"{spec}" opens and closes at the same time; for all day write 00:00-24:00'
        )
    return opens, closes


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening hours in a time zone, minus holidays.

    ``weekly`` maps days ("mon-fri", "sat", "fri-mon", "mon, wed") to hours ("09:00-17:00",
    or past midnight "22:00-02:00"). A holiday closes the hours that open on it; a night
    shift that opened the evening before still runs until it closes.

        HOURS = BusinessHours("America/New_York", {"mon-fri": "09:00-17:00", "sat": "22:00-02:00"},
                              holidays=[date(2026, 12, 25)])
    """

    timezone: str
    weekly: Mapping[str, str]
    holidays: Iterable[date] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        problems: list[str] = []
        table: dict[int, list[Shift]] = {}
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            problems.append(
                f"timezone: {self.timezone!r} is not a time zone; "
                'use an IANA name, e.g. "America/New_York"'
            )
            zone = _UTC
        if not isinstance(self.weekly, Mapping):
            problems.append(f'weekly: expected a dict like {{"mon-fri": "09:00-17:00"}}, '
                            f"not {type(self.weekly).__name__}")  # fmt: skip
        else:
            for days, hours in self.weekly.items():
                try:
                    if not isinstance(days, str) or not isinstance(hours, str):
                        raise _Unreadable('days and hours are str, e.g. "mon-fri": "09:00-17:00"')
                    shift = shift_of(hours)
                    for day in days_of(days):
                        table.setdefault(day, []).append(shift)
                except _Unreadable as error:
                    problems.append(f"weekly[{days!r}]: {error}")
        holidays = self._checked_holidays(problems)
        if problems:
            site = _definition_site()
            raise FlowDefinitionError([f"{site}: BusinessHours: {p}" for p in problems])
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "holidays", holidays)

    def _checked_holidays(self, problems: list[str]) -> frozenset[date]:
        try:
            days: list[Any] = list(self.holidays)
        except TypeError:
            problems.append("holidays: expected a list of dates, e.g. [date(2026, 12, 25)]")
            return frozenset()
        for day in days:
            # A datetime is a date too, but never equals one: it would close nothing.
            if not isinstance(day, date) or isinstance(day, datetime):
                problems.append(f"holidays: {day!r} is not a date; e.g. date(2026, 12, 25)")
        return frozenset(days)

    def is_open(self, moment: datetime) -> bool:
        """Whether ``moment`` (aware; naive means UTC) falls in opening hours."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_UTC)
        local = moment.astimezone(self._zone)  # type: ignore[attr-defined]
        table: dict[int, list[Shift]] = self._table  # type: ignore[attr-defined]
        second = local.hour * 3600 + local.minute * 60 + local.second
        today, weekday = local.date(), local.weekday()
        if today not in self.holidays:
            for opens, closes in table.get(weekday, ()):
                if opens <= second < (closes if closes > opens else _DAY):
                    return True
        if today - timedelta(days=1) not in self.holidays:
            for opens, closes in table.get((weekday - 1) % 7, ()):
                if closes < opens and second < closes:
                    return True
        return False
