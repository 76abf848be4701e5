"""uvicorn's httptools protocol with a limit on the request head (request line + headers).

httptools (what ``uvicorn[standard]`` runs) sets no limit of its own: it buffers a header
of any size (a 20 MB header was accepted), and uvicorn's ``h11_max_incomplete_event_size``
only reaches the slower h11 parser. This protocol counts the head's bytes as they arrive
and refuses it with a 431 and one log line once it passes the limit, so a sender cannot
make the server buffer more than about one read beyond it; the connection is closed and
every other connection carries on. The limit is uvicorn's ``h11_max_incomplete_event_size``
setting, so the same number holds whichever parser runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ivrkit.logthrottle import LogThrottle

DEFAULT_MAX_HEAD_BYTES = 16 * 1024
log = logging.getLogger("ivrkit.http")
_throttle = LogThrottle(log)


class BoundedHeadProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that answers 431 to a request head over the limit."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._max_head = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._in_head = True
        self._head_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this read: the head alone is this long already.
        if self._in_head and self._head_bytes > self._max_head and not self._refused:
            self._refuse(f"over {self._head_bytes:,} bytes and not complete")

    def on_headers_complete(self) -> None:
        in_reads, self._in_head, self._head_bytes = self._head_bytes, False, 0
        # The reads holding this head may hold body too; only when they pass the limit
        # is the head itself measured (a webhook's head and body fit in far less).
        if in_reads > self._max_head:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self._max_head:
                self._refuse(f"{size:,} bytes")
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_head = True
        super().on_message_complete()

    def _refuse(self, size: str) -> None:
        self._refused = True
        peer: Any = self.client[0] if self.client else "?"
        reason = f"request headers too large: {size}, over the {self._max_head:,} byte limit"
        _throttle.log(logging.WARNING, ("431", peer), "refused a request from %s: %s", peer, reason)
        body = (reason + "\n").encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
