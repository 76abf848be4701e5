"""The simulator's virtual clock as ``call.now``, for test and development servers only.

The simulator sends each webhook of a call given a start time with ``X-Ivrkit-Sim-Time`` (ISO
8601 with a UTC offset). Anyone can send a header, so an app believes it only when its settings
say it is a test or development server (``Settings(trust_simulated_time=True)`` or
``--insecure-dev``); a production app never reads it. While a trusted request is handled, the
app's clock answers the header's time, so business hours can be tested at 03:00 on a Sunday.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TypeVar

from starlette.types import Receive, Scope

from ivrkit.webhook import Refused

HEADER = b"x-ivrkit-sim-time"

_now: ContextVar[datetime | None] = ContextVar("ivrkit_simulated_now", default=None)

R = TypeVar("R")


def following_simulated_time(clock: Callable[[], datetime]) -> Callable[[], datetime]:
    """``clock``, except while a request carrying trusted simulated time is handled."""

    def now() -> datetime:
        return _now.get() or clock()

    return now


def read_simulated_time(scope: Scope) -> datetime | None:
    """The request's simulated time in UTC, None without the header; Refused (400) if bad."""
    raw = None
    for name, value in scope["headers"]:
        if name == HEADER:
            raw = value.decode("latin-1")
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise Refused(
            400,
            f"X-Ivrkit-Sim-Time {raw!r} is not an ISO 8601 time with a UTC offset "
            "(e.g. 2026-11-22T03:00:00-05:00)",
        )
    return moment.astimezone(UTC)


def with_simulated_time(
    handler: Callable[[Scope, Receive], Awaitable[R]],
) -> Callable[[Scope, Receive], Awaitable[R]]:
    """``handler``, with the request's simulated time (if any) as the clock while it runs."""

    async def handle(scope: Scope, receive: Receive) -> R:
        token = _now.set(read_simulated_time(scope))
        try:
            return await handler(scope, receive)
        finally:
            _now.reset(token)

    return handle
