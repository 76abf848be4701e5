"""ConversationRelay's WebSocket messages as typed values (reference, section 10).

Twilio -> app: ``setup``, ``prompt``, ``dtmf``, ``interrupt``, ``error`` (and messages
ivrkit does not act on, e.g. ``info`` from ``debug``). A message that is not JSON, not an
object, or misses a required field is a :class:`ProtocolProblem`: the session logs it and
goes on, as Twilio does with ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class ProtocolProblem(ValueError):
    """A message from Twilio that is not ConversationRelay's shape."""


@dataclass(frozen=True)
class Setup:
    """The first message: who is calling, and the ``<Parameter>``s of the TwiML."""

    session_id: str
    call_sid: str
    account_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    direction: str = "inbound"
    caller_name: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """What the caller said (``last`` is false for partial prompts)."""

    text: str
    lang: str = ""
    last: bool = True


@dataclass(frozen=True)
class Dtmf:
    """A key the caller pressed (only with ``dtmfDetection``)."""

    digit: str


@dataclass(frozen=True)
class Interrupt:
    """The caller spoke over the agent: what they had heard until then."""

    heard: str = ""
    duration_ms: int = 0


@dataclass(frozen=True)
class Error:
    """Twilio reporting a mistake in a message of ours."""

    description: str


@dataclass(frozen=True)
class Other:
    """A message of a type ivrkit does not act on (``info``, debug events...)."""

    type: str
    body: dict[str, Any]


Message = Prompt | Dtmf | Interrupt | Error | Other
"""What an agent receives."""

DIGITS = frozenset("0123456789*#ABCDabcd")
MAX_MESSAGE_CHARS = 64 * 1024


def parse(text: str) -> Setup | Message:
    """One message from Twilio, or :class:`ProtocolProblem` saying what is wrong with it."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolProblem(f"message of {len(text):,} characters is over the limit")
    try:
        body = json.loads(text)
    except ValueError:
        raise ProtocolProblem("message is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolProblem("message is not a JSON object")
    kind = body.get("type")
    if kind == "prompt":
        prompt = _text(body, "voicePrompt")
        return Prompt(prompt, str(body.get("lang") or ""), body.get("last", True) is not False)
    if kind == "dtmf":
        digit = _text(body, "digit")
        if len(digit) != 1 or digit not in DIGITS:
            raise ProtocolProblem("dtmf digit is not one key")
        return Dtmf(digit)
    if kind == "interrupt":
        heard = body.get("utteranceUntilInterrupt") or ""
        duration = body.get("durationUntilInterruptMs") or 0
        return Interrupt(
            heard if isinstance(heard, str) else "",
            duration if isinstance(duration, int) and not isinstance(duration, bool) else 0,
        )
    if kind == "error":
        return Error(str(body.get("description") or "")[:500])
    if kind == "setup":
        return _setup(body)
    if not isinstance(kind, str):
        raise ProtocolProblem("message has no type")
    return Other(kind[:40], body)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ProtocolProblem(f"{body.get('type')} message has no {name} text")
    return value


def _setup(body: dict[str, Any]) -> Setup:
    params = body.get("customParameters") or {}
    if not isinstance(params, dict):
        raise ProtocolProblem("setup customParameters is not an object")

    def text(name: str) -> str:
        value = body.get(name)
        return value if isinstance(value, str) else ""

    return Setup(
        session_id=text("sessionId"),
        call_sid=text("callSid"),
        account_sid=text("accountSid"),
        from_number=text("from"),
        to_number=text("to"),
        direction=text("direction") or "inbound",
        caller_name=text("callerName"),
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


# -- app -> Twilio ----------------------------------------------------------------------------


def text_message(
    token: str,
    *,
    last: bool,
    lang: str | None = None,
    interruptible: bool | None = None,
    preemptible: bool | None = None,
) -> str:
    body: dict[str, Any] = {"type": "text", "token": token, "last": last}
    if lang is not None:
        body["lang"] = lang
    if interruptible is not None:
        body["interruptible"] = interruptible
    if preemptible is not None:
        body["preemptible"] = preemptible
    return json.dumps(body)


def end_message(handoff_data: str) -> str:
    return json.dumps({"type": "end", "handoffData": handoff_data})
