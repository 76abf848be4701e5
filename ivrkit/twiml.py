"""Compiling states to TwiML through twilio's ``VoiceResponse`` builder.

One webhook answer may hold several states (a Say then the Menu it leads to), so the
renderer appends verbs to one document; every callback URL carries the state and step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from twilio.twiml.voice_response import Dial as DialVerb
from twilio.twiml.voice_response import Gather, VoiceResponse

from ivrkit import nodes as n
from ivrkit.call import Call

STEP_SLOT = "ivrkit-step-slot"
"""Rendered in place of the step number so a document can be cached and filled in."""
DEFAULT_HOLD_MUSIC = "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"


@dataclass(frozen=True)
class Links:
    """Builds the absolute callback URLs of one call at one step."""

    base_url: str
    flow: str
    step: int | str

    def _url(self, endpoint: str, state: str, extra: str = "") -> str:
        return (
            f"{self.base_url}/voice/{quote(self.flow)}/{endpoint}"
            f"?state={quote(state, safe='')}&step={self.step}{extra}"
        )

    def action(self, state: str) -> str:
        return self._url("action", state)

    def no_input(self, state: str) -> str:
        return self._url("action", state, "&input=none")

    def hold(self, state: str) -> str:
        return self._url("hold", state)

    def recording(self, state: str) -> str:
        return self._url("recording", state)

    def pay_status(self, state: str) -> str:
        return self._url("pay-status", state)


@dataclass(frozen=True)
class Voice:
    """Flow-wide speech defaults."""

    voice: str | None = None
    language: str | None = None


def _text(source: n.TextSource, call: Call) -> str:
    return source(call) if callable(source) else source


def add_prompt(
    parent: VoiceResponse | Gather, parts: Sequence[n.PromptPart], call: Call, voice: Voice
) -> None:
    for part in parts:
        if isinstance(part, n.Say):
            attrs: dict[str, Any] = {}
            if part.voice or voice.voice:
                attrs["voice"] = part.voice or voice.voice
            if part.language or voice.language:
                attrs["language"] = part.language or voice.language
            if part.loop != 1:
                attrs["loop"] = part.loop
            parent.say(_text(part.text, call), **attrs)
        elif isinstance(part, n.Play):
            parent.play(part.url, loop=part.loop if part.loop != 1 else None)
        elif isinstance(part, n.Pause):
            parent.pause(length=part.length)


def gather(
    response: VoiceResponse,
    node: n.Menu | n.Collect,
    *,
    parts: Sequence[n.PromptPart],
    call: Call,
    voice: Voice,
    links: Links,
    num_digits: int | None,
    hints: Sequence[str] | None = None,
) -> None:
    """A Gather holding the prompt, then a Redirect so silence comes back to us as no-input.

    ``hints`` replaces the node's own speech hints (a read-back expects its two keys).
    """
    attrs: dict[str, Any] = {
        "action": links.action(node.name),
        "method": "POST",
        "input": node.input,
        "timeout": node.timeout,
        "finish_on_key": node.finish_on_key,
    }
    if num_digits:
        attrs["num_digits"] = num_digits
    if "speech" in node.input:
        attrs["speech_timeout"] = "auto"
        if node.language or voice.language:
            attrs["language"] = node.language or voice.language
        chosen = node.hints if hints is None else hints
        if chosen:
            attrs["hints"] = ", ".join(chosen)
    verb = response.gather(**attrs)
    add_prompt(verb, parts, call, voice)
    response.redirect(links.no_input(node.name), method="POST")


def dial(response: VoiceResponse, node: n.Dial, *, call: Call, voice: Voice, links: Links) -> None:
    add_prompt(response, node.prompt, call, voice)
    attrs: dict[str, Any] = {
        "action": links.action(node.name),
        "method": "POST",
        "timeout": node.timeout,
    }
    if node.caller_id:
        attrs["caller_id"] = node.caller_id
    if node.time_limit:
        attrs["time_limit"] = node.time_limit
    if node.record:
        attrs["record"] = "record-from-answer"
    if node.hangup_on_star:
        attrs["hangup_on_star"] = True
    if node.answer_on_bridge:
        attrs["answer_on_bridge"] = True
    verb: DialVerb = response.dial(**attrs)
    for target in node.targets:
        if isinstance(target, n.Number):
            verb.number(target.number, send_digits=target.send_digits)
        elif isinstance(target, n.Client):
            verb.client(target.identity)
        elif isinstance(target, n.Sip):
            verb.sip(target.uri, username=target.username, password=target.password)
        elif isinstance(target, n.Conference):
            verb.conference(
                target.room,
                start_conference_on_enter=target.start_on_enter,
                end_conference_on_exit=target.end_on_exit,
            )
        elif isinstance(target, n.Queue):
            verb.queue(target.name)


def record(
    response: VoiceResponse, node: n.Record, *, call: Call, voice: Voice, links: Links
) -> None:
    """Record with an action; the Redirect after it catches an empty recording."""
    add_prompt(response, node.prompt, call, voice)
    attrs: dict[str, Any] = {
        "action": links.action(node.name),
        "method": "POST",
        "max_length": node.max_length,
        "timeout": node.timeout,
        "finish_on_key": node.finish_on_key,
        "play_beep": node.beep,
        "recording_status_callback": links.recording(node.name),
        "recording_status_callback_method": "POST",
    }
    if node.transcribe:
        attrs["transcribe"] = True
    if not node.trim_silence:
        attrs["trim"] = "do-not-trim"
    response.record(**attrs)
    response.redirect(links.no_input(node.name), method="POST")


def enqueue(
    response: VoiceResponse, node: n.Enqueue, *, call: Call, voice: Voice, links: Links
) -> None:
    add_prompt(response, node.prompt, call, voice)
    response.enqueue(
        node.queue,
        action=links.action(node.name),
        method="POST",
        wait_url=node.wait_url if node.wait_url is not None else links.hold(node.name),
        wait_url_method="POST",
    )


def hold_music(node: n.Enqueue, *, call: Call, voice: Voice) -> str:
    """What a caller hears while waiting in the queue (Twilio fetches it again when done)."""
    response = VoiceResponse()
    if node.hold:
        add_prompt(response, node.hold, call, voice)
    else:
        response.play(DEFAULT_HOLD_MUSIC)
    return str(response)


def apology(message: str, transfer_to: str | None) -> str:
    """The answer when the flow's code or the database fails: never a 500 to Twilio."""
    response = VoiceResponse()
    response.say(message)
    if transfer_to:
        response.dial(transfer_to)
    response.hangup()
    return str(response)


def empty() -> str:
    return str(VoiceResponse())
