"""The Starlette app: Twilio's webhooks in, TwiML out.

Every webhook goes security -> store (locked by CallSid) -> runtime -> store (row + event)
-> TwiML. Whatever fails after the request proved to be Twilio's, the answer is still
valid TwiML with status 200, because Twilio plays a 500 to the caller as "an application
error has occurred".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ivrkit import nodes as n
from ivrkit import twiml
from ivrkit.call import Call
from ivrkit.config import Settings
from ivrkit.flow import Flow
from ivrkit.masking import mask_number, mask_params
from ivrkit.records import CallEvent, CallRecord, utcnow
from ivrkit.runtime import FlowRegistry, Runtime, TurnResult
from ivrkit.security import ProxyTrust, SignatureChecker, public_base_url, signed_url
from ivrkit.store import CallStore, create_store

log = logging.getLogger("ivrkit.app")

FORM_TYPE = "application/x-www-form-urlencoded"
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def parse_form(body: str) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` pairs, as parse_qsl(keep_blank_values=True).

    Twilio's values are mostly plain; unquoting only the ones that need it halves the cost
    of the stdlib parser on a typical 15-parameter webhook.
    """
    pairs = []
    for field in body.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        pairs.append((name, value))
    return pairs


def xml(content: str) -> Response:
    return Response(content, media_type="text/xml")


class Webhook:
    """A verified Twilio request: its params and the base URL callbacks must use."""

    __slots__ = ("params", "base_url", "query")

    def __init__(self, params: dict[str, str], base_url: str, query: dict[str, str]) -> None:
        self.params = params
        self.base_url = base_url
        self.query = query

    @property
    def call_sid(self) -> str:
        return self.params["CallSid"]


class IvrApp:
    """The endpoints and what they share; ``create_app`` wraps it in Starlette."""

    def __init__(
        self,
        flows: Sequence[type[Flow]],
        settings: Settings,
        store: CallStore,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.registry = FlowRegistry(list(flows))
        self.runtime = Runtime(self.registry, clock=clock)
        self.store = store
        self.proxies = ProxyTrust(settings.trusted_proxies)
        self.checker = SignatureChecker(settings.auth_token) if settings.auth_token else None

    # -- request parsing and security ----------------------------------------------------------

    async def webhook(self, request: Request, *, needs_call_sid: bool = True) -> Webhook:
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(raw_query)) if raw_query else {}
        if request.method == "POST":
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type != FORM_TYPE:
                self._refuse(
                    400, f"expected {FORM_TYPE}, got {content_type or 'no Content-Type'}", request
                )
            body = await self._read_body(request)
            try:
                pairs = parse_form(body.decode("utf-8"))
            except UnicodeDecodeError:
                self._refuse(400, "form body is not UTF-8", request)
        else:
            pairs = list(query.items())
        base_url = public_base_url(
            request, configured=self.settings.public_url, proxies=self.proxies
        )
        if self.checker is not None:
            signature = request.headers.get("x-twilio-signature", "")
            url = signed_url(request, base_url)
            signed_pairs = pairs if request.method == "POST" else []
            if not self.checker.valid(url, signed_pairs, signature):
                self._refuse(
                    403,
                    "X-Twilio-Signature missing or wrong for "
                    f"{url} (check TWILIO_AUTH_TOKEN and IVRKIT_PUBLIC_URL)",
                    request,
                )
        params = dict(pairs)
        if needs_call_sid and not params.get("CallSid"):
            self._refuse(400, "CallSid is missing: is this a Twilio voice webhook?", request)
        return Webhook(params, base_url, query)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            self._refuse(413, f"body of {declared} bytes is over the {limit} byte limit", request)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                self._refuse(413, f"body is over the {limit} byte limit", request)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _refuse(status: int, reason: str, request: Request) -> None:
        peer = request.client.host if request.client else "?"
        log.warning(
            "refused %s %s from %s: %d %s", request.method, request.url.path, peer, status, reason
        )
        raise HTTPException(status, reason)

    # -- endpoints -----------------------------------------------------------------------------

    async def incoming(self, request: Request) -> Response:
        """A new call to /voice/{flow}, or to /voice routed by the To number."""
        hook = await self.webhook(request)
        name = request.path_params.get("flow")
        if name is None:
            to = hook.params.get("To", "")
            flow = self.registry.for_number(to)
            if flow is None:
                log.warning("no flow answers %s; set number = ... on a flow", mask_number(to))
                return xml(twiml.apology("Sorry, this number is not in service.", None))
        else:
            flow = self._flow_or_404(name)
        return await self._start(flow, hook)

    async def action(self, request: Request) -> Response:
        """Gather / Dial / Record / Enqueue callbacks (and our own no-input redirects)."""
        flow = self._flow_or_404(request.path_params["flow"])
        hook = await self.webhook(request)
        state = hook.query.get("state")
        step_text = hook.query.get("step", "")
        if not state or not step_text.isdigit():
            self._refuse(400, "action URL needs state and step (was it built by ivrkit?)", request)
        step = int(step_text)
        no_input = hook.query.get("input") == "none"
        sid = hook.call_sid
        try:
            async with self.store.session(sid) as session:
                record = session.record
                if record is None:
                    log.warning("call %s: callback for a call this app never started", sid)
                    return xml(self._apology(flow))
                if step != record.step or state != record.state:
                    return self._replay(session, record, hook, step, state)
                try:
                    result = await self.runtime.resume(
                        record, hook.params, base_url=hook.base_url, no_input=no_input
                    )
                except Exception:
                    log.exception("call %s: flow %s failed in state %s", sid, flow.name, state)
                    answer = self._apology(self.registry.get(record.flow))
                    session.log(self._event(record, "error", hook, answer, state=state))
                    return xml(answer)
                record.status = _live_status(hook, record)
                record.updated_at = utcnow()
                session.save(
                    record,
                    self._event(record, "action", hook, result.twiml, state=state, result=result),
                )
                log.debug("call %s: %s", sid, "; ".join(result.fired))
                return xml(result.twiml)
        except Exception:
            log.exception("call %s: storage failed", sid)
            return xml(self._apology(flow))

    async def status(self, request: Request) -> Response:
        """Call status callback: marks the call ended with its final status and duration."""
        hook = await self.webhook(request)
        call_status = hook.params.get("CallStatus", "")
        duration = hook.params.get("CallDuration", "")

        def mark(record: CallRecord) -> None:
            record.status = call_status or record.status
            if call_status in FINAL_STATUSES:
                record.ended_at = utcnow()
                record.duration = int(duration) if duration.isdigit() else record.duration
                log.info(
                    "call %s ended: %s after %ss in %s.%s",
                    hook.call_sid,
                    call_status,
                    duration or "?",
                    record.flow,
                    record.state,
                )

        return await self._annotate(hook, "status", mark)

    async def recording(self, request: Request) -> Response:
        """Recording status callback: the final URL and duration land in call data."""
        flow = self._flow_or_404(request.path_params["flow"])
        hook = await self.webhook(request)
        node = flow.states().get(hook.query.get("state", ""))
        save_as = node.save_as if isinstance(node, n.Record) else "recording"

        def keep(record: CallRecord) -> None:
            saved = dict(record.data.get(save_as) or {})
            saved.update(
                {
                    "url": hook.params.get("RecordingUrl", saved.get("url", "")),
                    "sid": hook.params.get("RecordingSid", saved.get("sid", "")),
                    "status": hook.params.get("RecordingStatus", ""),
                    "duration": int(hook.params.get("RecordingDuration", "0") or 0),
                }
            )
            record.data[save_as] = saved

        return await self._annotate(hook, "recording", keep)

    async def _annotate(
        self, hook: Webhook, kind: str, change: Callable[[CallRecord], None]
    ) -> Response:
        """Apply a callback that informs (status, recording) without moving the call.

        Twilio ignores these answers, so a storage failure is a 503 it will log for us.
        """
        try:
            async with self.store.session(hook.call_sid) as session:
                record = session.record
                if record is None:
                    log.info("call %s: %s callback for an unknown call", hook.call_sid, kind)
                    return Response(status_code=204)
                change(record)
                record.updated_at = utcnow()
                session.save(record, self._event(record, kind, hook, ""))
        except Exception:
            log.exception("call %s: storage failed on %s callback", hook.call_sid, kind)
            return Response(status_code=503)
        return Response(status_code=204)

    async def hold(self, request: Request) -> Response:
        """Enqueue's waitUrl: hold music; Twilio fetches it again when it runs out."""
        flow = self._flow_or_404(request.path_params["flow"])
        hook = await self.webhook(request)
        node = flow.states().get(hook.query.get("state", ""))
        if not isinstance(node, n.Enqueue):
            return xml(
                twiml.hold_music(
                    n.Enqueue("hold"), call=self._call(hook, flow), voice=twiml.Voice()
                )
            )
        return xml(
            twiml.hold_music(
                node, call=self._call(hook, flow), voice=twiml.Voice(flow.voice, flow.language)
            )
        )

    async def healthz(self, request: Request) -> Response:
        try:
            await self.store.ping()
        except Exception as error:
            log.error("health check: database unreachable: %s", type(error).__name__)
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse(
            {"status": "ok", "database": "ok", "flows": sorted(self.registry.by_name)}
        )

    # -- helpers -------------------------------------------------------------------------------

    async def _start(self, flow: type[Flow], hook: Webhook) -> Response:
        sid = hook.call_sid
        try:
            async with self.store.session(sid, new_call=True) as session:
                if session.record is not None:
                    # Twilio retried the first webhook: same answer, nothing fired again.
                    return self._replay(session, session.record, hook, 0, "")
                record = CallRecord(
                    call_sid=sid,
                    flow=flow.name,
                    flow_version=flow.version(),
                    state=flow.initial_state(),
                    caller=mask_number(hook.params.get("From", "")),
                    status=hook.params.get("CallStatus", "ringing"),
                )
                try:
                    result = await self.runtime.begin(record, hook.params, hook.base_url)
                except Exception:
                    log.exception("call %s: flow %s failed at its start", sid, flow.name)
                    answer = self._apology(flow)
                    session.log(self._event(record, "error", hook, answer, state="(start)"))
                    return xml(answer)
                session.save(
                    record,
                    self._event(
                        record, "start", hook, result.twiml, state="(start)", result=result
                    ),
                )
                log.info(
                    "call %s from %s started %s (version %s)",
                    sid,
                    record.caller,
                    flow.name,
                    flow.version(),
                )
                return xml(result.twiml)
        except Exception:
            log.exception("call %s: storage failed at call start", sid)
            return xml(self._apology(flow))

    def _replay(
        self, session: Any, record: CallRecord, hook: Webhook, step: int, state: str
    ) -> Response:
        """A webhook already handled (a retry) or out of date: repeat the last answer."""
        if step == record.step - 1 or step == 0:
            log.info("call %s: step %d handled already; repeating its answer", hook.call_sid, step)
        else:
            log.warning(
                "call %s: out-of-date callback (state %s step %d; call is at %s step %d)",
                hook.call_sid,
                state,
                step,
                record.state,
                record.step,
            )
        session.log(self._event(record, "replay", hook, record.last_twiml, state=state))
        return xml(record.last_twiml or twiml.empty())

    def _apology(self, flow: type[Flow]) -> str:
        return twiml.apology(flow.apology, flow.fallback_number)

    def _flow_or_404(self, name: str) -> type[Flow]:
        flow = self.registry.by_name.get(name)
        if flow is None:
            raise HTTPException(
                404, f"no flow named {name!r}; loaded: {', '.join(sorted(self.registry.by_name))}"
            )
        return flow

    def _call(self, hook: Webhook, flow: type[Flow]) -> Call:
        return Call.from_params(
            hook.params, now=self.runtime.clock(), flow=flow.name, state="", data={}
        )

    @staticmethod
    def _event(
        record: CallRecord,
        kind: str,
        hook: Webhook,
        answer: str,
        *,
        state: str = "",
        result: TurnResult | None = None,
    ) -> CallEvent:
        return CallEvent(
            call_sid=record.call_sid,
            step=record.step,
            kind=kind,
            state=state or record.state,
            fired="; ".join(result.fired) if result else "",
            params=mask_params(hook.params),
            twiml=answer,
        )


def _live_status(hook: Webhook, record: CallRecord) -> str:
    return hook.params.get("CallStatus") or record.status


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)


def create_app(
    flows: Sequence[type[Flow]],
    *,
    settings: Settings | None = None,
    store: CallStore | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Starlette:
    """The ASGI app serving ``flows``; tables are created on start-up.

    ``clock`` replaces the wall clock that flows see as ``call.now`` (tests, simulations).
    """
    settings = settings or Settings.from_env()
    settings.require_token()
    store = store or create_store(settings.database_url)
    ivr = IvrApp(flows, settings, store, clock or (lambda: datetime.now(UTC)))
    if settings.insecure_dev:
        log.warning(
            "X-Twilio-Signature validation is OFF (insecure dev mode): anyone who can "
            "reach this server can drive calls. Never run like this in production."
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    routes = [
        Route("/healthz", ivr.healthz, methods=["GET"]),
        Route("/voice", ivr.incoming, methods=["POST", "GET"]),
        Route("/voice/{flow}", ivr.incoming, methods=["POST", "GET"]),
        Route("/voice/{flow}/action", ivr.action, methods=["POST"]),
        Route("/voice/{flow}/status", ivr.status, methods=["POST"]),
        Route("/voice/{flow}/recording", ivr.recording, methods=["POST"]),
        Route("/voice/{flow}/hold", ivr.hold, methods=["POST", "GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )
    app.state.ivr = ivr
    return app
