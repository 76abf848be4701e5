"""The console's pages and APIs, as a Starlette app mounted at /console.

Every request goes through ``SecurityHeaders``; every page and API but the sign-in page
and static files needs a signed-in session when a token or password is configured;
every POST needs the session's CSRF token (a header from the console's script, or a
form field) and, when the browser sends one, an Origin of this server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ivrkit.console.auth import (
    COOKIE_NAME,
    SESSION_SECONDS,
    ConsoleSession,
    LoginThrottle,
    SessionSigner,
    derive_key,
    same_token,
)
from ivrkit.console.calls import (
    CallFilter,
    FilterError,
    call_row,
    find_calls,
    scrub,
    timeline,
)
from ivrkit.console.config import ConsoleConfig
from ivrkit.console.dialpad import Answer, Dialpad, DialpadFull, NotAsked
from ivrkit.console.headers import SecurityHeaders
from ivrkit.console.overview import flow_report
from ivrkit.console.traffic import traffic_map
from ivrkit.logthrottle import LogThrottle
from ivrkit.records import utcnow
from simulator.caller import (
    DialOutcome,
    HangUp,
    Press,
    QueueOutcome,
    RecordOutcome,
    Speak,
    Timeout,
)

log = logging.getLogger("ivrkit.console")

PREFIX = "/console"
HERE = Path(__file__).parent
MAX_JSON = 4096
STREAM_SECONDS = 25.0
"""An event stream ends after this and the browser reconnects: an open stream would
otherwise keep a shutting-down server waiting for it."""
PERIODS = {"1": "last 24 hours", "7": "last 7 days", "30": "last 30 days", "all": "all time"}
DIAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
QUEUE_RESULTS = ("bridged", "leave", "hangup", "error", "redirected")

Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]


class Forbidden(Exception):
    """A state-changing request without this session's CSRF token or from another origin."""


class Console:
    """The console of one app: its session signer, throttle, dialpad and live streams."""

    def __init__(self, ivr: Any, config: ConsoleConfig, app: Callable[[], Any]) -> None:
        self.ivr = ivr
        self.config = config
        settings = ivr.settings
        self.https = (settings.public_url or "").startswith("https://")
        self.signer = SessionSigner(derive_key(config.secret))
        self.throttle = LoginThrottle()
        self.log_throttle = LogThrottle(log)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True
        )
        self.templates = Jinja2Templates(env=env)
        self.dialpad = Dialpad(
            app,
            auth_token=settings.auth_token,
            public_url=settings.public_url,
            secret_states=ivr.registry.secret_states,
            numbers={f.name: f.number for f in ivr.registry.by_name.values() if f.number},
            max_live=config.max_live_calls,
            idle_seconds=config.idle_seconds,
        )
        self.streams = 0
        self.stopping = False
        self.graphviz: bool | None = None
        """Draw traffic maps with Graphviz: None = when ``dot`` is installed."""

    # -- plumbing ------------------------------------------------------------------------------

    def asgi(self) -> Starlette:
        guarded = self._guarded
        routes = [
            Route("/", guarded(self.flows), methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", guarded(self.logout), methods=["POST"]),
            Route("/flows/{name}", guarded(self.flow), methods=["GET"]),
            Route("/flows/{name}/traffic.svg", guarded(self.traffic), methods=["GET"]),
            Route("/calls", guarded(self.calls), methods=["GET"]),
            Route("/calls/live", guarded(self.live), methods=["GET"]),
            Route("/calls/{sid}", guarded(self.call), methods=["GET"]),
            Route("/api/calls", guarded(self.calls_json), methods=["GET"]),
            Route("/api/calls/{sid}", guarded(self.call_json), methods=["GET"]),
            Route("/dialpad", guarded(self.dialpad_page), methods=["GET"]),
            Route("/dialpad/calls", guarded(self.dial), methods=["POST"]),
            Route("/dialpad/calls/{sid}", guarded(self.dialpad_call), methods=["GET", "POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(SecurityHeaders)
        return app

    def mount(self) -> Mount:
        return Mount(PREFIX, app=self.asgi())

    async def close(self) -> None:
        self.stopping = True
        await self.dialpad.close()

    def _session(self, request: Request) -> tuple[ConsoleSession, bool]:
        session = self.signer.loads(request.cookies.get(COOKIE_NAME))
        return (session, False) if session is not None else (ConsoleSession(), True)

    def _keep(self, response: Response, session: ConsoleSession) -> Response:
        response.set_cookie(
            COOKIE_NAME,
            self.signer.dumps(session),
            max_age=SESSION_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.https,
        )
        return response

    def _allowed(self, session: ConsoleSession) -> bool:
        return session.signed_in or not self.config.sign_in_required

    def _guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session, fresh = self._session(request)
            if not self._allowed(session):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse(f"{PREFIX}/login", status_code=303)
                return PlainTextResponse("sign in first\n", status_code=401)
            try:
                if request.method == "POST":
                    await self._check_csrf(request, session)
                response = await handler(request, session)
            except Forbidden as refusal:
                return PlainTextResponse(f"{refusal}\n", status_code=403)
            return self._keep(response, session) if fresh else response

        return endpoint

    async def _check_csrf(self, request: Request, session: ConsoleSession) -> None:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise Forbidden("cross-origin request refused")
        token = request.headers.get("x-csrf-token")
        if token is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            token = (await _form(request)).get("csrf", "")
        if not token or not same_token(token, session.csrf):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")

    def _page(
        self,
        request: Request,
        session: ConsoleSession,
        name: str,
        status: int = 200,
        **context: Any,
    ) -> Response:
        context.update(
            prefix=PREFIX,
            csrf=session.csrf,
            signed_in=session.signed_in,
            sign_in_required=self.config.sign_in_required,
            flows=sorted(self.ivr.registry.by_name),
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    # -- sign-in -------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        session, fresh = self._session(request)
        if not self.config.sign_in_required or session.signed_in:
            return RedirectResponse(f"{PREFIX}/", status_code=303)
        response = self._page(request, session, "login.html")
        return self._keep(response, session) if fresh else response

    async def login(self, request: Request) -> Response:
        session, _ = self._session(request)
        if not self.config.sign_in_required:
            return RedirectResponse(f"{PREFIX}/", status_code=303)
        try:
            await self._check_csrf(request, session)
        except Forbidden as refusal:
            return PlainTextResponse(f"{refusal}\n", status_code=403)
        who = request.client.host if request.client else "?"
        wait = self.throttle.retry_after(who)
        if wait:
            log.warning("console sign-in from %s refused: too many failures", who)
            response = self._page(request, session, "login.html", 429,
                                  error=f"Too many failed sign-ins: try again in {wait} s.")
            response.headers["retry-after"] = str(wait)
            return response
        secret = (await _form(request)).get("secret", "")
        if await self._valid(secret):
            self.throttle.succeeded(who)
            log.info("console: signed in from %s", who)
            fresh = ConsoleSession(signed_in=True)  # a new CSRF token with the new session
            return self._keep(RedirectResponse(f"{PREFIX}/", status_code=303), fresh)
        self.throttle.failed(who)
        log.warning("console: failed sign-in from %s", who)
        return self._page(request, session, "login.html", 401, error="Wrong token or password.")

    async def _valid(self, secret: str) -> bool:
        if not secret or len(secret) > 1024:
            return False
        if self.config.token and same_token(secret, self.config.token):
            return True
        if self.config.password_hash:
            from ivrkit.console.passwords import verify_password

            # scrypt takes tens of milliseconds: off the event loop.
            return await asyncio.to_thread(verify_password, secret, self.config.password_hash)
        return False

    async def logout(self, request: Request, session: ConsoleSession) -> Response:
        return self._keep(RedirectResponse(f"{PREFIX}/login", status_code=303), ConsoleSession())

    # -- flows ---------------------------------------------------------------------------------

    def _period(self, request: Request) -> tuple[str, datetime | None]:
        days = request.query_params.get("days", "7")
        if days not in PERIODS:
            days = "7"
        since = None if days == "all" else utcnow() - timedelta(days=int(days))
        return days, since

    async def flows(self, request: Request, session: ConsoleSession) -> Response:
        days, since = self._period(request)
        rows = []
        for name in sorted(self.ivr.registry.by_name):
            report = await flow_report(self.ivr.store, name, since)
            rows.append({"name": name, **report.summary()})
        return self._page(request, session, "flows.html", rows=rows, days=days, periods=PERIODS)

    def _flow(self, name: str) -> Any:
        return self.ivr.registry.by_name.get(name)

    async def flow(self, request: Request, session: ConsoleSession) -> Response:
        flow = self._flow(request.path_params["name"])
        if flow is None:
            return self._page(request, session, "missing.html", 404, what="flow")
        days, since = self._period(request)
        report = await flow_report(self.ivr.store, flow.name, since)
        svg = await self._traffic_svg(flow, report.funnel)
        return self._page(
            request, session, "flow.html", flow=flow.name, doc=scrub((flow.__doc__ or "").strip()),
            summary=report.summary(), states=report.state_rows(), svg=Markup(svg), days=days,
            periods=PERIODS,
        )

    async def traffic(self, request: Request, session: ConsoleSession) -> Response:
        flow = self._flow(request.path_params["name"])
        if flow is None:
            return PlainTextResponse("no such flow\n", status_code=404)
        _, since = self._period(request)
        report = await flow_report(self.ivr.store, flow.name, since)
        return Response(await self._traffic_svg(flow, report.funnel), media_type="image/svg+xml")

    async def _traffic_svg(self, flow: Any, funnel: Any) -> str:
        # Graphviz is a process of its own: off the event loop.
        return await asyncio.to_thread(traffic_map, flow, funnel, graphviz=self.graphviz)

    # -- calls ---------------------------------------------------------------------------------

    async def calls(self, request: Request, session: ConsoleSession) -> Response:
        error = ""
        try:
            where = CallFilter.from_query(request.query_params)
            rows = [call_row(r) for r in await find_calls(self.ivr.store, where)]
        except FilterError as problem:
            where, rows, error = CallFilter(), [], str(problem)
        return self._page(
            request, session, "calls.html", 400 if error else 200, rows=rows, where=where,
            query=where.as_query(), error=error, statuses=STATUSES,
        )

    async def calls_json(self, request: Request, session: ConsoleSession) -> Response:
        try:
            where = CallFilter.from_query(request.query_params)
        except FilterError as problem:
            return JSONResponse({"error": str(problem)}, status_code=400)
        rows = await find_calls(self.ivr.store, where)
        return JSONResponse({"calls": [call_row(r) for r in rows]})

    async def _timeline(self, sid: str) -> tuple[Any, list[Any]] | None:
        record = await self.ivr.store.load(sid) if len(sid) <= 64 else None
        if record is None:
            return None
        events = await self.ivr.store.call_events(sid)
        return record, timeline(events, self.ivr.registry.secret_states)

    async def call(self, request: Request, session: ConsoleSession) -> Response:
        found = await self._timeline(request.path_params["sid"])
        if found is None:
            return self._page(request, session, "missing.html", 404, what="call")
        record, entries = found
        return self._page(request, session, "call.html", call=call_row(record), entries=entries)

    async def call_json(self, request: Request, session: ConsoleSession) -> Response:
        found = await self._timeline(request.path_params["sid"])
        if found is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        record, entries = found
        return JSONResponse({
            "call": call_row(record),
            "timeline": [
                {**entry.__dict__, "at": entry.at.isoformat()} for entry in entries
            ],
        })

    async def live(self, request: Request, session: ConsoleSession) -> Response:
        """Server-sent events: each call of the filter as it changes."""
        try:
            where = CallFilter.from_query(request.query_params)
        except FilterError as problem:
            return PlainTextResponse(f"{problem}\n", status_code=400)
        return StreamingResponse(
            self._stream(where), media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _stream(self, where: CallFilter, poll: float = 1.0) -> AsyncIterator[str]:
        """Polls the store (every process's calls are there), not this process's memory;
        holds nothing between polls, so a browser that goes away costs nothing."""
        self.streams += 1
        try:
            loop = asyncio.get_running_loop()
            ends = loop.time() + STREAM_SECONDS
            last = utcnow() - timedelta(seconds=2)
            yield "retry: 2000\n\n"
            while not self.stopping and loop.time() < ends:
                try:
                    rows = await find_calls(self.ivr.store, where, updated_after=last)
                except Exception as error:
                    self.log_throttle.failure("console", error, "console: live calls query failed")
                    yield "event: trouble\ndata: {}\n\n"
                    await asyncio.sleep(poll * 3)
                    continue
                for record in reversed(rows):
                    last = max(last, record.updated_at)
                    yield f"event: call\ndata: {json.dumps(call_row(record))}\n\n"
                if not rows:
                    yield ": idle\n\n"
                await asyncio.sleep(poll)
        finally:
            self.streams -= 1

    # -- dialpad -------------------------------------------------------------------------------

    async def dialpad_page(self, request: Request, session: ConsoleSession) -> Response:
        return self._page(
            request, session, "dialpad.html", dial_statuses=DIAL_STATUSES,
            queue_results=QUEUE_RESULTS,
        )

    async def _json(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        if len(body) > MAX_JSON:
            raise ValueError("request too large")
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    async def dial(self, request: Request, session: ConsoleSession) -> Response:
        try:
            flow = str((await self._json(request)).get("flow", ""))
        except ValueError as problem:
            return JSONResponse({"error": str(problem)}, status_code=400)
        if self._flow(flow) is None:
            return JSONResponse({"error": f"no flow named {scrub(flow[:100])!r}"}, status_code=404)
        try:
            sim = await self.dialpad.start(flow)
        except DialpadFull as problem:
            return JSONResponse({"error": str(problem)}, status_code=429)
        log.info("console: simulated call %s to %s", sim.call_sid, flow)
        return JSONResponse(sim.view())

    async def dialpad_call(self, request: Request, session: ConsoleSession) -> Response:
        sim = self.dialpad.get(request.path_params["sid"])
        if sim is None:
            return JSONResponse({"error": "no live simulated call with that CallSid"},
                                status_code=404)
        try:
            since = max(0, int(request.query_params.get("since", "0")))
        except ValueError:
            since = 0
        if request.method == "GET":
            return JSONResponse(sim.view(since))
        try:
            data = await self._json(request)
            answer = _answer(data)
            since = int(data.get("since", since))
        except (ValueError, TypeError) as problem:
            return JSONResponse({"error": str(problem)}, status_code=400)
        try:
            if isinstance(answer, HangUp) and sim.question is None:
                await self.dialpad.hang_up(sim)
            else:
                await self.dialpad.answer(sim, answer)
        except NotAsked as problem:
            return JSONResponse({"error": str(problem), **sim.view(since)}, status_code=409)
        return JSONResponse(sim.view(since))


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the console's own: sign-in, sign-out), read once."""
    body = await request.body()  # Starlette keeps it: a second call reads the same bytes
    if len(body) > MAX_JSON:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=20))


STATUSES = ("queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer",
            "canceled")


def _answer(data: dict[str, Any]) -> Answer:
    """The caller's move, from the dialpad's JSON; ValueError names what is wrong."""
    action = data.get("action")
    if action == "press":
        digits = str(data.get("digits", ""))
        if not digits or len(digits) > 64 or any(c not in "0123456789*#" for c in digits):
            raise ValueError("digits: 0-9, * and # only")
        return Press(digits)
    if action == "say":
        text = " ".join(str(data.get("text", "")).split())[:500]
        if not text:
            raise ValueError("say what? type the caller's words")
        return Speak(text)
    if action == "timeout":
        return Timeout()
    if action == "hangup":
        return HangUp()
    if action == "dial":
        status = str(data.get("status", "completed"))
        if status not in DIAL_STATUSES:
            raise ValueError(f"dial status: one of {', '.join(DIAL_STATUSES)}")
        return DialOutcome(status=status, duration=30 if status == "completed" else 0)
    if action == "record":
        seconds = int(data.get("seconds", 5))
        if not 0 <= seconds <= 3600:
            raise ValueError("record seconds: 0 to 3600")
        return RecordOutcome(seconds=seconds, key="#")
    if action == "queue":
        result = str(data.get("result", "bridged"))
        if result not in QUEUE_RESULTS:
            raise ValueError(f"queue result: one of {', '.join(QUEUE_RESULTS)}")
        return QueueOutcome(result=result)
    raise ValueError("action: press, say, timeout, dial, record, queue or hangup")
