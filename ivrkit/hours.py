"""Business hours and holidays as data, so "are we open?" is testable at any time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _day_range(spec: str) -> list[int]:
    if "-" in spec:
        first, last = (_DAYS.index(part.strip()[:3].lower()) for part in spec.split("-"))
        return list(range(first, last + 1))
    return [_DAYS.index(spec.strip()[:3].lower())]


def _hours(spec: str) -> tuple[time, time]:
    opens, closes = (time.fromisoformat(part.strip()) for part in spec.split("-"))
    return opens, closes


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening hours in a time zone, minus holidays.

    ``BusinessHours("America/New_York", {"mon-fri": "09:00-17:00", "sat": "10:00-14:00"},
    holidays=[date(2026, 12, 25)])``
    """

    timezone: str
    weekly: Mapping[str, str]
    holidays: Iterable[date] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        table: dict[int, list[tuple[time, time]]] = {}
        for days, hours in self.weekly.items():
            for day in _day_range(days):
                table.setdefault(day, []).append(_hours(hours))
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))
        object.__setattr__(self, "holidays", frozenset(self.holidays))

    def is_open(self, moment: datetime) -> bool:
        """Whether ``moment`` (aware; naive means UTC) falls in opening hours."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo("UTC"))
        local = moment.astimezone(self._zone)  # type: ignore[attr-defined]
        if local.date() in self.holidays:
            return False
        now = local.time()
        return any(opens <= now < closes for opens, closes in self._table.get(local.weekday(), []))  # type: ignore[attr-defined]
