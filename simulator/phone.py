"""Placing calls from Python: ``run_call`` for a whole scripted call, ``Phone`` for calls driven
step by step (``LiveCall``, and ``SyncCall`` for code without an event loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx

from simulator.asgi import AsgiHost
from simulator.caller import (
    AgentPrompt,
    Answer,
    Caller,
    DialOutcome,
    DialPrompt,
    EnqueuePrompt,
    GatherPrompt,
    HangUp,
    Interrupt,
    Press,
    QueueOutcome,
    RecordOutcome,
    RecordPrompt,
    ScriptedCaller,
    Speak,
    Timeout,
)
from simulator.engine import CallResult, Engine
from simulator.model import AgentEvent, CallParams, Event, EventLog, SayEvent
from simulator.relay import RelayOptions
from simulator.transport import Transport

__all__ = [
    "CallEnded", "LiveCall", "Phone", "SyncCall", "WrongInput", "parse_start", "run_call",
]

T = TypeVar("T")


async def run_call(
    url: str,
    caller: Caller | Iterable[Answer] = (),
    *,
    app: Any = None,
    transport: Transport | None = None,
    auth_token: str | None = None,
    method: str = "POST",
    params: CallParams | None = None,
    fallback_url: str | None = None,
    fallback_method: str = "POST",
    status_callback: str | None = None,
    status_callback_method: str = "POST",
    status_callback_events: Iterable[str] = ("completed",),
    max_requests: int = 100,
    on_event: Callable[[Event], Any] | None = None,
    start_time: datetime | None = None,
    relay: RelayOptions | None = None,
) -> CallResult:
    """Place one call to ``url`` (or to ``app`` in-process) and run it to the end.

    ``caller`` is a ``Caller`` or a list of steps for a ``ScriptedCaller``. Pass ``transport`` to
    share one HTTP client between many calls (it is then not closed here). An ``app`` of its own
    has its lifespan run around the call. ``start_time`` (with a UTC offset) is when the call
    happens, sent as ``X-Ivrkit-Sim-Time``. ``relay`` sets how long the caller waits for a
    ConversationRelay agent.
    """
    if not isinstance(caller, Caller):
        caller = ScriptedCaller(caller)
    own = transport is None
    if transport is None:
        transport = Transport(app=app, auth_token=auth_token, lifespan=True)
    try:
        if own:
            await transport.start()
        engine = Engine(
            session=transport.session(), caller=caller, url=url, method=method, params=params,
            fallback_url=fallback_url, fallback_method=fallback_method,
            status_callback=status_callback, status_callback_method=status_callback_method,
            status_callback_events=status_callback_events, max_requests=max_requests,
            listeners=[on_event] if on_event else (), start_time=start_time, relay=relay,
        )
        return await engine.run()
    finally:
        if own:
            await transport.aclose()


class CallEnded(AssertionError):
    """The test asked the caller to act after the call ended."""


class WrongInput(AssertionError):
    """The test answered a different question than the one the call is waiting for."""


_KIND_NAMES = {"gather": "Gather", "dial": "Dial", "record": "Record", "enqueue": "Enqueue"}
_HOW = {
    "gather": "press(...), speak(...), interrupt(...) or timeout()",
    "dial": 'dial("completed" | "busy" | "no-answer" | ...)',
    "record": "record(seconds)",
    "enqueue": 'queue("bridged" | "leave" | "hangup" | ...)',
}


class _Channel:
    """A Caller that parks the engine at each input point until the test answers."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.paused: asyncio.Future[tuple[str, Any]] = loop.create_future()
        self.answer: asyncio.Future[Any] | None = None
        self.kind: str | None = None
        self.prompt: Any = None

    async def _park(self, kind: str, prompt: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.kind, self.prompt = kind, prompt
        self.answer = loop.create_future()
        if not self.paused.done():
            self.paused.set_result((kind, prompt))
        try:
            return await self.answer
        finally:
            self.kind = self.prompt = None

    async def gather(self, prompt: GatherPrompt) -> Any:
        return await self._park("gather", prompt)

    async def dial(self, prompt: DialPrompt) -> Any:
        return await self._park("dial", prompt)

    async def record(self, prompt: RecordPrompt) -> Any:
        return await self._park("record", prompt)

    async def enqueue(self, prompt: EnqueuePrompt) -> Any:
        return await self._park("enqueue", prompt)


class LiveCall(EventLog):
    """A call a test drives one input point at a time.

    ``await call.start()`` runs until the first Gather/Dial/Record/Enqueue (or the end); each of
    ``press``/``speak``/``timeout``/``dial``/``record``/``queue``/``hangup`` answers it and runs
    to the next one. Inspect ``transcript``, ``heard``, ``requests``, ``status``, ``ended``.
    """

    def __init__(
        self,
        *,
        transport: Transport | None = None,
        owns_transport: bool = True,
        url: str,
        connect: Callable[[], Awaitable[Transport]] | None = None,
        **engine_options: Any,
    ) -> None:
        if (transport is None) == (connect is None):
            raise TypeError("LiveCall: give a transport= or a connect= coroutine function")
        self._transport = transport
        self._connect = connect
        self._owns_transport = owns_transport
        self._url = url
        self._options = engine_options
        self.events: list[Event] = []
        self.result: CallResult | None = None
        self._channel: _Channel | None = None
        self._task: asyncio.Task[CallResult] | None = None
        self._closed = False

    # --- driving -------------------------------------------------------------------------------

    async def start(self) -> LiveCall:
        if self._task is not None:
            raise RuntimeError("start(): this call was already started; place a new call")
        self._channel = _Channel()
        transport = await self._opened_transport()
        engine = Engine(
            session=transport.session(), caller=self._channel, url=self._url,
            listeners=[self.events.append], **self._options,
        )
        self._task = asyncio.ensure_future(self._drive(engine))
        self._task.add_done_callback(self._ended)
        await self._until_pause()
        return self

    async def _opened_transport(self) -> Transport:
        """The call's transport, connected (the app's lifespan started) on this event loop."""
        if self._transport is None:
            assert self._connect is not None
            self._transport = await self._connect()
        try:
            await self._transport.start()
        except BaseException:
            await self._release()
            raise
        return self._transport

    async def _drive(self, engine: Engine) -> CallResult:
        try:
            return await engine.run()
        finally:
            # Also when the test's event loop cancels a call left waiting: free the client
            # while the loop can still close its sockets.
            await self._release()

    async def _until_pause(self) -> None:
        assert self._channel is not None
        assert self._task is not None
        channel = self._channel
        if channel.paused.done():
            channel.paused = asyncio.get_running_loop().create_future()
        if not self._task.done():
            await channel.paused  # the next input point, or the end of the call (_ended)
        if self._task.done():
            self.result = self._task.result()  # re-raises a crash inside the engine
            await self._release()

    def _ended(self, task: asyncio.Future[CallResult]) -> None:
        """The engine stopped: wake whoever waits for the next input point."""
        if self._channel is not None and not self._channel.paused.done():
            self._channel.paused.set_result(("end", None))

    async def _give(self, kind: str, answer: Any, what: str) -> LiveCall:
        if self._task is None:
            raise RuntimeError(f"{what}: call start() first")
        channel = self._channel
        assert channel is not None
        if self.ended or channel.answer is None or channel.answer.done():
            raise CallEnded(f"{what}: the call already ended ({self.status}).\n{self.transcript}")
        if channel.kind != kind and kind != "any":
            waiting = channel.kind or "nothing"
            shown = _KIND_NAMES.get(waiting, waiting)
            if isinstance(channel.prompt, AgentPrompt):
                shown = "ConversationRelay agent's turn"
            raise WrongInput(
                f"{what}: the call is waiting at a {shown}, not a "
                f"{_KIND_NAMES[kind]}; answer it with {_HOW.get(waiting, '?')}.\n{self.transcript}"
            )
        channel.answer.set_result(answer)
        await self._until_pause()
        return self

    async def press(self, digits: str, *, after: int | None = None) -> LiveCall:
        """Press keys at the waiting Gather (``"1234#"``); ``after=0`` barges into the prompt."""
        return await self._give("gather", Press(digits, after), f"press({digits!r})")

    async def speak(self, text: str, *, confidence: float = 0.9) -> str:
        """Say ``text`` at the waiting Gather, or to the waiting ConversationRelay agent.

        Returns what the caller heard in answer, one utterance per line, until the next input
        point: the agent's reply (its utterances), or the Say text of the documents that
        followed. ``""`` when nothing was said.
        """
        mark = len(self.events)
        await self._give("gather", Speak(text, confidence), f"speak({text!r})")
        return self._heard_since(mark)

    async def interrupt(self, text: str = "", *, after_words: int = 2) -> str:
        """Cut the ConversationRelay agent off after ``after_words`` words of what it was saying
        (sent as ``interrupt``), then say ``text`` if given; returns what was heard in answer,
        like ``speak``. Where the agent's speech is not interruptible only ``text`` is sent."""
        mark = len(self.events)
        answer = Interrupt(text, after_words=after_words)
        await self._give("gather", answer, f"interrupt({text!r})")
        return self._heard_since(mark)

    def _heard_since(self, mark: int) -> str:
        return "\n".join(
            e.text for e in self.events[mark:] if isinstance(e, AgentEvent | SayEvent)
        )

    async def timeout(self) -> LiveCall:
        """Stay silent: the waiting Gather times out."""
        return await self._give("gather", Timeout(), "timeout()")

    async def dial(
        self,
        status: str = "completed",
        *,
        duration: int = 30,
        caller_hangs_up: bool = False,
        presses_star: bool = False,
    ) -> LiveCall:
        """Answer the waiting Dial; ``presses_star`` ends the bridge with * (hangupOnStar)."""
        outcome = DialOutcome(status, duration, caller_hangs_up, presses_star)
        return await self._give("dial", outcome, f"dial({status!r})")

    async def record(
        self, seconds: int = 5, *, key: str | None = None, hangup: bool = False
    ) -> LiveCall:
        outcome = RecordOutcome(seconds, key, hangup)
        return await self._give("record", outcome, f"record({seconds})")

    async def queue(
        self, result: str = "bridged", *, wait_rounds: int = 1, duration: int = 60
    ) -> LiveCall:
        outcome = QueueOutcome(result, wait_rounds, duration)
        return await self._give("enqueue", outcome, f"queue({result!r})")

    async def hangup(self) -> LiveCall:
        """Hang up at the current input point (no-op if the call already ended)."""
        if self.ended:
            return self
        return await self._give("any", HangUp(), "hangup()")

    # --- inspecting ----------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.result is not None

    @property
    def status(self) -> str:
        if self.result is not None:
            return self.result.status
        return "in-progress" if self.events else "queued"

    @property
    def waiting_for(self) -> str | None:
        """``"gather"``, ``"agent"`` (a ConversationRelay session waits for the caller),
        ``"dial"``, ``"record"``, ``"enqueue"`` or None."""
        if self._channel is None or self.ended:
            return None
        if isinstance(self._channel.prompt, AgentPrompt):
            return "agent"
        return self._channel.kind

    @property
    def prompt(self) -> Any:
        """The GatherPrompt/DialPrompt/... the call is waiting at."""
        return None if self._channel is None or self.ended else self._channel.prompt






    @property
    def states(self) -> list[str]:
        """Values of the ``state=`` query parameter of every request, in order."""
        found = []
        for request in self.requests:
            found.extend(parse_qs(urlsplit(request.url).query).get("state", []))
        return found

    def assert_heard(self, text: str) -> None:
        """Fail unless ``text`` was spoken (substring); the message shows the whole transcript."""
        if text not in self.heard:
            raise AssertionError(
                f"expected to hear {text!r}; transcript so far:\n{self.transcript}"
            )

    def assert_not_heard(self, text: str) -> None:
        if text in self.heard:
            raise AssertionError(f"did not expect to hear {text!r}; transcript:\n{self.transcript}")

    # --- cleanup -------------------------------------------------------------------------------

    async def _release(self) -> None:
        if not self._closed:
            self._closed = True
            if self._owns_transport and self._transport is not None:
                await self._transport.aclose()

    async def aclose(self) -> None:
        """Cancel the call if it is still waiting, and free its HTTP client."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._release()

    async def __aenter__(self) -> LiveCall:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _LoopThread:
    """An event loop running in a daemon thread: where synchronous tests' calls (and the
    lifespans of the apps they call) run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncCall:
    """``LiveCall`` for synchronous code: the call runs on an event loop in a thread (its own,
    or the one a ``Phone`` shares between its synchronous calls)."""

    def __init__(
        self, factory: Callable[[], LiveCall], runner: _LoopThread | None = None
    ) -> None:
        self._owns_runner = runner is None
        self._runner = runner or _LoopThread()
        self._loop = self._runner.loop
        self._call = self._run(self._make(factory))

    @staticmethod
    async def _make(factory: Callable[[], LiveCall]) -> LiveCall:
        return factory()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def start(self) -> SyncCall:
        self._run(self._call.start())
        return self

    def press(self, digits: str, *, after: int | None = None) -> SyncCall:
        self._run(self._call.press(digits, after=after))
        return self

    def speak(self, text: str, *, confidence: float = 0.9) -> str:
        """What the caller heard in answer (see ``LiveCall.speak``)."""
        return self._run(self._call.speak(text, confidence=confidence))

    def interrupt(self, text: str = "", *, after_words: int = 2) -> str:
        return self._run(self._call.interrupt(text, after_words=after_words))

    def timeout(self) -> SyncCall:
        self._run(self._call.timeout())
        return self

    def dial(self, status: str = "completed", **options: Any) -> SyncCall:
        self._run(self._call.dial(status, **options))
        return self

    def record(self, seconds: int = 5, **options: Any) -> SyncCall:
        self._run(self._call.record(seconds, **options))
        return self

    def queue(self, result: str = "bridged", **options: Any) -> SyncCall:
        self._run(self._call.queue(result, **options))
        return self

    def hangup(self) -> SyncCall:
        self._run(self._call.hangup())
        return self

    def __getattr__(self, name: str) -> Any:
        # Read-only views (transcript, heard, status, requests, assert_heard...) come straight
        # from the LiveCall; they do not touch the event loop.
        return getattr(self._call, name)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._call.aclose())
        finally:
            if self._owns_runner:
                self._runner.close()

    def __enter__(self) -> SyncCall:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Phone:
    """Places calls with shared defaults: the target (``url`` or ASGI ``app``), caller numbers,
    auth token (requests are signed only when one is given), the calls' start time, limits.

    An in-process ``app`` is served the way a server would serve it: its lifespan starts before
    the first call to it and shuts down at ``aclose()`` (the ``phone`` fixture does that after
    the test), once per event loop the calls run on.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        app: Any = None,
        auth_token: str | None = None,
        from_: str = "+15005550006",
        to: str = "+15005550001",
        client: httpx.AsyncClient | None = None,
        max_requests: int = 100,
        start: datetime | str | None = None,
        relay: RelayOptions | None = None,
    ) -> None:
        self.url = url
        self.app = app
        self.auth_token = auth_token
        self.from_ = from_
        self.to = to
        self.client = client
        self.max_requests = max_requests
        self.start = start
        self.relay = relay
        self._live: list[LiveCall] = []
        self._sync: list[SyncCall] = []
        self._hosts: dict[tuple[int, asyncio.AbstractEventLoop], AsgiHost] = {}
        self._transports: dict[tuple[int, asyncio.AbstractEventLoop, str | None], Transport] = {}
        self._sync_runner: _LoopThread | None = None

    def _in_process(self, app: Any, token: str | None) -> Transport:
        """The app's transport on the running event loop: one lifespan per app and loop, one
        transport (and signer) per token; each call still gets its own cookie jar."""
        loop = asyncio.get_running_loop()
        key = (id(app), loop)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = AsgiHost(app)
        transport = self._transports.get((id(app), loop, token))
        if transport is None or transport.host is not host:
            transport = Transport(host=host, auth_token=token)
            self._transports[(id(app), loop, token)] = transport
        return transport

    def _factory(
        self, url: str | None, app: Any, options: dict[str, Any]
    ) -> Callable[[], LiveCall]:
        if app is None and self.app is not None and (url is None or url.startswith("/")):
            app = self.app  # a bare path means the phone's in-process app
        target = url or self.url or ("/" if app is not None else None)
        if target is None:
            raise ValueError("phone.call(): give a URL, an app=, or set phone.url / phone.app")
        token = options.pop("auth_token", self.auth_token)
        params = options.pop("params", None) or CallParams(
            from_=options.pop("from_", self.from_), to=options.pop("to", self.to),
            extra=options.pop("extra", {}),
        )
        options.setdefault("max_requests", self.max_requests)
        if self.relay is not None:
            options.setdefault("relay", self.relay)
        start = options.pop("start", self.start)
        if start is not None:
            options["start_time"] = parse_start(start, "phone.call(start=...)")
        client = options.pop("client", self.client)

        async def connect() -> Transport:
            return Transport(client=client, auth_token=token)

        async def connect_in_process() -> Transport:
            return self._in_process(app, token)

        def make() -> LiveCall:
            if app is not None:
                # The transport is the phone's: closing the call leaves it (and the app) be.
                return LiveCall(connect=connect_in_process, owns_transport=False, url=target,
                                params=params, **options)
            return LiveCall(connect=connect, url=target, params=params, **options)

        return make

    def call(self, url: str | None = None, *, app: Any = None, **options: Any) -> LiveCall:
        """A new call (not started): ``await phone.call("/voice").start()``.

        Options: from_, to, extra (more webhook params), params (a CallParams), auth_token,
        start (the call's start time, a datetime or ISO 8601 text with a UTC offset: sent as
        ``X-Ivrkit-Sim-Time``, which a test or dev ivrkit server uses as ``call.now``),
        client (an httpx.AsyncClient to reuse; bare paths join its base_url), method,
        fallback_url, fallback_method, status_callback, status_callback_method,
        status_callback_events, max_requests, relay (a RelayOptions: how long the caller waits
        for a ConversationRelay agent).
        """
        call = self._factory(url, app, dict(options))()
        self._live.append(call)
        return call

    def sync(self, url: str | None = None, *, app: Any = None, **options: Any) -> SyncCall:
        """Same as ``call()`` for synchronous tests; returns a started ``SyncCall``."""
        if self._sync_runner is None:
            self._sync_runner = _LoopThread()
        call = SyncCall(self._factory(url, app, dict(options)), self._sync_runner)
        self._sync.append(call)
        return call.start()

    async def run(
        self, url: str | None = None, *, steps: Iterable[Answer] = (), app: Any = None,
        **options: Any,
    ) -> CallResult:
        """A whole scripted call: ``await phone.run("/voice", steps=[Press("1"), HangUp()])``."""
        live = self._factory(url, app, dict(options))()
        try:
            transport = await live._opened_transport()
            engine = Engine(
                session=transport.session(), caller=ScriptedCaller(steps), url=live._url,
                **live._options,
            )
            return await engine.run()
        finally:
            await live.aclose()

    async def aclose(self) -> None:
        """Close the calls and shut down the lifespans started on this event loop; then the
        synchronous calls and theirs."""
        try:
            for call in self._live:
                await call.aclose()
        finally:
            try:
                await self.stop_apps(asyncio.get_running_loop())
            finally:
                self.close_sync()

    async def stop_apps(self, loop: asyncio.AbstractEventLoop) -> None:
        """Shut down the lifespans of the apps called on ``loop`` (run this on that loop)."""
        errors: list[BaseException] = []
        for key3 in [key3 for key3 in self._transports if key3[1] is loop]:
            del self._transports[key3]
        for key in [key for key in self._hosts if key[1] is loop]:
            try:
                await self._hosts.pop(key).stop()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]

    def event_loops(self) -> list[asyncio.AbstractEventLoop]:
        """The event loops where apps' lifespans still run (``stop_apps`` each of them)."""
        return list(dict.fromkeys(key[1] for key in self._hosts))

    def close_sync(self) -> None:
        """Close the synchronous calls, shut down the apps they called, stop their loop."""
        runner, self._sync_runner = self._sync_runner, None
        try:
            for sync_call in self._sync:
                sync_call.close()
        finally:
            if runner is not None:
                try:
                    runner.run(self.stop_apps(runner.loop))
                finally:
                    runner.close()


def parse_start(value: datetime | str, where: str) -> datetime:
    """A call's start time from a datetime or ISO 8601 text; it must carry a UTC offset."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(
                f"{where}: {value!r} is not an ISO 8601 time; write e.g. 2026-11-22T03:00:00-05:00"
            ) from None
    if moment.utcoffset() is None:
        raise ValueError(
            f"{where}: {value!s} has no UTC offset; add one, e.g. 2026-11-22T03:00:00-05:00 "
            "(New York in winter) or 2026-11-22T08:00:00Z"
        )
    return moment
