"""Helpers for ConversationRelay tests: the app under real uvicorn, and a Twilio-side socket.

The socket side is written from Twilio's documented protocol (reference, section 10), not
from ivrkit's code: it signs the URL, sends setup and prompts, and reads ``text`` tokens.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
import websockets
from twilio.request_validator import RequestValidator

from tests.driver import TOKEN, PhoneCall


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free port for the block; yields its http base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def session_id() -> str:
    return "VX" + secrets.token_hex(16)


def signature(url: str, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, {})


@dataclass
class TwilioSide:
    """Twilio's end of one ConversationRelay session."""

    socket: Any
    call_sid: str
    session: str = field(default_factory=session_id)
    heard: list[str] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    ended: str | None = None

    async def setup(self, **parameters: str) -> None:
        await self.socket.send(
            json.dumps(
                {
                    "type": "setup",
                    "sessionId": self.session,
                    "accountSid": "AC" + "0" * 32,
                    "parentCallSid": "",
                    "callSid": self.call_sid,
                    "from": "+14155550100",
                    "to": "+15005550006",
                    "forwardedFrom": "",
                    "callType": "PSTN",
                    "callerName": "",
                    "direction": "inbound",
                    "callStatus": "IN-PROGRESS",
                    "customParameters": parameters,
                }
            )
        )

    async def say(self, text: str, *, last: bool = True) -> None:
        await self.socket.send(
            json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})
        )

    async def press(self, digit: str) -> None:
        await self.socket.send(json.dumps({"type": "dtmf", "digit": digit}))

    async def interrupt(self, heard: str = "") -> None:
        await self.socket.send(
            json.dumps(
                {
                    "type": "interrupt",
                    "utteranceUntilInterrupt": heard,
                    "durationUntilInterruptMs": 300,
                }
            )
        )

    async def utterance(self, timeout: float = 10) -> str | None:
        """The agent's next finished utterance (tokens joined until last=true), or None
        when the agent ended the session (``self.ended`` holds its handoffData)."""
        tokens: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.socket.recv(), timeout)
            message = json.loads(raw)
            if message["type"] == "text":
                tokens.append(message["token"])
                if message.get("last"):
                    text = " ".join("".join(tokens).split())
                    self.heard.append(text)
                    return text
            elif message["type"] == "end":
                self.ended = message["handoffData"]
                return None
            else:
                self.other.append(message)

    async def until_end(self, timeout: float = 10) -> str:
        while self.ended is None:
            await self.utterance(timeout)
        return self.ended

    def action_params(self, status: str = "ended", **extra: str) -> dict[str, str]:
        params = {
            "SessionId": self.session,
            "SessionStatus": status,
            "SessionDuration": "12",
        }
        if status == "ended" and self.ended is not None:
            params["HandoffData"] = self.ended
        params.update(extra)
        return params


def relay_of(answer_body: str) -> tuple[str, str, ET.Element]:
    """(websocket url, action url, ConversationRelay element) of a TwiML answer."""
    root = ET.fromstring(answer_body)
    connect = root.find("Connect")
    assert connect is not None, answer_body
    relay = connect.find("ConversationRelay")
    assert relay is not None, answer_body
    return relay.attrib["url"], connect.attrib["action"], relay


@asynccontextmanager
async def twilio_side(
    url: str,
    call_sid: str,
    *,
    token: str | None = TOKEN,
    setup: bool = True,
    parameters: dict[str, str] | None = None,
) -> AsyncIterator[TwilioSide]:
    """Twilio's side of a session; ``parameters``: the TwiML's <Parameter>s, for setup."""
    headers = {"X-Twilio-Signature": signature(url, token)} if token else {}
    async with websockets.connect(url, additional_headers=headers, open_timeout=10) as socket:
        side = TwilioSide(socket, call_sid)
        if setup:
            await side.setup(**(parameters or {}))
        yield side


async def call_at_agent(client: httpx.AsyncClient, base: str) -> tuple[PhoneCall, str, str]:
    """A support_line call that asked for the assistant: (call, relay url, action url)."""
    call = PhoneCall(client=client, flow="support_line")
    await call.post(f"{base}/voice/support_line")
    answer = await call.speak("I have a question")
    url, action, _ = relay_of(answer.body)
    return call, url, action
