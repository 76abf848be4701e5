"""A small standalone TwiML app with a ConversationRelay agent, for the simulator's tests.

Plain Starlette, no ivrkit: ``/voice`` answers ``<Connect action="/after"><ConversationRelay>``,
the WebSocket at ``/relay/{mode}`` speaks the app side of the protocol (setup, prompt -> streamed
``text`` tokens -> ``end`` with handoffData), and ``/after`` maps the session's outcome to a
billing menu, a goodbye or an apology. ``mode`` picks a well-behaved agent or one of the
misbehaving ones the simulator must survive. Every request and upgrade is checked with
twilio-python's RequestValidator.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import quoteattr

from sim_apps import TOKEN, twiml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

GREETING = "Hi, this is the Acme assistant. How can I help?"


@dataclass
class Session:
    """What one WebSocket connection saw."""

    mode: str
    url: str = ""
    signature: str = ""
    setup: dict[str, Any] | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False  # the handler saw the socket end (it released it)


class RelayApp:
    """``RelayApp()``; call ``/voice?mode=...`` (default ``good``); ``action=0`` leaves out the
    ``<Connect action>``; ``greeting=0`` the welcome greeting; ``dtmf=1`` turns dtmfDetection
    on; ``scheme=wss`` renders a wss:// URL; ``ws=URL`` names another socket; ``attrs=...`` adds
    attributes as written."""

    def __init__(self, *, token: str | None = TOKEN) -> None:
        self.token = token
        self.validator = RequestValidator(token) if token else None
        self.sessions: list[Session] = []
        self.actions: list[dict[str, str]] = []
        self.bad_signatures: list[str] = []
        self.app = Starlette(routes=[
            Route("/voice", self.voice, methods=["POST"]),
            Route("/after", self.after, methods=["POST"]),
            Route("/billing", self.billing, methods=["POST"]),
            WebSocketRoute("/relay/{mode}", self.relay),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def kinds(self, index: int = -1) -> list[str]:
        """The message types a session received, in order."""
        return [m["type"] for m in self.sessions[index].received]

    async def _form(self, request: Request) -> dict[str, str] | None:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if self.validator is not None:
            signature = request.headers.get("x-twilio-signature", "")
            if not self.validator.validate(str(request.url), form, signature):
                self.bad_signatures.append(str(request.url))
                return None
        return form

    async def voice(self, request: Request) -> Response:
        if await self._form(request) is None:
            return Response("bad signature", status_code=403)
        query = request.query_params
        mode = query.get("mode", "good")
        scheme = query.get("scheme") or ("wss" if request.url.scheme == "https" else "ws")
        url = query.get("ws") or f"{scheme}://{request.url.netloc}/relay/{mode}"
        attrs = f"url={quoteattr(url)}"
        if query.get("greeting") != "0":
            attrs += f" welcomeGreeting={quoteattr(GREETING)}"
        if query.get("dtmf") == "1":
            attrs += ' dtmfDetection="true"'
        extra = query.get("attrs", "")
        action = ' action="/after"' if query.get("action") != "0" else ""
        return Response(twiml(
            f"<Connect{action}><ConversationRelay {attrs} {extra}>"
            '<Parameter name="account" value="12345678"/>'
            '<Language code="sv-SE" ttsProvider="Google"/>'
            "</ConversationRelay></Connect>"
            "<Say>Back in the menu.</Say>"
        ), media_type="text/xml")

    async def after(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return Response("bad signature", status_code=403)
        self.actions.append(form)
        status = form.get("SessionStatus")
        handoff = json.loads(form["HandoffData"]) if form.get("HandoffData") else {}
        if status == "ended" and handoff.get("intent") == "billing":
            return Response(twiml(
                '<Gather action="/billing" numDigits="1">'
                f"<Say>Billing menu for account {handoff.get('account')}. "
                "Press 1 for your balance.</Say></Gather>"
            ), media_type="text/xml")
        if status == "ended":
            return Response(twiml("<Say>Thanks for calling. Goodbye.</Say><Hangup/>"),
                            media_type="text/xml")
        return Response(twiml(
            f"<Say>Sorry, the assistant is unavailable ({status} "
            f"{form.get('ErrorCode', '')}).</Say><Hangup/>"
        ), media_type="text/xml")

    async def billing(self, request: Request) -> Response:
        form = await self._form(request)
        if form is None:
            return Response("bad signature", status_code=403)
        if form.get("Digits") == "1":
            return Response(twiml("<Say>Your balance is 42 dollars.</Say><Hangup/>"),
                            media_type="text/xml")
        return Response(twiml("<Say>Goodbye.</Say>"), media_type="text/xml")

    # --- the agent side of the WebSocket ---------------------------------------------------------

    async def relay(self, websocket: WebSocket) -> None:
        mode = websocket.path_params["mode"]
        signature = websocket.headers.get("x-twilio-signature", "")
        session = Session(mode, str(websocket.url), signature)
        self.sessions.append(session)
        if self.validator is not None:
            if not self.validator.validate(str(websocket.url), {}, signature):
                self.bad_signatures.append(str(websocket.url))
                await websocket.close()  # before accept: the server answers 403
                session.closed = True
                return
        if mode == "refuse":
            await websocket.close()
            session.closed = True
            return
        if mode == "deny":
            await websocket.send_denial_response(Response("who are you?", status_code=401))
            session.closed = True
            return
        if mode == "slowaccept":
            try:
                await asyncio.sleep(30)  # never accepts in time
            finally:
                session.closed = True
        await websocket.accept()
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                session.received.append(message)
                if message["type"] == "setup":
                    session.setup = message
                    continue
                if message["type"] == "error":
                    continue  # answering Twilio's errors would loop (Twilio's docs warn)
                await AGENTS[mode](websocket, session, message)
        except (WebSocketDisconnect, OSError):
            pass  # the simulator hung up (OSError: a send after it closed the socket)
        finally:
            session.closed = True


async def speak(websocket: WebSocket, *tokens: str) -> None:
    """Stream one utterance token by token, ``last`` on the final one."""
    for index, token in enumerate(tokens):
        await websocket.send_json({"type": "text", "token": token,
                                   "last": index == len(tokens) - 1})


async def end(websocket: WebSocket, **handoff: Any) -> None:
    await websocket.send_json({"type": "end", "handoffData": json.dumps(handoff)})


async def good(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    kind = message["type"]
    if kind == "dtmf":
        await speak(websocket, f"You pressed {message['digit']}.")
        return
    if kind != "prompt":
        return  # interrupts are noted in session.received
    text = message["voicePrompt"].lower()
    if "bill" in text:
        await speak(websocket, "Let me ", "connect you ", "to billing.")
        account = (session.setup or {}).get("customParameters", {}).get("account")
        await end(websocket, intent="billing", account=account)
    elif "bye" in text:
        await speak(websocket, "Goodbye!")
        await end(websocket, intent="done")
    elif "music" in text:
        await websocket.send_json({"type": "play", "source": "https://example.com/hold.mp3"})
        await websocket.send_json({"type": "sendDigits", "digits": "1w2"})
        await websocket.send_json({"type": "language", "ttsLanguage": "sv-SE"})
        await speak(websocket, "Hej!")
    else:
        await speak(websocket, "You said: ", message["voicePrompt"])


async def drop(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    await websocket.close(code=1011)
    raise WebSocketDisconnect(1011)


async def silent(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    return None


async def bad_json(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    await websocket.send_text("{this is not json")
    await websocket.send_json({"type": "text", "last": True})  # no token
    await good(websocket, session, message)


async def unknown(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    for number in range(12):
        await websocket.send_json({"type": "speak", "n": number})
    await asyncio.sleep(0)


async def mumble(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    """Streams tokens and never says ``last``, then goes quiet."""
    await websocket.send_json({"type": "text", "token": "Well, ", "last": False})
    await websocket.send_json({"type": "text", "token": "let me think", "last": False})


async def stubborn(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    """Stops reading after the first prompt: it never sees the socket close."""
    await speak(websocket, "One moment.")
    try:
        await asyncio.sleep(3600)
    finally:
        session.closed = True  # cancelled: the simulator let go of it


async def flood(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    """Streams tokens without end."""
    for _ in range(30):
        await websocket.send_json({"type": "text", "token": "la ", "last": False})


async def crash(websocket: WebSocket, session: Session, message: dict[str, Any]) -> None:
    raise RuntimeError("the agent crashed")


AGENTS = {"good": good, "drop": drop, "silent": silent, "badjson": bad_json,
          "unknown": unknown, "crash": crash, "mumble": mumble, "stubborn": stubborn,
          "flood": flood}
