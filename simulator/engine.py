"""The TwiML interpreter: plays Twilio's side of one call (reference sect. 2-5).

``Engine.run()`` fetches the Voice URL, runs each document's verbs top down, asks the ``Caller`` at
every input point, follows actions and redirects, and ends with an ``EndEvent``. Time is virtual:
nothing sleeps, durations add up on the call's ``Clock``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urljoin as _urljoin

from simulator.caller import (
    Caller,
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
)
from simulator.model import (
    CallParams,
    Clock,
    DialEvent,
    EndEvent,
    EnqueueEvent,
    ErrorEvent,
    Event,
    EventLog,
    GatherEvent,
    HangupEvent,
    InputEvent,
    PauseEvent,
    PlayEvent,
    RecordEvent,
    RedirectEvent,
    RejectEvent,
    RequestEvent,
    SayEvent,
    new_sid,
)
from simulator.pay import run_pay
from simulator.relay import RelayOptions, run_relay
from simulator.transport import Fetch, Session

__all__ = ["ERROR_NOTICE", "SIM_TIME_HEADER", "CallResult", "Engine", "parse_twiml"]

SIM_TIME_HEADER = "X-Ivrkit-Sim-Time"
ERROR_NOTICE = "We are sorry, an application error has occurred. Goodbye."
MAX_BODY = 64 * 1024
LOOP_CAP = 1000
SAY_LIMIT = 4096  # characters, basic voices (Polly 3000, Google 5000: not told apart)
MAX_WAIT_ROUNDS = 20
TWIML_TYPES = frozenset({"text/xml", "application/xml", "text/html"})
WORDS_PER_SECOND = 2.5
PLAY_SECONDS = 3.0  # media length is unknown without fetching it

_PROMPT_VERBS = frozenset({"Say", "Play", "Pause"})
_DIAL_NOUNS = frozenset(
    {"Number", "Client", "Sip", "Conference", "Queue", "Application", "WhatsApp", "Sim"}
)
_WAIT_VERBS = frozenset({"Play", "Say", "Pause", "Hangup", "Redirect", "Leave", "Gather"})
_SILENT_VERBS = frozenset({"Start", "Stop", "Refer", "Echo", "Sms"})
_NO_CHILDREN = frozenset(
    {"Say", "Play", "Pause", "Hangup", "Reject", "Redirect", "Leave", "Record", "Enqueue"}
)
# <Say> may hold SSML; <Enqueue> may hold <Task>; <Client> may hold <Identity>/<Parameter>.
_ALLOWED_CHILDREN: dict[str, frozenset[str]] = {
    "Gather": _PROMPT_VERBS,
    "Dial": _DIAL_NOUNS,
    "Enqueue": frozenset({"Task"}),
    "Pay": frozenset({"Prompt", "Parameter"}),
}
_PLAY_DIGITS = frozenset("0123456789ABCD#*wW")


class TwimlError(Exception):
    """A document Twilio would refuse: ``code`` is the Twilio error code."""

    def __init__(self, code: int | str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _End(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Next:
    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Document:
    root: ET.Element
    url: str


_parse_cache: dict[bytes, ET.Element] = {}


def parse_twiml(body: bytes) -> ET.Element:
    """Parse and validate a TwiML document; raises ``TwimlError`` (12100/12200).

    Parsed documents are cached by body: the engine never mutates them, and a menu answered
    thousands of times under load is parsed once.
    """
    cached = _parse_cache.get(body)
    if cached is not None:
        return cached
    start = body.find(b"<?xml")
    if start > 0:
        raise TwimlError(12100, "text before the <?xml ...?> declaration; it must come first")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise TwimlError(12100, f"document is not valid XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(12100, f"root element is <{root.tag}>; TwiML must start with <Response>")
    _check_nesting(root)
    if len(body) <= 16384:  # typical menus; big documents are rare and not worth the memory
        if len(_parse_cache) > 512:
            _parse_cache.clear()
        _parse_cache[body] = root
    return root


def _check_nesting(root: ET.Element) -> None:
    for verb in root:
        allowed = _ALLOWED_CHILDREN.get(verb.tag)
        for child in verb:
            if verb.tag == "Say":
                continue  # SSML
            if allowed is None and verb.tag in _NO_CHILDREN:
                raise TwimlError(12200, f"<{child.tag}> is not allowed inside <{verb.tag}>")
            if allowed is not None and child.tag not in allowed:
                raise TwimlError(
                    12200,
                    f"<{child.tag}> is not allowed inside <{verb.tag}>; "
                    f"it may hold only {', '.join(sorted(allowed))}",
                )
            if verb.tag == "Gather":
                if child.tag == "Play" and child.get("digits"):
                    raise TwimlError(12200, "<Play digits=...> is not allowed inside <Gather>")
                if len(child) and child.tag != "Say":
                    raise TwimlError(12200, f"<{child.tag}> inside <Gather> cannot hold elements")


@dataclass
class CallResult(EventLog):
    """Everything that happened on one call, in order; the last event is the ``EndEvent``."""

    events: list[Event]
    status: str
    duration: int
    reason: str
    call_sid: str






    @property
    def ok(self) -> bool:
        """True when the call ended without a Twilio-side error."""
        return not self.errors


def _int(
    value: str | None, default: int, *, low: int | None = None, high: int | None = None
) -> int:
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        number = default
    if low is not None:
        number = max(number, low)
    if high is not None:
        number = min(number, high)
    return number


_joined: dict[tuple[str, str], str] = {}


def urljoin(base: str, url: str) -> str:
    """``urllib.parse.urljoin``, remembered: a suite's calls resolve the same actions again
    and again, and joining costs more than the rest of a verb."""
    key = (base, url)
    joined = _joined.get(key)
    if joined is None:
        if len(_joined) >= 4096:
            _joined.clear()
        joined = _joined[key] = _urljoin(base, url)
    return joined


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


class Engine:
    """Runs one call. Create one per call; ``run()`` once."""

    def __init__(
        self,
        *,
        session: Session,
        caller: Caller,
        url: str,
        method: str = "POST",
        params: CallParams | None = None,
        fallback_url: str | None = None,
        fallback_method: str = "POST",
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: Iterable[str] = ("completed",),
        max_requests: int = 100,
        listeners: Iterable[Callable[[Event], Any]] = (),
        start_time: datetime | None = None,
        relay: RelayOptions | None = None,
        pay_connector_error: bool = False,
    ) -> None:
        self.session = session
        self.caller = caller
        self.url = session.transport.absolute(url)
        self.method = method.upper()
        self.params = params or CallParams()
        self.fallback_url = session.transport.absolute(fallback_url) if fallback_url else None
        self.fallback_method = fallback_method.upper()
        self.status_callback = (
            session.transport.absolute(status_callback) if status_callback else None
        )
        self.status_callback_method = status_callback_method.upper()
        self.status_callback_events = frozenset(status_callback_events)
        self.max_requests = max_requests
        self.listeners = list(listeners)
        self.clock = Clock()
        if start_time is not None and start_time.utcoffset() is None:
            raise ValueError(
                f"start_time {start_time.isoformat()} has no UTC offset; give one, e.g. "
                "2026-11-22T03:00:00-05:00, so the call happens at a definite moment"
            )
        self.start_time = start_time
        self.relay_options = relay or RelayOptions()
        self.events: list[Event] = []
        self.requests_made = 0
        self.verbs_run = 0
        self.call_status = "ringing"
        self._sequence = 0
        self._cuts_prompt = getattr(caller, "cuts_prompt", None)
        self.pay_connector_error = pay_connector_error

    # --- plumbing ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    def now(self) -> datetime:
        """The call's virtual time: its start time (or the wall clock) plus what has passed."""
        if self.start_time is None:
            return datetime.now(UTC)
        return self.start_time + timedelta(seconds=self.clock.now)

    def _time_header(self) -> dict[str, str] | None:
        """``X-Ivrkit-Sim-Time``, only for a call given a start time: an app that trusts it
        (a test or dev server) shows flows this time as ``call.now``."""
        if self.start_time is None:
            return None
        return {SIM_TIME_HEADER: self.now().isoformat()}

    def _answer(self) -> None:
        if self.clock.answered_at is None:
            self.clock.answer()
            if "answered" in self.status_callback_events:
                self._pending_answered = True

    async def _request(
        self, method: str, url: str, params: dict[str, str], *, status: str | None = None
    ) -> Fetch:
        if self.requests_made >= self.max_requests:
            self.emit(ErrorEvent(
                "request-limit",
                f"more than {self.max_requests} requests on one call: the app probably loops "
                "(a Redirect or Gather with no way out); raise the limit with "
                "--max-requests / max_requests= if the flow is really this long",
            ))
            raise _End("completed", "request-limit")
        self.requests_made += 1
        body = self.params.base(status or self.call_status)
        body.update(params)
        result = await self.session.fetch(method, url, body, headers=self._time_header())
        if status is None:
            self.call_status = "in-progress"
        for exchange in result.exchanges:
            self.emit(RequestEvent(
                exchange.method, exchange.url, exchange.params, exchange.status,
                exchange.elapsed_ms,
            ))
        return result

    def _document(self, result: Fetch) -> Document:
        if not result.ok:
            raise TwimlError(result.error_code or 11200, result.error_message)
        url = result.final_url or result.url
        if len(result.body) > MAX_BODY:
            raise TwimlError(11750, f"{url} answered {len(result.body)} bytes; TwiML is limited "
                             f"to {MAX_BODY} bytes")
        media_type = result.content_type.split(";")[0].strip().lower()
        if media_type in TWIML_TYPES:
            return Document(parse_twiml(result.body), url)
        if media_type == "text/plain":
            try:
                return Document(parse_twiml(result.body), url)
            except TwimlError:
                root = ET.Element("Response")
                ET.SubElement(root, "Say").text = result.body.decode("utf-8", "replace")
                return Document(root, url)
        if media_type.startswith("audio/"):
            root = ET.Element("Response")
            ET.SubElement(root, "Play").text = url
            return Document(root, url)
        shown = media_type or "no Content-Type"
        raise TwimlError(12300, f"{url} answered with {shown}; serve TwiML as text/xml")

    async def _load(self, method: str, url: str, params: dict[str, str]) -> Document:
        """Fetch a document for the call; on failure try the fallback URL, else end the call."""
        status = self.call_status
        result = await self._request(method, url, params)
        try:
            return self._document(result)
        except TwimlError as error:
            self.emit(ErrorEvent(error.code, str(error)))
            failed_code, failed_url = error.code, result.url
        if self.fallback_url:
            fallback_params = dict(params)
            fallback_params.update(ErrorCode=str(failed_code), ErrorUrl=failed_url)
            result = await self._request(
                self.fallback_method, self.fallback_url, fallback_params, status=status
            )
            try:
                return self._document(result)
            except TwimlError as error:
                self.emit(ErrorEvent(error.code, f"fallback URL: {error}"))
        self._answer()
        self.emit(SayEvent(ERROR_NOTICE))
        raise _End("completed", "error")

    async def _after_hangup(self, method: str, url: str, params: dict[str, str]) -> None:
        """Twilio still requests some actions after the caller hangs up; their TwiML is ignored."""
        self.call_status = "completed"
        await self._request(method, url, params, status="completed")

    # --- the call ----------------------------------------------------------------------------

    async def run(self) -> CallResult:
        self._pending_answered = False
        try:
            for event_name in ("initiated", "ringing"):
                if event_name in self.status_callback_events:
                    await self._status_callback(event_name, event_name)
            step: _Next | None = _Next(self.method, self.url)
            while step is not None:
                document = await self._load(step.method, step.url, step.params)
                step = await self._run_document(document)
            raise _End("completed", "end-of-document")
        except _End as end:
            status, reason = end.status, end.reason
        if self.call_status != "completed" or status != "completed":
            self.call_status = status
        await self._status_callback("completed", status)
        end_event = EndEvent(status, self.clock.duration, reason)
        self.emit(end_event)
        return CallResult(self.events, status, end_event.duration, reason, self.params.call_sid)

    async def _status_callback(self, event_name: str, status: str) -> None:
        if not self.status_callback or event_name not in self.status_callback_events:
            return
        params = self.params.base(status)
        params.update(
            Timestamp=format_datetime(self.now().astimezone(UTC), usegmt=True),
            SequenceNumber=str(self._sequence),
            CallbackSource="call-progress-events",
        )
        if event_name == "completed":
            params["CallDuration"] = str(self.clock.duration)
        self._sequence += 1
        result = await self.session.fetch(
            self.status_callback_method, self.status_callback, params,
            headers=self._time_header(),
        )
        for exchange in result.exchanges:
            self.emit(RequestEvent(
                exchange.method, exchange.url, exchange.params, exchange.status,
                exchange.elapsed_ms,
            ))
        if not result.ok:
            self.emit(ErrorEvent(15003, f"status callback failed: {result.error_message}"))

    async def _run_document(self, document: Document) -> _Next | None:
        for verb in document.root:
            handler = self._verbs.get(verb.tag)
            if handler is None:
                if verb.tag not in _SILENT_VERBS:
                    self.emit(ErrorEvent(12200, f"unknown verb <{verb.tag}> skipped; TwiML names "
                                         "are case-sensitive (e.g. <Say>, <Gather>)"))
                continue
            step: _Next | None = await handler(self, verb, document)
            self.verbs_run += 1
            if self._pending_answered:
                self._pending_answered = False
                await self._status_callback("answered", "in-progress")
            if step is not None:
                return step
        return None

    # --- verbs ---------------------------------------------------------------------------------

    def _loops(self, verb: ET.Element) -> int:
        loops = _int(verb.get("loop"), 1, low=0)
        return LOOP_CAP if loops == 0 else min(loops, LOOP_CAP)

    def _say(self, verb: ET.Element, *, loops: int | None = None) -> list[Event]:
        text = _text(verb)
        event = SayEvent(text, verb.get("voice"), verb.get("language"))
        count = self._loops(verb) if loops is None else loops
        self.clock.advance(count * max(1.0, len(text.split()) / WORDS_PER_SECOND))
        return [event] * count

    def _play(
        self, verb: ET.Element, document: Document, *, loops: int | None = None
    ) -> list[Event]:
        digits = verb.get("digits")
        if digits:
            if not set(digits) <= _PLAY_DIGITS:
                self.emit(ErrorEvent(12200, f"<Play digits={digits!r}>: only 0-9 A-D # * w W"))
            seconds = sum(1.0 if d == "W" else 0.5 for d in digits)
            self.clock.advance(seconds)
            return [PlayEvent(f"digits:{digits}")]
        url = urljoin(document.url, _text(verb))
        count = self._loops(verb) if loops is None else loops
        self.clock.advance(count * PLAY_SECONDS)
        return [PlayEvent(url)] * count

    def _pause(self, verb: ET.Element) -> list[Event]:
        length = _int(verb.get("length"), 1, low=1)
        self.clock.advance(length)
        return [PauseEvent(length)]

    async def _verb_say(self, verb: ET.Element, document: Document) -> None:
        self._answer()
        length = len(_text(verb))
        if length > SAY_LIMIT:
            self.emit(ErrorEvent(13521, f"<Say> of {length} characters skipped; Twilio accepts "
                                 f"at most {SAY_LIMIT} (split the text into several <Say>)"))
            return
        for event in self._say(verb):
            self.emit(event)

    async def _verb_play(self, verb: ET.Element, document: Document) -> None:
        self._answer()
        for event in self._play(verb, document):
            self.emit(event)

    async def _verb_pause(self, verb: ET.Element, document: Document) -> None:
        for event in self._pause(verb):
            self.emit(event)
        self._answer()  # a Pause first delays the answer, so it is not billed

    async def _verb_hangup(self, verb: ET.Element, document: Document) -> None:
        self._answer()
        self.emit(HangupEvent())
        raise _End("completed", "hangup")

    async def _verb_reject(self, verb: ET.Element, document: Document) -> None:
        if self.verbs_run or self.clock.answered_at is not None:
            self.emit(ErrorEvent(12200, "<Reject> skipped: it must be the first verb of the call"))
            return
        reason = verb.get("reason", "rejected")
        self.emit(RejectEvent(reason))
        raise _End("busy" if reason == "busy" else "no-answer", "rejected")

    async def _verb_redirect(self, verb: ET.Element, document: Document) -> _Next:
        target = _text(verb)
        if not target:
            self.emit(ErrorEvent(12200, "<Redirect> needs a URL as its text"))
            raise _End("completed", "error")
        url = urljoin(document.url, target)
        self.emit(RedirectEvent(url))
        return _Next(verb.get("method", "POST"), url)

    async def _verb_leave(self, verb: ET.Element, document: Document) -> None:
        return None  # outside a queue there is nothing to leave

    async def _verb_connect(self, verb: ET.Element, document: Document) -> _Next | None:
        # A ConversationRelay session runs (simulator.relay); Streams and rooms are not
        # simulated: the connection ends at once. Then Twilio requests the action if there is
        # one (with the session's outcome), else runs the next verb.
        self._answer()
        action = verb.get("action")
        method = verb.get("method", "POST")
        params: dict[str, str] = {}
        relay = verb.find("ConversationRelay")
        if relay is not None:
            outcome = await run_relay(self, relay, self.relay_options)
            params = outcome.params
            if outcome.caller_gone:
                if action:
                    await self._after_hangup(method, urljoin(document.url, action), params)
                raise _End("completed", "caller-hangup")
        if not action:
            return None
        return _Next(method, urljoin(document.url, action), params)

    async def _verb_gather(self, verb: ET.Element, document: Document) -> _Next | None:
        self._answer()
        attrs = dict(verb.attrib)
        action = urljoin(document.url, attrs["action"]) if attrs.get("action") else document.url
        method = attrs.get("method", "POST").upper()
        inputs = frozenset(attrs.get("input", "dtmf").split()) or frozenset({"dtmf"})
        finish_on_key = attrs.get("finishOnKey", "#")
        num_digits = _int(attrs.get("numDigits"), 0, low=0) or None
        timeout = _int(attrs.get("timeout"), 5, low=0)
        shown = {**attrs, "action": action, "method": method}
        self.emit(GatherEvent(shown))
        prompt = GatherPrompt(
            attributes=shown, input=inputs, num_digits=num_digits, finish_on_key=finish_on_key,
            timeout=timeout, url=document.url,
        )
        for index, child in enumerate(verb):
            if self._cuts_prompt is not None and self._cuts_prompt(prompt, index):
                break  # the caller's first key stops the prompt
            if child.tag == "Say":
                # loop="0" repeats until input: the caller answers during the first round
                heard = self._say(child, loops=1 if child.get("loop") == "0" else None)
            elif child.tag == "Play":
                heard = self._play(child, document, loops=1 if child.get("loop") == "0" else None)
            else:
                heard = self._pause(child)
            for event in heard:
                self.emit(event)
                prompt.prompts.append(event)
        answer = await self.caller.gather(prompt)
        params: dict[str, str] = {}
        if isinstance(answer, HangUp):
            raise _End("completed", "caller-hangup")
        if isinstance(answer, Press):
            self.emit(InputEvent(digits=answer.digits))
            if "dtmf" in inputs:
                digits, finished = self._collect(answer.digits, finish_on_key, num_digits)
                if digits:
                    params = {"Digits": digits, "FinishedOnKey": finished}
                if not finished and not (num_digits and len(digits) >= num_digits):
                    self.clock.advance(timeout)
                self.clock.advance(len(answer.digits) * 0.3)
        elif isinstance(answer, Speak):
            self.emit(InputEvent(speech=answer.text))
            if "speech" in inputs:
                params = {"SpeechResult": answer.text, "Confidence": f"{answer.confidence:.2f}"}
                self.clock.advance(1 + len(answer.text.split()) / WORDS_PER_SECOND)
        else:
            self.emit(InputEvent(timeout=True))
        if not params:
            if answer is not None and not isinstance(answer, Press | Speak):
                self.clock.advance(timeout)
            if attrs.get("actionOnEmptyResult", "false").lower() != "true":
                return None  # no input: no request, the next verb runs
        return _Next(method, action, params)

    @staticmethod
    def _collect(keys: str, finish_on_key: str, num_digits: int | None) -> tuple[str, str]:
        digits = ""
        for key in keys:
            if finish_on_key and key == finish_on_key[0]:
                return digits, key  # the finishing key is not part of Digits
            digits += key
            if num_digits and len(digits) >= num_digits:
                break
        return digits, ""

    async def _verb_dial(self, verb: ET.Element, document: Document) -> _Next | None:
        self._answer()
        attrs = dict(verb.attrib)
        targets: list[str] = []
        for noun in verb:
            value = _text(noun)
            if noun.tag == "Number" or noun.tag == "Sip":
                targets.append(value)
            else:
                targets.append(f"{noun.tag.lower()}:{value}")
        if not len(verb) and _text(verb):
            targets.append(_text(verb))
        conference = any(t.startswith("conference:") for t in targets)
        answer = await self.caller.dial(DialPrompt(targets, attrs))
        hung_up = isinstance(answer, HangUp)
        outcome = DialOutcome(status="canceled", duration=0) if hung_up else answer
        assert isinstance(outcome, DialOutcome)
        ring_timeout = _int(attrs.get("timeout"), 30, low=5, high=600)
        time_limit = _int(attrs.get("timeLimit"), 14400, low=1)
        bridged = outcome.status in ("completed", "answered")
        duration = min(outcome.duration, time_limit) if bridged else 0
        # hangupOnStar: * drops only the callee and the caller's call goes on; without it the
        # key is just a tone in the conversation (the bridge ends when the callee hangs up).
        star_drop = (bridged and outcome.presses_star and duration < time_limit
                     and attrs.get("hangupOnStar", "false").lower() == "true")
        if outcome.status == "no-answer":
            self.clock.advance(ring_timeout + 5)
        else:
            self.clock.advance(3 + duration)
        self.emit(DialEvent(targets, outcome.status, duration, hangup_on_star=star_drop))
        params = {"DialCallStatus": outcome.status, "DialBridged": "true" if bridged else "false"}
        if not conference:
            params["DialCallSid"] = new_sid("CA")
            if bridged:
                params["DialCallDuration"] = str(duration)
        record = attrs.get("record", "do-not-record")
        if bridged and record not in ("do-not-record", "false"):
            params["RecordingUrl"] = self._recording_url()
        action = attrs.get("action")
        if hung_up or outcome.caller_hangs_up:
            if action:
                await self._after_hangup(
                    attrs.get("method", "POST"), urljoin(document.url, action), params
                )
            raise _End("completed", "caller-hangup")
        if not action:
            return None
        return _Next(attrs.get("method", "POST"), urljoin(document.url, action), params)

    def _recording_url(self) -> str:
        return (f"https://api.twilio.com/2010-04-01/Accounts/{self.params.account_sid}"
                f"/Recordings/{new_sid('RE')}")

    async def _verb_record(self, verb: ET.Element, document: Document) -> _Next | None:
        self._answer()
        attrs = dict(verb.attrib)
        finish_on_key = attrs.get("finishOnKey", "1234567890*#")
        max_length = _int(attrs.get("maxLength"), 3600, low=1)
        silence = _int(attrs.get("timeout"), 5, low=0)
        answer = await self.caller.record(RecordPrompt(attrs, max_length, finish_on_key))
        outcome = RecordOutcome(seconds=0, hangup=True) if isinstance(answer, HangUp) else answer
        assert isinstance(outcome, RecordOutcome)
        seconds = max(0, min(outcome.seconds, max_length))
        key = outcome.key if outcome.key and outcome.key in finish_on_key else None
        self.clock.advance(seconds + (silence if key is None and not outcome.hangup else 0))
        self.emit(RecordEvent(seconds))
        if seconds == 0:
            # Empty recording: Twilio's <Record> docs say no action request, the next verb runs.
            if outcome.hangup:
                raise _End("completed", "caller-hangup")
            return None
        recording_sid = new_sid("RE")
        params = {
            "RecordingUrl": self._recording_url().rsplit("/", 1)[0] + "/" + recording_sid,
            "RecordingSid": recording_sid,
            "RecordingDuration": str(seconds),
        }
        if outcome.hangup:
            params["Digits"] = "hangup"
        elif key:
            params["Digits"] = key
        method = attrs.get("method", "POST")
        action = urljoin(document.url, attrs["action"]) if attrs.get("action") else document.url
        if outcome.hangup:
            await self._after_hangup(method, action, params)
            raise _End("completed", "caller-hangup")
        return _Next(method, action, params)

    async def _verb_enqueue(self, verb: ET.Element, document: Document) -> _Next | None:
        self._answer()
        attrs = dict(verb.attrib)
        queue = "".join(verb.itertext()).strip() if not len(verb) else (verb.text or "").strip()
        answer = await self.caller.enqueue(EnqueuePrompt(queue, attrs))
        outcome = QueueOutcome(result="hangup", wait_rounds=0) if isinstance(answer, HangUp) \
            else answer
        assert isinstance(outcome, QueueOutcome)
        result = outcome.result
        queue_sid = new_sid("QU")
        entered = self.clock.now
        wait_url = attrs.get("waitUrl")
        if wait_url:
            result = await self._wait_in_queue(
                urljoin(document.url, wait_url), attrs.get("waitUrlMethod", "POST"),
                queue_sid, entered, outcome, result,
            )
        queue_time = int(self.clock.now - entered)
        if result in ("bridged", "redirected-from-bridged"):
            self.clock.advance(outcome.duration)
        self.emit(EnqueueEvent(queue, result))
        params = {"QueueResult": result, "QueueSid": queue_sid, "QueueTime": str(queue_time)}
        action = attrs.get("action")
        method = attrs.get("method", "POST")
        if result == "hangup":
            if action:
                await self._after_hangup(method, urljoin(document.url, action), params)
            raise _End("completed", "caller-hangup")
        if not action:
            return None  # <Leave> (or a bridge ending) resumes after the <Enqueue>
        return _Next(method, urljoin(document.url, action), params)

    async def _wait_in_queue(
        self, url: str, method: str, queue_sid: str, entered: float,
        outcome: QueueOutcome, result: str,
    ) -> str:
        rounds = max(0, min(outcome.wait_rounds, MAX_WAIT_ROUNDS))
        step: _Next | None = _Next(method, url)
        played = 0
        while step is not None and played < rounds:
            params = {
                "QueuePosition": "1", "QueueSid": queue_sid,
                "QueueTime": str(int(self.clock.now - entered)), "AvgQueueTime": "0",
                "CurrentQueueSize": "1", "MaxQueueSize": "1000",
            }
            params.update(step.params)
            fetched = await self._request(step.method, step.url, params)
            try:
                document = self._document(fetched)
            except TwimlError as error:
                self.emit(ErrorEvent(error.code, f"waitUrl: {error}"))
                return "error"
            played += 1
            next_step: _Next | None = None
            for verb in document.root:
                if verb.tag not in _WAIT_VERBS:
                    self.emit(ErrorEvent(12200, f"<{verb.tag}> is not allowed in a waitUrl "
                                         f"document; use {', '.join(sorted(_WAIT_VERBS))}"))
                    continue
                if verb.tag == "Leave":
                    return "leave"
                if verb.tag == "Hangup":
                    self.emit(HangupEvent())
                    return "hangup"
                if verb.tag in ("Redirect", "Gather"):
                    handler = self._verbs[verb.tag]
                    next_step = await handler(self, verb, document)
                    if next_step is not None:
                        break
                    continue
                handler = self._verbs[verb.tag]
                await handler(self, verb, document)
            # The wait document ran out: Twilio fetches the waitUrl again.
            step = next_step or _Next(method, url)
        return result

    async def _verb_pay(self, verb: ET.Element, document: Document) -> _Next | None:
        """``<Pay>``: the session runs in :mod:`simulator.pay`; the action is requested here."""
        self._answer()
        run = await run_pay(self, verb, document.url)
        action = urljoin(document.url, verb.get("action", ""))  # none: the same document
        if run.hung_up:
            await self._after_hangup("POST", action, run.params)
            raise _End("completed", "caller-hangup")
        return _Next("POST", action, run.params)

    _verbs: dict[str, Callable[..., Any]] = {
        "Say": _verb_say,
        "Play": _verb_play,
        "Pause": _verb_pause,
        "Gather": _verb_gather,
        "Dial": _verb_dial,
        "Record": _verb_record,
        "Enqueue": _verb_enqueue,
        "Leave": _verb_leave,
        "Redirect": _verb_redirect,
        "Hangup": _verb_hangup,
        "Reject": _verb_reject,
        "Connect": _verb_connect,
        "Pay": _verb_pay,
    }
