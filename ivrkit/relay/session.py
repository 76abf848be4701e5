"""What an agent holds while it talks with a caller: the call, and ways to answer.

An agent never touches the WebSocket: it speaks through :class:`AgentSession` (text, streamed
tokens, audio, digits, a language switch) and ends it with a hand-off. The session keeps
the transcript (masked when the state is sensitive) for the call's event log.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ivrkit.call import Call
from ivrkit.relay import protocol
from ivrkit.relay.handoff import HANDOFF_FIELD
from ivrkit.relay.protocol import Setup

SEND_DIGITS = re.compile(r"[0-9w#*]+")
MASK = "****"
_SPOKEN_NUMBER = r"(?:\d+|zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_NUMBERS = re.compile(rf"\b{_SPOKEN_NUMBER}(?:[\s,.\-]+{_SPOKEN_NUMBER})*\b", re.IGNORECASE)


def mask_numbers(text: str) -> str:
    """``"it is 1 2 34"`` -> ``"it is ****"``: numbers, in figures or words, hidden.

    In a sensitive session anything the caller or the agent says may hold an account
    number; masking every number (even "one question") is the price of never keeping one.
    """
    return _NUMBERS.sub(MASK, text)


class SessionEnded(Exception):
    """The session was ended (a hand-off) or the caller left: nothing more can be said."""


@dataclass(frozen=True)
class Turn:
    """One line of the transcript: ``who`` is "caller" or "agent"."""

    who: str
    text: str


class Transcript:
    """The caller's and the agent's turns, as the event log may keep them."""

    def __init__(self, *, masked: bool) -> None:
        self.masked = masked
        self.turns: list[Turn] = []
        self.flushed = 0
        self._speaking: list[str] = []
        self._hearing: list[str] = []

    def add(self, who: str, text: str) -> None:
        text = " ".join(text.split())
        if text:
            self.turns.append(Turn(who, mask_numbers(text) if self.masked else text))

    def agent_token(self, token: str, last: bool) -> None:
        self._speaking.append(token)
        if last:
            self.add("agent", "".join(self._speaking))
            self._speaking = []

    def caller_prompt(self, text: str, last: bool) -> None:
        self._hearing.append(text)
        if last:
            self.add("caller", " ".join(self._hearing))
            self._hearing = []

    def close(self) -> None:
        """Keep what was cut short (an interrupted utterance, a partial prompt)."""
        if self._speaking:
            self.add("agent", "".join(self._speaking) + " ...")
            self._speaking = []
        if self._hearing:
            self.add("caller", " ".join(self._hearing) + " ...")
            self._hearing = []

    def unflushed(self) -> list[Turn]:
        return self.turns[self.flushed :]


Sender = Callable[[str], Awaitable[None]]


class AgentSession:
    """One caller's ConversationRelay session, as the agent sees it.

    ``setup`` is Twilio's first message; ``call`` the call (``call.data`` is a copy: what
    the agent wants kept goes into the hand-off); ``parameters`` the ``<Parameter>``s;
    ``state`` a dict the agent may use for this session's memory.
    """

    def __init__(
        self, setup: Setup, call: Call, send: Sender, transcript: Transcript, *, state_name: str
    ) -> None:
        self.setup = setup
        self.call = call
        self.parameters = setup.custom_parameters
        self.state: dict[str, Any] = {}
        self.state_name = state_name
        self.transcript = transcript
        self.handoff: str | None = None
        """The ``HandoffData`` to send once the agent ended the session."""
        self.sent = 0
        self._send = send

    @property
    def data(self) -> dict[str, Any]:
        return self.call.data

    @property
    def ended(self) -> bool:
        return self.handoff is not None

    async def _out(self, message: str) -> None:
        if self.ended:
            raise SessionEnded("the session was ended; nothing more can be sent")
        await self._send(message)
        self.sent += 1

    async def say(
        self,
        text: str,
        *,
        last: bool = True,
        lang: str | None = None,
        interruptible: bool | None = None,
        preemptible: bool | None = None,
    ) -> None:
        """Speak ``text`` (one ``text`` message); ``last=False`` when more tokens follow."""
        await self._out(
            protocol.text_message(
                text, last=last, lang=lang, interruptible=interruptible, preemptible=preemptible
            )
        )
        self.transcript.agent_token(text, last)

    async def stream(self, tokens: AsyncIterable[str] | Iterable[str]) -> None:
        """Speak tokens as they come (an LLM's stream): Twilio starts speaking at once."""
        if isinstance(tokens, AsyncIterable):
            async for token in tokens:
                await self.say(token, last=False)
        else:
            for token in tokens:
                await self.say(token, last=False)
        await self.say("", last=True)

    async def play(self, url: str, *, loop: int = 1, interruptible: bool | None = None) -> None:
        """Play audio by URL (``loop`` 0 repeats up to 1000 times)."""
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"play needs an http(s) URL, not {url[:40]!r}")
        body: dict[str, Any] = {"type": "play", "source": url, "loop": loop}
        if interruptible is not None:
            body["interruptible"] = interruptible
        await self._out(json.dumps(body))
        self.transcript.add("agent", f"(play {url.rsplit('/', 1)[-1]})")

    async def send_digits(self, digits: str) -> None:
        """Send DTMF tones on the call (``w`` waits half a second)."""
        if not SEND_DIGITS.fullmatch(digits):
            raise ValueError("send_digits takes only 0-9, w, # and *")
        await self._out(json.dumps({"type": "sendDigits", "digits": digits}))
        self.transcript.add("agent", f"(digits {MASK if self.transcript.masked else digits})")

    async def switch_language(
        self, tts: str | None = None, transcription: str | None = None
    ) -> None:
        """Change the speaking and/or the listening language (declare it as a Language)."""
        if tts is None and transcription is None:
            raise ValueError("switch_language needs tts= or transcription=")
        body: dict[str, Any] = {"type": "language"}
        if tts is not None:
            body["ttsLanguage"] = tts
        if transcription is not None:
            body["transcriptionLanguage"] = transcription
        await self._out(json.dumps(body))
        self.transcript.add("agent", f"(language {tts or ''} {transcription or ''})".strip())

    def end(self, handoff: str, **fields: Any) -> None:
        """End the session and hand the call back to the flow, to the state ``on[handoff]``.

        ``fields`` (JSON values) are checked against the state's hand-off schema and saved
        in ``call.data``. ivrkit sends ``end`` once the transcript is saved.
        """
        if self.ended:
            raise SessionEnded("the session was ended already")
        if HANDOFF_FIELD in fields:
            raise ValueError(f"{HANDOFF_FIELD!r} names the hand-off; use another field name")
        self.handoff = json.dumps({HANDOFF_FIELD: handoff, **fields})
        self.transcript.add("agent", f"(hand-off {handoff})")
