"""Load mode: many scripted callers against one URL, with latency and error statistics.

``run_load`` is the Python entry point (benchmark scripts call it); ``ivrkit-sim load`` prints its
report. Calls share one ``httpx.AsyncClient`` whose pool is sized to the concurrency, and every
call is bounded (requests per call, inputs per call), so a looping app cannot run away.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from simulator.caller import (
    AgentPrompt,
    DialOutcome,
    DialPrompt,
    EnqueuePrompt,
    GatherPrompt,
    HangUp,
    Press,
    QueueOutcome,
    RecordOutcome,
    RecordPrompt,
    Speak,
    Timeout,
)
from simulator.engine import Engine
from simulator.model import AgentEvent, CallParams, ErrorEvent, Event, RelayEvent, RequestEvent
from simulator.relay import RelayOptions
from simulator.transport import Transport, skip_missing_sniffio

__all__ = ["BEHAVIOURS", "LoadCaller", "LoadReport", "menu_choices", "run_load"]

BEHAVIOURS = ("normal", "wrong-input", "no-input", "hangup")
MAX_INPUTS = 8  # per call: a caller who keeps getting menus gives up after this many

_PRESS = re.compile(r"\bpress\s+(\d|star|pound)|\b(\d)\s+(?:for|to)\b", re.IGNORECASE)
_WORDS = {"star": "*", "pound": "#"}


def menu_choices(text: str) -> list[str]:
    """Keys a spoken menu offers, in order: "For sales press 1, for support press 2" -> 1, 2."""
    keys = []
    for match in _PRESS.finditer(text):
        key = match.group(1) or match.group(2)
        key = _WORDS.get(key.lower(), key)
        if key not in keys:
            keys.append(key)
    return keys


AGENT_LINES = ("Hello, I have a question.", "Thanks, goodbye.")


class LoadCaller:
    """A caller with one behaviour at its first Gather, then pressing the first offered key.

    Talking to a ConversationRelay agent it says ``agent_lines`` in turn (one per agent turn),
    then hangs up; its behaviour applies at the first turn (``no-input``: silence, ``hangup``,
    ``wrong-input``: words the agent cannot make sense of).
    """

    def __init__(
        self, behaviour: str = "normal", agent_lines: tuple[str, ...] = AGENT_LINES
    ) -> None:
        self.behaviour = behaviour
        self.inputs = 0
        self.agent_lines = list(agent_lines)

    def _counted(self) -> bool:
        self.inputs += 1
        return self.inputs > MAX_INPUTS

    async def gather(self, prompt: GatherPrompt) -> Press | Speak | Timeout | HangUp:
        first = self.inputs == 0
        if self._counted():
            return HangUp()
        if isinstance(prompt, AgentPrompt):
            return self._talk(first)
        offered = menu_choices(prompt.text)
        if first and self.behaviour == "hangup":
            return HangUp()
        if first and self.behaviour == "no-input":
            return Timeout()
        if first and self.behaviour == "wrong-input":
            return Press(next(k for k in "9876543210" if k not in offered))
        key = offered[0] if offered else "1"
        if prompt.num_digits and prompt.num_digits > 1:
            return Press((key * prompt.num_digits)[: prompt.num_digits])
        return Press(key)

    def _talk(self, first: bool) -> Speak | Timeout | HangUp:
        if first and self.behaviour == "hangup":
            return HangUp()
        if first and self.behaviour == "no-input":
            return Timeout()
        if first and self.behaviour == "wrong-input":
            return Speak("blue cheese helicopter")
        return Speak(self.agent_lines.pop(0)) if self.agent_lines else HangUp()

    async def dial(self, prompt: DialPrompt) -> DialOutcome | HangUp:
        if self._counted() or (self.inputs == 1 and self.behaviour == "hangup"):
            return HangUp()
        return DialOutcome("completed", 30)

    async def record(self, prompt: RecordPrompt) -> RecordOutcome | HangUp:
        if self._counted() or (self.inputs == 1 and self.behaviour == "hangup"):
            return HangUp()
        return RecordOutcome(5, key="#")

    async def enqueue(self, prompt: EnqueuePrompt) -> QueueOutcome | HangUp:
        if self._counted() or (self.inputs == 1 and self.behaviour == "hangup"):
            return HangUp()
        return QueueOutcome("bridged", wait_rounds=1)


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return round(ordered[index], 2)


@dataclass
class LoadReport:
    """``calls`` asked for; ``completed`` ran to their end; ``with_errors`` saw a Twilio-side
    error; ``not_started`` were cut by the time bound; ``crashed`` raised inside the simulator."""

    calls: int
    concurrency: int
    completed: int = 0
    with_errors: int = 0
    not_started: int = 0
    crashed: int = 0
    behaviours: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    end_reasons: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    elapsed_s: float = 0.0
    requests_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    agent_sessions: int = 0
    agent_replies: int = 0
    agent_latency_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def format_text(self) -> str:
        lat = self.latency_ms
        lines = [
            f"calls completed   {self.completed}/{self.calls} (concurrency {self.concurrency})",
            f"calls with errors {self.with_errors}"
            + (f", not started (time bound) {self.not_started}" if self.not_started else "")
            + (f", crashed {self.crashed}" if self.crashed else ""),
            "behaviours        " + ", ".join(f"{k} {v}" for k, v in self.behaviours.items()),
            "ended             "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.end_reasons.items())),
            "errors by code    " + (", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
                                    or "none"),
            f"requests          {self.requests} in {self.elapsed_s:.2f} s = "
            f"{self.requests_per_second:.1f} req/s",
            f"webhook latency   p50 {lat.get('p50', 0):.1f} ms, p95 {lat.get('p95', 0):.1f} ms, "
            f"p99 {lat.get('p99', 0):.1f} ms, max {lat.get('max', 0):.1f} ms",
        ]
        if self.agent_sessions:
            agent = self.agent_latency_ms
            lines.append(
                f"agent sessions    {self.agent_sessions}, {self.agent_replies} replies: "
                f"p50 {agent.get('p50', 0):.1f} ms, p99 {agent.get('p99', 0):.1f} ms, "
                f"max {agent.get('max', 0):.1f} ms (caller's turn to the reply's last token)"
            )
        return "\n".join(lines)


def _mix(
    calls: int, shares: dict[str, float], rng: random.Random
) -> list[str]:
    plan: list[str] = []
    for behaviour, share in shares.items():
        if not 0 <= share <= 1:
            raise ValueError(f"--{behaviour}: {share!r} is not a share between 0% and 100%")
        plan.extend([behaviour] * round(calls * share))
    if len(plan) > calls:
        raise ValueError(f"behaviour shares add up to more than 100% of {calls} calls")
    plan.extend(["normal"] * (calls - len(plan)))
    rng.shuffle(plan)
    return plan


async def run_load(
    url: str,
    *,
    calls: int = 100,
    concurrency: int = 10,
    wrong_input: float = 0.0,
    no_input: float = 0.0,
    hangup: float = 0.0,
    app: Any = None,
    client: httpx.AsyncClient | None = None,
    auth_token: str | None = None,
    method: str = "POST",
    max_seconds: float | None = None,
    max_requests: int = 50,
    seed: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    agent_lines: tuple[str, ...] = AGENT_LINES,
    relay: RelayOptions | None = None,
) -> LoadReport:
    """Place ``calls`` calls to ``url``, at most ``concurrency`` at a time.

    Shares (0-1) of callers press a wrong key, stay silent, or hang up at their first Gather;
    the rest press the first key the menu offers ("press 1"), or 1. Calls not started within
    ``max_seconds`` are skipped. ``progress(done, total)`` is called after each call. At a
    ConversationRelay agent callers say ``agent_lines`` in turn; ``relay`` sets their waits.
    """
    if calls < 0 or concurrency < 1:
        raise ValueError("calls must be >= 0 and concurrency >= 1")
    skip_missing_sniffio()  # also for a client passed in
    rng = random.Random(seed)
    plan = _mix(calls, {"wrong-input": wrong_input, "no-input": no_input, "hangup": hangup}, rng)
    report = LoadReport(calls=calls, concurrency=concurrency,
                        behaviours={b: plan.count(b) for b in BEHAVIOURS})
    latencies: list[float] = []
    agent_latencies: list[float] = []
    errors: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for behaviour in plan:
        queue.put_nowait(behaviour)
    workers = min(concurrency, max(calls, 1))
    # One shared client if given; otherwise one small client per worker: httpcore's pool scans
    # every connection on each request, which costs more CPU than the requests themselves at
    # high concurrency.
    if client is not None or app is not None:
        shared = Transport(app=app, client=client, auth_token=auth_token,
                           max_connections=concurrency)
        transports = [shared] * workers
    else:
        transports = [Transport(auth_token=auth_token, max_connections=1) for _ in range(workers)]
    started = time.perf_counter()
    deadline = None if max_seconds is None else started + max_seconds
    done = 0

    def listen(event: Event) -> None:
        if isinstance(event, RequestEvent):
            latencies.append(event.elapsed_ms)
        elif isinstance(event, AgentEvent):
            if event.elapsed_ms is not None:  # None: Twilio's own welcome greeting
                agent_latencies.append(event.elapsed_ms)
        elif isinstance(event, RelayEvent):
            report.agent_sessions += 1
        elif isinstance(event, ErrorEvent):
            errors[str(event.code)] += 1

    async def worker(transport: Transport) -> None:
        nonlocal done
        while not queue.empty():
            behaviour = queue.get_nowait()
            if deadline is not None and time.perf_counter() > deadline:
                report.not_started += 1
                continue
            engine = Engine(
                session=transport.session(), caller=LoadCaller(behaviour, agent_lines), url=url,
                method=method, params=CallParams(), max_requests=max_requests, listeners=[listen],
                relay=relay,
            )
            try:
                result = await engine.run()
            except Exception:  # a simulator bug must not stop the run; it is counted
                report.crashed += 1
            else:
                report.completed += 1
                reasons[result.reason] += 1
                if not result.ok:
                    report.with_errors += 1
            done += 1
            if progress is not None:
                progress(done, calls)

    try:
        await asyncio.gather(*(worker(t) for t in transports))
    finally:
        for transport in dict.fromkeys(transports):
            await transport.aclose()
    report.elapsed_s = round(time.perf_counter() - started, 3)
    report.requests = len(latencies)
    report.requests_per_second = round(report.requests / report.elapsed_s, 1) if report.elapsed_s \
        else 0.0
    ordered = sorted(latencies)
    report.latency_ms = {
        "p50": _percentile(ordered, 0.50), "p95": _percentile(ordered, 0.95),
        "p99": _percentile(ordered, 0.99), "max": round(ordered[-1], 2) if ordered else 0.0,
    }
    agent_ordered = sorted(agent_latencies)
    report.agent_replies = len(agent_ordered)
    if agent_ordered:
        report.agent_latency_ms = {
            "p50": _percentile(agent_ordered, 0.50), "p99": _percentile(agent_ordered, 0.99),
            "max": round(agent_ordered[-1], 2),
        }
    report.errors = dict(errors)
    report.end_reasons = dict(reasons)
    return report
