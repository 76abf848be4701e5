"""The dialpad: simulated calls driven from the browser, run by the simulator's engine.

Each call is a ``simulator.Engine`` task in this process, whose caller waits for the
browser's next answer (keys, words, an outcome, hang-up). Its webhooks go to the running
app itself through the simulator's in-process ASGI transport, signed with the app's auth
token like Twilio's, so they take exactly the production path (signature check, store,
event log) and the call lands in the call list like any other.

Live calls are bounded: at most ``max_live`` at once, and a call the browser left alone
for ``idle_seconds`` is hung up (or, if its webhook is stuck, cancelled) by a reaper task
that runs only while calls are live. ``close()`` ends them all before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ivrkit.console.calls import DIALPAD_CALLER, scrub
from simulator.caller import (
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
from simulator.model import CallParams, EndEvent, Event, GatherEvent, InputEvent, SayEvent, new_sid
from simulator.transport import Transport

log = logging.getLogger("ivrkit.console")

ASGI_BASE = "http://testserver"
Answer = Press | Speak | Timeout | HangUp | DialOutcome | RecordOutcome | QueueOutcome
ACCEPTS: dict[str, tuple[type, ...]] = {
    "gather": (Press, Speak, Timeout, HangUp),
    "dial": (DialOutcome, HangUp),
    "record": (RecordOutcome, HangUp),
    "enqueue": (QueueOutcome, HangUp),
}
_SKIPPED = frozenset({"request", "gather", "pause"})


class DialpadFull(Exception):
    """Too many simulated calls are live."""


class NotAsked(Exception):
    """The answer does not fit what the call is waiting for (or it waits for nothing)."""


@dataclass
class SimCall:
    """One simulated call: its engine task, what it asks now, and what the caller heard."""

    call_sid: str
    flow: str
    secret_states: frozenset[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    question: dict[str, Any] | None = None
    turn: int = 0
    status: str = "ringing"
    ended: bool = False
    last_used: float = field(default_factory=time.monotonic)
    task: asyncio.Task[Any] | None = None
    answers: asyncio.Queue[Answer] = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    _secret_gather: bool = False
    _after_secret: bool = False

    # -- the engine's side (simulator.caller.Caller) -------------------------------------------

    async def _ask(self, question: dict[str, Any]) -> Answer:
        self.question = question
        self.turn += 1
        self.moved.set()
        try:
            return await self.answers.get()
        finally:
            self.question = None

    async def gather(self, prompt: GatherPrompt) -> Press | Speak | Timeout | HangUp:
        answer = await self._ask({
            "kind": "gather",
            "input": sorted(prompt.input),
            "num_digits": prompt.num_digits,
            "finish_on_key": prompt.finish_on_key,
            "timeout": prompt.timeout,
        })
        assert isinstance(answer, Press | Speak | Timeout | HangUp)
        return answer

    async def dial(self, prompt: DialPrompt) -> DialOutcome | HangUp:
        answer = await self._ask({"kind": "dial", "targets": len(prompt.targets)})
        assert isinstance(answer, DialOutcome | HangUp)
        return answer

    async def record(self, prompt: RecordPrompt) -> RecordOutcome | HangUp:
        answer = await self._ask({"kind": "record", "max_length": prompt.max_length})
        assert isinstance(answer, RecordOutcome | HangUp)
        return answer

    async def enqueue(self, prompt: EnqueuePrompt) -> QueueOutcome | HangUp:
        answer = await self._ask({"kind": "enqueue", "queue": prompt.queue})
        assert isinstance(answer, QueueOutcome | HangUp)
        return answer

    def heard(self, event: Event) -> None:
        """Engine listener: keep what the browser may show, with secrets masked."""
        if isinstance(event, GatherEvent):
            query = parse_qs(urlsplit(event.attributes.get("action", "")).query)
            self._secret_gather = any(s in self.secret_states for s in query.get("state", []))
            # A confirmation in the secret state reads the entry back: keep masking there.
            self._after_secret = self._after_secret and self._secret_gather
        if event.type in _SKIPPED:
            return
        data = event.to_json()
        if isinstance(event, InputEvent) and self._secret_gather:
            data = {"type": "input", "digits": "****"} if event.digits else data
            if event.speech is not None:
                data = {"type": "input", "speech": "****"}
            self._after_secret = True
        elif isinstance(event, SayEvent):
            # A read-back of what was just keyed in a secret state is not shown either.
            text = event.text
            if self._after_secret:
                text = "".join("*" if c.isdigit() else c for c in text)
            data = {"type": "say", "text": scrub(text)}
        elif "targets" in data:
            data["targets"] = len(data["targets"])  # numbers dialled are not shown
        if isinstance(event, EndEvent):
            self.status = event.status
        # Errors quote URLs and documents: nothing number-shaped leaves unmasked.
        self.events.append({k: scrub(v) if isinstance(v, str) else v for k, v in data.items()})

    # -- the browser's side --------------------------------------------------------------------

    def view(self, since: int = 0) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "flow": self.flow,
            "events": self.events[since:],
            "cursor": len(self.events),
            "question": self.question,
            "ended": self.ended,
            "status": self.status,
        }

    async def wait_move(self, turn: int, timeout: float) -> None:
        """Until the engine asks its next question or the call ends (or ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.turn == turn and not self.ended:
            self.moved.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.moved.wait(), remaining)


class Dialpad:
    """The live simulated calls of one app."""

    def __init__(
        self,
        app: Callable[[], Any],
        *,
        auth_token: str | None,
        public_url: str | None,
        secret_states: Iterable[str],
        numbers: dict[str, str],
        max_live: int = 10,
        idle_seconds: float = 300.0,
        answer_wait: float = 10.0,
    ) -> None:
        self._app = app
        self.auth_token = auth_token
        self.base_url = public_url or ASGI_BASE
        self.secret_states = frozenset(secret_states)
        self.numbers = numbers
        self.max_live = max_live
        self.idle_seconds = idle_seconds
        self.answer_wait = answer_wait
        self.calls: dict[str, SimCall] = {}
        self._transport: Transport | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.closed = False

    def _transport_for_app(self) -> Transport:
        if self._transport is None:
            # The app's lifespan is the server's: the transport must not run it again.
            self._transport = Transport(app=self._app(), auth_token=self.auth_token)
        return self._transport

    async def start(self, flow: str) -> SimCall:
        """A new call to ``flow``; back when it first waits for the caller or ends."""
        if self.closed:
            raise DialpadFull("the app is shutting down")
        if len(self.calls) >= self.max_live:
            raise DialpadFull(
                f"{self.max_live} simulated calls are live already: hang one up, or wait "
                f"{self.idle_seconds:g} s for idle ones to end"
            )
        transport = self._transport_for_app()
        sid = new_sid("CA")
        sim = SimCall(call_sid=sid, flow=flow, secret_states=self.secret_states)
        engine = Engine(
            session=transport.session(),
            caller=sim,
            url=f"{self.base_url}/voice/{flow}",
            params=CallParams(from_=DIALPAD_CALLER, to=self.numbers.get(flow, "+15005550001"),
                              call_sid=sid),
            status_callback=f"{self.base_url}/voice/{flow}/status",
            listeners=[sim.heard],
        )
        self.calls[sid] = sim
        sim.task = asyncio.create_task(self._run(sim, engine), name=f"dialpad {sid}")
        self._ensure_reaper()
        await sim.wait_move(0, self.answer_wait)
        return sim

    async def _run(self, sim: SimCall, engine: Engine) -> None:
        try:
            result = await engine.run()
            sim.status = result.status
        except asyncio.CancelledError:
            sim.status = "canceled"
            raise
        except Exception:
            log.exception("dialpad call %s failed in the simulator", sim.call_sid)
            sim.status = "failed"
        finally:
            sim.ended = True
            sim.question = None
            self.calls.pop(sim.call_sid, None)
            sim.moved.set()

    def get(self, call_sid: str) -> SimCall | None:
        sim = self.calls.get(call_sid)
        if sim is not None:
            sim.last_used = time.monotonic()
        return sim

    async def answer(self, sim: SimCall, answer: Answer) -> None:
        """Give the waiting call ``answer``; back at its next question or its end."""
        question = sim.question
        if question is not None and not sim.answers.empty():
            # Two tabs answered the same question: the first answer stands.
            raise NotAsked("the call got an answer already: wait for its next question")
        if question is None or not isinstance(answer, ACCEPTS[question["kind"]]):
            waiting = question["kind"] if question is not None else "nothing (the app is busy)"
            raise NotAsked(f"the call is waiting for {waiting}")
        turn = sim.turn
        sim.answers.put_nowait(answer)
        await sim.wait_move(turn, self.answer_wait)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="dialpad reaper")

    async def _reap(self) -> None:
        period = max(0.05, min(self.idle_seconds / 4, 30.0))
        while self.calls:
            await asyncio.sleep(period)
            await self.expire_idle()

    async def expire_idle(self, *, now: float | None = None) -> int:
        """Hang up calls idle longer than ``idle_seconds``; the number ended."""
        now = time.monotonic() if now is None else now
        idle = [s for s in self.calls.values() if now - s.last_used > self.idle_seconds]
        for sim in idle:
            log.info("dialpad call %s idle for %.0f s: hanging up", sim.call_sid,
                     now - sim.last_used)
            await self._end(sim, grace=2.0)
        return len(idle)

    async def hang_up(self, sim: SimCall) -> None:
        await self._end(sim, grace=self.answer_wait)

    async def _end(self, sim: SimCall, *, grace: float) -> None:
        """Hang up at the pending question; cancel the engine if it does not end in time
        (its webhook is stuck): the app's own deadline and the store give back the rest."""
        if sim.question is not None and sim.answers.empty():
            sim.answers.put_nowait(HangUp())
        task = sim.task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """End every live call and the reaper; the app's lifespan calls it before the
        store closes."""
        self.closed = True
        calls = list(self.calls.values())
        await asyncio.gather(*(self._end(sim, grace=2.0) for sim in calls))
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
