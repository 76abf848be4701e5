"""The Starlette app: Twilio's webhooks in, TwiML out.

Every webhook goes security -> store (locked by CallSid) -> runtime -> store (row + event)
-> TwiML. Whatever fails after the request proved to be Twilio's, the answer is still
valid TwiML with status 200, because Twilio plays a 500 to the caller as "an application
error has occurred".
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from ivrkit import logs, observers, outbound, outcome, twiml
from ivrkit import nodes as n
from ivrkit.call import Call
from ivrkit.config import Settings
from ivrkit.console import create_console
from ivrkit.deadline import DeadlineWatch, Expired
from ivrkit.fields import shown
from ivrkit.flow import DEFAULT_APOLOGY, Flow
from ivrkit.logthrottle import LogThrottle
from ivrkit.masking import mask_number, mask_params
from ivrkit.pay import Pay
from ivrkit.records import CallEvent, CallRecord, utcnow
from ivrkit.relay.endpoint import RelayHub
from ivrkit.rules import relative_path
from ivrkit.runtime import FlowRegistry, Runtime, TurnResult
from ivrkit.security import ProxyTrust, SignatureChecker
from ivrkit.sensitive import mask_input
from ivrkit.simulated_time import following_simulated_time, with_simulated_time
from ivrkit.store import (
    CallDataError,
    CallStore,
    CallTaken,
    StatusUpdate,
    StoreUnwritableError,
    create_store,
)
from ivrkit.store.contract import call_of_flow
from ivrkit.webhook import ClientGone, Refused, Webhook, WebhookReader, peer

log = logging.getLogger("ivrkit.app")

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
STORAGE_UNAVAILABLE = "storage unavailable\n"


class Answer(NamedTuple):
    """What an endpoint answers; TwiML unless it says otherwise."""

    body: str
    status: int = 200
    media_type: str = "text/xml; charset=utf-8"


NO_CONTENT = Answer("", 204, "text/plain; charset=utf-8")
Handler = Callable[[Scope, Receive], Awaitable[Answer]]


class Endpoint:
    """One webhook endpoint as a plain ASGI app.

    Starlette's router reaches it, and so does ``IvrStarlette``'s direct dispatch, which
    skips the routing and Request objects a webhook does not need. Whatever happens, the
    answer is sent here: a refusal as a 4xx with its reason, a bug as the apology TwiML
    (Twilio would play a 500 as "an application error has occurred").
    """

    def __init__(
        self,
        handler: Handler,
        methods: frozenset[str],
        *,
        twiml_answer: bool,
        throttle: LogThrottle | None = None,
        kind: str = "",
    ) -> None:
        self.handler = handler
        self.methods = methods
        self.twiml_answer = twiml_answer
        self.throttle = throttle or LogThrottle(log)
        self.kind = kind
        """incoming, action, status, recording, hold, pay-status or amd: the access line's and
        metrics' label."""
        self.metrics: Any = None
        """An ``ivrkit.metrics.Metrics`` when metrics are on."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A note of what became of the webhook, for its access line and metrics, written
        # after the answer is sent.
        note = outcome.Note(scope.get("path_params", {}).get("flow", ""), self.kind)
        token = outcome.open_note(note)
        started = time.perf_counter()
        try:
            status = await self._answer(scope, receive, send)
        finally:
            outcome.close_note(token)
        if status is None:
            return
        elapsed = time.perf_counter() - started
        logs.access_line(note, scope["method"], _printable(scope["path"]), status, elapsed)
        if self.metrics is not None:
            self.metrics.webhook(note, elapsed)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        try:
            answer = await self.handler(scope, receive)
        except Refused as refusal:
            outcome.mark("refused", str(refusal.status))
            self.throttle.log(
                logging.WARNING,
                ("refused", refusal.status, refusal.kind),
                "refused %s %s from %s: %d %s%s",
                scope["method"],
                _printable(scope["path"]),
                peer(scope) or "?",
                refusal.status,
                refusal.reason,
                f" ({refusal.detail})" if refusal.detail else "",
            )
            answer = Answer(f"{refusal.reason}\n", refusal.status, "text/plain; charset=utf-8")
        except ClientGone:
            return None
        except Exception as error:
            outcome.mark("fallback" if self.twiml_answer else "unavailable", "exception")
            self.throttle.failure(
                "endpoint", error, "%s %s failed", scope["method"], _printable(scope["path"])
            )
            answer = (
                Answer(twiml.apology(DEFAULT_APOLOGY, None))
                if self.twiml_answer
                else Answer("", 500, "text/plain; charset=utf-8")
            )
        body = answer.body.encode()
        headers = [(b"content-length", str(len(body)).encode())] if answer.status != 204 else []
        if body:
            headers.append((b"content-type", answer.media_type.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return answer.status


class IvrApp:
    """The endpoints and what they share; ``create_app`` wraps it in Starlette."""

    def __init__(
        self,
        flows: Sequence[type[Flow]],
        settings: Settings,
        store: CallStore,
        clock: Callable[[], datetime],
        twilio_client: Any = None,
    ) -> None:
        self.settings = settings
        self.registry = FlowRegistry(list(flows))
        self.runtime = Runtime(self.registry, clock=clock)
        self.store = store
        self.deadline = settings.webhook_deadline
        self.deadlines = DeadlineWatch(settings.webhook_deadline)
        # Storage failures and refusals come in floods during an outage or an attack.
        self.throttle = LogThrottle(log)
        self.reader = WebhookReader(
            checker=SignatureChecker(settings.auth_token) if settings.auth_token else None,
            proxies=ProxyTrust(settings.trusted_proxies),
            public_url=settings.public_url,
            max_body_bytes=settings.max_body_bytes,
        )
        post, post_or_get = frozenset({"POST"}), frozenset({"POST", "GET"})
        throttle = self.throttle
        self.endpoints: dict[str, Endpoint] = {
            "": Endpoint(
                self.incoming, post_or_get, twiml_answer=True, throttle=throttle, kind="incoming"
            ),
            "action": Endpoint(
                self.action, post, twiml_answer=True, throttle=throttle, kind="action"
            ),
            "status": Endpoint(
                self.status, post, twiml_answer=False, throttle=throttle, kind="status"
            ),
            "recording": Endpoint(
                self.recording, post, twiml_answer=False, throttle=throttle, kind="recording"
            ),
            "hold": Endpoint(
                self.hold, post_or_get, twiml_answer=True, throttle=throttle, kind="hold"
            ),
            "pay-status": Endpoint(
                self.pay_status, post, twiml_answer=False, throttle=throttle, kind="pay-status"
            ),
        }
        self.relay = RelayHub(self)
        """ConversationRelay sessions of Agent states (a WebSocket route)."""
        # Outbound calls: the AsyncAmd verdict, which may move a call to its machine state.
        self.amd = outbound.AmdCallbacks(self, twilio_client)
        self.endpoints["amd"] = Endpoint(
            self.amd.endpoint, post, twiml_answer=False, throttle=throttle, kind="amd"
        )

    def match(self, path: str, method: str) -> tuple[Endpoint, dict[str, str]] | None:
        """The endpoint for /voice, /voice/{flow} or /voice/{flow}/{endpoint}, if any."""
        parts = path.split("/")
        if len(parts) < 2 or parts[1] != "voice" or len(parts) > 4 or "" in parts[2:]:
            return None
        endpoint = self.endpoints.get(parts[3] if len(parts) == 4 else "")
        if endpoint is None or method not in endpoint.methods:
            return None
        return endpoint, ({"flow": parts[2]} if len(parts) > 2 else {})

    # -- endpoints -----------------------------------------------------------------------------

    async def incoming(self, scope: Scope, receive: Receive) -> Answer:
        """A new call to /voice/{flow}, or to /voice routed by the To number."""
        hook = await self.reader.read(scope, receive)
        name = scope["path_params"].get("flow")
        if name is None:
            to = hook.params.get("To", "")
            flow = self.registry.for_number(to)
            if flow is None:
                log.warning("no flow answers %s; set number = ... on a flow", mask_number(to))
                outcome.mark("fallback", "unrouted")
                return Answer(twiml.apology("Sorry, this number is not in service.", None))
        else:
            flow = self._flow_or_404(name)
        note = outcome.current()
        if note is not None:  # routed by the number called: the URL named no flow
            note.flow = flow.name
        return await self._in_time(self._start(flow, hook), hook, "call webhook", flow)

    async def action(self, scope: Scope, receive: Receive) -> Answer:
        """Gather / Dial / Record / Enqueue callbacks (and our own no-input redirects)."""
        hook = await self.reader.read(scope, receive)
        flow = self._flow_or_404(scope["path_params"]["flow"])
        state = hook.query.get("state")
        step_text = hook.query.get("step")
        if not state or step_text is None:  # their shape was checked with the other fields
            raise Refused(400, "action URL needs state and step (was it built by ivrkit?)")
        if not hook.params.get("Result") and isinstance(flow.states().get(state), Pay):
            raise Refused(400, "a <Pay> action without Result: is this Twilio's <Pay>?")
        return await self._in_time(
            self._act(flow, hook, state, int(step_text)), hook, "action webhook", flow
        )

    async def _act(self, flow: type[Flow], hook: Webhook, state: str, step: int) -> Answer:
        no_input = hook.query.get("input") == "none"
        sid = hook.call_sid
        record: CallRecord | None = None
        try:
            async with self.store.session(sid) as session:
                record = session.record
                if record is None:
                    log.warning("call %s: callback for a call this app never started", sid)
                    outcome.mark("fallback", "unknown_call")
                    return Answer(self._apology(flow))
                if step != record.step or state != record.state:
                    return self._replay(session, record, hook, step, state)
                try:
                    result = await self.runtime.resume(
                        record, hook.params, base_url=hook.base_url, no_input=no_input
                    )
                except Exception:
                    log.exception("call %s: flow %s failed in state %s", sid, flow.name, state)
                    outcome.mark("fallback", "flow_error")
                    answer = self._apology(self.registry.get(record.flow))
                    session.log(self._event(record, "error", hook, answer, state=state))
                    return Answer(answer)
                record.status = _live_status(hook, record)
                record.updated_at = utcnow()
                session.save(
                    record,
                    self._event(
                        record,
                        "action",
                        hook,
                        result.twiml,
                        state=state,
                        result=result,
                        at=record.updated_at,
                    ),
                )
                log.debug("call %s: %s", sid, "; ".join(result.fired))
                return Answer(result.twiml)
        except CallDataError as error:
            outcome.mark("fallback", "call_data")
            self._data_mistake(sid, error, record)
            return Answer(self._apology(flow))
        except Exception as error:
            outcome.mark("fallback", "storage")
            self.throttle.failure("storage", error, "call %s: storage failed", sid)
            return Answer(self._apology(flow))

    async def status(self, scope: Scope, receive: Receive) -> Answer:
        """Call status callback: marks the call ended with its final status and duration.

        It is applied only to a call of the flow in its URL (or one that flow handed to a
        sub-flow): a callback for another flow's call is refused, not applied.
        """
        hook = await self.reader.read(scope, receive)
        flow = self._flow_or_404(scope["path_params"]["flow"])
        call_status = hook.params.get("CallStatus", "")
        duration = hook.params.get("CallDuration", "")  # ASCII digits when present
        update = StatusUpdate(
            call_sid=hook.call_sid,
            status=call_status,
            final=call_status in FINAL_STATUSES,
            duration=int(duration) if duration else None,
            at=utcnow(),
            params=mask_params(hook.params),
            flow=flow.name,
        )
        answered_by = hook.params.get("AnsweredBy", "")
        sid = hook.call_sid

        async def apply() -> Answer:
            if hook.query.get(outbound.PLACED_MARK):
                # A call ivrkit placed: Twilio may report busy or no-answer before
                # place_call has stored the row, so wait for it as a first webhook does.
                await outbound.wait_for_row(self.store, sid)
            answer = await self._apply_status(update)
            if answer is NO_CONTENT and answered_by in outbound.ANSWERED_BY:
                # An outbound call's status says who answered (AMD): kept in call.data.
                try:
                    await outbound.keep_answered_by(self.store, hook.call_sid, answered_by)
                except Exception as error:
                    self.throttle.failure(
                        "storage", error, "call %s: storage failed on status callback", sid
                    )
                    return Answer(STORAGE_UNAVAILABLE, 503, "text/plain; charset=utf-8")
            return answer

        return await self._in_time(apply(), hook, "status callback", None)

    async def _apply_status(self, update: StatusUpdate) -> Answer:
        sid, call_status, duration = update.call_sid, update.status, update.duration
        try:
            where = await self.store.record_status(update)
            other = None if where is not None else await self.store.load(sid)
        except Exception as error:
            outcome.mark("unavailable", "storage")
            self.throttle.failure(
                "storage", error, "call %s: storage failed on status callback", sid
            )
            return Answer(STORAGE_UNAVAILABLE, 503, "text/plain; charset=utf-8")
        if other is not None and not call_of_flow(other, update.flow):
            raise Refused(
                404,
                f"call {sid} is not a call of flow {update.flow!r}: status not applied "
                "(is this number's status callback URL the flow that answers it?)",
                kind="status callback for another flow's call",
                detail=f"the call is in flow {other.flow!r}",
            )
        if where is None:
            log.info("call %s: status callback for an unknown call", sid)
        elif update.final:
            outcome.ended(call_status)
            log.info(
                "call %s ended: %s after %ss in %s.%s",
                sid,
                call_status,
                "?" if duration is None else duration,
                *where,
            )
        return NO_CONTENT

    async def recording(self, scope: Scope, receive: Receive) -> Answer:
        """Recording status callback: the final URL and duration land in call data."""
        hook = await self.reader.read(scope, receive)
        flow = self._flow_or_404(scope["path_params"]["flow"])
        node = flow.states().get(hook.query.get("state", ""))
        save_as = node.save_as if isinstance(node, n.Record) else "recording"

        def keep(record: CallRecord) -> None:
            saved = dict(record.data.get(save_as) or {})
            saved.update(
                {
                    "url": hook.params.get("RecordingUrl", saved.get("url", "")),
                    "sid": hook.params.get("RecordingSid", saved.get("sid", "")),
                    "status": hook.params.get("RecordingStatus", ""),
                    "duration": int(hook.params.get("RecordingDuration") or 0),
                }
            )
            record.data[save_as] = saved

        return await self._in_time(
            self._annotate(hook, "recording", keep), hook, "recording callback", None
        )

    async def _annotate(
        self, hook: Webhook, kind: str, change: Callable[[CallRecord], None]
    ) -> Answer:
        """Apply a callback that informs (status, recording) without moving the call.

        Twilio ignores these answers, so a storage failure is a 503 it will log for us.
        """
        try:
            async with self.store.session(hook.call_sid) as session:
                record = session.record
                if record is None:
                    log.info("call %s: %s callback for an unknown call", hook.call_sid, kind)
                    return NO_CONTENT
                change(record)
                record.updated_at = utcnow()
                session.save(record, self._event(record, kind, hook, "", at=record.updated_at))
        except Exception as error:
            outcome.mark("unavailable", "storage")
            self.throttle.failure(
                "storage", error, "call %s: storage failed on %s callback", hook.call_sid, kind
            )
            return Answer(STORAGE_UNAVAILABLE, 503, "text/plain; charset=utf-8")
        return NO_CONTENT

    async def pay_status(self, scope: Scope, receive: Receive) -> Answer:
        """``<Pay>``'s statusCallback, once per step: recorded in the event log, masked
        (:func:`ivrkit.masking.mask_payment`); it never moves the call."""
        hook = await self.reader.read(scope, receive)
        flow = self._flow_or_404(scope["path_params"]["flow"])
        state = hook.query.get("state", "")
        if not isinstance(flow.states().get(state), Pay):
            raise Refused(400, f"pay status callback for {shown(state)}, which is not a Pay state")
        if not hook.params.get("For"):
            raise Refused(400, "pay status callback without For: is this Twilio's <Pay>?")
        return await self._in_time(
            self._annotate(hook, "pay-status", lambda record: None),
            hook,
            "pay status callback",
            None,
        )

    async def hold(self, scope: Scope, receive: Receive) -> Answer:
        """Enqueue's waitUrl: hold music; Twilio fetches it again when it runs out."""
        hook = await self.reader.read(scope, receive)
        flow = self._flow_or_404(scope["path_params"]["flow"])
        node = flow.states().get(hook.query.get("state", ""))
        if not isinstance(node, n.Enqueue):
            return Answer(
                twiml.hold_music(
                    n.Enqueue("hold"), call=self._call(hook, flow), voice=twiml.Voice()
                )
            )
        return Answer(
            twiml.hold_music(
                node, call=self._call(hook, flow), voice=twiml.Voice(flow.voice, flow.language)
            )
        )

    async def healthz(self, request: Request) -> Response:
        try:
            await self.store.check_writable()  # reads alone do not prove webhooks can be saved
        except Exception as error:
            reason = str(error) if isinstance(error, StoreUnwritableError) else type(error).__name__
            log.error("health check: %s", reason)
            return JSONResponse(
                {"status": "error", "database": "cannot write", "reason": reason}, status_code=503
            )
        return JSONResponse(
            {"status": "ok", "database": "ok", "flows": sorted(self.registry.by_name)}
        )

    # -- helpers -------------------------------------------------------------------------------

    async def _start(self, flow: type[Flow], hook: Webhook) -> Answer:
        if hook.query.get(outbound.PLACED_MARK):
            # Placed by ivrkit: its row (with the call's data) may still be on its way.
            await outbound.wait_for_row(self.store, hook.call_sid)
        try:
            return await self._start_once(flow, hook)
        except CallTaken:
            # The call was saved meanwhile by a writer that does not take the call's lock
            # (an older release, mid-deploy): answer as it did.
            return await self._start_once(flow, hook)

    async def _start_once(self, flow: type[Flow], hook: Webhook) -> Answer:
        sid = hook.call_sid
        record: CallRecord | None = None
        try:
            async with self.store.session(sid) as session:
                if session.record is not None and not outbound.prepared(session.record):
                    # Twilio retried the first webhook: same answer, nothing fired again.
                    return self._replay(session, session.record, hook, 0, "")
                now = utcnow()
                if session.record is not None:  # placed by ivrkit: its row and data wait
                    record = outbound.starting(session.record, flow, hook.params, now)
                else:
                    record = CallRecord(
                        created_at=now,
                        updated_at=now,
                        call_sid=sid,
                        flow=flow.name,
                        flow_version=flow.version(),
                        state=flow.initial_state(),
                        caller=mask_number(hook.params.get("From", "")),
                        status=hook.params.get("CallStatus", "ringing"),
                    )
                start, why = outbound.first_route(flow, record, hook.params, hook.query)
                try:
                    result = await self.runtime.begin(
                        record, hook.params, hook.base_url, start=start, why=why
                    )
                except Exception:
                    log.exception("call %s: flow %s failed at its start", sid, flow.name)
                    outcome.mark("fallback", "flow_error")
                    answer = self._apology(flow)
                    session.log(self._event(record, "error", hook, answer, state="(start)"))
                    return Answer(answer)
                session.save(
                    record,
                    self._event(
                        record,
                        "start",
                        hook,
                        result.twiml,
                        state="(start)",
                        result=result,
                        at=now,
                    ),
                )
                outcome.started()
                log.info(
                    "call %s from %s started %s (version %s)",
                    sid,
                    record.caller,
                    flow.name,
                    flow.version(),
                )
                return Answer(result.twiml)
        except CallTaken:
            raise
        except CallDataError as error:
            outcome.mark("fallback", "call_data")
            self._data_mistake(sid, error, record)
            return Answer(self._apology(flow))
        except Exception as error:
            outcome.mark("fallback", "storage")
            self.throttle.failure("storage", error, "call %s: storage failed at call start", sid)
            return Answer(self._apology(flow))

    def _data_mistake(self, sid: str, error: CallDataError, record: CallRecord | None) -> None:
        """The flow put into call.data what the store cannot keep: the flow's own bug, so one
        line naming its file, class and state (the store knows no flow classes), no traceback,
        nothing saved; repeated on every call, it is logged once per interval with a count."""
        where = "a flow"
        if record is not None:
            flow = self.registry.by_name.get(record.flow)
            node = flow.states().get(record.state) if flow else None
            if flow is None:
                where = f"flow {record.flow}, state {record.state}"
            else:
                file, line = node.defined_at if node else flow.__ivrkit_source__
                where = f"{relative_path(file)}:{line}: {flow.__name__}.{record.state}"
        located = error.at(where)
        self.throttle.log(  # every call of the flow would say it again: once per interval
            logging.ERROR,
            ("flow data", str(located)),
            "call %s: %s (the caller hears the apology)",
            sid,
            located,
        )

    def _replay(
        self, session: Any, record: CallRecord, hook: Webhook, step: int, state: str
    ) -> Answer:
        """A webhook already handled (a retry) or out of date: repeat the last answer."""
        outcome.mark("replayed")
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
        return Answer(self.runtime.replay_answer(record) or twiml.empty())

    def _apology(self, flow: type[Flow]) -> str:
        return twiml.apology(flow.apology, flow.fallback_number)

    async def _in_time(
        self, work: Awaitable[Answer], hook: Webhook, what: str, flow: type[Flow] | None
    ) -> Answer:
        """``work``'s answer, or once the webhook's budget is spent: ``flow``'s apology and
        fallback for a call webhook, a 503 for a callback (``flow`` None).

        Twilio waits 15 s and then plays its own error to the caller; whatever the store
        is doing (a lock held elsewhere, a stalled statement, a lost connection), the
        caller hears the flow's apology and fallback in time instead. Cancelling ``work``
        makes the store give back the call's lock and turn.
        """
        try:
            return await self.deadlines.run(work)
        except Expired:
            outcome.mark("fallback" if flow is not None else "unavailable", "deadline")
            # Built only now: rendering the apology costs as much as the rest of a webhook.
            late = (
                Answer(self._apology(flow))
                if flow is not None
                else Answer(STORAGE_UNAVAILABLE, 503, "text/plain; charset=utf-8")
            )
            self.throttle.log(
                logging.ERROR,
                ("deadline", what),
                "call %s: %s not done within the %s s deadline (IVRKIT_WEBHOOK_DEADLINE); "
                "answered %d",
                hook.call_sid,
                what,
                f"{self.deadline:g}",
                late.status,
            )
            return late

    def _flow_or_404(self, name: str) -> type[Flow]:
        """The flow named in the URL. The answer does not list the others (a sender with a
        stray URL learns nothing about this server); the log line does."""
        flow = self.registry.by_name.get(name)
        if flow is None:
            raise Refused(
                404,
                f"no flow named {shown(name)}",
                kind="no such flow",
                detail=f"flows loaded: {', '.join(sorted(self.registry.by_name))}",
            )
        return flow

    def _call(self, hook: Webhook, flow: type[Flow]) -> Call:
        return Call.from_params(
            hook.params, now=self.runtime.clock(), flow=flow.name, state="", data={}
        )

    def _event(
        self,
        record: CallRecord,
        kind: str,
        hook: Webhook,
        answer: str,
        *,
        state: str = "",
        result: TurnResult | None = None,
        at: datetime | None = None,
    ) -> CallEvent:
        """The event-log line of a webhook: numbers masked, and a secret entry as ``****``."""
        params = mask_params(hook.params)
        if (state or record.state) in self.registry.secret_states:
            params = mask_input(params)
        return CallEvent(
            at=at or utcnow(),
            call_sid=record.call_sid,
            step=record.step,
            kind=kind,
            state=state or record.state,
            fired="; ".join(result.fired) if result else "",
            params=params,
            twiml=result.stored if result else answer,
        )


def _printable(text: str) -> str:
    """A URL path as a log line may show it (no control characters, cut short)."""
    return text if len(text) <= 200 and text.isprintable() else shown(text)


def _live_status(hook: Webhook, record: CallRecord) -> str:
    if record.status in FINAL_STATUSES:
        return record.status  # a late action webhook does not revive an ended call
    return hook.params.get("CallStatus") or record.status


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)


class IvrStarlette(Starlette):
    """Starlette, with Twilio's webhooks sent straight to their endpoint.

    A webhook is most of the traffic and needs neither the router's regexes nor its
    middleware; everything else (health, wrong methods, 404s, mounts, user middleware)
    goes the usual way.
    """

    ivr: IvrApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and not self.user_middleware:
            found = self.ivr.match(scope["path"], scope["method"])
            if found is not None:
                endpoint, scope["path_params"] = found
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    flows: Sequence[type[Flow]],
    *,
    settings: Settings | None = None,
    store: CallStore | None = None,
    clock: Callable[[], datetime] | None = None,
    twilio_client: Any = None,
) -> IvrStarlette:
    """The ASGI app serving ``flows``; tables are created on start-up.

    ``clock`` replaces the wall clock that flows see as ``call.now`` (tests, simulations).
    ``twilio_client`` (a twilio ``Client``, or a function making one) is what the app uses
    to redirect a live call when AsyncAmd says a machine answered; by default one is built
    from ``TWILIO_ACCOUNT_SID`` and the token or API key when first needed.
    """
    settings = settings or Settings.from_env()
    settings.require_token()
    store = store or create_store(settings.database_url, pool_size=settings.db_pool_size)
    clock = clock or (lambda: datetime.now(UTC))
    trusts_time = settings.trust_simulated_time or settings.insecure_dev
    metrics: Any = None
    if settings.metrics:
        # Imported only now: prometheus_client reads PROMETHEUS_MULTIPROC_DIR at import.
        from ivrkit.metrics import Metrics, TimedStore

        metrics = Metrics(flows)
    app_store = store if metrics is None else cast(CallStore, TimedStore(store, metrics))
    ivr = IvrApp(
        flows,
        settings,
        app_store,
        following_simulated_time(clock) if trusts_time else clock,
        twilio_client,
    )
    if metrics is not None:
        for endpoint in ivr.endpoints.values():
            endpoint.metrics = metrics
    if trusts_time:
        for endpoint in ivr.endpoints.values():
            endpoint.handler = with_simulated_time(endpoint.handler)
    if settings.insecure_dev:
        log.warning(
            "X-Twilio-Signature validation is OFF (insecure dev mode): anyone who can "
            "reach this server can drive calls. Never run like this in production."
        )

    console = create_console(ivr, lambda: app)  # None unless a token or --insecure-dev
    running = 0  # lifespans in progress: a test harness may run one inside another

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal running
        if running == 0:
            await store.open()
            if metrics is not None:
                observers.add(metrics)
            log.info(
                "ready: %d flow(s) (%s), %s store, webhook deadline %s s",
                len(ivr.registry.by_name),
                ", ".join(sorted(ivr.registry.by_name)),
                store.dialect,
                f"{ivr.deadline:g}",
            )
            # Everything alive now (modules, flows, their machines) lives as long as the
            # server: keep it out of the cyclic collector's full scans, which otherwise stall
            # every call in flight for tens of milliseconds a few times a minute under load.
            gc.collect()
            gc.freeze()
        running += 1
        try:
            yield
        finally:
            running -= 1
            if running == 0:
                if console is not None:
                    await console.close()  # its simulated calls end before the store closes
                ivr.throttle.flush()
                await store.close()
                if metrics is not None:
                    from ivrkit.metrics import process_exited

                    observers.remove(metrics)
                    process_exited()

    endpoints = ivr.endpoints
    routes: list[BaseRoute] = [Route("/healthz", ivr.healthz, methods=["GET"])]
    if metrics is not None and settings.metrics_port is None:

        async def scrape(request: Request) -> Response:
            body, media_type = metrics.exposition()
            return Response(body, media_type=media_type)

        routes.append(Route("/metrics", scrape, methods=["GET"]))
    for path, name in [
        ("/voice", ""),
        ("/voice/{flow}", ""),
        ("/voice/{flow}/action", "action"),
        ("/voice/{flow}/status", "status"),
        ("/voice/{flow}/recording", "recording"),
        ("/voice/{flow}/hold", "hold"),
        ("/voice/{flow}/pay-status", "pay-status"),
        ("/voice/{flow}/amd", "amd"),
    ]:
        routes.append(Route(path, endpoints[name], methods=sorted(endpoints[name].methods)))
    routes.append(WebSocketRoute("/voice/{flow}/relay", ivr.relay))
    if console is not None:
        routes.append(console.mount())
    app = IvrStarlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )
    app.ivr = ivr
    app.state.ivr = ivr
    app.state.console = console
    return app
