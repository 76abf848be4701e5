"""Helpers for the simulator tests: tiny TwiML apps that record what the simulator sent and
check every request's X-Twilio-Signature with twilio-python's own RequestValidator."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

TOKEN = "test-auth-token-12345"


@dataclass
class Seen:
    """One request as the app saw it."""

    method: str
    path: str
    url: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]

    @property
    def params(self) -> dict[str, str]:
        return {**self.query, **self.form}


Handler = str | Callable[[Seen], Any] | Callable[[Seen], Awaitable[Any]]


def twiml(*verbs: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


class TwimlApp:
    """``TwimlApp({"/voice": twiml(...), "/next": handler})``; a handler gets the ``Seen`` request
    and returns TwiML text or a Starlette ``Response``."""

    def __init__(self, routes: dict[str, Handler], *, token: str | None = TOKEN) -> None:
        self.routes = routes
        self.seen: list[Seen] = []
        self.answers: list[tuple[Seen, str]] = []  # (request, TwiML text answered)
        self.bad_signatures: list[str] = []
        self.validator = RequestValidator(token) if token else None
        self.app = Starlette(routes=[Route("/{path:path}", self.endpoint, methods=["GET", "POST"])])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def endpoint(self, request: Request) -> Response:
        body = (await request.body()).decode()
        form = dict(parse_qsl(body, keep_blank_values=True)) if request.method == "POST" else {}
        seen = Seen(
            request.method,
            request.url.path,
            str(request.url),
            dict(parse_qsl(request.url.query, keep_blank_values=True)),
            form,
            dict(request.headers),
        )
        self.seen.append(seen)
        if self.validator is not None:
            signature = request.headers.get("x-twilio-signature", "")
            if not self.validator.validate(str(request.url), form, signature):
                self.bad_signatures.append(str(request.url))
                return Response("bad signature", status_code=403)
        handler = self.routes.get(request.url.path)
        if handler is None:
            return Response("not found", status_code=404)
        if isinstance(handler, str):
            self.answers.append((seen, handler))
            return Response(handler, media_type="text/xml")
        result = handler(seen)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Response):
            return result
        self.answers.append((seen, result))
        return Response(result, media_type="text/xml")

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real uvicorn server in a thread, for tests that go over HTTP."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def demo_ivr(*, greeting: str = "Thanks for calling Acme.", token: str | None = TOKEN) -> TwimlApp:
    """A small IVR in the style real apps are written in: a menu, sales (Dial), voicemail
    (Record), a support queue (Enqueue), retries by Redirect."""

    def voice(seen: Seen) -> str:
        return twiml(
            f"<Say>{greeting}</Say>"
            '<Gather action="/ivr?state=menu" numDigits="1" timeout="5">'
            "<Say>For sales press 1. For support press 2. To leave a message press 3.</Say>"
            "</Gather>"
            "<Say>We did not hear a choice.</Say><Redirect>/voice?retry=1</Redirect>"
        )

    def ivr(seen: Seen) -> str:
        state = seen.query.get("state")
        params = seen.params
        if state == "menu":
            digit = params.get("Digits")
            if digit == "1":
                return twiml(
                    "<Say>Connecting you to sales.</Say>"
                    '<Dial action="/ivr?state=sales_done" timeout="20">+15550111</Dial>'
                )
            if digit == "2":
                return twiml(
                    '<Enqueue waitUrl="/hold" action="/ivr?state=queue_done">support</Enqueue>'
                )
            if digit == "3":
                return twiml(
                    "<Say>Leave a message after the beep.</Say>"
                    '<Record action="/ivr?state=saved" maxLength="60"/>'
                )
            return twiml("<Say>That is not a valid choice.</Say><Redirect>/voice</Redirect>")
        if state == "sales_done":
            if params.get("DialCallStatus") == "completed":
                return twiml("<Say>Thanks, goodbye.</Say><Hangup/>")
            return twiml(
                "<Say>Sales is busy. Leave a message after the beep.</Say>"
                '<Record action="/ivr?state=saved" maxLength="60"/>'
            )
        if state == "queue_done":
            return twiml(f"<Say>Queue result {params.get('QueueResult')}.</Say>")
        if state == "saved":
            return twiml(f"<Say>Got {params.get('RecordingDuration')} seconds. Goodbye.</Say>")
        return twiml("<Say>Unknown state.</Say>")

    return TwimlApp(
        {
            "/voice": voice,
            "/ivr": ivr,
            "/hold": twiml("<Say>Please hold.</Say>"),
            "/status": "",
        },
        token=token,
    )
