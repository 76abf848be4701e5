"""Repeated identical failures logged once per interval, with a count.

During an outage every webhook fails the same way; a traceback for each wrote 3.2 MB of
log in 7.6 s and buried the one line that mattered. A :class:`LogThrottle` writes the first
failure of a kind in full, counts the ones like it for ``interval`` seconds, and writes
the next one with that count ("... (and 1,071 more like it in the last 10 s)").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

DEFAULT_INTERVAL = 10.0
MAX_KINDS = 1024
"""Kinds remembered at once; a flood of distinct kinds empties the memo, never grows it."""


class LogThrottle:
    """Writes log lines through ``logger``, one per kind per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        # kind -> (when its interval started, how many were held back since)
        self._kinds: dict[Hashable, tuple[float, int]] = {}

    def log(
        self,
        level: int,
        kind: Hashable,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
        stacklevel: int = 2,
    ) -> bool:
        """Log ``message % args`` unless one of this kind was logged within the interval
        (then count it). The first of an interval carries ``exc_info``'s traceback, and
        says how many were held back in the interval before. True when written."""
        now = self.clock()
        started, held = self._kinds.get(kind, (None, 0))
        if started is not None and now - started < self.interval:
            self._kinds[kind] = (started, held + 1)
            return False
        if len(self._kinds) >= MAX_KINDS:
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if held:
            message += " (and %s more like it in the last %s s)"
            args = (*args, f"{held:,}", f"{self.interval:g}")
        # stacklevel: the record names the line that reported it, not this module.
        self.logger.log(level, message, *args, exc_info=exc_info, stacklevel=stacklevel)
        return True

    def failure(self, kind: str, error: BaseException, message: str, *args: object) -> bool:
        """Log a failure as ``message: ErrorClass: error message``, grouped by ``kind``, the
        error's class and its message (the call it hit does not make it another kind)."""
        text = str(error)[:300]
        return self.log(
            logging.ERROR,
            (kind, type(error).__name__, text),
            message + ": %s: %s",
            *args,
            type(error).__name__,
            text,
            exc_info=error,
            stacklevel=3,
        )

    def flush(self) -> None:
        """Write the counts still held back (at shutdown)."""
        for kind, (_, held) in self._kinds.items():
            if held:
                self.logger.warning(
                    "%s: %s more like it were not logged in the last %s s",
                    kind,
                    f"{held:,}",
                    f"{self.interval:g}",
                )
        self._kinds.clear()
