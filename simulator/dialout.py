"""One outbound call placed through the simulated Calls API, played with the simulator's engine.

``run_outbound`` takes a ``SimCall`` from ``queued`` to its final status the way Twilio does
(reference sect. 12-14): it waits for its CPS slot, sends ``initiated`` and ``ringing``, then the
callee busy / no-answer / failed ends it (``completed`` callback with that status), or the callee
answers: ``answered``, answering machine detection, and the ordinary ``Engine`` runs the flow at
``Url`` with the callee as its ``Caller``. ``OutboundEngine`` adds what only an API call has:
``AnsweredBy`` (sync AMD), the ``AsyncAmdStatusCallback``, and live updates (``Url``/``Twiml``
redirect, ``Status=completed``) from ``POST Calls/{Sid}.json``, checked between verbs.

Time is virtual, as in the engine: ringing and prompts pass at once unless ``speed`` > 0, which
paces each call in real time (``speed`` simulated seconds per real second).
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from simulator.callees import Callee, answered_by
from simulator.engine import Document, Engine, _End, _Next, parse_twiml
from simulator.model import CallParams, Event, RequestEvent
from simulator.transport import Session

__all__ = ["INPUT_VERBS", "OutboundEngine", "SimCall", "Update", "run_outbound"]

# Verbs where the far end is listened to for a while: AMD decides before one of them runs.
INPUT_VERBS = frozenset({"Gather", "Record", "Dial", "Enqueue"})
TWIML_URL = "twiml:inline"
AMD_TIMEOUT = 30.0


def rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment.astimezone(UTC), usegmt=True) if moment else None


@dataclass
class Update:
    """A live-call update from ``POST Calls/{Sid}.json``: a new ``url`` (with ``method``),
    inline ``twiml``, or ``status`` ``completed``/``canceled``."""

    url: str | None = None
    method: str = "POST"
    twiml: str | None = None
    status: str | None = None


@dataclass
class SimCall:
    """One call created through the API: its request, its live state and everything it did."""

    sid: str
    account_sid: str
    to: str
    from_: str
    form: dict[str, list[str]]
    created: datetime
    queue_time_ms: int = 0
    status: str = "queued"
    answered_by: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    attempt: int = 0
    callee: Callee | None = None
    updated: datetime | None = None
    events: list[Event] = field(default_factory=list)
    callbacks: list[dict[str, str]] = field(default_factory=list)
    pending: Update | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: str | None = None

    def value(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[-1] if values else default

    def values(self, name: str) -> list[str]:
        return self.form.get(name, [])

    def set_status(self, status: str) -> None:
        self.status = status
        self.updated = datetime.now(UTC)


class OutboundEngine(Engine):
    """The engine with an outbound call's extras, checked at every verb boundary."""

    def __init__(self, *, call: SimCall, amd_mode: str | None, async_amd: bool,
                 speed: float, record: bool = True, **options: Any) -> None:
        super().__init__(**options)
        self.call = call
        self.record = record
        self.amd_mode = amd_mode
        self.async_amd = async_amd
        self.speed = speed
        self.amd_sent = not (amd_mode and async_amd)
        self.amd_at = 0.0  # virtual seconds since answer when detection decides
        self._paced = 0.0
        self._inline: dict[str, bytes] = {}

    # --- checkpoints --------------------------------------------------------------------------

    async def checkpoint(self, next_verb: str | None) -> _Next | None:
        """Between verbs: pace in real time, send a due async AMD result, then apply an update.

        ``next_verb`` is the verb about to run (``None`` after one ran, ``""`` at the end of a
        document); AMD decides before an input verb or once enough virtual time has passed."""
        if self.speed > 0 and self.clock.now > self._paced:
            await asyncio.sleep((self.clock.now - self._paced) / self.speed)
            self._paced = self.clock.now
        if not self.amd_sent:
            answered = self.clock.answered_at or 0.0
            if next_verb in INPUT_VERBS or self.clock.now - answered >= self.amd_at:
                await self._send_amd()
        return self._take_update()

    def _take_update(self) -> _Next | None:
        update = self.call.pending
        if update is None:
            return None
        self.call.pending = None
        if update.status is not None:
            raise _End("completed", "api-update")
        if update.twiml is not None:
            key = f"{TWIML_URL}:{len(self._inline)}"
            self._inline[key] = update.twiml.encode()
            return _Next("GET", key)
        assert update.url is not None
        return _Next(update.method, update.url)

    async def _send_amd(self) -> None:
        self.amd_sent = True
        call = self.call
        answered = self.clock.answered_at or 0.0
        # Detection listened this long; prompts played meanwhile do not shorten it.
        self.clock.advance(answered + self.amd_at - self.clock.now)
        assert self.amd_mode is not None
        assert call.callee is not None
        call.answered_by = answered_by(call.callee.who, self.amd_mode)
        self.params.extra["AnsweredBy"] = call.answered_by
        url = call.value("AsyncAmdStatusCallback")
        if not url:
            return
        params = {
            "AccountSid": call.account_sid,
            "CallSid": call.sid,
            "AnsweredBy": call.answered_by,
            "MachineDetectionDuration": str(int(self.amd_at * 1000)),
        }
        await self._callback(call.value("AsyncAmdStatusCallbackMethod", "POST"), url, params)
        # Let the app's own tasks on this event loop (e.g. one redirecting the call through the
        # API) run before the flow goes on, as they would while a real machine talks.
        for _ in range(3):
            await asyncio.sleep(0)

    async def _callback(self, method: str, url: str, params: dict[str, str]) -> None:
        result = await self.session.fetch(method.upper(), self.session.transport.absolute(url),
                                          params)
        if self.record:
            self.call.callbacks.append({**params, "_event": "amd", "_url": url,
                                        "_status": str(result.status)})

    # --- engine hooks --------------------------------------------------------------------------

    async def _run_document(self, document: Document) -> _Next | None:
        step = await super()._run_document(document)
        if step is None:
            step = await self.checkpoint("")
        return step

    async def _load(self, method: str, url: str, params: dict[str, str]) -> Document:
        inline = self._inline.get(url)
        if inline is None:
            return await super()._load(method, url, params)
        try:
            return Document(parse_twiml(inline), self.url)
        except Exception:  # validated when the update was accepted; an engine error otherwise
            root = ET.Element("Response")
            return Document(root, self.url)

    async def _status_callback(self, event_name: str, status: str) -> None:
        before = len(self.events)
        await super()._status_callback(event_name, status)
        if not self.record:
            return
        for event in self.events[before:]:
            if isinstance(event, RequestEvent):  # the first try; retries repeat its params
                self.call.callbacks.append({**event.params, "_event": event_name,
                                            "_url": event.url, "_status": str(event.status)})
                break


def _checkpointed(handler: Callable[..., Any]) -> Callable[..., Any]:
    async def run_verb(engine: OutboundEngine, verb: ET.Element, document: Document) -> Any:
        step = await engine.checkpoint(verb.tag)
        if step is not None:
            return step
        step = await handler(engine, verb, document)
        return await engine.checkpoint(None) or step

    return run_verb


OutboundEngine._verbs = {name: _checkpointed(fn) for name, fn in Engine._verbs.items()}


async def _wait(seconds: float, call: SimCall) -> bool:
    """Sleep ``seconds`` of real time, or until the call is updated; True when updated."""
    if seconds <= 0:
        return call.pending is not None
    deadline = time.monotonic() + seconds
    while call.pending is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, 0.05))
    return True


async def run_outbound(
    call: SimCall,
    *,
    session: Session,
    callee: Callable[[], Callee],
    start_delay: float,
    speed: float,
    max_requests: int = 100,
    on_end: Callable[[SimCall], Any] | None = None,
    record: bool = True,
) -> None:
    """Play ``call`` to its end with the far end ``callee()`` picks; never raises (a crash,
    the simulator's own or the callee model's, is recorded as a ``failed`` call)."""
    try:
        await _play(call, session=session, callee=callee(), start_delay=start_delay, speed=speed,
                    max_requests=max_requests, record=record)
    except asyncio.CancelledError:
        call.set_status("canceled" if call.start_time is None else "completed")
        raise
    except Exception as exc:  # the simulator's own bug: keep serving the other calls
        call.error = f"{type(exc).__name__}: {exc}"
        call.set_status("failed")
    finally:
        call.end_time = call.end_time or datetime.now(UTC)
        call.done.set()
        if on_end is not None:
            on_end(call)


async def _play(
    call: SimCall, *, session: Session, callee: Callee, start_delay: float, speed: float,
    max_requests: int, record: bool,
) -> None:
    call.callee = callee
    events = set(call.values("StatusCallbackEvent")) or {"completed"}
    mode = call.value("MachineDetection") or None
    if call.value("SendDigits"):
        mode = None  # SendDigits disables MachineDetection (reference sect. 12)
    async_amd = call.value("AsyncAmd").lower() == "true"
    url = call.value("Url") or TWIML_URL
    engine = OutboundEngine(
        call=call, amd_mode=mode, async_amd=async_amd, speed=speed, record=record,
        session=session, caller=callee.caller(), url=url,
        method=call.value("Method", "POST"),
        params=CallParams(from_=call.from_, to=call.to, call_sid=call.sid,
                          account_sid=call.account_sid, direction="outbound-api"),
        fallback_url=call.value("FallbackUrl") or None,
        fallback_method=call.value("FallbackMethod", "POST"),
        status_callback=call.value("StatusCallback") or None,
        status_callback_method=call.value("StatusCallbackMethod", "POST"),
        status_callback_events=events, max_requests=max_requests,
        listeners=[call.events.append] if record else (),
    )
    if url == TWIML_URL:
        engine._inline[TWIML_URL] = call.value("Twiml").encode()

    if await _wait(start_delay, call) and _cancelled(call):
        await _cancel(call, engine)
        return
    call.set_status("initiated")
    await engine._status_callback("initiated", "initiated")
    call.set_status("ringing")
    await engine._status_callback("ringing", "ringing")
    timeout = min(max(int(call.value("Timeout", "60") or 60), 1), 600)
    outcome = callee.outcome
    ring = callee.ring_seconds
    if outcome == "answered" and ring >= timeout:
        outcome = "no-answer"
    if outcome == "no-answer":
        ring = timeout
    elif outcome == "failed":
        ring = 0
    engine.clock.advance(ring)
    engine._paced = ring
    if await _wait(ring / speed if speed > 0 else 0, call) and _cancelled(call):
        await _cancel(call, engine)
        return
    if outcome != "answered":
        call.duration = 0
        call.set_status(outcome)
        await engine._status_callback("completed", outcome)
        return

    call.start_time = datetime.now(UTC)
    engine.clock.answer()
    call.set_status("in-progress")
    await engine._status_callback("answered", "in-progress")
    if mode:
        amd_timeout = float(call.value("MachineDetectionTimeout", "") or AMD_TIMEOUT)
        engine.amd_at = callee.detection_seconds(mode, amd_timeout)
        if not async_amd:  # sync: the call waits for the result, then the Url hears it
            engine.clock.advance(engine.amd_at)
            call.answered_by = answered_by(callee.who, mode)
            engine.params.extra["AnsweredBy"] = call.answered_by
    # Only the engine's own end-of-call callback is left; it must not resend these two.
    engine.status_callback_events = engine.status_callback_events - {"initiated", "ringing"}
    engine.call_status = "in-progress"
    pending = engine._take_update()
    if pending is not None:
        engine.url, engine.method = pending.url, pending.method
    result = await engine.run()
    call.duration = result.duration
    call.set_status("completed" if result.status in ("completed", "in-progress")
                    else result.status)


async def _cancel(call: SimCall, engine: OutboundEngine) -> None:
    """A queued or ringing call updated with Status=canceled (or completed) ends unanswered."""
    call.pending = None
    call.duration = 0
    call.set_status("canceled")
    await engine._status_callback("completed", "canceled")


def _cancelled(call: SimCall) -> bool:
    update = call.pending
    return update is not None and update.status is not None
