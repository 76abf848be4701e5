"""A campaign's progress on the terminal: a bar that redraws in place on a tty, and a
plain line now and then otherwise (logs and CI keep every line)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TextIO


class Progress:
    """Shows contacts done out of all, in progress, and waiting (retries, closed hours)."""

    def __init__(self, stream: TextIO, *, width: int = 30, plain_every: float = 10.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = width
        self.plain_every = plain_every
        self._last_plain = 0.0
        self._last_line = ""

    def show(self, counts: Mapping[str, int], *, final: bool = False) -> None:
        line = describe(counts)
        if self.tty:
            total = sum(counts.get(s, 0) for s in STATES)
            done = counts.get("done", 0)
            filled = self.width * done // total if total else self.width
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r[{bar}] {line}" + ("\n" if final else ""))
            self.stream.flush()
            return
        now = time.monotonic()
        if final or (line != self._last_line and now - self._last_plain >= self.plain_every):
            self.stream.write(f"campaign: {line}\n")
            self.stream.flush()
            self._last_plain, self._last_line = now, line


STATES = ("pending", "claimed", "requesting", "placed", "done")


def describe(counts: Mapping[str, int]) -> str:
    """``"120/400 done, 10 calling, 270 waiting (completed 100, busy 20)"``."""
    total = sum(counts.get(s, 0) for s in STATES)
    calling = sum(counts.get(s, 0) for s in ("claimed", "requesting", "placed"))
    outcomes = ", ".join(
        f"{key.removeprefix('done:')} {n}"
        for key, n in sorted(counts.items())
        if key.startswith("done:")
    )
    text = (
        f"{counts.get('done', 0)}/{total} done, {calling} calling, "
        f"{counts.get('pending', 0)} waiting"
    )
    return f"{text} ({outcomes})" if outcomes else text
