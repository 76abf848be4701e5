"""The ConversationRelay WebSocket, served by the flow's own app at ``/voice/{flow}/relay``.

Twilio opens it when a call reaches an :class:`~ivrkit.relay.node.Agent` state. The upgrade
is refused (403) unless ``X-Twilio-Signature`` signs its URL (the TwiML ``url`` verbatim,
no params), unless the app runs ``--insecure-dev``. The URL names the call, its state and
step, so a signed URL cannot be replayed for another call or after the call moved on.

One session runs two tasks: a reader turning Twilio's messages into the agent's inbox,
and a worker calling the agent once per message under ``reply_timeout``. An ``interrupt``
cancels the reply being spoken. Every way out (hand-off, agent error or hang, bad
messages, the caller leaving, the server cancelling us) cancels and awaits both tasks,
saves the transcript and closes the socket; :attr:`RelayHub.active` counts what is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ivrkit.call import Call
from ivrkit.fields import FieldProblem, check_fields
from ivrkit.records import CallEvent, utcnow
from ivrkit.relay import protocol
from ivrkit.relay.handoff import HANDOFF_FIELD, seal_secrets
from ivrkit.relay.node import FAILED, Agent
from ivrkit.relay.protocol import Interrupt, Message, ProtocolProblem, Setup
from ivrkit.relay.session import AgentSession, SessionEnded, Transcript

if TYPE_CHECKING:
    from ivrkit.app import IvrApp

log = logging.getLogger("ivrkit.relay")

MAX_BAD_MESSAGES = 10
"""Bad messages in a row before the session is given up (Twilio's own limit for ours)."""
FLUSH_EVERY = 20
"""Transcript turns kept in memory at most before they are written."""
POLICY_VIOLATION = 1008
INVALID_DATA = 1007


class Refusal(Exception):
    """An upgrade or a setup we will not serve: one log line, the socket closed."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class AgentFailed(Exception):
    """The agent raised, hung past its reply_timeout, or broke the protocol."""


class RelayHub:
    """The app's ConversationRelay endpoint (an ASGI app for Starlette's WebSocketRoute)."""

    def __init__(self, ivr: IvrApp, *, setup_timeout: float | None = None) -> None:
        self.ivr = ivr
        self.setup_timeout = setup_timeout or ivr.settings.webhook_deadline
        self.active = 0
        """Sessions open now (tests check every path gives its session back)."""
        self.tasks: set[asyncio.Task[Any]] = set()
        """The reader and worker tasks alive now."""
        self.calls: set[str] = set()
        """Calls with a session running: a second socket for one of them is refused."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        socket = WebSocket(scope, receive, send)
        self.active += 1
        try:
            await self._serve(socket)
        finally:
            self.active -= 1

    async def _serve(self, socket: WebSocket) -> None:
        try:
            flow_name, node, query = self._upgrade(socket)
        except Refusal as refusal:
            self._refused(socket, refusal)
            await socket.close(code=POLICY_VIOLATION)  # before accept: uvicorn answers 403
            return
        await socket.accept()
        try:
            setup = await self._setup(socket, query)
            call = await self._call(setup, flow_name, node, query)
        except Refusal as refusal:
            self._refused(socket, refusal)
            await _close(socket, POLICY_VIOLATION)
            return
        except WebSocketDisconnect:
            return
        if call.sid in self.calls:
            self._refused(socket, Refusal(f"call {call.sid} has a session already", "twice"))
            await _close(socket, POLICY_VIOLATION)
            return
        self.calls.add(call.sid)
        try:
            await self._run(socket, node, call, setup, int(query["step"]))
        finally:
            self.calls.discard(call.sid)

    async def _run(
        self, socket: WebSocket, node: Agent, call: Call, setup: Setup, step: int
    ) -> None:
        try:
            run = _Run(self, socket, node, call, setup, step)
        except Exception as error:  # the agent's class could not be made
            reason = f"agent could not be created: {type(error).__name__}: {error}"[:200]
            log.error("call %s: agent %s: %s", call.sid, node.name, reason, exc_info=error)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await socket.send_text(
                    protocol.end_message(json.dumps({HANDOFF_FIELD: FAILED, "reason": reason}))
                )
            await _close(socket, 1000)
            return
        await run.go()

    # -- before the agent runs ------------------------------------------------------------

    def _upgrade(self, socket: WebSocket) -> tuple[str, Agent, dict[str, str]]:
        ivr = self.ivr
        scope = socket.scope
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = dict(ivr.reader.forms.decode(raw_query)) if raw_query else {}
        checker = ivr.reader.checker
        if checker is not None:
            url = self.signed_url(scope, raw_query)
            signature = socket.headers.get("x-twilio-signature", "")
            if not checker.valid(url, [], signature):
                raise Refusal(
                    f"X-Twilio-Signature missing or wrong for {url} "
                    "(check TWILIO_AUTH_TOKEN and IVRKIT_PUBLIC_URL)",
                    "signature",
                )
        sid, state, step = query.get("call", ""), query.get("state"), query.get("step")
        if not state or step is None or not sid:
            raise Refusal("relay URL needs call, state and step (was it built by ivrkit?)", "url")
        try:
            check_fields([("CallSid", sid)], {"CallSid": sid}, query)
        except FieldProblem as problem:
            raise Refusal(problem.reason, problem.kind) from None
        flow = ivr.registry.by_name.get(scope["path_params"].get("flow", ""))
        node = flow.states().get(state) if flow is not None else None
        if flow is None or not isinstance(node, Agent):
            raise Refusal(f"no agent state {state[:40]!r} in that flow", "no such agent")
        return flow.name, node, query

    def signed_url(self, scope: Scope, raw_query: str) -> str:
        """The URL Twilio signed: the one in our TwiML (ws/wss for http/https)."""
        reader = self.ivr.reader
        base = reader.public_url or reader._base_url(scope, dict(scope["headers"]))
        base = "ws" + base[4:] if base.startswith("http") else base
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        url = base + path.split("?", 1)[0]
        return f"{url}?{raw_query}" if raw_query else url

    def _refused(self, socket: WebSocket, refusal: Refusal) -> None:
        client = socket.client.host if socket.client else "?"
        self.ivr.throttle.log(
            logging.WARNING,
            ("relay refused", refusal.kind),
            "refused relay WebSocket %s from %s: %s",
            socket.url.path[:200],
            client,
            refusal.reason,
        )

    async def _setup(self, socket: WebSocket, query: dict[str, str]) -> Setup:
        try:
            async with asyncio.timeout(self.setup_timeout):
                text = await socket.receive_text()
        except TimeoutError:
            raise Refusal(f"no setup message within {self.setup_timeout:g} s", "setup") from None
        except KeyError:  # a binary frame: receive_text finds no "text"
            raise Refusal("setup message is not text", "setup") from None
        try:
            setup = protocol.parse(text)
        except ProtocolProblem as problem:
            raise Refusal(f"setup: {problem}", "setup") from None
        if not isinstance(setup, Setup):
            raise Refusal("the first message is not setup", "setup")
        if setup.call_sid != query["call"]:
            raise Refusal("setup callSid is not the call in the signed URL", "setup")
        return setup

    async def _call(self, setup: Setup, flow: str, node: Agent, query: dict[str, str]) -> Call:
        ivr = self.ivr
        try:
            # Through the call's session (its turn, no write), not store.load(): that is
            # each store's lean read path, the one webhooks take.
            async with (
                asyncio.timeout(ivr.settings.webhook_deadline),
                ivr.store.session(setup.call_sid) as stored,
            ):
                record = stored.record
        except Exception as error:
            ivr.throttle.failure("storage", error, "call %s: storage failed", setup.call_sid)
            raise Refusal("storage unavailable", "storage") from None
        if record is None or record.flow != flow or record.state != node.name:
            raise Refusal(f"call {setup.call_sid} is not in {flow}.{node.name}", "call state")
        if record.step != int(query["step"]):
            raise Refusal(
                f"call {setup.call_sid} is at step {record.step}, not {query['step']}",
                "call state",
            )
        params = {
            "CallSid": setup.call_sid,
            "AccountSid": setup.account_sid,
            "From": setup.from_number,
            "To": setup.to_number,
            "Direction": setup.direction,
            "CallerName": setup.caller_name,
        }
        return Call.from_params(
            params, now=ivr.runtime.clock(), flow=flow, state=node.name, data=dict(record.data)
        )


class _Run:
    """One session from setup to close."""

    def __init__(
        self, hub: RelayHub, socket: WebSocket, node: Agent, call: Call, setup: Setup, step: int
    ) -> None:
        self.hub = hub
        self.socket = socket
        self.node = node
        self.step = step
        self.transcript = Transcript(masked=node.sensitive)
        self.session = AgentSession(setup, call, self._send, self.transcript, state_name=node.name)
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.reply: asyncio.Task[Any] | None = None
        self.handle, self.start = _agent_entry(node.agent)
        self.outcome = ""

    async def _send(self, message: str) -> None:
        try:
            await self.socket.send_text(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as error:
            raise SessionEnded(f"the caller's socket is closed ({type(error).__name__})") from None

    async def go(self) -> None:
        sid = self.session.call.sid
        reader = self._task(self._read())
        worker = self._task(self._work())
        failure: str | None = None
        cause: BaseException | None = None
        try:
            done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
            if worker in done and isinstance(worker.exception(), SessionEnded):
                failure = None  # the socket closed under a reply: the caller left
            elif worker in done and worker.exception() is not None:
                error = worker.exception()
                failure = str(error) if isinstance(error, AgentFailed) else repr(error)
                cause = error.__cause__ if isinstance(error, AgentFailed) else error
            elif reader in done and reader.exception() is not None:
                failure = f"reading failed: {reader.exception()!r}"
            elif reader in done:
                failure = reader.result()  # None: the caller left
        finally:
            for task in (reader, worker):
                task.cancel()
            await asyncio.gather(reader, worker, return_exceptions=True)
        # The session is over; what is left: save the transcript, say how it ended.
        self.transcript.close()
        if failure is not None:
            self.outcome = f"failed: {failure}"
            # With the agent's own traceback when it raised: the flow author's bug to find.
            log.error(
                "call %s: agent %s failed: %s", sid, self.node.name, failure, exc_info=cause
            )
            handoff: str | None = json.dumps({HANDOFF_FIELD: FAILED, "reason": failure[:200]})
        elif self.session.handoff is not None:
            handoff = self.session.handoff
            self.outcome = "ended"
        else:
            handoff = None
            self.outcome = "caller left"
        kept: dict[str, Any] = {}
        if handoff is not None and failure is None and self.node.secrets:
            handoff, kept = seal_secrets(self.node, handoff)
        await self.flush(final=True, kept=kept)
        if handoff is not None and self.socket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.socket.send_text(protocol.end_message(handoff))
        await _close(self.socket, 1000)

    def _task(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.hub.tasks.add(task)
        task.add_done_callback(self.hub.tasks.discard)
        return task

    async def _read(self) -> str | None:
        """Twilio's messages into the inbox; the reason to give up, or None (caller left)."""
        bad = 0
        sid = self.session.call.sid
        while True:
            try:
                text = await self.socket.receive_text()
            except WebSocketDisconnect:
                self.inbox.put_nowait(None)
                return None
            except KeyError:
                text = ""  # a binary frame
            try:
                message = protocol.parse(text)
                if isinstance(message, Setup):
                    raise ProtocolProblem("a second setup message")
            except ProtocolProblem as problem:
                bad += 1
                self.hub.ivr.throttle.log(
                    logging.WARNING,
                    ("relay message", str(problem)),
                    "call %s: agent %s: dropped a message from Twilio: %s",
                    sid,
                    self.node.name,
                    problem,
                )
                if bad >= MAX_BAD_MESSAGES:
                    return f"{bad} bad messages from Twilio in a row"
                continue
            bad = 0
            self._note(message)
            if isinstance(message, Interrupt) and self.reply is not None:
                self.reply.cancel()  # the caller spoke over it: stop speaking
            self.inbox.put_nowait(message)
            if len(self.transcript.unflushed()) >= FLUSH_EVERY:
                await self.flush(final=False)

    def _note(self, message: Message) -> None:
        if isinstance(message, protocol.Prompt):
            self.transcript.caller_prompt(message.text, message.last)
        elif isinstance(message, protocol.Dtmf):
            key = "*" if self.transcript.masked else message.digit
            self.transcript.add("caller", f"(pressed {key})")
        elif isinstance(message, Interrupt):
            self.transcript.close()
            self.transcript.add("caller", "(interrupted)")
        elif isinstance(message, protocol.Error):
            self.hub.ivr.throttle.log(  # an agent's mistake repeats on every call
                logging.WARNING,
                ("relay error", self.node.name),
                "call %s: Twilio says a message of agent %s was wrong: %s",
                self.session.call.sid,
                self.node.name,
                message.description,
            )

    async def _work(self) -> None:
        """Calls the agent per message, each under reply_timeout, until it ends."""
        if self.start is not None:
            await self._reply(self.start(self.session))
        while not self.session.ended:
            message = await self.inbox.get()
            if message is None:
                return
            await self._reply(self.handle(self.session, message))

    async def _reply(self, work: Any) -> None:
        if not inspect.isawaitable(work):
            return
        reply = self.reply = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({reply}, timeout=self.node.reply_timeout)
        finally:
            if not reply.done():
                reply.cancel()
                await asyncio.gather(reply, return_exceptions=True)
                self.reply = None
        if not done:
            raise AgentFailed(f"no answer within reply_timeout={self.node.reply_timeout:g} s")
        self.reply = None
        if reply.cancelled():
            return  # interrupted: the next message is the interrupt
        error = reply.exception()
        if isinstance(error, SessionEnded):
            if self.session.ended:
                return
            raise error
        if error is not None:
            raise AgentFailed(f"agent raised {type(error).__name__}: {error}"[:300]) from error

    async def flush(self, *, final: bool, kept: dict[str, Any] | None = None) -> None:
        """Write the transcript's new turns (and, at the end, the session's outcome), and
        the hand-off's secrets into call.data, in one commit before ``end`` is sent."""
        turns = self.transcript.unflushed()
        self.transcript.flushed += len(turns)
        call = self.session.call
        events = [
            CallEvent(
                call_sid=call.sid,
                step=self.step,
                kind=turn.who,
                state=self.node.name,
                params={"text": turn.text},
            )
            for turn in turns
        ]
        if final:
            events.append(
                CallEvent(
                    call_sid=call.sid,
                    step=self.step,
                    kind="relay",
                    state=self.node.name,
                    params={
                        "session": self.session.setup.session_id,
                        "outcome": self.outcome,
                        "sent": str(self.session.sent),
                    },
                    at=utcnow(),
                )
            )
        if not events:
            return
        ivr = self.hub.ivr
        try:
            async with asyncio.timeout(ivr.settings.webhook_deadline):
                async with ivr.store.session(call.sid) as stored:
                    record = stored.record
                    waiting = (
                        record is not None
                        and record.state == self.node.name
                        and record.step == self.step
                    )
                    if kept and waiting and record is not None:
                        record.data.update(kept)
                        record.updated_at = utcnow()
                        stored.save(record, *events)
                    else:
                        stored.log(*events)
        except Exception as error:
            ivr.throttle.failure(
                "storage", error, "call %s: storage failed saving the agent transcript", call.sid
            )


def _agent_entry(
    agent: Any,
) -> tuple[Callable[[AgentSession, Message], Any], Callable[[AgentSession], Any] | None]:
    """(handle, start) of an agent: a function, an object with ``handle``, or a class."""
    if isinstance(agent, type):
        agent = agent()
    handle = getattr(agent, "handle", None)
    start = getattr(agent, "start", None)
    return (handle if callable(handle) else agent), (start if callable(start) else None)


async def _close(socket: WebSocket, code: int) -> None:
    if socket.application_state == WebSocketState.DISCONNECTED:
        return
    if socket.client_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await socket.close(code=code)
