"""The simulator plays Twilio's REST Calls API (reference sect. 12-14).

``SimulatedApi`` answers ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (create),
``GET .../Calls/{Sid}.json`` (fetch) and ``POST .../Calls/{Sid}.json`` (update a live call) the
way Twilio does: HTTP Basic auth with the account SID and auth token (or an API key SID and
secret), form fields with repeated ``StatusCallbackEvent`` keys, 201 and a JSON call resource,
or Twilio's JSON error shape and code. Each created call is then played against its ``Url`` by
``simulator.dialout`` as one task on the API's event loop, following the ``CalleeModel``.

The request handling itself (``handle``) is synchronous and never waits: it validates, records
the call and schedules its task. That is what lets the in-process twilio client
(``simulator.twilio_client``) call it directly from blocking code running on the event loop
without deadlocking it, and keeps a created call at a few tens of microseconds.

Serve it as an ASGI app (``api.asgi``, ``ivrkit-sim api``) or in-process with
``twilio_client(api)``. It never imports ivrkit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from simulator.callees import CalleeModel
from simulator.dialout import SimCall, Update, rfc2822, run_outbound
from simulator.engine import TwimlError, parse_twiml
from simulator.model import new_sid
from simulator.transport import Transport

__all__ = ["ApiError", "SimulatedApi"]

log = logging.getLogger("simulator.api")

API_VERSION = "2010-04-01"
_CALLS = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Calls(?:/([^/]+))?\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SEND_DIGITS = re.compile(r"^[0-9A-D#*wW]{1,32}$")
_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
_METHODS = frozenset({"GET", "POST"})
_AMD_MODES = frozenset({"Enable", "DetectMessageEnd"})
TWIML_LIMIT = 4000
MAX_BODY = 1024 * 1024  # a create is a few hundred bytes; refuse floods before parsing them
_SUBRESOURCES = tuple(
    (name, name.title().replace("_", "") + ".json")
    for name in ("notifications", "recordings", "payments", "events", "siprec", "streams",
                 "user_defined_message_subscriptions", "user_defined_messages")
)


class ApiError(Exception):
    """A request Twilio would refuse: HTTP ``status`` and Twilio error ``code``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


class SimulatedApi:
    """Twilio's Calls API for one account, with a simulated far end.

    ``app``: an ASGI app that call URLs on ``http://testserver`` reach in-process (else URLs
    are fetched over HTTP); ``transport`` instead shares one the caller owns. ``callees``
    decides each attempt's outcome. ``cps``: calls started per second, as Twilio's account
    limit (``None`` = no limit); later calls wait as ``queued`` with a ``queue_time``.
    ``request_rate``: API requests per second before ``429``/20429 (``None`` = no limit).
    ``speed``: simulated seconds per real second for ringing and the flow (0 = no waiting).
    ``from_numbers``: numbers the account may call from (others: 21210); ``None`` = any.
    ``record_events``: keep each call's events and callbacks on its ``SimCall`` (turn off for
    very long runs; statuses are kept either way).
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_keys: Mapping[str, str] | None = None,
        callees: CalleeModel | None = None,
        app: Any = None,
        transport: Transport | None = None,
        lifespan: bool = True,
        cps: float | None = None,
        request_rate: float | None = None,
        speed: float = 0.0,
        from_numbers: Iterable[str] | None = None,
        max_requests: int = 100,
        record_events: bool = True,
    ) -> None:
        if not account_sid.startswith("AC"):
            raise ValueError("account_sid must start with AC")
        if not auth_token:
            raise ValueError("auth_token is required: Twilio signs every webhook with it")
        if cps is not None and cps <= 0:
            raise ValueError("cps must be positive (or None for no limit)")
        self.account_sid = account_sid
        self._token = auth_token
        self.api_keys = dict(api_keys or {})
        self.callees = callees or CalleeModel()
        self.app = app
        self.lifespan = lifespan
        self.cps = cps
        self.request_rate = request_rate
        self.speed = speed
        self.from_numbers = frozenset(from_numbers) if from_numbers is not None else None
        self.max_requests = max_requests
        self.record_events = record_events
        self.calls: dict[str, SimCall] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._transport = transport
        self._owns_transport = transport is None
        self._starting: asyncio.Future[None] | None = None
        self._next_slot = 0.0
        self._attempts: dict[str, int] = {}
        self._bucket = (0.0, 0.0)  # (tokens, at) for request_rate
        self._accepted: dict[str, str] = {}  # Authorization headers already checked
        self._active: set[asyncio.Task[None]] = set()
        self.live = 0  # calls created and not yet ended (queued ones included)
        self.peak_live = 0  # the most at once: what a campaign's concurrency cap bounds
        self.listeners: list[Callable[[SimCall], Any]] = []

    # --- life cycle -----------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.AbstractEventLoop:
        """Tie the API to an event loop (the running one by default): its calls run there."""
        loop = loop or asyncio.get_running_loop()
        if self.loop is not None and self.loop is not loop and not self.loop.is_closed():
            raise RuntimeError("this SimulatedApi already runs on another event loop")
        self.loop = loop
        return loop

    async def start(self) -> None:
        """Bind to the running loop and start the webhook transport (the app's lifespan)."""
        self.bind()
        await self._ensure_transport()

    async def _ensure_transport(self) -> Transport:
        """The webhook transport, its app's lifespan started: every call waits for the one
        start-up (none may reach the app before it); a failed start is retried by the next
        call."""
        if self._transport is None:
            self._transport = Transport(app=self.app, auth_token=self._token,
                                        lifespan=self.lifespan)
        if self._owns_transport:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._transport.start())
            starting = self._starting
            try:
                # Shielded: a call cancelled while waiting must not cancel the shared start.
                await asyncio.shield(starting)
            except Exception:
                if self._starting is starting:
                    self._starting = None
                raise
        return self._transport

    async def aclose(self) -> None:
        """Cancel calls still running and close what this API opened."""
        tasks = [task for task in self._active if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        if self._owns_transport and self._transport is not None:
            transport, self._transport = self._transport, None
            await transport.aclose()

    async def __aenter__(self) -> SimulatedApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- waiting for calls ----------------------------------------------------------------------

    async def wait(self, sid: str, timeout: float | None = 30) -> SimCall:
        """The call once it has ended (all its callbacks sent)."""
        call = self.calls[sid]
        async with asyncio.timeout(timeout):
            await call.done.wait()
        return call

    async def wait_idle(self, timeout: float | None = 60) -> None:
        """Until no call is queued or running."""
        async with asyncio.timeout(timeout):
            while self._active:
                await asyncio.gather(*list(self._active), return_exceptions=True)

    # --- requests -------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, form: list[tuple[str, str]], authorization: str | None,
    ) -> tuple[int, dict[str, Any]]:
        """One API request: ``(HTTP status, JSON body)``. Never waits; must run on the loop
        thread once bound (``simulator.twilio_client`` takes care of that)."""
        try:
            return self._handle(method.upper(), path, form, authorization)
        except ApiError as error:
            log.info("twilio api: %s %s -> %s %s", method, _shown_path(path), error.status,
                     error.code)
            return error.status, error.body()

    def _handle(
        self, method: str, path: str, form: list[tuple[str, str]], authorization: str | None,
    ) -> tuple[int, dict[str, Any]]:
        match = _CALLS.match(path)
        if match is None:
            raise ApiError(404, 20404, f"The requested resource {_shown_path(path)} was not found")
        self._authenticate(match.group(1), authorization)
        self._rate_limit()
        sid = match.group(2)
        if sid is None:
            if method != "POST":
                raise ApiError(405, 20004, "Method not allowed: list calls is not simulated")
            return 201, self._create(_collect(form))
        call = self.calls.get(sid)
        if call is None or call.account_sid != match.group(1):
            raise ApiError(404, 20404, f"The requested resource {_shown_path(path)} was not found")
        if method == "GET":
            return 200, self.resource(call)
        if method == "POST":
            return 200, self._update(call, _collect(form))
        raise ApiError(405, 20004, f"Method {method} not allowed")

    def _authenticate(self, account_sid: str, authorization: str | None) -> None:
        if authorization is not None and self._accepted.get(authorization) == account_sid:
            return  # a client sends the same header every time: decode and compare it once
        user, password = _basic(authorization)
        if user == self.account_sid:
            ok = hmac.compare_digest(password.encode(), self._token.encode())
        elif user in self.api_keys:
            ok = hmac.compare_digest(password.encode(), self.api_keys[user].encode())
        else:
            ok = False
        if not ok or account_sid != self.account_sid:
            raise ApiError(401, 20003, "Authentication Error - invalid username")
        if authorization is not None:
            if len(self._accepted) >= 64:
                self._accepted.clear()
            self._accepted[authorization] = account_sid

    def _rate_limit(self) -> None:
        if self.request_rate is None:
            return
        now = time.monotonic()
        tokens, at = self._bucket
        tokens = min(self.request_rate, tokens + (now - at) * self.request_rate)
        if tokens < 1:
            self._bucket = (tokens, now)
            raise ApiError(429, 20429, "Too Many Requests")
        self._bucket = (tokens - 1, now)

    def _create(self, form: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str:
            values = form.get(name)
            return values[-1].strip() if values else ""

        to, from_ = one("To"), one("From")
        if not to:
            raise ApiError(400, 21201, "No 'To' number is specified")
        if not (_E164.match(to) or to.startswith(("client:", "sip:"))):
            raise ApiError(400, 21211, f"Invalid 'To' Phone Number: {_mask(to)}")
        if not from_:
            raise ApiError(400, 21213, "No 'From' number is specified")
        if not (_E164.match(from_) or from_.startswith("client:")):
            raise ApiError(400, 21212, f"Invalid 'From' Phone Number: {_mask(from_)}")
        if self.from_numbers is not None and from_ not in self.from_numbers:
            raise ApiError(400, 21210, f"The source phone number provided, {_mask(from_)}, is "
                           "not yet verified for your account")
        url, twiml = one("Url"), one("Twiml")
        if one("ApplicationSid") and not url and not twiml:
            raise ApiError(400, 21205, "ApplicationSid is not simulated: give Url or Twiml")
        if not url and not twiml:
            raise ApiError(400, 21200, "Url parameter is required (or Twiml)")
        if url:
            _check_url(url, "Url")
        elif len(twiml) > TWIML_LIMIT:
            raise ApiError(400, 21200, f"Twiml is {len(twiml)} characters; at most {TWIML_LIMIT}")
        else:
            _check_twiml(twiml)
        for name in ("FallbackUrl", "StatusCallback", "AsyncAmdStatusCallback"):
            if one(name):
                _check_url(one(name), name)
        for name in ("Method", "FallbackMethod", "StatusCallbackMethod",
                     "AsyncAmdStatusCallbackMethod"):
            if one(name) and one(name).upper() not in _METHODS:
                raise ApiError(400, 21200, f"{name} must be GET or POST, not {one(name)!r}")
        events = [event.strip() for value in form.get("StatusCallbackEvent", [])
                  for event in value.split() if event.strip()]
        unknown = sorted(set(events) - _EVENTS)
        if unknown:
            raise ApiError(400, 21200, f"StatusCallbackEvent {', '.join(unknown)} is not one of "
                           "initiated, ringing, answered, completed")
        form["StatusCallbackEvent"] = events
        mode = one("MachineDetection")
        if mode and mode not in _AMD_MODES:
            raise ApiError(400, 21234, f"MachineDetection must be Enable or DetectMessageEnd, "
                           f"not {mode!r}")
        for name in ("MachineDetectionTimeout", "MachineDetectionSpeechThreshold",
                     "MachineDetectionSpeechEndThreshold", "MachineDetectionSilenceTimeout"):
            if one(name) and not one(name).isdigit():
                raise ApiError(400, 21234, f"{name} must be a whole number, not {one(name)!r}")
        timeout = one("Timeout")
        if timeout and (not timeout.isdigit() or not 1 <= int(timeout) <= 600):
            raise ApiError(400, 21208, f"Timeout must be a number of seconds 1-600, "
                           f"not {timeout!r}")
        digits = one("SendDigits")
        if digits and not _SEND_DIGITS.match(digits):
            raise ApiError(400, 21206, "SendDigits may hold at most 32 of 0-9 A-D # * w W")
        return self.resource(self._place(to, from_, form))

    def _place(self, to: str, from_: str, form: dict[str, list[str]]) -> SimCall:
        loop = self._loop()
        now = datetime.now(UTC)
        delay = 0.0
        if self.cps is not None:
            clock = time.monotonic()
            slot = max(clock, self._next_slot)
            self._next_slot = slot + 1 / self.cps
            delay = slot - clock
        attempt = self._attempts.get(to, 0)
        self._attempts[to] = attempt + 1
        call = SimCall(
            sid=new_sid("CA"), account_sid=self.account_sid, to=to, from_=from_, form=form,
            created=now, updated=now, queue_time_ms=int(delay * 1000), attempt=attempt,
            created_at=time.monotonic(),
        )
        self.calls[call.sid] = call
        task = loop.create_task(self._run(call, delay))
        self._active.add(task)
        self.live += 1
        self.peak_live = max(self.peak_live, self.live)
        task.add_done_callback(self._task_done)
        call.task = task
        return call

    async def _run(self, call: SimCall, delay: float) -> None:
        try:
            transport = await self._ensure_transport()
        except Exception as exc:  # e.g. the app's lifespan start-up failed: no call can run
            call.error = f"{type(exc).__name__}: {exc}"
            call.set_status("failed")
            call.end_time = call.updated
            call.done.set()
            self._ended(call)
            return
        await run_outbound(
            call, session=transport.session(),
            callee=functools.partial(self.callees.callee, call.to, call.attempt),
            start_delay=delay, speed=self.speed, max_requests=self.max_requests,
            on_end=self._ended, record=self.record_events,
        )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self.live -= 1

    def _ended(self, call: SimCall) -> None:
        for listener in self.listeners:
            listener(call)

    def _update(self, call: SimCall, form: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str:
            values = form.get(name)
            return values[-1].strip() if values else ""

        if call.done.is_set() or call.status not in ("queued", "initiated", "ringing",
                                                     "in-progress"):
            raise ApiError(400, 21220, "Call is not in-progress. Cannot redirect.")
        status, url, twiml = one("Status"), one("Url"), one("Twiml")
        if status:
            if status not in ("completed", "canceled"):
                raise ApiError(400, 21200, f"Status must be completed or canceled, not {status!r}")
            if status == "canceled" and call.status == "in-progress":
                raise ApiError(400, 21220, "Call is in-progress: use Status=completed to end it")
            call.pending = Update(status=status)
        elif url:
            _check_url(url, "Url")
            method = (one("Method") or "POST").upper()
            if method not in _METHODS:
                raise ApiError(400, 21200, f"Method must be GET or POST, not {method!r}")
            call.pending = Update(url=url, method=method)
        elif twiml:
            if len(twiml) > TWIML_LIMIT:
                raise ApiError(400, 21200, f"Twiml is {len(twiml)} characters; at most "
                               f"{TWIML_LIMIT}")
            _check_twiml(twiml)
            call.pending = Update(twiml=twiml)
        else:
            raise ApiError(400, 21205, "Give Url, Twiml or Status to update a call")
        call.updated = datetime.now(UTC)
        return self.resource(call)

    def _loop(self) -> asyncio.AbstractEventLoop:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is None or self.loop.is_closed():
            if running is None:
                raise RuntimeError("SimulatedApi has no event loop: await api.start() on the loop "
                                   "that should run the calls, or make the first request there")
            self.loop = running
        elif running is not None and running is not self.loop:
            raise RuntimeError("SimulatedApi.handle() called from another event loop's thread; "
                               "use simulator.twilio_client, which hands requests to its loop")
        return self.loop

    def resource(self, call: SimCall) -> dict[str, Any]:
        """The call as Twilio's JSON call resource."""
        uri = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}"
        return {
            "sid": call.sid,
            "account_sid": call.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "date_created": rfc2822(call.created),
            "date_updated": rfc2822(call.updated),
            "start_time": rfc2822(call.start_time),
            "end_time": rfc2822(call.end_time) if call.done.is_set() else None,
            "duration": str(call.duration) if call.duration is not None else None,
            "price": None,
            "price_unit": "USD",
            "answered_by": call.answered_by,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": str(call.queue_time_ms),
            "trunk_sid": None,
            "annotation": None,
            "uri": f"{uri}.json",
            "subresource_uris": {name: f"{uri}/{tail}" for name, tail in _SUBRESOURCES},
        }

    # --- ASGI -------------------------------------------------------------------------------------

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The API as an ASGI app (its lifespan binds the loop and closes the calls)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _send_json(send, 413, ApiError(413, 20001, "Request body too large").body())
                return
            if not message.get("more_body"):
                break
        if self.loop is None:
            self.bind()
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        if scope.get("query_string"):
            form += parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        status, payload = self.handle(scope["method"], scope["path"], form, authorization)
        await _send_json(send, status, payload)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    content = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(content)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="Twilio API"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _collect(form: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    collected: dict[str, list[str]] = {}
    for name, value in form:
        collected.setdefault(name, []).append(value)
    return collected


def _basic(authorization: str | None) -> tuple[str, str]:
    if not authorization or not authorization[:6].lower() == "basic ":
        return "", ""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def _check_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(400, 21205, f"{name} is not a valid URL: {url}")


def _check_twiml(twiml: str) -> None:
    try:
        parse_twiml(twiml.encode())
    except TwimlError as error:
        raise ApiError(400, 12100, f"Twiml is not valid: {error}") from None


def _mask(number: str) -> str:
    """Phone numbers in messages and logs show only their last 4 digits (design rule)."""
    return number if len(number) <= 4 else "*" * (len(number) - 4) + number[-4:]


def _shown_path(path: str) -> str:
    return re.sub(r"AC[0-9a-fA-F]{32}", "AC...", path)
