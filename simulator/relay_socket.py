"""The WebSocket under a ConversationRelay session: over the network, or into an ASGI app.

Both links look the same to the session (``simulator.relay``): ``open()`` performs the upgrade
(raising ``Refused`` when the app does not accept it), ``receive()`` returns the app's next text
message, ``None`` when nothing came within the wait, or a ``Closed`` when the socket is gone,
``send()`` and ``close()`` never raise for a socket the app already dropped. Whatever a link
opened (a TCP connection, the app's handler task) is released by ``close()``, which the session
calls on every way out, cancellation included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

__all__ = ["AsgiLink", "Closed", "Link", "NetworkLink", "Refused"]

Message = MutableMapping[str, Any]
CLIENT_ADDRESS = ("127.0.0.1", 123)
_DEFAULT_PORTS = {"ws": 80, "wss": 443}
_HANDLER_ENDED = "simulator.handler-ended"  # queued after the app's last message


class Refused(Exception):
    """The upgrade failed: ``status`` is the HTTP status the app answered (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Closed:
    """The socket closed: ``code`` as received (1006 when it just dropped), and why."""

    code: int
    reason: str = ""


class Link(Protocol):
    async def open(self, timeout: float) -> None: ...

    async def send(self, text: str) -> None: ...

    async def receive(self, timeout: float) -> str | bytes | Closed | None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


# --- over the network (websockets) --------------------------------------------------------------


class NetworkLink:
    """A real WebSocket client (``ws://`` for local apps, ``wss://`` verified like HTTPS)."""

    def __init__(self, url: str, headers: dict[str, str], *, user_agent: str) -> None:
        self.url = url
        self.headers = headers
        self.user_agent = user_agent
        self._socket: Any = None
        self._closed: Closed | None = None

    async def open(self, timeout: float) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        context: ssl.SSLContext | None = None
        if self.url.startswith("wss:"):
            from simulator.transport import _ssl_context

            context = _ssl_context()
        try:
            self._socket = await connect(
                self.url, additional_headers=self.headers, user_agent_header=self.user_agent,
                open_timeout=timeout, ssl=context, max_size=2**20, ping_interval=None,
                proxy=None, close_timeout=2,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise Refused(f"the app answered the upgrade with HTTP {status}", status) from None
        except TimeoutError:
            raise Refused(f"no answer to the upgrade within {timeout:g} s") from None
        except (OSError, ValueError, WebSocketException) as exc:
            raise Refused(f"could not connect: {exc}") from None

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            await self._socket.send(text)

    async def receive(self, timeout: float) -> str | bytes | Closed | None:
        from websockets.exceptions import ConnectionClosed

        if self._closed is not None:
            return self._closed
        try:
            async with asyncio.timeout(timeout):
                message: str | bytes = await self._socket.recv()
                return message
        except TimeoutError:
            return None  # websockets' recv() may be cancelled without losing a message
        except ConnectionClosed as exc:
            received = exc.rcvd
            self._closed = Closed(received.code, received.reason) if received else Closed(1006)
            return self._closed

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close(code, reason)


# --- in-process (ASGI websocket scope) ----------------------------------------------------------


class AsgiLink:
    """Speaks the ASGI WebSocket protocol to an in-process app, as uvicorn would.

    The app's handler runs as a task fed through two queues. A handler that raises, or returns
    without closing, reads as a dropped socket (1011 / 1006) with the exception in the reason:
    the simulator reports it and the call goes on, as it would behind a real server.
    """

    def __init__(self, app: Any, url: str, headers: dict[str, str], state: dict[str, Any]) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme if parts.scheme in ("ws", "wss") else "ws"
        raw = [(b"host", parts.netloc.encode("latin-1"))]
        raw += [(name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()]
        raw += [(b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
                (b"sec-websocket-version", b"13")]
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": scheme,
            "path": unquote(parts.path or "/"),
            "raw_path": (parts.path or "/").encode("latin-1"),
            "query_string": parts.query.encode("latin-1"),
            "root_path": "",
            "headers": raw,
            "client": CLIENT_ADDRESS,
            "server": (parts.hostname or "testserver",
                       parts.port or _DEFAULT_PORTS.get(scheme, 80)),
            "subprotocols": [],
            "state": dict(state),
            "extensions": {"websocket.http.response": {}},
        }
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed: Closed | None = None

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        if message.get("type") == "websocket.send" and self._closed is not None:
            # A server raises when the app writes to a closed socket; so does this one.
            raise OSError("the WebSocket is closed")
        await self._outbox.put(message)

    async def _next(self, timeout: float) -> Message | None:
        """The app's next message; a synthetic close when its handler ended; None on timeout.

        The handler's end is queued behind its last message (a done-callback), so one queue
        read with a timeout does: no task per read, which a busy session would pay per token.
        """
        try:
            async with asyncio.timeout(timeout):
                message = await self._outbox.get()
        except TimeoutError:
            return None
        if message.get("type") == _HANDLER_ENDED:
            self._outbox.put_nowait(message)  # every later read sees the end too
            return self._ended()
        return message

    def _ended(self) -> Message:
        assert self._task is not None
        error = None if self._task.cancelled() else self._task.exception()
        if error is not None:
            return {"type": "websocket.close", "code": 1011,
                    "reason": f"the app raised {type(error).__name__}: {error}"}
        return {"type": "websocket.close", "code": 1006,
                "reason": "the app's handler returned without closing the socket"}

    async def open(self, timeout: float) -> None:
        self._task = asyncio.ensure_future(self.app(self.scope, self._receive, self._send))
        self._task.add_done_callback(
            lambda _: self._outbox.put_nowait({"type": _HANDLER_ENDED})
        )
        self._inbox.put_nowait({"type": "websocket.connect"})
        answer = await self._next(timeout)
        kind = answer.get("type") if answer else None
        if kind == "websocket.accept":
            return
        await self._finish()
        if answer is None:
            raise Refused(f"no answer to the upgrade within {timeout:g} s")
        if kind == "websocket.http.response.start":
            status = int(answer.get("status", 403))
            raise Refused(f"the app answered the upgrade with HTTP {status}", status)
        if kind == "websocket.close" and answer.get("code") in (1006, 1011):
            raise Refused(f"the app failed the upgrade (HTTP 500): {answer.get('reason')}", 500)
        # Closing before accepting is how an ASGI app refuses: servers answer 403.
        raise Refused("the app answered the upgrade with HTTP 403", 403)

    async def send(self, text: str) -> None:
        if self._closed is None and self._task is not None and not self._task.done():
            self._inbox.put_nowait({"type": "websocket.receive", "text": text})

    async def receive(self, timeout: float) -> str | bytes | Closed | None:
        if self._closed is not None:
            return self._closed
        deadline = time.monotonic() + timeout
        while True:
            message = await self._next(max(0.0, deadline - time.monotonic()))
            if message is None:
                return None
            kind = message.get("type")
            if kind == "websocket.send":
                text = message.get("text")
                if text is not None:
                    return str(text)
                return bytes(message.get("bytes") or b"")
            if kind == "websocket.close":
                self._closed = Closed(int(message.get("code") or 1000),
                                      str(message.get("reason") or ""))
                return self._closed
            # Nothing else means anything after the accept (a server would refuse it); read on.

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._task is None:
            return
        if self._closed is None:
            self._closed = Closed(code, reason)
            self._inbox.put_nowait({"type": "websocket.disconnect", "code": code,
                                    "reason": reason})
        await self._finish()

    async def _finish(self, grace: float = 1.0) -> None:
        """Let the handler see the disconnect and return; cancel it if it does not."""
        task = self._task
        if task is None or task.done():
            self._swallow()
            return
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._swallow()

    def _swallow(self) -> None:
        """Collect the handler's exception, already reported as the close reason."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            task.exception()
