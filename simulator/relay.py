"""``<Connect><ConversationRelay>``: Twilio's side of an agent session (reference sect. 10).

The engine hands a ``<Connect>`` holding a ``<ConversationRelay>`` to ``run_relay``. It checks the
attributes as Twilio would, opens the WebSocket to ``url`` (signed: Base64(HMAC-SHA1(token, url)),
no params; ``ws://`` accepted for local apps; in-process for an ASGI app), sends ``setup``, plays
the welcome greeting, then takes turns: the agent's ``text`` tokens are heard (one ``AgentEvent``
per utterance, tokens joined until ``last``), ``play``/``sendDigits``/``language`` are followed,
and at the caller's turn the caller is asked through ``Caller.gather`` with an ``AgentPrompt``
(``Speak`` -> ``prompt``, ``Press`` -> ``dtmf`` when ``dtmfDetection`` is on, ``Interrupt`` ->
``interrupt``, ``Timeout`` -> silence, ``HangUp`` -> the caller hangs up).

The session ends with the app's ``end`` (SessionStatus ``ended``, ``HandoffData`` verbatim), the
caller hanging up (``completed``) or a failure (``failed`` with ``ErrorCode``): the upgrade refused
or unanswered (64102), the socket closed without ``end`` or after 10 unknown messages in a row
(64105), attributes Twilio refuses (64106). A bad message gets 64107 and is dropped. An agent
silent for longer than ``RelayOptions.agent_silence`` after the caller spoke is reported and the
caller hangs up. Whatever the end, the socket is closed before the engine goes on.

Turn-taking over a real socket needs a rule for "the agent has finished": an utterance ends at
``last: true`` and the agent's turn ends when nothing more arrives within ``RelayOptions.settle``
seconds (real time; the call's clock stays virtual and adds up speech lengths).
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from simulator.caller import AgentPrompt, HangUp, Interrupt, Press, Speak, Timeout
from simulator.model import (
    AgentEvent,
    ErrorEvent,
    InputEvent,
    InterruptEvent,
    LanguageEvent,
    PlayEvent,
    RelayEndEvent,
    RelayEvent,
    new_sid,
)
from simulator.relay_socket import AsgiLink, Closed, Link, NetworkLink, Refused

if TYPE_CHECKING:
    from simulator.engine import Engine

__all__ = ["RelayOptions", "RelayOutcome", "RelaySettings", "parse_relay", "run_relay"]

WORDS_PER_SECOND = 2.5
PLAY_SECONDS = 3.0
UNKNOWN_LIMIT = 10  # unknown messages in a row before Twilio closes the socket (1007, 64105)
MAX_MESSAGES = 10_000  # per session: an agent streaming without end cannot run a call away
USER_AGENT = "TwilioProxy/1.1"

ERR_CONNECT = 64102  # ConversationRelay: Unable to Connect to Websocket URL
ERR_CLOSED = 64105  # the socket closed without an end (unverified: Twilio's code for a drop)
ERR_ARGUMENT = 64106  # ConversationRelay: Invalid argument
ERR_MESSAGE = 64107  # ConversationRelay: Invalid Message Received

_MODES = frozenset({"none", "dtmf", "speech", "any"})
_BOOLS = frozenset({"true", "false"})
_CHOICES: dict[str, frozenset[str]] = {
    "interruptible": _MODES | _BOOLS,
    "welcomeGreetingInterruptible": _MODES | _BOOLS,
    "reportInputDuringAgentSpeech": _MODES,
    "interruptSensitivity": frozenset({"low", "medium", "high"}),
    "ttsProvider": frozenset({"google", "amazon", "elevenlabs"}),
    "transcriptionProvider": frozenset({"google", "deepgram"}),
    "elevenlabsTextNormalization": frozenset({"on", "auto", "off"}),
    "dtmfDetection": _BOOLS,
    "preemptible": _BOOLS,
    "deepgramSmartFormat": _BOOLS,
    "partialPrompts": _BOOLS,
    "profanityFilter": _BOOLS,
    "ignoreBackchannel": _BOOLS,
}
_FREE = frozenset({
    "url", "welcomeGreeting", "language", "ttsLanguage", "transcriptionLanguage", "voice",
    "speechModel", "hints", "debug", "intelligenceService", "speechTimeout",
    "backgroundNoiseReduction", "events",
})
_DEBUG = frozenset({"debugging", "speaker-events", "tokens-played"})
_DIGITS = frozenset("0123456789w#*")
_TEXT_FIELDS = {"token", "last", "lang", "interruptible", "preemptible"}


@dataclass(frozen=True)
class RelayOptions:
    """How long the simulated caller waits, in real seconds.

    ``agent_silence``: after the caller spoke, how long the agent may stay silent before the
    caller gives up and hangs up (reported as an error); ``settle``: after an utterance ends,
    how long more may come before it is the caller's turn; ``connect_timeout``: the upgrade.
    """

    agent_silence: float = 5.0
    settle: float = 0.15
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.agent_silence <= 0 or self.connect_timeout <= 0 or self.settle < 0:
            raise ValueError(
                f"RelayOptions({self.agent_silence}, {self.settle}, {self.connect_timeout}): "
                "agent_silence and connect_timeout must be more than 0 s, settle 0 s or more"
            )


@dataclass
class RelaySettings:
    """A ``<ConversationRelay>`` as Twilio reads it."""

    url: str
    attributes: dict[str, str]
    parameters: dict[str, str] = field(default_factory=dict)
    languages: list[dict[str, str]] = field(default_factory=list)

    @property
    def dtmf(self) -> bool:
        return self.attributes.get("dtmfDetection", "false").lower() == "true"

    def interruptible_by(self, attribute: str, how: str) -> bool:
        value = self.attributes.get(attribute, "any").lower()
        value = {"true": "any", "false": "none"}.get(value, value)
        return value == "any" or value == how


@dataclass
class RelayOutcome:
    """How the session ended: the ``<Connect action>`` params, and whether the caller is gone."""

    params: dict[str, str]
    caller_gone: bool


def parse_relay(element: ET.Element) -> tuple[RelaySettings | None, list[str]]:
    """The settings and the problems Twilio would refuse them for (empty when valid)."""
    attrs = dict(element.attrib)
    problems: list[str] = []
    url = attrs.get("url", "").strip()
    if not url:
        problems.append("<ConversationRelay> needs url=\"wss://...\" (the agent's WebSocket)")
    elif not url.lower().startswith(("wss://", "ws://")):
        problems.append(f"<ConversationRelay url={url!r}>: the url must start with wss:// "
                        "(ws:// is accepted for local apps)")
    elif not _host(url):
        problems.append(f"<ConversationRelay url={url!r}>: the url names no host")
    for name, value in attrs.items():
        if name in _CHOICES:
            if value.lower() not in _CHOICES[name]:
                shown = ", ".join(sorted(_CHOICES[name]))
                problems.append(f"<ConversationRelay {name}={value!r}>: use one of {shown}")
        elif name == "debug":
            unknown = set(value.split()) - _DEBUG
            if unknown:
                problems.append(f"<ConversationRelay debug={value!r}>: unknown "
                                f"{', '.join(sorted(unknown))}; use {', '.join(sorted(_DEBUG))}")
        elif name not in _FREE:
            problems.append(f"<ConversationRelay {name}=...> is not an attribute Twilio knows")
    settings = RelaySettings(url, attrs)
    for child in element:
        if child.tag == "Parameter":
            key = child.get("name")
            if not key:
                problems.append("<Parameter> inside <ConversationRelay> needs a name")
                continue
            settings.parameters[key] = child.get("value", "")
        elif child.tag == "Language":
            if not child.get("code"):
                problems.append("<Language> inside <ConversationRelay> needs a code "
                                "(e.g. code=\"sv-SE\" or \"multi\")")
            settings.languages.append(dict(child.attrib))
        else:
            problems.append(f"<{child.tag}> is not allowed inside <ConversationRelay>; it may "
                            "hold only <Language> and <Parameter>")
    return (None if problems else settings), problems


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. a malformed IPv6 literal
        return None


def _link(engine: Engine, url: str) -> Link:
    transport = engine.session.transport
    headers: dict[str, str] = {}
    if transport.signer is not None:
        # Over the URL as written in the TwiML, no params (reference sect. 10, conservative).
        headers["X-Twilio-Signature"] = transport.signer.sign(url)
    if transport.host is not None:
        headers["User-Agent"] = USER_AGENT
        return AsgiLink(transport.host.app, url, headers, transport.host.state)
    in_process = _asgi_app_of(transport.client)
    if in_process is not None:
        headers["User-Agent"] = USER_AGENT
        return AsgiLink(in_process, url, headers, {})
    return NetworkLink(url, headers, user_agent=USER_AGENT)


def _asgi_app_of(client: Any) -> Any:
    """The app behind an ``httpx.AsyncClient(transport=httpx.ASGITransport(app))`` a test
    passed in (``phone.call(client=...)``): its WebSocket lives in the same process, where
    httpx cannot reach it. httpx keeps the transport private, hence the careful look-up."""
    import httpx

    mounted = getattr(client, "_transport", None)
    return mounted.app if isinstance(mounted, httpx.ASGITransport) else None


class _Invalid(Exception):
    """A message of a known type with fields Twilio refuses (64107)."""


class _Session:
    """One session's turn-taking; ``run()`` returns the action params."""

    def __init__(self, engine: Engine, settings: RelaySettings, options: RelayOptions) -> None:
        self.engine = engine
        self.settings = settings
        self.options = options
        self.session_id = new_sid("VX")
        self.started = engine.clock.now
        self.link: Link | None = None
        self.pending: list[str] = []  # tokens of the utterance being streamed
        self.said: list[str] = []  # utterances since the caller's last turn
        self.last_heard = ""  # the latest utterance, what an interrupt cuts into
        self.last_interruptible = True
        self.unknown_in_row = 0
        self.messages = 0
        self.handoff: str | None = None
        self.status = "completed"
        self.error: tuple[int, str] | None = None
        self.lang = settings.attributes.get("language", "en-US")
        self.turn_started = time.perf_counter()  # when the agent's current turn began

    # --- plumbing ---------------------------------------------------------------------------

    def emit(self, event: Any) -> None:
        self.engine.emit(event)

    def fail(self, code: int, message: str) -> None:
        self.status = "failed"
        self.error = (code, message)
        self.emit(ErrorEvent(code, message))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.link is not None
        await self.link.send(json.dumps(message, separators=(",", ":")))

    def hear(self, text: str, interruptible: bool = True, *, timed: bool = True) -> None:
        text = " ".join(text.split())
        if not text:
            return
        elapsed = round((time.perf_counter() - self.turn_started) * 1000, 3) if timed else None
        self.emit(AgentEvent(text, elapsed))
        self.said.append(text)
        self.last_heard = text
        self.last_interruptible = interruptible
        self.engine.clock.advance(max(1.0, len(text.split()) / WORDS_PER_SECOND))

    def flush(self) -> None:
        """The tokens streamed so far make one utterance (the agent ended or went quiet)."""
        if self.pending:
            text, self.pending = "".join(self.pending), []
            self.hear(text)

    # --- the session ------------------------------------------------------------------------

    async def run(self) -> RelayOutcome:
        caller_gone = False
        self.emit(RelayEvent(self.settings.url, self.session_id))
        self.link = _link(self.engine, self.settings.url)
        try:
            try:
                await self.link.open(self.options.connect_timeout)
            except Refused as refused:
                self.link = None
                self.fail(ERR_CONNECT, f"ConversationRelay could not connect to "
                                       f"{self.settings.url}: {refused}")
            else:
                caller_gone = await self._converse()
        finally:
            if self.link is not None:
                # Twilio closes the socket when the session ends, whoever ended it.
                await self.link.close(1000)
        return RelayOutcome(self._finish(), caller_gone)

    def _finish(self) -> dict[str, str]:
        """Report the session's end; the ``<Connect action>`` params that tell it."""
        duration = self.engine.clock.now - self.started
        seconds = int(duration) + (1 if duration % 1 else 0)
        params = {
            "SessionId": self.session_id,
            "SessionStatus": self.status,
            "SessionDuration": str(seconds),
        }
        if self.handoff is not None:
            params["HandoffData"] = self.handoff
        if self.error is not None:
            params["ErrorCode"] = str(self.error[0])
            params["ErrorMessage"] = self.error[1]
        self.emit(RelayEndEvent(self.status, seconds, self.handoff,
                                self.error[0] if self.error else None))
        return params

    def _setup(self) -> dict[str, Any]:
        params = self.engine.params
        return {
            "type": "setup",
            "sessionId": self.session_id,
            "accountSid": params.account_sid,
            "parentCallSid": "",
            "callSid": params.call_sid,
            "from": params.from_,
            "to": params.to,
            "forwardedFrom": params.extra.get("ForwardedFrom", ""),
            "callType": "PSTN",
            "callerName": params.extra.get("CallerName", ""),
            "direction": params.direction,
            "callStatus": "IN-PROGRESS",
            "customParameters": dict(self.settings.parameters),
        }

    async def _converse(self) -> bool:
        """Setup, greeting, then turns until the session ends; True when the caller hung up."""
        self.turn_started = time.perf_counter()
        await self.send(self._setup())
        greeting = self.settings.attributes.get("welcomeGreeting", "").strip()
        if greeting:
            # Twilio speaks it itself: no agent message, no latency to measure.
            self.hear(greeting, self.settings.interruptible_by(
                "welcomeGreetingInterruptible", "speech"), timed=False)
        ended = await self._agent_turn(self.options.settle, expects_reply=False)
        while not ended:
            answer = await self.engine.caller.gather(self._prompt())
            self.said = []
            if isinstance(answer, HangUp):
                self.status = "completed"
                return True
            wait = await self._caller_turn(answer)
            if wait is None:
                continue  # nothing reached the agent (keys without dtmfDetection)
            # The agent owes an answer to what reached it, not to the caller's silence.
            silent = isinstance(answer, Timeout) or (isinstance(answer, Interrupt)
                                                     and not answer.text)
            ended = await self._agent_turn(wait, expects_reply=not silent)
        return self.status == "completed"

    def _prompt(self) -> AgentPrompt:
        return AgentPrompt(
            attributes={"url": self.settings.url, "sessionId": self.session_id},
            input=frozenset({"speech", "dtmf"} if self.settings.dtmf else {"speech"}),
            num_digits=None, finish_on_key="", timeout=0, url=self.settings.url,
            said=list(self.said), dtmf=self.settings.dtmf,
        )

    async def _caller_turn(self, answer: Any) -> float | None:
        """Send what the caller did; how long to wait for the agent (None: no wait)."""
        clock = self.engine.clock
        self.turn_started = time.perf_counter()
        if isinstance(answer, Interrupt):
            if self.last_heard and self.last_interruptible:
                words = self.last_heard.split()[: max(0, answer.after_words)]
                heard = " ".join(words)
                ms = int(len(words) / WORDS_PER_SECOND * 1000)
                self.emit(InterruptEvent(heard, ms))
                await self.send({"type": "interrupt", "utteranceUntilInterrupt": heard,
                                 "durationUntilInterruptMs": ms})
            if not answer.text:
                return self.options.agent_silence
        if isinstance(answer, Speak):
            text = answer.text
            self.emit(InputEvent(speech=text))
            clock.advance(1 + len(text.split()) / WORDS_PER_SECOND)
            await self.send({"type": "prompt", "voicePrompt": text, "lang": self.lang,
                             "last": True})
            return self.options.agent_silence
        if isinstance(answer, Press):
            self.emit(InputEvent(digits=answer.digits))
            clock.advance(len(answer.digits) * 0.3)
            if not self.settings.dtmf:
                return None  # without dtmfDetection Twilio does not pass keys on
            for digit in answer.digits:
                await self.send({"type": "dtmf", "digit": digit})
            return self.options.agent_silence
        # Timeout: the caller stays silent; the agent may speak up.
        self.emit(InputEvent(timeout=True))
        clock.advance(5)
        return self.options.agent_silence

    async def _agent_turn(self, first_wait: float, *, expects_reply: bool) -> bool:
        """Read the agent until its turn is over; True when the session is over."""
        assert self.link is not None
        wait = first_wait
        heard_any = False
        while True:
            if self.messages >= MAX_MESSAGES:
                self.flush()
                self.fail(ERR_CLOSED, f"more than {MAX_MESSAGES} messages in one session "
                          "without an end: the agent probably loops")
                return True
            message = await self.link.receive(wait)
            if message is None:
                if self.pending:
                    # Mid-utterance and silent past the limit: what came was heard.
                    self.flush()
                    heard_any = True
                if heard_any or not expects_reply:
                    return False
                self.emit(ErrorEvent(
                    "agent-silence",
                    f"the agent said nothing for {self.options.agent_silence:g} s after the "
                    "caller spoke; the caller hangs up (raise --agent-silence if it is slow)",
                ))
                self.status = "completed"
                return True
            if isinstance(message, Closed):
                self.flush()
                if self.status != "failed":
                    self.fail(ERR_CLOSED, f"the app closed the WebSocket (code {message.code}"
                              f"{': ' + message.reason if message.reason else ''}) without "
                              "sending end")
                return True
            self.messages += 1
            outcome = await self._handle(message)
            if outcome == "end":
                return True
            if outcome == "closed":
                return True
            if outcome == "streaming":
                wait = max(self.options.agent_silence, self.options.settle)
            elif outcome == "heard":
                heard_any = True
                wait = self.options.settle
            # "dropped" or "other": keep the same wait

    async def _bad(self, raw: str, why: str, *, unknown: bool) -> str:
        """64107: report, tell the app, drop; 10 unknown messages in a row close the socket."""
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        self.emit(ErrorEvent(ERR_MESSAGE, f"ConversationRelay: invalid message ({why}): {shown}"))
        await self.send({"type": "error", "description": f"Invalid message received: {shown}"})
        if not unknown:
            return "dropped"
        self.unknown_in_row += 1
        if self.unknown_in_row < UNKNOWN_LIMIT:
            return "dropped"
        self.flush()
        assert self.link is not None
        await self.link.close(1007, "too many invalid messages")
        self.fail(ERR_CLOSED, f"{UNKNOWN_LIMIT} unknown messages in a row: Twilio closed the "
                  "WebSocket (1007)")
        return "closed"

    async def _handle(self, message: str | bytes) -> str:
        if isinstance(message, bytes):
            return await self._bad(repr(message[:50]), "binary frame; send JSON text",
                                   unknown=True)
        try:
            data = json.loads(message)
        except ValueError:
            return await self._bad(message, "not JSON", unknown=True)
        kind = data.get("type") if isinstance(data, dict) else None
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return await self._bad(message, f"unknown type {kind!r}; use text, play, "
                                   "sendDigits, language or end", unknown=True)
        try:
            outcome = handler(self, data)
        except _Invalid as invalid:
            return await self._bad(message, str(invalid), unknown=False)
        self.unknown_in_row = 0
        return outcome

    def _text(self, data: dict[str, Any]) -> str:
        token = data.get("token")
        if not isinstance(token, str):
            raise _Invalid("text needs a string token")
        last = data.get("last", False)
        if not isinstance(last, bool):
            raise _Invalid("text.last must be true or false")
        for name in ("interruptible", "preemptible"):
            if name in data and not isinstance(data[name], bool | str):
                raise _Invalid(f"text.{name} must be a boolean")
        self.pending.append(token)
        if last:
            text, self.pending = "".join(self.pending), []
            flag = data.get("interruptible")
            if flag is None:
                interruptible = self.settings.interruptible_by("interruptible", "speech")
            else:
                interruptible = flag in (True, "true", "any", "speech")
            self.hear(text, interruptible)
            return "heard"
        return "streaming"

    def _play(self, data: dict[str, Any]) -> str:
        source = data.get("source")
        if not isinstance(source, str) or not source.startswith(("http://", "https://")):
            raise _Invalid("play needs a source URL (https://...)")
        loop = data.get("loop", 1)
        if not isinstance(loop, int) or isinstance(loop, bool) or loop < 0:
            raise _Invalid("play.loop must be a whole number (0 = 1000 times)")
        self.flush()
        count = 1000 if loop == 0 else loop
        self.emit(PlayEvent(source))
        self.engine.clock.advance(count * PLAY_SECONDS)
        return "heard"

    def _digits(self, data: dict[str, Any]) -> str:
        digits = data.get("digits")
        if not isinstance(digits, str) or not digits or not set(digits) <= _DIGITS:
            raise _Invalid("sendDigits.digits may hold only 0-9, w, # and *")
        self.flush()
        self.emit(PlayEvent(f"digits:{digits}"))
        self.engine.clock.advance(sum(0.5 for _ in digits))
        return "heard"

    def _language(self, data: dict[str, Any]) -> str:
        tts, stt = data.get("ttsLanguage"), data.get("transcriptionLanguage")
        if not tts and not stt:
            raise _Invalid("language needs ttsLanguage and/or transcriptionLanguage")
        if any(v is not None and not isinstance(v, str) for v in (tts, stt)):
            raise _Invalid("language codes must be strings")
        self.emit(LanguageEvent(tts, stt))
        if stt:
            self.lang = stt
        return "other"

    def _end(self, data: dict[str, Any]) -> str:
        handoff = data.get("handoffData")
        if handoff is not None and not isinstance(handoff, str):
            raise _Invalid("end.handoffData must be a string (JSON-encode an object yourself)")
        self.flush()
        self.handoff = handoff
        self.status = "ended"
        return "end"


_HANDLERS: dict[str, Callable[[_Session, dict[str, Any]], str]] = {
    "text": _Session._text,
    "play": _Session._play,
    "sendDigits": _Session._digits,
    "language": _Session._language,
    "end": _Session._end,
}


async def run_relay(
    engine: Engine, element: ET.Element, options: RelayOptions | None = None
) -> RelayOutcome:
    """Run one session for ``element`` (a ``<ConversationRelay>``) on the engine's call."""
    settings, problems = parse_relay(element)
    if settings is None:
        message = "; ".join(problems)
        engine.emit(ErrorEvent(ERR_ARGUMENT, message))
        session_id = new_sid("VX")
        engine.emit(RelayEndEvent("failed", 0, None, ERR_ARGUMENT))
        return RelayOutcome({
            "SessionId": session_id, "SessionStatus": "failed", "SessionDuration": "0",
            "ErrorCode": str(ERR_ARGUMENT), "ErrorMessage": message,
        }, caller_gone=False)
    return await _Session(engine, settings, options or RelayOptions()).run()
