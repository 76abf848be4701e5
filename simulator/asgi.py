"""An ASGI app served in-process the way a server serves it: lifespan first, then requests.

``AsgiHost`` runs the app's lifespan (``startup`` before the first request, ``shutdown`` at the
end) and hands it requests directly, without an HTTP client in between: the simulator builds
each request itself, so httpx's request and response models would only add work. Apps that do
not support the lifespan protocol (they raise, or return, on a ``lifespan`` scope) are served
without one, as uvicorn does with ``--lifespan auto``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = ["AsgiHost", "AsgiResponse", "LifespanError"]

log = logging.getLogger("simulator.asgi")

Message = MutableMapping[str, Any]
CLIENT_ADDRESS = ("127.0.0.1", 123)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class LifespanError(RuntimeError):
    """The app reported that its start-up or shut-down failed (``lifespan.*.failed``)."""


class AsgiResponse:
    """Status, headers (names lower-cased; the last of a repeated header wins) and body."""

    __slots__ = ("status_code", "headers", "raw_headers", "content")

    def __init__(
        self, status_code: int, raw_headers: list[tuple[bytes, bytes]], content: bytes
    ) -> None:
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw_headers
        }
        self.content = content


class _Lifespan:
    """One run of the app's lifespan: a task fed ``lifespan.*`` messages through queues."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": state,
        }
        self.task: asyncio.Future[Any] = asyncio.ensure_future(
            app(scope, self.inbox.get, self.outbox.put)
        )

    async def exchange(self, message: str) -> Message | None:
        """Send ``message``; the app's answer, or None when the app ended without answering."""
        self.inbox.put_nowait({"type": message})
        answer = asyncio.ensure_future(self.outbox.get())
        try:
            await asyncio.wait({answer, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answer.done():
                answer.cancel()
        return answer.result() if answer.done() and not answer.cancelled() else None

    async def finish(self) -> BaseException | None:
        """Wait for the lifespan task to end (cancelled if it does not); its exception."""
        if not self.task.done():
            self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            return None
        except Exception as error:
            return error
        return None


class AsgiHost:
    """Serves one ASGI app on the running event loop; ``start()`` runs its lifespan start-up.

    ``start()`` may be called by every call placed: the start-up runs once. ``stop()`` runs the
    shut-down (if a start-up ran) and may also be called more than once.
    """

    def __init__(self, app: Any, *, lifespan: bool = True) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._wants_lifespan = lifespan
        self._lifespan: _Lifespan | None = None
        self._started = False
        self._lock: asyncio.Lock | None = None

    @property
    def running(self) -> bool:
        """True while the app's lifespan is started and not yet shut down."""
        return self._lifespan is not None

    async def start(self) -> None:
        if self._started or not self._wants_lifespan:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._started:
                return
            lifespan = _Lifespan(self.app, self.state)
            try:
                answer = await lifespan.exchange("lifespan.startup")
            except BaseException:
                await lifespan.finish()
                raise
            if answer is None or not str(answer.get("type", "")).startswith("lifespan."):
                # No lifespan support: the app returned, raised or answered as if to an HTTP
                # request on the lifespan scope.
                error = await lifespan.finish()
                log.debug("%r has no lifespan (%r); serving it without one", self.app, error)
                self._started = True
                return
            if answer["type"] != "lifespan.startup.complete":
                await lifespan.finish()
                raise LifespanError(
                    f"{_name(self.app)}: its lifespan start-up failed: "
                    f"{answer.get('message') or answer['type']} (fix the app's start-up; "
                    "the simulator runs it before the first call)"
                )
            self._lifespan = lifespan
            self._started = True

    async def stop(self) -> None:
        lifespan, self._lifespan = self._lifespan, None
        self._started = False
        if lifespan is None:
            return
        try:
            answer = await lifespan.exchange("lifespan.shutdown")
        finally:
            error = await lifespan.finish()
        if answer is None or answer["type"] != "lifespan.shutdown.complete":
            reason = answer.get("message") if answer else repr(error)
            raise LifespanError(f"{_name(self.app)}: its lifespan shut-down failed: {reason}")

    async def request(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> AsgiResponse:
        """One HTTP request to the app; its exceptions propagate (a test wants to see them)."""
        target = _target(url)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "headers": [target.host_header, *headers],
            "scheme": target.scheme,
            "path": target.path,
            "raw_path": target.raw_path,
            "query_string": target.query_string,
            "root_path": "",
            "server": target.server,
            "client": CLIENT_ADDRESS,
            "state": dict(self.state),
        }
        status = 500
        raw_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        request_sent = False
        finished: asyncio.Future[None] | None = None

        async def receive() -> Message:
            nonlocal request_sent, finished
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            if finished is None:
                finished = asyncio.get_running_loop().create_future()
            await finished  # the client "disconnects" once the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, raw_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                raw_headers = list(message.get("headers") or [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        finally:
            if finished is not None and not finished.done():
                finished.set_result(None)
        return AsgiResponse(status, raw_headers, b"".join(chunks))


class _Target(NamedTuple):
    """What a request scope needs from a URL."""

    scheme: str
    host_header: tuple[bytes, bytes]
    path: str
    raw_path: bytes
    query_string: bytes
    server: tuple[str, int]


_targets: dict[str, _Target] = {}


def _target(url: str) -> _Target:
    """The URL taken apart once: a suite's calls request the same URLs again and again."""
    target = _targets.get(url)
    if target is None:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        path = parts.path or "/"
        target = _Target(
            scheme,
            (b"host", parts.netloc.encode("latin-1")),
            unquote(path),
            path.encode("latin-1"),
            parts.query.encode("latin-1"),
            (parts.hostname or "testserver", parts.port or _DEFAULT_PORTS.get(scheme, 80)),
        )
        if len(_targets) >= 4096:
            _targets.clear()
        _targets[url] = target
    return target


def _name(app: Any) -> str:
    return getattr(app, "__qualname__", None) or type(app).__name__

