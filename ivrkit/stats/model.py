"""What a funnel report holds: plain, typed values the CLI, the console and tests share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

ENDINGS = ("completed", "transferred", "queued", "voicemail", "hung_up", "in_progress")
"""How a call ended, in the order reports list them.

``completed``: the IVR itself ended the call (a Hangup or Reject state); ``transferred``:
a Dial was answered; ``queued``: an agent took the call from an Enqueue; ``voicemail``: a
Record state got a recording; ``hung_up``: the call ended while it waited for the caller
(the state it waited in is that state's drop-off); ``in_progress``: no final status yet.
A call that did several of these counts once, for the first of transferred, queued,
voicemail, completed.
"""
CONTAINED = ("completed", "voicemail")
"""Endings without a person on our side: the containment rate's numerator."""


@dataclass(frozen=True)
class Transition:
    """One edge of a flow and how often calls took it (a call may take it several times)."""

    flow: str
    source: str
    trigger: str
    dest: str
    count: int


@dataclass(frozen=True)
class StateStats:
    """One state's part of the funnel.

    ``reached``: distinct calls that entered it; ``dropped``: calls that hung up while it
    waited for them; ``answers``: webhooks answered in it (every key, word, timeout or
    outcome); ``no_input`` / ``no_match`` / ``give_ups``: how many of those were silence,
    a wrong entry, or the last straw; the rates are per answer. ``median_seconds`` and
    ``p90_seconds``: time between entering the state and leaving it (or hanging up), over
    every visit, interpolated like PostgreSQL's ``percentile_cont``; None when no visit
    was timed.
    """

    flow: str
    state: str
    reached: int = 0
    dropped: int = 0
    answers: int = 0
    no_input: int = 0
    no_match: int = 0
    give_ups: int = 0
    median_seconds: float | None = None
    p90_seconds: float | None = None

    @property
    def drop_off_rate(self) -> float:
        return self.dropped / self.reached if self.reached else 0.0

    @property
    def no_input_rate(self) -> float:
        return self.no_input / self.answers if self.answers else 0.0

    @property
    def no_match_rate(self) -> float:
        return self.no_match / self.answers if self.answers else 0.0


@dataclass(frozen=True)
class Funnel:
    """Calls of one flow (or of all, ``flow`` None) started in [since, until)."""

    flow: str | None
    since: datetime | None
    until: datetime | None
    calls: int
    endings: dict[str, int]
    states: list[StateStats] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return self.calls - self.endings.get("in_progress", 0)

    @property
    def containment_rate(self) -> float:
        """Ended calls the IVR handled without a person (completed or voicemail)."""
        contained = sum(self.endings.get(name, 0) for name in CONTAINED)
        return contained / self.ended if self.ended else 0.0

    def state(self, name: str, flow: str | None = None) -> StateStats:
        """The stats of ``name`` (in ``flow``, or the report's flow); zeros if never reached."""
        flow = flow or self.flow
        for stats in self.states:
            if stats.state == name and (flow is None or stats.flow == flow):
                return stats
        return StateStats(flow=flow or "", state=name)

    def transition_counts(self, flow: str | None = None) -> dict[tuple[str, str, str], int]:
        """(source, trigger, dest) -> count, for one flow (default: the report's)."""
        flow = flow or self.flow
        return {
            (t.source, t.trigger, t.dest): t.count
            for t in self.transitions
            if flow is None or t.flow == flow
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: rates included, times as ISO 8601."""
        return {
            "flow": self.flow,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "calls": self.calls,
            "endings": dict(self.endings),
            "containment_rate": round(self.containment_rate, 4),
            "states": [
                {
                    **asdict(s),
                    "drop_off_rate": round(s.drop_off_rate, 4),
                    "no_input_rate": round(s.no_input_rate, 4),
                    "no_match_rate": round(s.no_match_rate, 4),
                }
                for s in self.states
            ],
            "transitions": [asdict(t) for t in self.transitions],
        }
