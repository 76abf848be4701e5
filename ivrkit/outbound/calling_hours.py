"""When a callee may be called: a daily window in the callee's own time zone.

Telemarketing rules (the US TCPA's 8 am to 9 pm, and others like it) are about the
callee's local time, not the caller's, so the check is made per contact with its zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

ALL_DAYS = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class CallingHours:
    """Calls may start at ``start`` and until (not at) ``end``, local time, on ``days``
    (Monday is 0). ``start == end`` means any time. A window past midnight is not
    supported: it is almost never legal to call then."""

    start: time = time(9, 0)
    end: time = time(20, 0)
    days: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(
                f"calling hours end ({self.end:%H:%M}) before they start ({self.start:%H:%M})"
            )
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError("calling days must be some of 0 (Monday) to 6 (Sunday)")

    @classmethod
    def parse(cls, text: str) -> CallingHours:
        """``"09:00-20:00"``: the window every day."""
        try:
            first, _, last = text.partition("-")
            return cls(time.fromisoformat(first.strip()), time.fromisoformat(last.strip()))
        except ValueError as error:
            raise ValueError(f"calling hours {text!r}: {error} (write e.g. 09:00-20:00)") from None

    def allows(self, now: datetime, time_zone: str) -> bool:
        """Whether a call may start at ``now`` (aware) for a callee in ``time_zone``."""
        if self.start == self.end:
            return True
        local = now.astimezone(ZoneInfo(time_zone))
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def next_opening(self, now: datetime, time_zone: str) -> datetime:
        """The first moment at or after ``now`` when a call may start (UTC)."""
        if self.allows(now, time_zone):
            return now.astimezone(UTC)
        zone = ZoneInfo(time_zone)
        local = now.astimezone(zone)
        for days_ahead in range(8):
            day = local.date() + timedelta(days=days_ahead)
            if day.weekday() not in self.days:
                continue
            # fold=0 and a round trip through UTC settle a start inside a DST gap.
            opening = datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
            if opening >= now:
                return opening
        raise AssertionError("a week always holds an opening")  # pragma: no cover
