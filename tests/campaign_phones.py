"""A stand-in for Twilio's side of a campaign (until the tests run the simulated REST API):
places calls instantly, ends each after ``duration`` seconds with the outcome scripted
for its number, and records when every call started and ended."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ivrkit.outbound.dialer import CallRequest, DialError, DialOutcome

_sids = itertools.count(1)


@dataclass
class PlacedCall:
    sid: str
    to: str
    data: dict[str, Any]
    started: float
    ends: float
    outcome: DialOutcome


@dataclass
class ScriptedPhones:
    """``script[number]`` is the outcomes of its successive calls (the last one repeats);
    numbers not listed answer and complete. ``errors[number]`` is raised instead of
    placing (once per entry, then calls go through)."""

    script: Mapping[str, list[DialOutcome]] = field(default_factory=dict)
    errors: dict[str, list[Exception]] = field(default_factory=dict)
    duration: float = 0.02
    calls: list[PlacedCall] = field(default_factory=list)
    requests: list[tuple[str, float]] = field(default_factory=list)

    async def place(self, request: CallRequest) -> str:
        now = time.time()
        self.requests.append((request.to, now))
        pending = self.errors.get(request.to)
        if pending:
            raise pending.pop(0)
        earlier = sum(1 for c in self.calls if c.to == request.to)
        outcomes = self.script.get(request.to) or [DialOutcome("completed", "human")]
        outcome = outcomes[min(earlier, len(outcomes) - 1)]
        sid = f"CA{next(_sids):032x}"
        await asyncio.sleep(0)
        self.calls.append(
            PlacedCall(sid, request.to, dict(request.data), now, now + self.duration, outcome)
        )
        return sid

    async def outcome(self, call_sid: str) -> DialOutcome | None:
        call = next(c for c in self.calls if c.sid == call_sid)
        return call.outcome if time.time() >= call.ends else None

    def placed_to(self) -> list[str]:
        return [c.to for c in self.calls]

    def most_at_once(self) -> int:
        """The largest number of calls in progress at one moment, from the recorded times."""
        edges = sorted(
            [(c.started, 1) for c in self.calls] + [(c.ends, -1) for c in self.calls],
            key=lambda e: (e[0], e[1]),
        )
        most = current = 0
        for _, step in edges:
            current += step
            most = max(most, current)
        return most


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+1415555{n:04d}" for n in range(start, start + count)]


def refusals(*errors: DialError) -> list[Exception]:
    return list(errors)


def every(items: Iterable[str]) -> set[str]:
    return set(items)
