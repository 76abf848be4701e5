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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from simulator.callees import Callee, answered_by
from simulator.engine import CallResult, Document, Engine, _End, _Next, parse_twiml
from simulator.model import CallParams, EndEvent, ErrorEvent, Event, RequestEvent
from simulator.transport import Session

__all__ = [
    "INPUT_VERBS", "OutboundEngine", "SimCall", "Update", "run_outbound", "run_outbound_call",
]

# Verbs where the far end is listened to for a while: AMD decides before one of them runs.
INPUT_VERBS = frozenset({"Gather", "Record", "Dial", "Enqueue"})
TWIML_URL = "twiml:inline"
AMD_TIMEOUT = 30.0


_last_rfc2822: tuple[int, str] = (0, "")


def rfc2822(moment: datetime | None) -> str | None:
    """RFC 2822 in GMT, as Twilio's resources show dates; remembered for the last second
    (a burst of creates formats the same second again and again)."""
    global _last_rfc2822
    if moment is None:
        return None
    second = int(moment.timestamp())
    if _last_rfc2822[0] != second:
        _last_rfc2822 = (second, format_datetime(moment.astimezone(UTC).replace(microsecond=0),
                                                 usegmt=True))
    return _last_rfc2822[1]


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
    created_at: float = 0.0  # time.monotonic() at create: lets a test check a caller's rate
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
        self._queued = False

    # --- checkpoints --------------------------------------------------------------------------

    async def checkpoint(self, next_verb: str | None) -> _Next | None:
        """Between verbs: pace in real time, send a due async AMD result, then apply an update.

        ``next_verb`` is the verb about to run (``None`` after one ran, ``""`` at the end of a
        document); AMD decides before an input verb or once enough virtual time has passed."""
        if self.speed > 0 and self.clock.now > self._paced:
            # Real time passes for what the verbs took; an update cuts the wait short.
            await _wait((self.clock.now - self._paced) / self.speed, self.call)
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
        for exchange in result.exchanges:
            self.emit(RequestEvent(exchange.method, exchange.url, exchange.params,
                                   exchange.status, exchange.elapsed_ms))
        if not result.ok:  # like a failed status callback: a warning, the call goes on
            self.emit(ErrorEvent(15003, f"AsyncAmdStatusCallback failed: {result.error_message}"))
        if self.record:
            self.call.callbacks.append({**params, "_event": "amd", "_url": url,
                                        "_status": str(result.status)})

    # --- engine hooks --------------------------------------------------------------------------

    async def _run_document(self, document: Document) -> _Next | None:
        step = await super()._run_document(document)
        if step is None:
            step = await self.checkpoint("")
        return step

    async def _wait_in_queue(self, *args: Any) -> str:
        # The wait loop runs verbs itself and ignores what most of them return, so an update
        # taken there would be lost: it is applied when the <Enqueue> ends instead.
        self._queued = True
        try:
            result: str = await super()._wait_in_queue(*args)
            return result
        finally:
            self._queued = False

    async def _load(self, method: str, url: str, params: dict[str, str]) -> Document:
        inline = self._inline.get(url)
        if inline is None:
            return await super()._load(method, url, params)
        return Document(parse_twiml(inline), self.url)  # the API validated it when accepted

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
        if engine._queued:
            return await handler(engine, verb, document)
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
    start_time: datetime | None = None,
) -> None:
    """Play ``call`` to its end with the far end ``callee()`` picks; never raises (a crash,
    the simulator's own or the callee model's, is recorded as a ``failed`` call)."""
    try:
        await _play(call, session=session, callee=callee(), start_delay=start_delay, speed=speed,
                    max_requests=max_requests, record=record, start_time=start_time)
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
    max_requests: int, record: bool, start_time: datetime | None,
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
        listeners=[call.events.append] if record else (), start_time=start_time,
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
        engine.emit(EndEvent(outcome, 0, outcome))
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
    engine.emit(EndEvent("canceled", 0, "api-update"))


def _cancelled(call: SimCall) -> bool:
    update = call.pending
    return update is not None and update.status is not None


async def run_outbound_call(
    url: str,
    callee: Callee,
    *,
    session: Session,
    params: CallParams,
    fields: Mapping[str, str | list[str]] | None = None,
    max_requests: int = 100,
    start_time: datetime | None = None,
) -> tuple[SimCall, CallResult]:
    """One outbound call to ``url`` without the API around it (scenario files use this):
    ``fields`` are the Calls API create fields (``MachineDetection``, ``StatusCallback``...)."""
    form: dict[str, list[str]] = {"Url": [url], "To": [params.to], "From": [params.from_]}
    for name, value in (fields or {}).items():
        form[name] = list(value) if isinstance(value, list) else [value]
    now = datetime.now(UTC)
    call = SimCall(sid=params.call_sid, account_sid=params.account_sid, to=params.to,
                   from_=params.from_, form=form, created=now, updated=now)
    await run_outbound(call, session=session, callee=lambda: callee, start_delay=0.0,
                       speed=0.0, max_requests=max_requests, start_time=start_time)
    if call.error is not None:
        raise RuntimeError(f"outbound call {call.sid} crashed: {call.error}")
    end = call.events[-1] if call.events and isinstance(call.events[-1], EndEvent) else None
    result = CallResult(
        call.events, end.status if end else call.status, end.duration if end else 0,
        end.reason if end else call.status, call.sid,
    )
    return call, result
