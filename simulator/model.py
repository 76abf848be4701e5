"""The call model: parameters of the simulated call, its virtual clock and the events it emits.

Events are small dataclasses; ``to_json()`` gives the exact line the CLI prints with ``--json``
and that ``replay`` reads back, so keep the shapes stable.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "AgentEvent",
    "CallParams",
    "Clock",
    "DialEvent",
    "EndEvent",
    "EnqueueEvent",
    "ErrorEvent",
    "Event",
    "GatherEvent",
    "HangupEvent",
    "InputEvent",
    "InterruptEvent",
    "LanguageEvent",
    "PauseEvent",
    "PlayEvent",
    "RecordEvent",
    "RedirectEvent",
    "RejectEvent",
    "RelayEndEvent",
    "RelayEvent",
    "RequestEvent",
    "SayEvent",
    "describe",
    "event_from_json",
    "new_sid",
]


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two-letter prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass
class CallParams:
    """What Twilio knows about the call; sent with every webhook (reference sect. 1)."""

    from_: str = "+15005550006"
    to: str = "+15005550001"
    call_sid: str = field(default_factory=lambda: new_sid("CA"))
    account_sid: str = "AC" + "0" * 32
    direction: str = "inbound"
    api_version: str = "2010-04-01"
    extra: dict[str, str] = field(default_factory=dict)

    def base(self, status: str) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": self.api_version,
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": self.to,
            "Caller": self.from_,
            "Direction": self.direction,
            "From": self.from_,
            "To": self.to,
        }
        params.update(self.extra)
        return params


class Clock:
    """Virtual time in seconds: pauses, timeouts and prompts pass instantly but add up."""

    __slots__ = ("now", "answered_at")

    def __init__(self) -> None:
        self.now = 0.0
        self.answered_at: float | None = None

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds

    def answer(self) -> None:
        if self.answered_at is None:
            self.answered_at = self.now

    @property
    def duration(self) -> int:
        """Billed seconds since answer, rounded up like Twilio's CallDuration."""
        if self.answered_at is None:
            return 0
        elapsed = self.now - self.answered_at
        return int(elapsed) + (1 if elapsed % 1 else 0)


@dataclass
class Event:
    """Base class; subclasses set ``type`` and list their JSON fields in order."""

    type: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type}
        data.update(self.__dict__)
        return data


@dataclass
class RequestEvent(Event):
    type: ClassVar[str] = "request"
    method: str
    url: str
    params: dict[str, str]
    status: int | None
    elapsed_ms: float


@dataclass
class SayEvent(Event):
    type: ClassVar[str] = "say"
    text: str
    voice: str | None = None
    language: str | None = None


@dataclass
class PlayEvent(Event):
    type: ClassVar[str] = "play"
    url: str


@dataclass
class PauseEvent(Event):
    type: ClassVar[str] = "pause"
    length: int


@dataclass
class GatherEvent(Event):
    """Attributes as written in the TwiML plus the resolved action URL and method."""

    type: ClassVar[str] = "gather"
    attributes: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **self.attributes}


@dataclass
class InputEvent(Event):
    """What the caller did at a Gather: exactly one of digits, speech or timeout."""

    type: ClassVar[str] = "input"
    digits: str | None = None
    speech: str | None = None
    timeout: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.digits is not None:
            return {"type": self.type, "digits": self.digits}
        if self.speech is not None:
            return {"type": self.type, "speech": self.speech}
        return {"type": self.type, "timeout": True}


@dataclass
class DialEvent(Event):
    type: ClassVar[str] = "dial"
    targets: list[str]
    status: str
    duration: int
    hangup_on_star: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "targets": self.targets,
                                "status": self.status, "duration": self.duration}
        if self.hangup_on_star:
            data["ended_by"] = "star"  # the caller pressed * and dropped the callee
        return data


@dataclass
class RecordEvent(Event):
    type: ClassVar[str] = "record"
    duration: int


@dataclass
class EnqueueEvent(Event):
    type: ClassVar[str] = "enqueue"
    queue: str
    result: str


@dataclass
class RedirectEvent(Event):
    type: ClassVar[str] = "redirect"
    url: str


@dataclass
class HangupEvent(Event):
    type: ClassVar[str] = "hangup"


@dataclass
class RejectEvent(Event):
    type: ClassVar[str] = "reject"
    reason: str


@dataclass
class ErrorEvent(Event):
    """A Twilio error code (int) or a simulator-side limit (str, e.g. ``"request-limit"``)."""

    type: ClassVar[str] = "error"
    code: int | str
    message: str


@dataclass
class EndEvent(Event):
    """Always the last event. ``reason``: hangup, end-of-document, caller-hangup, rejected, error,
    request-limit."""

    type: ClassVar[str] = "end"
    status: str
    duration: int
    reason: str


# --- ConversationRelay sessions (simulator.relay) ---------------------------------------------


@dataclass
class RelayEvent(Event):
    """A ConversationRelay session starts: the WebSocket ``url`` and Twilio's ``session_id``."""

    type: ClassVar[str] = "relay"
    url: str
    session_id: str


@dataclass
class AgentEvent(Event):
    """One finished utterance of the agent: its ``text`` tokens joined until ``last=true``;
    ``elapsed_ms``: real time from the caller's turn (or the session's start) to its end."""

    type: ClassVar[str] = "agent"
    text: str
    elapsed_ms: float | None = None


@dataclass
class InterruptEvent(Event):
    """The caller cut the agent off after hearing ``heard`` (``ms`` of it)."""

    type: ClassVar[str] = "interrupt"
    heard: str
    ms: int


@dataclass
class LanguageEvent(Event):
    """The agent switched the session's text-to-speech and/or transcription language."""

    type: ClassVar[str] = "language"
    tts: str | None = None
    transcription: str | None = None


@dataclass
class RelayEndEvent(Event):
    """The session ended: ``status`` is its SessionStatus (ended, completed, failed)."""

    type: ClassVar[str] = "relay-end"
    status: str
    duration: int
    handoff: str | None = None
    error_code: int | None = None


_EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RequestEvent, SayEvent, PlayEvent, PauseEvent, GatherEvent, InputEvent, DialEvent,
        RecordEvent, EnqueueEvent, RedirectEvent, HangupEvent, RejectEvent, ErrorEvent, EndEvent,
    )
}
_EVENT_TYPES.update(
    (cls.type, cls)
    for cls in (RelayEvent, AgentEvent, InterruptEvent, LanguageEvent, RelayEndEvent)
)


def event_from_json(data: dict[str, Any]) -> Event:
    """The inverse of ``Event.to_json()``; used by replay."""
    kind = data.get("type")
    cls = _EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}; expected one of {sorted(_EVENT_TYPES)}")
    fields = {k: v for k, v in data.items() if k != "type"}
    if cls is GatherEvent:
        return GatherEvent(attributes={k: str(v) for k, v in fields.items()})
    if cls is InputEvent:
        return InputEvent(
            digits=fields.get("digits"), speech=fields.get("speech"),
            timeout=bool(fields.get("timeout", False)),
        )
    if cls is DialEvent:
        return DialEvent(fields["targets"], fields["status"], int(fields["duration"]),
                         hangup_on_star=fields.get("ended_by") == "star")
    return cls(**fields)


def describe(event: Event) -> str:
    """One human line per event: the CLI's text output and assertion messages."""
    if isinstance(event, RequestEvent):
        status = event.status if event.status is not None else "no answer"
        return f"-> {event.method} {event.url} [{status}, {event.elapsed_ms:.0f} ms]"
    if isinstance(event, SayEvent):
        return f'   Say: "{event.text}"'
    if isinstance(event, PlayEvent):
        return f"   Play: {event.url}"
    if isinstance(event, PauseEvent):
        return f"   Pause {event.length} s"
    if isinstance(event, GatherEvent):
        shown = " ".join(f"{k}={v}" for k, v in event.attributes.items() if k != "action")
        return f"   Gather ({shown})"
    if isinstance(event, InputEvent):
        if event.digits is not None:
            return f"<- caller presses {event.digits}"
        if event.speech is not None:
            return f'<- caller says "{event.speech}"'
        return "<- caller stays silent (timeout)"
    if isinstance(event, DialEvent):
        return f"   Dial {', '.join(event.targets)}: {event.status} ({event.duration} s)"
    if isinstance(event, RecordEvent):
        return f"   Record: {event.duration} s"
    if isinstance(event, EnqueueEvent):
        return f"   Enqueue {event.queue!r}: {event.result}"
    if isinstance(event, RedirectEvent):
        return f"   Redirect -> {event.url}"
    if isinstance(event, HangupEvent):
        return "   Hangup"
    if isinstance(event, RejectEvent):
        return f"   Reject ({event.reason})"
    if isinstance(event, ErrorEvent):
        return f"!! error {event.code}: {event.message}"
    if isinstance(event, RelayEvent | AgentEvent | InterruptEvent | LanguageEvent | RelayEndEvent):
        return _describe_relay(event)
    if isinstance(event, EndEvent):
        return f"== call ended: {event.status} after {event.duration} s ({event.reason})"
    return repr(event)  # pragma: no cover


def _describe_relay(event: Event) -> str:
    if isinstance(event, RelayEvent):
        return f"   ConversationRelay {event.url} ({event.session_id})"
    if isinstance(event, AgentEvent):
        return f'   Agent: "{event.text}"'
    if isinstance(event, InterruptEvent):
        return f'<- caller interrupts after "{event.heard}" ({event.ms} ms)'
    if isinstance(event, LanguageEvent):
        return f"   Language: tts={event.tts or '-'} transcription={event.transcription or '-'}"
    assert isinstance(event, RelayEndEvent)
    shown = f"   ConversationRelay ended: {event.status} after {event.duration} s"
    if event.handoff is not None:
        shown += f", handoff {event.handoff}"
    if event.error_code is not None:
        shown += f", error {event.error_code}"
    return shown


class EventLog:
    """What a call's events say, for any object with an ``events`` list (a finished
    CallResult or a LiveCall still in progress)."""

    events: list[Event]

    @property
    def requests(self) -> list[RequestEvent]:
        return [e for e in self.events if isinstance(e, RequestEvent)]

    @property
    def errors(self) -> list[ErrorEvent]:
        return [e for e in self.events if isinstance(e, ErrorEvent)]

    @property
    def said(self) -> list[str]:
        """Each Say's text, in order."""
        return [e.text for e in self.events if isinstance(e, SayEvent)]

    @property
    def heard(self) -> str:
        """All spoken text, one Say (or ConversationRelay agent utterance) per line, in order
        (substring checks: ``"Goodbye" in call.heard``)."""
        return "\n".join(
            e.text for e in self.events if isinstance(e, SayEvent | AgentEvent)
        )

    @property
    def agent_said(self) -> list[str]:
        """Each finished utterance of a ConversationRelay agent, in order."""
        return [e.text for e in self.events if isinstance(e, AgentEvent)]

    @property
    def transcript(self) -> str:
        return "\n".join(describe(e) for e in self.events)

