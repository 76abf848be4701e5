"""Who answers an outbound call: the callee model of the simulated Calls API.

A ``Callee`` says how one call attempt to a number goes: whether it is answered (or busy, not
answered, failed), after how many seconds of ringing, who picks up (a person, a machine, a fax)
and what that person then does in the flow (keys, speech: the steps of a ``ScriptedCaller``).
A ``CalleeModel`` picks the callee for each attempt: per number (a list plays successive
attempts, e.g. busy then answered) or by ratio. Ratio draws are seeded per (seed, number,
attempt), so a run's outcomes do not depend on the order in which concurrent calls start.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from simulator.caller import (
    Answer,
    DialOutcome,
    DialPrompt,
    EnqueuePrompt,
    GatherAnswer,
    GatherPrompt,
    HangUp,
    Press,
    QueueOutcome,
    RecordOutcome,
    RecordPrompt,
    ScriptedCaller,
    Speak,
    Timeout,
)

__all__ = [
    "ANSWERED_BY",
    "OUTCOMES",
    "Callee",
    "CalleeModel",
    "MachineCaller",
    "answered_by",
    "parse_callee",
    "parse_ratios",
]

# Who picks up an answered call; the Twilio AnsweredBy values are accepted too.
ANSWERED_BY = frozenset({
    "human", "machine", "fax", "unknown", "machine_start", "machine_end_beep",
    "machine_end_silence", "machine_end_other",
})
# How a call attempt ends before the flow: answered, or a final CallStatus.
OUTCOMES = frozenset({"answered", "busy", "no-answer", "failed"})
_RATIO_KINDS = frozenset({"human", "machine", "fax", "unknown", "busy", "no-answer", "failed"})


@dataclass(frozen=True)
class Callee:
    """One call attempt's far end.

    ``outcome``: ``answered``, ``busy``, ``no-answer`` (rings until the call's ``Timeout``) or
    ``failed``. ``who``: ``human``, ``machine``, ``fax``, ``unknown`` (or an exact Twilio
    AnsweredBy such as ``machine_end_silence``). ``ring_seconds``: ringing before the answer
    (a ring longer than the call's ``Timeout`` is a no-answer). ``steps``: what a person does
    at the flow's input points (``Press``, ``Speak``, ``Timeout``, ``HangUp``...; when they run
    out the person hangs up). ``greeting_seconds``: a machine's greeting up to the beep, which
    is how long ``DetectMessageEnd`` takes to decide.
    """

    outcome: str = "answered"
    who: str = "human"
    ring_seconds: float = 4.0
    steps: tuple[Answer, ...] = ()
    greeting_seconds: float = 12.0

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"callee outcome {self.outcome!r}: use one of "
                             f"{', '.join(sorted(OUTCOMES))}")
        if self.who not in ANSWERED_BY:
            raise ValueError(f"callee {self.who!r}: use one of {', '.join(sorted(ANSWERED_BY))}")
        if self.ring_seconds < 0 or self.greeting_seconds < 0:
            raise ValueError("ring_seconds and greeting_seconds cannot be negative")

    @property
    def is_machine(self) -> bool:
        return self.who == "machine" or self.who.startswith("machine_")

    def detection_seconds(self, mode: str, timeout: float) -> float:
        """How long answering machine detection listens before it decides."""
        if self.who == "unknown":
            return timeout
        if self.is_machine:
            return min(timeout, self.greeting_seconds if mode == "DetectMessageEnd" else 4.0)
        return min(timeout, 3.0 if self.who == "fax" else 2.5)

    def caller(self) -> ScriptedCaller | MachineCaller:
        """The Caller that plays this callee inside the flow."""
        if self.is_machine or self.who == "fax":
            return MachineCaller()
        return ScriptedCaller(self.steps)


def answered_by(who: str, mode: str) -> str:
    """Twilio's ``AnsweredBy`` for a callee under a ``MachineDetection`` mode (reference sect. 13):
    ``Enable`` reports ``machine_start`` for any machine; ``DetectMessageEnd`` waits for the
    greeting's end and reports ``machine_end_beep`` (or the exact ``machine_end_*`` given)."""
    if who in ("human", "fax", "unknown"):
        return who
    if mode == "DetectMessageEnd":
        return who if who.startswith("machine_end_") else "machine_end_beep"
    return "machine_start"


class MachineCaller:
    """An answering machine or fax in the flow: it never presses a key or speaks; a Gather
    times out (twice, then the machine's recording ends: a hang-up), anything else hangs up."""

    def __init__(self, patience: int = 2) -> None:
        self.patience = patience

    async def gather(self, prompt: GatherPrompt) -> GatherAnswer:
        if self.patience <= 0:
            return HangUp()
        self.patience -= 1
        return Timeout()

    async def dial(self, prompt: DialPrompt) -> DialOutcome | HangUp:
        return HangUp()

    async def record(self, prompt: RecordPrompt) -> RecordOutcome | HangUp:
        return HangUp()

    async def enqueue(self, prompt: EnqueuePrompt) -> QueueOutcome | HangUp:
        return HangUp()


@dataclass
class CalleeModel:
    """Picks the ``Callee`` for each call attempt.

    ``numbers`` maps a number to its callee, or to a list for successive attempts (the last one
    repeats). Other numbers draw from ``ratios`` (weights of ``human``, ``machine``, ``fax``,
    ``unknown``, ``busy``, ``no-answer``, ``failed``) with ``ring_seconds`` drawn from the
    ``ring`` range, seeded by ``seed``; answered people do ``steps``.
    """

    numbers: Mapping[str, Callee | Sequence[Callee]] = field(default_factory=dict)
    ratios: Mapping[str, float] = field(default_factory=lambda: {"human": 1.0})
    seed: int | str = 0
    ring: tuple[float, float] = (2.0, 8.0)
    steps: tuple[Answer, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.ratios) - _RATIO_KINDS
        if unknown:
            raise ValueError(f"callee ratios: unknown {', '.join(sorted(unknown))}; use "
                             f"{', '.join(sorted(_RATIO_KINDS))}")
        if not self.ratios or sum(self.ratios.values()) <= 0 or min(self.ratios.values()) < 0:
            raise ValueError("callee ratios need at least one positive weight and none negative")
        low, high = self.ring
        if low < 0 or high < low:
            raise ValueError(f"ring range {self.ring}: give 0 <= low <= high")
        self._kinds = sorted(self.ratios)
        self._bounds = list(itertools.accumulate(self.ratios[kind] for kind in self._kinds))
        self._total = self._bounds[-1]

    def callee(self, number: str, attempt: int = 0) -> Callee:
        """The callee for the ``attempt``-th call (from 0) to ``number``."""
        listed = self.numbers.get(number)
        if isinstance(listed, Callee):
            return listed
        if listed:
            return listed[min(attempt, len(listed) - 1)]
        # Two uniform draws from a hash of (seed, number, attempt): the same for a given
        # attempt whatever order calls start in, and cheaper than seeding a Random per call.
        digest = hashlib.blake2b(f"{self.seed}:{number}:{attempt}".encode(), digest_size=16)
        high, low = divmod(int.from_bytes(digest.digest(), "big"), 1 << 64)
        kind = self._pick(high / (1 << 64))
        ring = self.ring[0] + (self.ring[1] - self.ring[0]) * (low / (1 << 64))
        if kind in ("busy", "no-answer", "failed"):
            return Callee(outcome=kind, ring_seconds=ring)
        return Callee(who=kind, ring_seconds=ring, steps=self.steps if kind == "human" else ())

    def _pick(self, share: float) -> str:
        target = share * self._total
        for kind, bound in zip(self._kinds, self._bounds, strict=True):
            if target < bound:
                return kind
        return self._kinds[-1]

    def with_number(self, number: str, *callees: Callee) -> CalleeModel:
        """A copy where ``number`` plays ``callees`` (one per attempt)."""
        numbers = dict(self.numbers)
        numbers[number] = callees[0] if len(callees) == 1 else tuple(callees)
        return replace(self, numbers=numbers)


def parse_callee(spec: str) -> Callee:
    """A callee from the command line: ``human,press=1,speak=yes,ring=3``, ``machine``,
    ``busy``, ``no-answer``, ``failed``, ``fax``, ``machine_end_silence,greeting=20``."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise ValueError("empty callee: give e.g. human,press=1 or busy")
    head, options = parts[0], parts[1:]
    outcome, who = ("answered", head) if head in ANSWERED_BY else (head, "human")
    if outcome not in OUTCOMES:
        raise ValueError(f"callee {head!r}: use {', '.join(sorted(ANSWERED_BY | OUTCOMES))}")
    steps: list[Answer] = []
    ring, greeting = 4.0, 12.0
    for option in options:
        name, sep, value = option.partition("=")
        if name == "press" and sep:
            steps.append(Timeout() if value == "timeout" else Press(value))
        elif name == "speak" and sep:
            steps.append(Speak(value))
        elif name == "hangup" and not sep:
            steps.append(HangUp())
        elif name in ("ring", "greeting") and sep:
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"{option!r}: {name} takes seconds, e.g. {name}=5") from None
            if name == "ring":
                ring = seconds
            else:
                greeting = seconds
        else:
            raise ValueError(f"{option!r}: use press=KEYS, speak=TEXT, hangup, ring=SECONDS "
                             "or greeting=SECONDS")
    return Callee(outcome=outcome, who=who, ring_seconds=ring, steps=tuple(steps),
                  greeting_seconds=greeting)


def parse_ratios(spec: str | Iterable[str]) -> dict[str, float]:
    """``human=70,machine=20,busy=5,no-answer=5`` (weights, any scale) as a dict."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    ratios: dict[str, float] = {}
    for item in items:
        name, sep, value = item.strip().partition("=")
        try:
            ratios[name] = float(value.rstrip("%")) if sep else -1.0
        except ValueError:
            ratios[name] = -1.0
        if ratios[name] < 0 or name not in _RATIO_KINDS:
            raise ValueError(f"{item.strip()!r}: give KIND=WEIGHT with KIND one of "
                             f"{', '.join(sorted(_RATIO_KINDS))}")
    return ratios
