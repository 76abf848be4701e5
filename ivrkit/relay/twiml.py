"""``<Connect action><ConversationRelay .../></Connect>`` for an Agent state."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twilio.twiml.voice_response import VoiceResponse

from ivrkit import twiml
from ivrkit.call import Call
from ivrkit.relay.node import Agent

REQUEST_PARAMETER = "request"
"""The ``<Parameter>`` holding what the caller said to reach an Agent (``pass_speech``)."""


def relay_url(links: twiml.Links, state: str, call_sid: str) -> str:
    """The WebSocket URL of a call's session: ws(s) for http(s), naming call, state and step.

    The call's SID is in the URL so the signature Twilio sends binds the session to it.
    """
    base = links.base_url
    base = "ws" + base[4:] if base.startswith("http") else base
    return (
        f"{base}/voice/{quote(links.flow)}/relay?state={quote(state, safe='')}"
        f"&step={links.step}&call={quote(call_sid, safe='')}"
    )


def connect(
    response: VoiceResponse,
    node: Agent,
    *,
    call: Call,
    voice: twiml.Voice,
    links: twiml.Links,
) -> None:
    attrs: dict[str, Any] = {"url": relay_url(links, node.name, call.sid)}
    optional: dict[str, Any] = {
        "welcome_greeting": node.welcome,
        "welcome_greeting_interruptible": node.welcome_interruptible,
        "language": node.language or voice.language,
        "tts_language": node.tts_language,
        "transcription_language": node.transcription_language,
        "tts_provider": node.tts_provider,
        "voice": node.voice,
        "transcription_provider": node.transcription_provider,
        "speech_model": node.speech_model,
        "interruptible": node.interruptible,
        "interrupt_sensitivity": node.interrupt_sensitivity,
        "dtmf_detection": True if node.dtmf_detection else None,
        "hints": ", ".join(node.hints) if node.hints else None,
    }
    attrs.update({name: value for name, value in optional.items() if value is not None})
    verb = response.connect(action=links.action(node.name), method="POST")
    relay = verb.conversation_relay(**attrs)
    for language in node.languages:
        relay.language(
            code=language.code,
            tts_provider=language.tts_provider,
            voice=language.voice,
            transcription_provider=language.transcription_provider,
            speech_model=language.speech_model,
        )
    request = call.params.get("SpeechResult") if node.pass_speech else None
    if request:
        relay.parameter(name=REQUEST_PARAMETER, value=request)
    for name in node.parameters:
        value = call.data.get(name)
        if value is not None:
            relay.parameter(name=name, value=str(value))
